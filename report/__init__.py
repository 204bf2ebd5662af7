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

from report._build import Report, default_path, write_report
from report._data import ReportError, RunData, load_run

__all__ = ["Report", "ReportError", "RunData", "default_path", "load_run", "write_report"]
