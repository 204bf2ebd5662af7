"""Reports strategists read: one self-contained HTML page per run.

Public API::

    import report
    written = report.write_report("results", "report.html", compare=["results-b"])
    written.path, written.charts

The page shows the KPIs with 95% CIs, a Sankey of the journey's flows, the
funnel, stage occupancy, cohort retention with CI bands, revenue and cost;
and, where the dataset has them, queue waits (event engine), optimisation
studies and calibrations. Charts are plotly figures; plotly.js is inlined so
the file opens offline. ``png=`` exports the main charts with kaleido.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from report._build import Report, default_path, write_report
    from report._data import ReportError, RunData, load_run

_WHERE = {"Report": "_build", "default_path": "_build", "write_report": "_build",
          "ReportError": "_data", "RunData": "_data", "load_run": "_data"}


def __getattr__(name: str) -> Any:
    """Import plotly and pyarrow on first use, so `journey` starts fast."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'report' has no attribute {name!r}")
    return getattr(import_module(f"report.{module}"), name)


__all__ = ["Report", "ReportError", "RunData", "default_path", "load_run", "write_report"]
