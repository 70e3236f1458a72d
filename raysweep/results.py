"""Sweep results on disk: the versioned Parquet schema, its atomic writer and its readers.

Layout (``results_dir`` is ``<out>/results`` of a sweep)::

    <results_dir>/sweep.json                          run metadata (see SWEEP_KEYS), rewritten atomically
    <results_dir>/trials/part-<trial_id>.parquet      one row: the trial
    <results_dir>/curves/part-<trial_id>.parquet      one row per report (evaluation) of the trial
    <results_dir>/cases/part-<trial_id>.parquet       per case and class scores (confirmation runs)
    <out>/overlays/<trial_id>/*.png                   prediction overlays (optional; see overlay_dirs)

One file per trial and table makes a write idempotent: writing a trial again replaces its files, so a resumed sweep
never duplicates or loses rows. Each file is written to a temporary name in the same folder and moved into place with
``os.replace`` (atomic on POSIX and Windows), and the ``trials`` file is written last: a trial's ``trials`` row
exists only once its curves and cases are complete, and the readers drop curve and case rows of trials without one
(leftovers of a writer killed half-way, replaced when the trial is written again).

Conventions: metrics are "higher is better" except ``hd95`` (lower is better, in the dataset's spacing units: mm
for Synapse, pixels otherwise); a missing value is null (NaN is stored as null); JSON columns hold JSON text with
sorted keys (a dict passed to the writer is serialised); timestamps are UTC. The schema version is stored in each
file's metadata (``raysweep.schema_version``); readers refuse files of a newer version.

The README's schema table is :func:`schema_markdown`; :data:`SCHEMAS` is the single source of truth for it, the
writer's validation and the report.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

SCHEMA_VERSION = 1
_META_KEY = b"raysweep.schema_version"

TABLES = ("trials", "curves", "cases")
from .vocab import FAMILIES, STAGES, STATUSES
PRIMARY_METRICS = ("dice", "miou")
#: Who proposed a tuning trial's configuration: the survey's ``default`` (every group's first trial), the sampler at
#: ``random`` (TPE's start-up trials), its ``model`` (TPE proper), or ``fixed`` (a loss with nothing to tune).
PROPOSALS = ("default", "random", "model", "fixed")

#: Allowed values of the enumerated columns (checked by the writer).
ENUMS: dict[str, tuple[str, ...]] = {"stage": STAGES, "status": STATUSES, "family": FAMILIES,
                                     "primary_metric": PRIMARY_METRICS, "proposal": PROPOSALS}

_TS = pa.timestamp("us", tz="UTC")


def _f(name: str, type_: pa.DataType, doc: str, nullable: bool = True, json_text: bool = False) -> pa.Field:
    meta = {b"doc": doc.encode()}
    if json_text:
        meta[b"json"] = b"1"
    return pa.field(name, type_, nullable=nullable, metadata=meta)


# Identity columns, shared by the three tables so that any of them can be grouped without a join.
_ID = [
    _f("sweep_id", pa.string(), "sweep identifier (sweep.json's sweep_id)", False),
    _f("trial_id", pa.string(), "Ray Tune trial id; unique within the sweep; letters, digits, `_`, `-`, `.`", False),
    _f("stage", pa.string(), "`tune` (search, possibly early-stopped) or `confirm` (full budget, K seeds)", False),
    _f("dataset", pa.string(), "dataset name (`synthetic`, `synapse`, `cityscapes`)", False),
    _f("arch", pa.string(), "model name (`cnn`, `transformer`, or any model key)", False),
    _f("loss", pa.string(), "loss registry name", False),
]
_SEED = _f("seed", pa.int64(), "training seed of the trial", False)

TRIALS = pa.schema(_ID + [
    _f("loss_title", pa.string(), "the loss's display name (registry title); the report falls back to `loss`"),
    _f("family", pa.string(), "`pixel`, `region`, `boundary` or `combination` (the survey's taxonomy)", False),
    _f("in_survey", pa.bool_(), "the loss is one of the survey's 25 (false: a baseline)", False),
    _f("params", pa.string(), "the trial's loss hyperparameters and companion weights, flat "
       "(`{\"alpha\": 0.3, \"companions.ce.weight\": 0.5}`)", False, json_text=True),
    _f("is_default", pa.bool_(), "the survey-default configuration of its group. In `confirm`, a group may confirm "
       "its defaults beside its tuned best: the report then ranks the non-default rows and measures the tuning gain "
       "on the default ones", False),
    _SEED,
    _f("proposal", pa.string(), "tune trials: who proposed the configuration: `default` (the survey's defaults, "
       "first in every group), `random` (the sampler's start-up trials), `model` (TPE) or `fixed` (nothing to "
       "tune); null for confirm trials"),
    _f("status", pa.string(), "`completed`, `diverged` (non-finite loss), `oom`, `error` or `stopped` (ASHA)", False),
    _f("error", pa.string(), "why the trial did not complete (exception text, diverged step, ...)"),
    _f("budget_steps", pa.int64(), "optimiser steps the trial was allotted", False),
    _f("steps_done", pa.int64(), "optimiser steps it ran", False),
    _f("primary_metric", pa.string(), "name of the primary metric: `dice` or `miou` (higher is better)", False),
    _f("final_metric", pa.float64(), "primary metric at the last report (diverged: 0.0, the worst value)"),
    _f("best_metric", pa.float64(), "best primary metric over the trial's reports"),
    _f("dice", pa.float64(), "mean Dice over evaluated classes and cases, last report"),
    _f("iou", pa.float64(), "mean per-case IoU, last report"),
    _f("miou", pa.float64(), "dataset-level mIoU (confusion matrix), last report"),
    _f("hd95", pa.float64(), "mean HD95 (lower is better), last report; null where not computed"),
    _f("per_class", pa.string(), "`{\"dice/<class>\": v, \"iou/<class>\": v, \"hd95/<class>\": v, ...}`, last report",
       json_text=True),
    _f("step_ms", pa.float64(), "wall time per training step, ms (the phases below sum to about this)"),
    _f("data_ms", pa.float64(), "waiting for the batch, ms per step"),
    _f("forward_ms", pa.float64(), "model forward, ms per step"),
    _f("loss_ms", pa.float64(), "loss (objective) computation, ms per step"),
    _f("backward_ms", pa.float64(), "backward pass, ms per step"),
    _f("optimizer_ms", pa.float64(), "optimiser step, ms per step"),
    _f("steps_per_s", pa.float64(), "training steps per second (evaluation excluded)"),
    _f("peak_memory_mb", pa.float64(), "peak memory, MiB (CUDA: peak allocated; CPU: peak process RSS)"),
    _f("node", pa.string(), "host (or Ray node id) the trial ran on"),
    _f("wall_s", pa.float64(), "trial wall time, seconds"),
    _f("started_at", _TS, "trial start, UTC"),
    _f("ended_at", _TS, "trial end, UTC"),
    _f("versions", pa.string(), "`{\"torch\": ..., \"smp\": ..., \"raysweep\": ...}`", json_text=True),
])

CURVES = pa.schema(_ID + [
    _SEED,
    _f("training_iteration", pa.int64(), "1-based report counter of the trial", False),
    _f("step", pa.int64(), "optimiser steps done at the report", False),
    _f("epoch", pa.float64(), "epochs done (fractional)"),
    _f("time_s", pa.float64(), "seconds since the trial started"),
    _f("metric", pa.float64(), "primary metric at the report"),
    _f("loss_value", pa.float64(), "mean training loss since the previous report"),
    _f("lr", pa.float64(), "learning rate at the report"),
    _f("extra", pa.string(), "other numeric metrics of the report (`{\"dice\": v, \"loss/ce\": v, ...}`)",
       json_text=True),
])

CASES = pa.schema(_ID + [
    _SEED,
    _f("case", pa.string(), "case id (volume or image): of the selection split for `tune` trials, of the ranking "
       "split for `confirm` trials (sweep.json's `protocol` names both; they never share a case)", False),
    _f("class_id", pa.int64(), "class id", False),
    _f("class_name", pa.string(), "class name", False),
    _f("dice", pa.float64(), "Dice of the class in the case"),
    _f("iou", pa.float64(), "IoU of the class in the case"),
    _f("hd95", pa.float64(), "HD95 of the class in the case (lower is better); null where not computed"),
    _f("gt_fraction", pa.float64(), "share of the case's labelled pixels/voxels that belong to the class in the "
       "ground truth (object size; the report groups classes by it); null where unknown"),
])

#: table name -> pyarrow schema.
SCHEMAS: dict[str, pa.Schema] = {"trials": TRIALS, "curves": CURVES, "cases": CASES}

#: sweep.json keys the writer knows: key -> (type(s), description). Other keys are kept as they are.
SWEEP_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "schema_version": ((int,), "SCHEMA_VERSION of the files (set by the writer)"),
    "sweep_id": ((str,), "sweep identifier, as in the tables"),
    "config": ((dict,), "the validated sweep config"),
    "config_text": ((str,), "the config file as given (YAML text)"),
    "started_at": ((str,), "ISO 8601, UTC"),
    "ended_at": ((str, type(None)), "ISO 8601, UTC; null while running or after an interruption"),
    "wall_s": ((int, float, type(None)), "sweep wall time so far, seconds"),
    "git_commit": ((str, type(None)), "commit of the raysweep checkout (with `-dirty` if modified)"),
    "versions": ((dict,), "package versions: python, torch, ray, optuna, smp, raysweep, ..."),
    "hardware": ((dict,), "CPUs, GPUs (names, memory), nodes"),
    "planned": ((dict,), "planned trials per stage: `{\"tune\": n, \"confirm\": n}`"),
    "groups": ((list,), "planned (dataset, arch, loss) groups: `[{\"dataset\", \"arch\", \"loss\"}, ...]`"),
    "protocol": ((dict,), "the ranking protocol: `selection` and `ranking` (per dataset: split and case ids), "
                 "`early_stopping` (scope, rungs), `tuning` (quota, start-up trials), `confirmation` (seeds), "
                 "`power` (per cell: the smallest adjusted p-value the design allows)"),
    "datasets": ((dict,), "per dataset, `raysweep data inspect`'s statistics (classes, pixel shares, objects per "
                 "case, spacing, channels, warnings), or `skipped` with the reason"),
}

_TRIAL_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


# -- schema documentation ----------------------------------------------------------------------------------------

def _type_name(t: pa.DataType) -> str:
    return {pa.string(): "string", pa.int64(): "int64", pa.float64(): "float64", pa.bool_(): "bool",
            _TS: "timestamp (UTC)"}.get(t, str(t))


def schema_markdown() -> str:
    """The schema as markdown (one table per Parquet table, then sweep.json): what the README shows."""
    out = [f"Schema version {SCHEMA_VERSION}. Nullable columns are marked `?`; JSON columns hold JSON text. Enumerated "
           "values: " + "; ".join(f"`{k}` in {', '.join(f'`{v}`' for v in vals)}" for k, vals in ENUMS.items()) + "."]
    for name, schema in SCHEMAS.items():
        out += ["", f"**`{name}`** (`<results>/{name}/part-<trial_id>.parquet`)", "",
                "| column | type | meaning |", "|---|---|---|"]
        for f in schema:
            t = _type_name(f.type) + (" JSON" if f.metadata.get(b"json") else "") + ("?" if f.nullable else "")
            out.append(f"| `{f.name}` | {t} | {f.metadata[b'doc'].decode()} |")
    out += ["", "**`sweep.json`** (`<results>/sweep.json`)", "", "| key | type | meaning |", "|---|---|---|"]
    for key, (types, doc) in SWEEP_KEYS.items():
        out.append(f"| `{key}` | {' or '.join('null' if t is type(None) else t.__name__ for t in types)} | {doc} |")
    return "\n".join(out)


# -- writing -----------------------------------------------------------------------------------------------------

def _json_text(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not valid JSON text ({exc}): {value[:80]!r}") from None
        return value
    try:
        return json.dumps(_jsonable(value), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: cannot be stored as JSON ({exc})") from None


def _jsonable(x: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, recursively; JSON has no NaN."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item") and callable(x.item) and getattr(x, "ndim", 1) == 0:
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _timestamp(value: Any, where: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=timezone.utc)  # seconds since the epoch
    if isinstance(value, str):
        try:
            return _timestamp(datetime.fromisoformat(value.replace("Z", "+00:00")), where)
        except ValueError:
            pass
    raise ValueError(f"{where}: expects a timestamp (datetime, ISO 8601 text or epoch seconds), got {value!r}")


def _cell(f: pa.Field, value: Any, where: str) -> Any:
    """Check and normalise one value for column ``f``; raise ValueError naming ``where`` (table, row, column)."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()  # numpy scalar
    t = f.type
    if t == pa.float64():
        if value is None:
            pass
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
            if math.isnan(value):
                value = None  # one spelling of "missing"
        else:
            raise ValueError(f"{where}: expects a number, got {value!r}")
    elif t == pa.int64():
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{where}: expects an integer, got {value!r}")
    elif t == pa.bool_():
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"{where}: expects true or false, got {value!r}")
    elif t == _TS:
        value = _timestamp(value, where)
    elif f.metadata.get(b"json"):
        value = _json_text(value, where)
    elif t == pa.string():
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{where}: expects text, got {value!r}")
    if value is None and not f.nullable:
        raise ValueError(f"{where}: required, got null")
    if value is not None and f.name in ENUMS and value not in ENUMS[f.name]:
        raise ValueError(f"{where}: must be one of {', '.join(ENUMS[f.name])}, got {value!r}")
    return value


