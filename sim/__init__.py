"""Journey engine: simulate customer journeys and the interventions that keep customers.

Public API::

    import sim
    scenario = sim.load_scenario("scenarios/dental_clinic.yaml")
    variant = scenario.apply(interventions=["recall_reminders"])
"""

from typing import TYPE_CHECKING, Any

from sim._errors import (
    DataError,
    Problem,
    ScenarioError,
    SimError,
    closest,
    hint,
    is_interrupt,
    unknown_name,
)
from sim._kpi_catalogue import KPI_DESCRIPTIONS, KPI_KINDS, KPI_NAMES, QUEUE_KPIS, kpi_kind
from sim._version import __version__
from sim.scenario import Scenario, check_scenario_file, kpi_kinds, kpi_names, load_scenario

if TYPE_CHECKING:
    from sim.api import (
        ENGINES,
        RunCounts,
        RunResult,
        derive_seed,
        replicate_threads,
        run,
        run_identity,
        simulate,
    )

_LAZY = {"ENGINES", "RunCounts", "RunResult", "derive_seed", "replicate_threads", "run",
         "run_identity", "simulate"}


def __getattr__(name: str) -> Any:
    """Load the run API (numba, pyarrow) on first use, so validation starts fast."""
    if name in _LAZY:
        from sim import api

        return getattr(api, name)
    raise AttributeError(f"module 'sim' has no attribute {name!r}")


__all__ = [
    "ENGINES",
    "KPI_DESCRIPTIONS",
    "KPI_KINDS",
    "KPI_NAMES",
    "QUEUE_KPIS",
    "DataError",
    "Problem",
    "RunCounts",
    "RunResult",
    "Scenario",
    "ScenarioError",
    "SimError",
    "__version__",
    "check_scenario_file",
    "closest",
    "derive_seed",
    "hint",
    "is_interrupt",
    "kpi_kind",
    "kpi_kinds",
    "kpi_names",
    "load_scenario",
    "replicate_threads",
    "run",
    "run_identity",
    "simulate",
    "unknown_name",
]
