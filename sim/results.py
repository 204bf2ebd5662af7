"""Parquet results: tables of a run and the dataset layout on disk.

A dataset is a folder (or any pyarrow filesystem URI) with one subfolder per
table, hive-partitioned by scenario, variant and replicate::

    results/kpis/scenario=dental_clinic/variant=base/replicate=0/part-<run id>.parquet

The partition columns live in the paths (readers add them to every row), the
replicate's seed and the run id in every row. Each file carries in its schema
metadata the canonical scenario text and hash, the seeds, engine, population
scale, RNG scheme and package version.

**A folder key is one run.** A run is identified by its *run id*, a hash of
what decides its numbers (scenario text, engine, population scale, base seed,
RNG scheme). A run owns its (scenario, variant) partition: :func:`claim`
removes what another run left there before the new one writes, and says what
it removed, so a reader of a folder never mixes two runs. :func:`list_runs`
lists what a folder holds, from the files themselves.

Files appear atomically (written under a hidden temporary name, then
renamed); readers skip the hidden names, and the next run that claims the
partition removes temporaries a killed writer left.

Beside the run tables a results folder holds what the experiments of
``optimise`` wrote: sweeps' ``variants`` and ``sensitivity`` tables
(:func:`variants_path`, :func:`sensitivity_path`), optimisation studies
(:func:`study_folder`, files :data:`STUDY_FILES`) and calibrations
(:func:`calibration_folder`, files :data:`CALIBRATION_FILES`), each study with
its Optuna journal beside its folder (:func:`journal_file`)::

    results/optimise/<study>/trials.parquet      results/optimise/<study>.journal
    results/calibrate/<study>/fit.parquet        results/calibrate/<study>.journal

This module is the one owner of these names: writers and readers take them
from here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sim._arrow import column, labelled

if TYPE_CHECKING:
    import pyarrow.dataset as ds

__all__ = [
    "ATTRIBUTIONS",
    "ATTRIBUTION_FILES",
    "CALIBRATIONS",
    "CALIBRATION_FILES",
    "CORE_TABLES",
    "DISCOVERIES",
    "STUDIES",
    "STUDY_FILES",
    "TABLES",
    "AttributionFiles",
    "CalibrationFiles",
    "Replaced",
    "RunInfo",
    "RunKey",
    "StudyFiles",
    "attribution_folder",
    "attribution_folders",
    "calibration_folder",
    "calibration_folders",
    "claim",
    "claim_variants",
    "discovery_check_path",
    "discovery_checks",
    "discovery_fit_path",
    "is_complete",
    "journal_file",
    "list_runs",
    "make_run_id",
    "open_dataset",
    "read_file",
    "read_table",
    "read_variants",
    "run_metadata",
    "runs_table",
    "sensitivity_path",
    "study_folder",
    "study_folders",
    "variant_descriptions",
    "variants_path",
    "write_dataset_table",
    "write_file_atomic",
    "write_files",
    "write_run_table",
]

TABLES = ("occupancy", "flows", "kpis", "retention", "ledger", "events", "queues")
"""Tables a run writes (``events`` only on request; ``queues`` from the event engine
on a scenario with capacity-limited touchpoints)."""

CORE_TABLES = ("occupancy", "flows", "retention", "ledger")
"""Tables every replicate writes besides ``kpis``, which it writes last: its presence
marks a complete replicate."""

PARTITION_SCHEMA = pa.schema([("scenario", pa.string()), ("variant", pa.string()),
                              ("replicate", pa.int32())])
"""The hive partition keys of every table (``pyarrow.dataset`` reads them back)."""


_PART_RE = re.compile(r"^part-([0-9a-f]+)\.parquet$")
_TEMPORARY_RE = re.compile(r"^\..*\.tmp$")


def make_run_id(*, scenario_hash: str, engine: str, population_scale: str, base_seed: str,
                rng: str, events: str = "") -> str:
    """The id of a run: a short hash of everything that decides its numbers (as the
    text written into the files' metadata); ``events`` is ``exposures`` for a run whose
    events table holds exposure rows, empty otherwise.

    Two runs with the same id are the same run: replicate r of either has the
    same seed and bit-identical tables.
    """
    fields = {"scenario_hash": scenario_hash, "engine": engine,
              "population_scale": population_scale, "base_seed": base_seed, "rng": rng}
    if events:
        fields["events"] = events
    text = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class RunKey:
    """Where one replicate of one run lives: rerunning the same key replaces its files."""

    scenario: str
    variant: str
    replicate: int
    seed: int
    run_id: str

    def columns(self, rows: int) -> dict[str, pa.Array]:
        """The run-key columns stored in each row (partition keys live in the path)."""
        return {"run_id": labelled([self.run_id], np.zeros(rows, dtype=np.int64)),
                "seed": column(np.full(rows, self.seed, dtype=np.uint64))}


def run_metadata(*, scenario_yaml: str, scenario_hash: str, seed: int, base_seed: int,
                 replicate: int, engine: str, rng: str, version: str,
                 population_scale: float, run_id: str, events: str = "") -> dict[str, str]:
    """Schema metadata written into every file of a run."""
    return ({"journey.events": events} if events else {}) | {
        "journey.run_id": run_id,
        "journey.scenario_yaml": scenario_yaml,
        "journey.scenario_hash": scenario_hash,
        "journey.seed": str(seed),
        "journey.base_seed": str(base_seed),
        "journey.replicate": str(replicate),
        "journey.engine": engine,
        "journey.rng": rng,
        "journey.version": version,
        "journey.population_scale": repr(float(population_scale)),
    }


def with_keys(table: pa.Table, key: RunKey, metadata: Mapping[str, str]) -> pa.Table:
    """Prepend the run-key columns and attach the run's metadata."""
    cols = key.columns(table.num_rows)
    for i, (name, arr) in enumerate(cols.items()):
        table = table.add_column(i, name, arr)
    meta = dict(table.schema.metadata or {})
    meta.update({k.encode(): v.encode() for k, v in metadata.items()})
    return table.replace_schema_metadata(meta)


def _filesystem(root: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    text = os.fspath(root)
    if "://" in text:
        fs, path = pafs.FileSystem.from_uri(text)
        return fs, path
    return pafs.LocalFileSystem(), os.path.abspath(text)


def _relative(table: str, key: RunKey) -> str:
    return (f"{table}/scenario={key.scenario}/variant={key.variant}/"
            f"replicate={key.replicate}/part-{key.run_id}.parquet")


def table_path(root: str | os.PathLike[str], table: str, key: RunKey) -> str:
    """Where ``table`` of run ``key`` lives under dataset ``root``."""
    _, base = _filesystem(root)
    return f"{base}/{_relative(table, key)}"


def is_complete(root: str | os.PathLike[str], key: RunKey, names: Iterable[str]) -> bool:
    """Whether every table of replicate ``key`` is stored, written by the run of its id.

    The ``kpis`` file is written last, so its presence marks a finished replicate.
    """
    fs, _ = _filesystem(root)
    kpis = table_path(root, "kpis", key)
    paths = [kpis, *(table_path(root, n, key) for n in names)]
    if any(info.type != pafs.FileType.File for info in fs.get_file_info(paths)):
        return False
    meta = pq.read_schema(kpis, filesystem=fs).metadata or {}
    return meta.get(b"journey.run_id", b"").decode() == key.run_id


@dataclass(frozen=True)
class Replaced:
    """What :func:`claim` removed: the replicates of one other run (or surplus ones)."""

    scenario: str
    variant: str
    run_id: str
    replicates: tuple[int, ...]
    files: int
    why: str

    def __str__(self) -> str:
        reps = _plural(len(self.replicates), "replicate")
        rid = f"run {self.run_id}" if self.run_id else "files of an older layout"
        return f"replaced {rid} of {self.scenario} variant {self.variant} ({reps}: {self.why})"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _why(meta: Mapping[str, str], expect: Mapping[str, str], same_run: bool) -> str:
    """In words: how the run that wrote ``meta`` differs from the one expected."""
    if same_run:
        return "beyond this run's replicates"
    if not meta.get("journey.run_id"):
        return "written by an older version"
    words = {"scenario_hash": "another scenario text", "engine": "engine {}",
             "population_scale": "population scale {}", "base_seed": "base seed {}",
             "rng": "random-number scheme {}"}
    diffs = [text.format(meta.get(f"journey.{k}", "?")) for k, text in words.items()
             if k in expect and meta.get(f"journey.{k}") != expect[k]]
    return ", ".join(diffs) or "another run"


def _file_meta(fs: pafs.FileSystem, path: str) -> dict[str, str]:
    try:
        raw = pq.read_schema(path, filesystem=fs).metadata or {}
    except (OSError, pa.ArrowException):
        return {}
    return {k.decode(): v.decode() for k, v in raw.items() if k.startswith(b"journey.")}


@dataclass(frozen=True)
class _Stored:
    """A file found under a table's partition folders."""

    path: str
    table: str
    scenario: str
    variant: str
    replicate: int
    run_id: str          # "" for a file of another layout
    temporary: bool
    mtime: dt.datetime | None


def _scan(root: str | os.PathLike[str], scenario: str | None = None,
          variant: str | None = None) -> list[_Stored]:
    """Every run file and temporary under ``root``'s tables (optionally one partition)."""
    fs, base = _filesystem(root)
    found: list[_Stored] = []
    for table in TABLES:
        folder = f"{base}/{table}"
        if scenario is not None:
            folder += f"/scenario={scenario}"
            if variant is not None:
                folder += f"/variant={variant}"
        infos = fs.get_file_info(pafs.FileSelector(folder, recursive=True,
                                                   allow_not_found=True))
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            parts = dict(p.split("=", 1) for p in info.path[len(base) + 1:].split("/")
                         if "=" in p)
            if not {"scenario", "variant", "replicate"} <= parts.keys():
                continue
            try:
                rep = int(parts["replicate"])
            except ValueError:
                continue
            m = _PART_RE.match(info.base_name)
            temporary = bool(_TEMPORARY_RE.match(info.base_name))
            if not m and not temporary and not info.base_name.endswith(".parquet"):
                continue
            found.append(_Stored(info.path, table, parts["scenario"], parts["variant"], rep,
                                 m.group(1) if m else "", temporary, info.mtime))
    return found


def _remove(fs: pafs.FileSystem, paths: Iterable[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            fs.delete_file(path)


def _prune_empty(fs: pafs.FileSystem, files: Iterable[str]) -> None:
    """Remove the replicate folders that the removal of ``files`` left empty."""
    for folder in sorted({f.rsplit("/", 1)[0] for f in files}, reverse=True):
        with contextlib.suppress(OSError):
            if not fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
                fs.delete_dir(folder)


def _drop(fs: pafs.FileSystem, doomed: list[_Stored], expect: Mapping[str, str],
          run_id: str | None) -> list[Replaced]:
    """Remove ``doomed`` (kpis files first, so no half-removed replicate looks complete)
    and say, per run, what was removed and why."""
    groups: dict[tuple[str, str, str], list[_Stored]] = {}
    for f in doomed:
        groups.setdefault((f.scenario, f.variant, f.run_id), []).append(f)
    out = []
    for (scen, var, rid), files in groups.items():
        kpis = [f for f in files if f.table == "kpis"] or files
        meta = _file_meta(fs, kpis[0].path)
        out.append(Replaced(scen, var, rid, tuple(sorted({f.replicate for f in files})),
                            len(files), _why(meta, expect, rid == run_id)))
    ordered = sorted(doomed, key=lambda f: f.table != "kpis")
    _remove(fs, (f.path for f in ordered))
    _prune_empty(fs, (f.path for f in ordered))
    return out


def claim(root: str | os.PathLike[str], scenario: str, variant: str, run_id: str, *,
          expect: Mapping[str, str], keep: Collection[int] | None = None,
          tidy: bool = True) -> list[Replaced]:
    """Make the (scenario, variant) partition hold run ``run_id`` only.

    Removes every file another run wrote there and, with ``keep``, this run's
    replicates outside ``keep``; with ``tidy``, also the temporaries a killed
    writer left (only when no other writer works on the partition).

    Args:
        root: dataset folder or URI.
        scenario, variant: the partition.
        run_id: the run that owns it (:func:`make_run_id`).
        expect: the run's metadata (``scenario_hash``, ``engine``,
            ``population_scale``, ``base_seed``, ``rng``), to say how a replaced
            run differed.
        keep: this run's replicates; None keeps all of them.
        tidy: remove temporaries.

    Returns:
        One entry per run (or surplus) removed.
    """
    fs, _ = _filesystem(root)
    stored = _scan(root, scenario, variant)
    if tidy:
        _remove(fs, (f.path for f in stored if f.temporary))
    doomed = [f for f in stored if not f.temporary and (
        f.run_id != run_id or (keep is not None and f.replicate not in keep))]
    return _drop(fs, doomed, expect, run_id)


def claim_variants(root: str | os.PathLike[str], scenario: str, owned: re.Pattern[str],
                   runs: Mapping[str, str], *, replicates: int,
                   expect: Mapping[str, Mapping[str, str]]) -> list[Replaced]:
    """A sweep's claim: its variants (ids matching ``owned``) hold exactly its runs.

    Variants of the scenario named like the sweep's but not in ``runs`` (a
    smaller design) are removed whole; each variant in ``runs`` keeps only its
    run's replicates 0..replicates-1. Other variants (``journey run --variant``)
    are left alone. Temporaries are removed.
    """
    fs, _ = _filesystem(root)
    stored = [f for f in _scan(root, scenario) if owned.fullmatch(f.variant)]
    _remove(fs, (f.path for f in stored if f.temporary))
    doomed = [f for f in stored if not f.temporary and (
        f.variant not in runs or f.run_id != runs[f.variant] or f.replicate >= replicates)]
    out = []
    for var in dict.fromkeys(f.variant for f in doomed):
        mine = [f for f in doomed if f.variant == var]
        if var in runs:
            out.extend(_drop(fs, mine, expect[var], runs[var]))
        else:
            dropped = _drop(fs, mine, {}, None)
            out.extend(Replaced(r.scenario, r.variant, r.run_id, r.replicates, r.files,
                                "not in this sweep's design") for r in dropped)
    return out


@dataclass(frozen=True)
class RunInfo:
    """One run a results folder holds, as its files say (:func:`list_runs`)."""

    scenario: str
    variant: str
    run_id: str
    scenario_hash: str
    engine: str
    population_scale: float
    base_seed: int | None
    replicates: tuple[int, ...]
    """Complete replicates (their kpis file is written)."""
    incomplete: tuple[int, ...]
    written: dt.datetime | None
    tables: tuple[str, ...]
    version: str

    def describe(self) -> str:
        """One line: what identifies the run and what it holds."""
        reps = _plural(len(self.replicates), "replicate")
        if self.incomplete:
            reps += f" (+{len(self.incomplete)} incomplete)"
        when = self.written.strftime("%Y-%m-%d %H:%M") if self.written else "?"
        seed = "?" if self.base_seed is None else str(self.base_seed)
        return (f"{self.scenario} variant {self.variant}: run {self.run_id or '?'}, engine "
                f"{self.engine}, population scale {self.population_scale:g}, base seed {seed}, "
                f"{reps}, written {when}")


def list_runs(root: str | os.PathLike[str]) -> list[RunInfo]:
    """Every run of a results folder, from its files (no side register to drift).

    Runs are grouped by (scenario, variant, run id); the metadata comes from the
    run's kpis files (written last), or from any of its files when no replicate
    is complete.
    """
    fs, _ = _filesystem(root)
    groups: dict[tuple[str, str, str], list[_Stored]] = {}
    for f in _scan(root):
        if not f.temporary:
            groups.setdefault((f.scenario, f.variant, f.run_id), []).append(f)
    out = []
    for (scen, var, rid), files in sorted(groups.items()):
        kpis = sorted((f for f in files if f.table == "kpis"), key=lambda f: f.replicate)
        meta = _file_meta(fs, (kpis or files)[0].path)
        done = tuple(sorted({f.replicate for f in kpis}))
        times = [f.mtime for f in files if f.mtime is not None]
        base_seed = meta.get("journey.base_seed")
        out.append(RunInfo(
            scenario=scen, variant=var, run_id=rid,
            scenario_hash=meta.get("journey.scenario_hash", ""),
            engine=meta.get("journey.engine", "?"),
            population_scale=float(meta.get("journey.population_scale", "nan")),
            base_seed=int(base_seed) if base_seed else None, replicates=done,
            incomplete=tuple(sorted({f.replicate for f in files} - set(done))),
            written=max(times) if times else None,
            tables=tuple(t for t in TABLES if any(f.table == t for f in files)),
            version=meta.get("journey.version", "?")))
    return out


def runs_table(runs: Iterable[RunInfo]) -> pa.Table:
    """:func:`list_runs` as a table (for ``journey runs --format csv|json``)."""
    rows = list(runs)
    return pa.table({
        "scenario": pa.array([r.scenario for r in rows], pa.string()),
        "variant": pa.array([r.variant for r in rows], pa.string()),
        "run_id": pa.array([r.run_id for r in rows], pa.string()),
        "scenario_hash": pa.array([r.scenario_hash for r in rows], pa.string()),
        "engine": pa.array([r.engine for r in rows], pa.string()),
        "population_scale": pa.array([r.population_scale for r in rows], pa.float64()),
        "base_seed": pa.array([r.base_seed for r in rows], pa.uint64()),
        "replicates": pa.array([len(r.replicates) for r in rows], pa.int64()),
        "incomplete": pa.array([len(r.incomplete) for r in rows], pa.int64()),
        "written": pa.array([r.written for r in rows], pa.timestamp("us", tz="UTC")),
        "tables": pa.array([",".join(r.tables) for r in rows], pa.string()),
        "version": pa.array([r.version for r in rows], pa.string()),
    })


def write_run_table(root: str | os.PathLike[str], name: str, table: pa.Table,
                    key: RunKey) -> str:
    """Write one table of one run atomically; returns the final path."""
    return write_dataset_table(root, _relative(name, key), table)


def write_dataset_table(root: str | os.PathLike[str], relative: str, table: pa.Table) -> str:
    """Write ``root/relative`` as Parquet, whole or not at all, on the dataset's filesystem.

    Args:
        root: a dataset folder or pyarrow filesystem URI.
        relative: the file's path below ``root`` (``/``-separated).

    Returns:
        The final path on the dataset's filesystem.
    """
    fs, base = _filesystem(root)
    final = f"{base}/{relative}"
    folder, leaf = final.rsplit("/", 1)
    fs.create_dir(folder, recursive=True)
    tmp = f"{folder}/.{leaf}.{uuid.uuid4().hex}.tmp"
    try:
        pq.write_table(table, tmp, filesystem=fs, compression="zstd")
        fs.move(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            fs.delete_file(tmp)
        raise
    return final


def write_file_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a local file whole or not at all: a unique hidden temporary beside it, renamed.

    Concurrent writers of the same file never see each other's half-written
    bytes; a failed write leaves no temporary behind.
    """
    final = os.fspath(path)
    folder, leaf = os.path.split(os.path.abspath(final))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{leaf}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_files(folder: str | os.PathLike[str], files: Mapping[str, pa.Table | bytes | None]
                ) -> list[str]:
    """Write the files of a local folder, each whole or not at all, in the order given.

    Args:
        folder: the folder (made when missing).
        files: file name -> a table (written as Parquet) or bytes; None writes nothing.

    Returns:
        The paths written (``folder/name``), in order.
    """
    written = []
    for name, data in files.items():
        if data is None:
            continue
        if isinstance(data, pa.Table):
            write_dataset_table(folder, name, data)
        else:
            write_file_atomic(Path(folder) / name, data)
        written.append(str(Path(folder) / name))
    return written


def variants_path(scenario: str) -> str:
    """Where a sweep's variants table of ``scenario`` lives, below the dataset root."""
    return f"variants/scenario={scenario}/variants.parquet"


def sensitivity_path(scenario: str, method: str) -> str:
    """Where the sensitivity indices of ``scenario`` by ``method`` live, below the root."""
    return f"sensitivity/scenario={scenario}/{method}.parquet"


STUDIES = "optimise"
"""The folder of optimisation studies below a results root."""

CALIBRATIONS = "calibrate"
"""The folder of calibrations below a results root."""

ATTRIBUTIONS = "attribute"
"""The folder of attributions below a results root."""

DISCOVERIES = "discover"
"""The folder below a results root where the report looks for discovered drafts' checks."""
DISCOVERY_FIT_SUFFIX = ".fit.parquet"
DISCOVERY_CHECK_SUFFIX = ".check.parquet"

JOURNAL_SUFFIX = ".journal"
_TRIALS, _SUMMARY = "trials.parquet", "summary.json"
"""Files both a study and a calibration write."""


@dataclass(frozen=True)
class StudyFiles:
    """The files of one optimisation study, in its folder (:func:`study_folder`)."""

    trials: str = _TRIALS
    importances: str = "importances.json"
    summary: str = _SUMMARY
    pareto: str = "pareto.parquet"
    """Only with two objectives."""
    best_scenario: str = "best_scenario.yaml"
    """Only when a re-evaluated design met the constraints."""


@dataclass(frozen=True)
class CalibrationFiles:
    """The files of one calibration, in its folder (:func:`calibration_folder`)."""

    parameters: str = "parameters.parquet"
    fit: str = "fit.parquet"
    trials: str = _TRIALS
    scenario: str = "calibrated_scenario.yaml"
    summary: str = _SUMMARY
    profiles: str = "profiles.parquet"
    """Only with profile-likelihood intervals."""
    evaluations: str = "evaluations.jsonl"
    """Every evaluated point's loss, appended as it is computed (a resumed fit replays it)."""
    mc_evaluations: str = "evaluations-mc.jsonl"
    """The Monte Carlo refits' evaluations on other seed sets, kept the same way."""


@dataclass(frozen=True)
class AttributionFiles:
    """The files of one attribution, in its folder (:func:`attribution_folder`)."""

    removal: str = "removal.parquet"
    """Each touchpoint's and intervention's removal effect, per KPI and segment."""
    shapley: str = "shapley.parquet"
    """Only with ``method`` shapley or both."""
    paths: str = "paths.parquet"
    """Markov, last-touch and first-touch attribution of the simulated paths (or of a
    user's paths file)."""
    path_counts: str = "path_counts.parquet"
    """The simulated paths in ChannelAttribution's format."""
    side_by_side: str = "side_by_side.parquet"
    summary: str = _SUMMARY
    coalitions: str = "coalitions"
    """A folder: each simulated coalition's KPIs per replicate, written as it finishes
    (a resumed attribution reuses them)."""


STUDY_FILES = StudyFiles()
ATTRIBUTION_FILES = AttributionFiles()
CALIBRATION_FILES = CalibrationFiles()


def study_folder(root: str | os.PathLike[str], study: str) -> Path:
    """Where optimisation study ``study`` writes its files: ``ROOT/optimise/<study>/``."""
    return Path(root) / STUDIES / study


def calibration_folder(root: str | os.PathLike[str], study: str) -> Path:
    """Where calibration ``study`` writes its files: ``ROOT/calibrate/<study>/``."""
    return Path(root) / CALIBRATIONS / study


def attribution_folder(root: str | os.PathLike[str], name: str) -> Path:
    """Where attribution ``name`` writes its files: ``ROOT/attribute/<name>/``."""
    return Path(root) / ATTRIBUTIONS / name


def attribution_folders(root: str | os.PathLike[str]) -> list[Path]:
    """The attributions of a results root (folders holding a removal table), by name."""
    return _folders_with(Path(root) / ATTRIBUTIONS, ATTRIBUTION_FILES.removal)


def discovery_fit_path(draft: str | os.PathLike[str]) -> Path:
    """The fit table beside a discovered draft (``x.yaml`` -> ``x.fit.parquet``)."""
    path = Path(draft)
    return path.with_name(f"{path.stem}{DISCOVERY_FIT_SUFFIX}")


def discovery_check_path(draft: str | os.PathLike[str]) -> Path:
    """The observed-against-simulated table beside a discovered draft (``x.check.parquet``)."""
    path = Path(draft)
    return path.with_name(f"{path.stem}{DISCOVERY_CHECK_SUFFIX}")


def discovery_checks(root: str | os.PathLike[str]) -> list[Path]:
    """The discovered drafts' check tables under ``ROOT/discover/``, by name."""
    return sorted((Path(root) / DISCOVERIES).glob(f"*{DISCOVERY_CHECK_SUFFIX}"))


def journal_file(folder: str | os.PathLike[str]) -> Path:
    """The Optuna journal file of a study by default: beside its folder, ``<folder>.journal``.

    optuna-dashboard opens it (``optuna-dashboard results/optimise/<study>.journal``).
    """
    folder = Path(folder)
    return folder.parent / f"{folder.name}{JOURNAL_SUFFIX}"


def _folders_with(folder: Path, marker: str) -> list[Path]:
    return sorted(p for p in folder.glob("*") if (p / marker).is_file())


def study_folders(root: str | os.PathLike[str]) -> list[Path]:
    """The optimisation studies of a results root (folders holding a trials file), by name."""
    return _folders_with(Path(root) / STUDIES, STUDY_FILES.trials)


def calibration_folders(root: str | os.PathLike[str]) -> list[Path]:
    """The calibrations of a results root (folders holding a fit file), by name."""
    return _folders_with(Path(root) / CALIBRATIONS, CALIBRATION_FILES.fit)


def read_variants(root: str | os.PathLike[str], scenario: str) -> pa.Table | None:
    """The sweep's variants table of ``scenario`` (None when no sweep wrote one)."""
    fs, base = _filesystem(root)
    path = f"{base}/{variants_path(scenario)}"
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    return pq.read_table(path, filesystem=fs)


def variant_descriptions(root: str | os.PathLike[str], scenario: str) -> dict[str, str]:
    """Each sweep variant of ``scenario`` by its values, as a sweep sets them
    (``touchpoints.email.reach.use=0.1, interventions=recall``)."""
    table = read_variants(root, scenario)
    if table is None:
        return {}
    out = {}
    for row in table.to_pylist():
        vid = row.pop("variant")
        row.pop("scenario", None)
        out[str(vid)] = ", ".join(f"{k}={_value_text(v)}" for k, v in row.items()
                                  if v is not None)
    return out


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def read_file(root: str | os.PathLike[str], path: str) -> pa.Table:
    """Read one Parquet file of dataset ``root`` (``path`` as :func:`table_path` gives it)."""
    fs, _ = _filesystem(root)
    return pq.read_table(path, filesystem=fs)


def open_dataset(root: str | os.PathLike[str], table: str) -> ds.Dataset:
    """A pyarrow dataset over one table of a results folder (hive partitions).

    ``pyarrow.dataset`` (which imports pandas where it is installed) is imported here,
    on first use, so a run that only writes files starts without it.
    """
    import pyarrow.dataset as ds

    fs, base = _filesystem(root)
    return ds.dataset(f"{base}/{table}", format="parquet", filesystem=fs,
                      partitioning=ds.partitioning(PARTITION_SCHEMA, flavor="hive"))


def read_table(root: str | os.PathLike[str], table: str, **filters: Any) -> pa.Table:
    """Read one table of a results folder, optionally filtered by equality on columns.

    Example:
        >>> read_table("results", "kpis", scenario="dental_clinic")  # doctest: +SKIP
    """
    import pyarrow.dataset as ds

    dataset = open_dataset(root, table)
    expr = None
    for col, value in filters.items():
        term = ds.field(col) == value
        expr = term if expr is None else expr & term
    return dataset.to_table(filter=expr)