def validate_rows(table: str, rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Check rows (dicts, column -> value) against ``SCHEMAS[table]`` and return them as a pyarrow Table.

    Missing nullable columns are null; missing required columns, unknown columns, wrong types and values outside
    an enumeration raise ValueError naming the table, the row index and the column. Dicts and lists given for JSON
    columns are serialised; NaN in a float column becomes null.
    """
    if table not in SCHEMAS:
        raise ValueError(f"unknown table {table!r}; choose one of {', '.join(TABLES)}")
    schema = SCHEMAS[table]
    names = set(schema.names)
    columns: dict[str, list[Any]] = {n: [] for n in schema.names}
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"{table} row {i}: expects a mapping of column -> value, got {type(row).__name__}")
        unknown = sorted(set(row) - names)
        if unknown:
            raise ValueError(f"{table} row {i}: unknown column(s) {', '.join(map(repr, unknown))} "
                             f"(schema version {SCHEMA_VERSION}; see raysweep.results.schema_markdown())")
        for f in schema:
            columns[f.name].append(_cell(f, row.get(f.name), f"{table} row {i}, column {f.name!r}"))
    if table == "trials":
        for tid in columns["trial_id"]:
            _check_trial_id(tid)
    return pa.Table.from_pydict(columns, schema=_with_version(schema))


def _with_version(schema: pa.Schema) -> pa.Schema:
    return schema.with_metadata({_META_KEY: str(SCHEMA_VERSION).encode()})


def _check_trial_id(trial_id: Any) -> str:
    if not isinstance(trial_id, str) or not _TRIAL_ID.match(trial_id):
        raise ValueError(f"trial_id {trial_id!r} is not usable as a file name: use letters, digits, '_', '-', '.'")
    return trial_id


def part_path(results_dir: str | Path, table: str, trial_id: str) -> Path:
    """``<results_dir>/<table>/part-<trial_id>.parquet``: the file holding one trial's rows of ``table``."""
    return Path(results_dir) / table / f"part-{_check_trial_id(trial_id)}.parquet"


def _atomic_write(path: Path, write) -> None:
    """Write ``path`` by ``write(tmp_path)`` then ``os.replace``: readers see the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_trial_rows(results_dir: str | Path, trial_id: str, trial_row: Mapping[str, Any] | Sequence[Mapping],
                     curves_rows: Iterable[Mapping[str, Any]] = (),
                     cases_rows: Iterable[Mapping[str, Any]] = ()) -> dict[str, Path | None]:
    """Write (or rewrite) one trial's rows of the three tables, atomically and idempotently.

    Args:
        results_dir: ``<out>/results``.
        trial_id: the trial; its files are ``<table>/part-<trial_id>.parquet``.
        trial_row: the ``trials`` row (a dict, or a sequence holding exactly one dict).
        curves_rows, cases_rows: the trial's ``curves`` and ``cases`` rows. Identity columns (sweep_id, trial_id,
            stage, dataset, arch, loss, seed) may be left out: they are copied from the trial row; given, they must
            agree with it.

    Returns:
        table -> the file written, or None where the trial has no rows (an older file of that table is removed).

    Raises:
        ValueError: a row does not fit the schema (the message names the table, row and column), or identity
            columns disagree with ``trial_id`` / the trial row.

    All rows are validated before anything is written. ``curves`` and ``cases`` are written before ``trials``, so a
    trial's ``trials`` row marks its rows as complete.
    """
    _check_trial_id(trial_id)
    if isinstance(trial_row, Mapping):
        trial_rows = [trial_row]
    else:
        trial_rows = list(trial_row)
        if len(trial_rows) != 1:
            raise ValueError(f"trial {trial_id}: expects exactly one trials row, got {len(trial_rows)}")
    trial = dict(trial_rows[0])
    trial.setdefault("trial_id", trial_id)
    if trial["trial_id"] != trial_id:
        raise ValueError(f"trials row 0, column 'trial_id': {trial['trial_id']!r} differs from trial_id {trial_id!r}")
    tables = {"trials": validate_rows("trials", [trial])}
    ident = {k: tables["trials"].column(k)[0].as_py() for k in ("sweep_id", "trial_id", "stage", "dataset", "arch",
                                                                "loss", "seed")}
    for table, rows in (("curves", curves_rows), ("cases", cases_rows)):
        filled = []
        for i, row in enumerate(rows):
            row = dict(row)
            for k, v in ident.items():
                if k in row and row[k] != v:
                    raise ValueError(f"{table} row {i}, column {k!r}: {row[k]!r} differs from the trial's {v!r}")
                row[k] = v
            filled.append(row)
        tables[table] = validate_rows(table, filled)
    written: dict[str, Path | None] = {}
    for table in ("curves", "cases", "trials"):
        path = part_path(results_dir, table, trial_id)
        if tables[table].num_rows == 0:
            path.unlink(missing_ok=True)
            written[table] = None
            continue
        _atomic_write(path, lambda tmp, t=tables[table]: pq.write_table(t, tmp, compression="zstd"))
        written[table] = path
    return written


def remove_trial_rows(results_dir: str | Path, trial_id: str) -> None:
    """Delete one trial's files of the three tables (``trials`` first, so that its row never outlives its curves)."""
    for table in ("trials", "curves", "cases"):
        part_path(results_dir, table, trial_id).unlink(missing_ok=True)


