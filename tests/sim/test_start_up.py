"""`journey run` imports what it runs: no other command's libraries, pandas or SimPy.

The command is run as the console script runs it, in a fresh process (every layer's
subcommands registered, ``journey.commands``), with one replicate and with two
(intervals), and an output folder (tables, Parquet); then the process lists which of
the modules below it imported. Speed itself is measured in ``benchmarks/throughput.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

UNNEEDED = (
    "optuna",              # optimise, calibrate
    "scipy.stats",         # discover's estimates, calibration goodness of fit
    "scipy.optimize",
    "statsmodels",         # discover
    "duckdb",
    "plotly",              # report
    "dask",                # sweeps
    "distributed",
    "sqlalchemy",          # Optuna's RDB storage
    "pyarrow.dataset",     # reading result folders
    "optimise._search",
    "optimise._calibrate",
    "discover._api",
    "report._build",
    "pandas",              # pyarrow's pandas shim imports it on the first pa.array (sim._arrow)
    "pyarrow.compute",     # imported by pandas, or by a cast between Arrow types
    "simpy",               # the event engine (--engine des)
    "sim.engines.des",
)

ONE_REPLICATE_UNNEEDED = (
    "scipy.special",       # a Student-t quantile: an interval needs two replicates
)

PROBE = """\
import json, sys
from sim.cli import main
watched = json.loads(sys.argv[2])
sys.argv = ["journey", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(json.dumps({"code": code, "loaded": [m for m in watched if m in sys.modules]}))
"""


@pytest.mark.parametrize("replicates", [1, 2])
def test_journey_run_loads_no_other_command_s_libraries(tmp_path: Path, tiny_scenario_text: str,
                                                         replicates: int) -> None:
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(tiny_scenario_text)
    args = ["run", str(scenario), "--replicates", str(replicates), "--out",
            str(tmp_path / "out"), "--quiet", "--format", "json"]
    watched = [*UNNEEDED, *(ONE_REPLICATE_UNNEEDED if replicates == 1 else ())]
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args),
                           json.dumps(watched)],
                          capture_output=True, text=True, timeout=300, check=False)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["code"] == 0, done.stderr
    assert report["loaded"] == []
    assert list((tmp_path / "out" / "kpis").rglob("*.parquet")), "the run wrote its tables"
