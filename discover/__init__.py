"""From an event log to a draft scenario: ``journey discover``.

The engine learns a scenario from a log with one row per customer event
(stage entries and touchpoint exposures): the stage graph and each exit's
per-step probability, minimum dwells, touchpoint reach and lifts, segment
offsets and heterogeneity, arrivals and the initial population, each with a
95% interval and its sample size. The draft runs, calibrates and optimises
like any other scenario.

Example:
    >>> from discover import discover                              # doctest: +SKIP
    >>> found = discover("events.parquet", "map.yaml", out="draft.yaml")  # doctest: +SKIP
    >>> found.scenario.stages["use"].exits                         # doctest: +SKIP
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from discover._api import DiscoverResult, discover
    from discover._estimate import Discovery, Estimate
    from discover._mapping import Mapping, load_mapping

_WHERE = {"DiscoverResult": "_api", "discover": "_api", "Discovery": "_estimate",
          "Estimate": "_estimate", "Mapping": "_mapping", "load_mapping": "_mapping"}


def __getattr__(name: str) -> Any:
    """Import a part (DuckDB, SciPy, statsmodels) on first use, so `journey` starts fast."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'discover' has no attribute {name!r}")
    return getattr(import_module(f"discover.{module}"), name)


__all__ = ["DiscoverResult", "Discovery", "Estimate", "Mapping", "discover", "load_mapping"]