def remove_incomplete(results_dir: str | Path) -> list[Path]:
    """Remove what a writer killed mid-trial leaves: temporary files of :func:`write_trial_rows`, and ``curves`` /
    ``cases`` files of a trial without a ``trials`` file (written last). Readers skip both; this frees the space.
    Only call it while no writer runs (the sweep driver does, at the start of each session). Returns the paths."""
    results_dir = Path(results_dir)
    removed = []
    for table in TABLES:
        removed += [p for p in (results_dir / table).glob(".part-*.tmp")]
    complete = {p.name for p in (results_dir / "trials").glob("part-*.parquet")}
    for table in ("curves", "cases"):
        removed += [p for p in (results_dir / table).glob("part-*.parquet") if p.name not in complete]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def stage_trial_ids(results_dir: str | Path, stage: str) -> set[str]:
    """Ids of the trials of ``stage`` that have a ``trials`` row."""
    files = sorted(str(p) for p in (Path(results_dir) / "trials").glob("part-*.parquet"))
    if not files:
        return set()
    table = pads.dataset(files, schema=TRIALS, format="parquet").to_table(columns=["trial_id", "stage"])
    return {t for t, s in zip(table.column("trial_id").to_pylist(), table.column("stage").to_pylist()) if s == stage}


# -- reading -----------------------------------------------------------------------------------------------------

