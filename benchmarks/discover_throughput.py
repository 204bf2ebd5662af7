"""Throughput and memory of `journey discover` on a large event log.

Simulates the dental clinic with exposure events at the population scale that
gives about ``--events`` events (one replicate; kept in ``--log`` for the next
time), then discovers a draft from it in a fresh process and prints the wall
time, events per second and the peak resident memory of that process. DuckDB
runs under ``--memory-limit`` and spills past it, so the peak stays bounded
whatever the log's size. ``--no-satisfaction`` discovers without satisfaction's
reconstruction (``journey discover --no-satisfaction``). Not a test: the machine is
shared.

What to expect at the defaults (10,117,590 events, DuckDB limit 1GB, two cores
shared with other work, load average 1.7-4.8 during the runs; four runs with
satisfaction, three without):

=========================  ==============  ==================
                           wall time       peak resident
=========================  ==============  ==================
with satisfaction          92-147 s        1,590-1,690 MiB
``--no-satisfaction``      42-55 s         1,210-1,285 MiB
=========================  ==============  ==================

The bound this benchmark holds discovery to: a 10-million-event log in under
3 minutes and 2 GB with satisfaction. Satisfaction's own cost is bounded
whatever the log's size (its fits run on a sample of bounded size, and the
decayed exposure counts of the sample are read once for every decay); what grows
with the log is reading it and drawing the sample (every customer-step at risk
is hashed).

Usage::

    python benchmarks/discover_throughput.py [--events N] [--memory-limit 1GB]
                                             [--threads T] [--log DIR]
                                             [--no-satisfaction] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

EVENTS_PER_SCALE = 145_000
"""Events (entries, moves, exposures) of one dental-clinic replicate at population scale 1."""
MAP = """\
name: dental_discovered
step_days: 1
stages: {discover: prospect, order: customer, use: customer, repair: customer,
         loyal: customer, upgrade: customer, terminated: lost, dropped: lost}
touchpoints: [search_ads, review_site, free_consult, fitting, checkup, care_tips_email,
              repair_service, personalised_offer, winback_letter]
"""


def generate(folder: Path, events: int) -> tuple[Path, int, float]:
    """The events folder of one simulated replicate with about ``events`` rows."""
    import pyarrow.dataset as ds

    import sim

    found = folder / "events" / "scenario=dental_clinic" / "variant=base" / "replicate=0"
    if not found.exists():
        scenario = sim.load_scenario(ROOT / "scenarios" / "dental_clinic.yaml")
        t0 = time.perf_counter()
        sim.run(
            scenario, population_scale=events / EVENTS_PER_SCALE, seed=1, exposures=True, out=folder
        )
        print(f"simulated the log in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    rows = ds.dataset(found, format="parquet").count_rows()
    size = sum(p.stat().st_size for p in found.rglob("*.parquet")) / 2**20
    return found, rows, size


CHILD = """
import sys, time, json
sys.path.insert(0, {root!r})
from discover import discover
t0 = time.perf_counter()
found = discover({log!r}, {map!r}, memory_limit={limit!r}, threads={threads!r},
                 satisfaction={satisfaction!r})
wall = time.perf_counter() - t0
d = found.discovery
print(json.dumps({{"wall_s": wall, "events": d.log.events,
                  "exits": sum(len(v) for v in d.exits.values()),
                  "lifts": len(d.find("lift")), "stages": len(found.scenario.stages)}}))
"""


def measure(
    log: Path, mapping: Path, limit: str, threads: int | None, satisfaction: bool = True
) -> dict[str, float]:
    """Discover in a child process; its wall time and peak resident memory."""
    code = CHILD.format(
        root=str(ROOT),
        log=str(log),
        map=str(mapping),
        limit=limit,
        threads=threads,
        satisfaction=satisfaction,
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["peak_rss_mib"] = max(peak_kib, before) / 1024
    result["events_per_s"] = result["events"] / result["wall_s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--memory-limit", default="1GB")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--log",
        type=Path,
        default=None,
        help="folder for the simulated log (kept; default: a temporary one)",
    )
    parser.add_argument(
        "--no-satisfaction",
        dest="satisfaction",
        action="store_false",
        help="discover without satisfaction's reconstruction (discover --no-satisfaction)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.log or Path(tmp) / "log"
        log, rows, size = generate(folder, args.events)
        mapping = Path(tmp) / "map.yaml"
        mapping.write_text(MAP)
        result = measure(log, mapping, args.memory_limit, args.threads, args.satisfaction)
    result |= {
        "log_rows": rows,
        "log_mib": size,
        "memory_limit": args.memory_limit,
        "satisfaction": args.satisfaction,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"log: {rows:,} events, {size:.0f} MiB of Parquet")
    print(
        f"discover: {result['wall_s']:.1f} s, {result['events_per_s']:,.0f} events/s, "
        f"peak RSS {result['peak_rss_mib']:.0f} MiB (DuckDB memory limit "
        f"{args.memory_limit}); {result['exits']} exits, {result['lifts']} lifts"
        + ("" if args.satisfaction else "; without satisfaction")
    )


if __name__ == "__main__":
    main()
