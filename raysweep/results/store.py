"""Sweep results on disk: the atomic, idempotent writer and the readers (pandas frames, sweep.json)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from ..checks import jsonable
from .schema import (META_KEY, SCHEMA_VERSION, SCHEMAS, STAGES, SWEEP_KEYS, TABLES, TRIALS, check_trial_id,
                     upgrade_params, validate_rows)
from .rows import ID_COLUMNS

def part_path(results_dir: str | Path, table: str, trial_id: str) -> Path:
    """``<results_dir>/<table>/part-<trial_id>.parquet``: the file holding one trial's rows of ``table``."""
    return Path(results_dir) / table / f"part-{check_trial_id(trial_id)}.parquet"


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
    check_trial_id(trial_id)
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
    ident = {k: tables["trials"].column(k)[0].as_py() for k in ID_COLUMNS}
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


def read_table(results_dir: str | Path, table: str) -> pa.Table:
    """One table of a sweep's results (every part file) as a pyarrow Table in the schema's columns; empty when
    there are no files. Its schema metadata states the oldest part file's schema version (this raysweep's when there
    is none): a copy is as old as its oldest part, as readers upgrade by the version a file states. Raises
    ValueError for a file of a newer schema version."""
    results_dir = Path(results_dir)
    schema = SCHEMAS[table]
    files = sorted(str(p) for p in (results_dir / table).glob("part-*.parquet"))
    if not files:
        return with_version(schema.empty_table(), SCHEMA_VERSION)
    # One dataset scan over all parts (multi-threaded; thousands of one-row files read several times faster than
    # file by file). The explicit schema fills columns an older file lacks with nulls: columns are only ever
    # added, never renamed.
    dataset = pads.dataset(files, schema=schema, format="parquet")
    versions = []
    for fragment in dataset.get_fragments():
        version = int((fragment.physical_schema.metadata or {}).get(META_KEY, b"0"))
        if version > SCHEMA_VERSION:
            raise ValueError(f"{fragment.path}: schema version {version} is newer than this raysweep's "
                             f"({SCHEMA_VERSION}); upgrade raysweep to read it")
        versions.append(version)
    return with_version(dataset.to_table(), min(versions))


def table_version(data: pa.Table) -> int:
    """The schema version a table from :func:`read_table` states."""
    return int((data.schema.metadata or {}).get(META_KEY, b"0"))


def with_version(data: pa.Table, version: int) -> pa.Table:
    """``data`` stating schema ``version`` in its metadata (what :func:`write_compact_table` writes)."""
    return data.replace_schema_metadata({**(data.schema.metadata or {}), META_KEY: str(version).encode()})


def read_results(results_dir: str | Path) -> dict[str, Any]:
    """Read the three tables as pandas DataFrames: ``{"trials": df, "curves": df, "cases": df}``.

    Every frame has the schema's columns in schema order (empty frames too); timestamps are tz-aware UTC, nulls are
    NaN/None. Curve and case rows of trials without a ``trials`` row (a writer interrupted mid-trial) are dropped.
    Only pandas and pyarrow are imported: this runs without Ray or torch.
    """
    results_dir = Path(results_dir)
    frames = {t: read_table(results_dir, t).to_pandas() for t in TABLES}
    frames["trials"]["params"] = frames["trials"]["params"].map(upgrade_params)  # version 1 files
    for frame in frames.values():  # files written before variants (replicates) existed
        frame["variant"] = frame["variant"].fillna("").astype(object)
        frame["replicate"] = frame["replicate"].fillna(0).astype("int64")
    done = set(frames["trials"]["trial_id"])
    for t in ("curves", "cases"):
        frames[t] = frames[t][frames[t]["trial_id"].isin(done)].reset_index(drop=True)
    return frames


def write_compact_table(dest: str | Path, table: str, data: pa.Table) -> Path:
    """Write ``data`` (from :func:`read_table`, stating its schema version) as ``dest/<table>/part-compact.parquet``,
    zstd at level 19."""
    path = Path(dest) / table / "part-compact.parquet"
    _atomic_write(path, lambda tmp: pq.write_table(data, tmp, compression="zstd", compression_level=19))
    return path


def write_compact_copy(results_dir: str | Path, dest: str | Path) -> Path:
    """Copy a finished sweep's results to ``dest``: one file per table (``<table>/part-compact.parquet``, zstd at
    level 19) and ``sweep.json``. :func:`read_results` reads the copy exactly as the original, at a fraction of the
    size of one file per trial: for keeping a sweep's tables where space counts (a repository). Returns ``dest``."""
    results_dir, dest = resolve_results_dir(results_dir), Path(dest)
    for table in TABLES:
        write_compact_table(dest, table, read_table(results_dir, table))
    if sweep_json_path(results_dir).is_file():
        (dest / "sweep.json").write_bytes(sweep_json_path(results_dir).read_bytes())
    return dest


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
    text = json.dumps(jsonable(meta), indent=1, sort_keys=True, allow_nan=False)
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