def resolve_results_dir(path: str | Path) -> Path:
    """Accept a sweep's ``--out`` folder or its ``results`` folder; return the folder holding the tables.

    Raises:
        FileNotFoundError: neither ``path`` nor ``path/results`` holds a ``trials`` table or ``sweep.json``.
    """
    path = Path(path).expanduser()
    for candidate in (path, path / "results"):
        if (candidate / "trials").is_dir() or (candidate / "sweep.json").is_file():
            return candidate
    raise FileNotFoundError(f"no sweep results under {path}: expected {path}/trials/*.parquet or {path}/sweep.json "
                            "(pass the --out folder of `raysweep run`, or its results/ folder)")


def _read_table(results_dir: Path, table: str) -> pa.Table:
    schema = SCHEMAS[table]
    files = sorted(str(p) for p in (results_dir / table).glob("part-*.parquet"))
    if not files:
        return schema.empty_table()
    # One dataset scan over all parts (multi-threaded; thousands of one-row files read several times faster than
    # file by file). The explicit schema fills columns an older file lacks with nulls: columns are only ever
    # added, never renamed.
    dataset = pads.dataset(files, schema=schema, format="parquet")
    for fragment in dataset.get_fragments():
        version = int((fragment.physical_schema.metadata or {}).get(_META_KEY, b"0"))
        if version > SCHEMA_VERSION:
            raise ValueError(f"{fragment.path}: schema version {version} is newer than this raysweep's "
                             f"({SCHEMA_VERSION}); upgrade raysweep to read it")
    return dataset.to_table()


def read_results(results_dir: str | Path) -> dict[str, Any]:
    """Read the three tables as pandas DataFrames: ``{"trials": df, "curves": df, "cases": df}``.

    Every frame has the schema's columns in schema order (empty frames too); timestamps are tz-aware UTC, nulls are
    NaN/None. Curve and case rows of trials without a ``trials`` row (a writer interrupted mid-trial) are dropped.
    Only pandas and pyarrow are imported: this runs without Ray or torch.
    """
    results_dir = Path(results_dir)
    frames = {t: _read_table(results_dir, t).to_pandas() for t in TABLES}
    done = set(frames["trials"]["trial_id"])
    for t in ("curves", "cases"):
        frames[t] = frames[t][frames[t]["trial_id"].isin(done)].reset_index(drop=True)
    return frames


def overlay_dirs(results_dir: str | Path, trial_id: str) -> list[Path]:
    """Folders where a trial's overlay PNGs may be, existing ones only, most specific first.

    The sweep writes them to ``<out>/overlays/<trial_id>/``, i.e. beside ``<out>/results``;
    ``<results_dir>/overlays/<trial_id>/`` is also accepted.
    """
    results_dir = Path(results_dir)
    candidates = [results_dir / "overlays" / trial_id, results_dir.parent / "overlays" / trial_id]
    return [d for d in candidates if d.is_dir()]


# -- sweep.json --------------------------------------------------------------------------------------------------

def sweep_json_path(results_dir: str | Path) -> Path:
    return Path(results_dir) / "sweep.json"


def write_sweep_meta(results_dir: str | Path, meta: Mapping[str, Any]) -> Path:
    """Write ``<results_dir>/sweep.json`` atomically (see :data:`SWEEP_KEYS`); ``schema_version`` is set here.

    Known keys are type-checked (ValueError naming the key); other keys are written as they are. Datetimes are
    written as ISO 8601 text, NaN as null.
    """
    meta = {k: (v.astimezone(timezone.utc).isoformat() if isinstance(v, datetime) else v) for k, v in meta.items()}
    meta["schema_version"] = SCHEMA_VERSION
    for key, (types, _) in SWEEP_KEYS.items():
        if key in meta and not isinstance(meta[key], types) or isinstance(meta.get(key), bool):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ValueError(f"sweep.json key {key!r}: expects {names}, got {meta[key]!r}")
    planned = meta.get("planned", {})
    for stage, n in planned.items():
        if stage not in STAGES or not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"sweep.json key 'planned': expects {{stage: count}} with stage in {STAGES} and a "
                             f"count >= 0, got {stage!r}: {n!r}")
    text = json.dumps(_jsonable(meta), indent=1, sort_keys=True, allow_nan=False)
    path = sweep_json_path(results_dir)
    _atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n"))
    return path


def read_sweep_meta(results_dir: str | Path) -> dict[str, Any]:
    """``<results_dir>/sweep.json`` as a dict; ``{}`` if the file does not exist yet."""
    path = sweep_json_path(results_dir)
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expects a JSON object, got {type(meta).__name__}")
    return meta


def update_sweep_meta(results_dir: str | Path, **changes: Any) -> dict[str, Any]:
    """Read sweep.json, apply ``changes`` (e.g. ``ended_at=..., wall_s=...``), write it back; return the result."""
    meta = {**read_sweep_meta(results_dir), **changes}
    write_sweep_meta(results_dir, meta)
    return read_sweep_meta(results_dir)


__all__ = [
    "CASES", "CURVES", "ENUMS", "FAMILIES", "SCHEMAS", "SCHEMA_VERSION", "STAGES", "STATUSES", "SWEEP_KEYS", "TABLES",
    "TRIALS", "overlay_dirs", "part_path", "read_results", "read_sweep_meta", "remove_trial_rows",
    "resolve_results_dir", "schema_markdown", "stage_trial_ids", "update_sweep_meta", "validate_rows",
    "write_sweep_meta", "write_trial_rows",
]
