"""The Parquet schema of the results: three tables, their columns and enums, sweep.json's keys, row validation.

:data:`SCHEMAS` is the single source of truth for the writer's validation, the report and the docs' schema table
(:func:`schema_markdown`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from ..checks import jsonable
from ..vocab import FAMILIES, STAGES, STATUSES

#: 2: search dimensions keep their bare names in ``params`` (``alpha``, ``companion_weight``); version 1 wrote
#: ``loss/alpha`` and ``companion/weight`` (:func:`upgrade_params` maps them when reading).
SCHEMA_VERSION = 2
#: The Parquet schema metadata key that holds a part file's ``SCHEMA_VERSION``.
META_KEY = b"raysweep.schema_version"

TABLES = ("trials", "curves", "cases")
PRIMARY_METRICS = ("dice", "miou")
#: Who proposed a tuning trial's configuration: the survey's ``default`` (every group's first trial), a ``branch`` of
#: the stratified start-up (the defaults with one categorical choice changed, so every branch is tried), the sampler
#: at ``random`` (TPE's start-up trials), its ``model`` (TPE proper), or ``fixed`` (a loss with nothing to tune).
PROPOSALS = ("default", "branch", "random", "model", "fixed")

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
    _f("variant", pa.string(), "the dataset's variant (`datasets.<name>.variants` of the sweep config: a label "
       "corruption or test-time shift; sweep.json's `variants` records each); empty for the dataset as it is, "
       "and when read from files written before variants existed"),
    _f("arch", pa.string(), "model name (`cnn`, `transformer`, or any model key)", False),
    _f("loss", pa.string(), "loss registry name", False),
    _f("replicate", pa.int64(), "which independent replicate of its group's whole pipeline (own Optuna study, own "
       "early-stopping bracket, own training seeds; `tuning.replicates`) the trial belongs to, 0-based; 0 when read "
       "from files written before replicates existed"),
]
_SEED = _f("seed", pa.int64(), "training seed of the trial", False)

TRIALS = pa.schema(_ID + [
    _f("loss_title", pa.string(), "the loss's display name (registry title); the report falls back to `loss`"),
    _f("family", pa.string(), "`pixel`, `region`, `boundary` or `combination` (the survey's taxonomy)", False),
    _f("in_survey", pa.bool_(), "the loss is one of the survey's 25 (false: a baseline)", False),
    _f("params", pa.string(), "the tuned point: the loss's hyperparameters by their own names and the pairing's "
       "`companion_weight` (`{\"alpha\": 0.3, \"companion_weight\": 0.5}`); `{}` for a loss with nothing to tune",
       False, json_text=True),
    _f("is_default", pa.bool_(), "the survey-default configuration of its group. In `confirm`, a group may confirm "
       "its defaults beside its tuned best: the report then ranks the non-default rows and measures the tuning gain "
       "on the default ones", False),
    _SEED,
    _f("proposal", pa.string(), "tune trials: who proposed the configuration: `default` (the survey's defaults, "
       "first in every group), `branch` (the stratified start-up: the defaults with one categorical choice changed), "
       "`random` (the sampler's start-up trials), `model` (TPE) or `fixed` (nothing to tune); null for confirm "
       "trials"),
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
    _f("wall_s", pa.float64(), "trial wall time, seconds (a packed run: its pack's time shared equally among the "
       "members, so that the column still adds up to the machine time)"),
    _f("started_at", _TS, "trial start, UTC"),
    _f("ended_at", _TS, "trial end, UTC"),
    _f("versions", pa.string(), "package versions: `{\"raysweep\": ..., \"torch\": ..., \"ray\": ..., \"optuna\": ..., "
       "\"segmentation-models-pytorch\": ..., \"pyarrow\": ..., \"numpy\": ...}`", json_text=True),
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
    "wall_s": ((int, float, type(None)), "sweep wall time so far, seconds: the finished stages of every session of "
               "a resumed sweep, summed (a stage stopped part-way counts from where it resumed)"),
    "git_commit": ((str, type(None)), "commit of the raysweep checkout (with `-dirty` if it has uncommitted "
                   "changes); null outside a git checkout"),
    "versions": ((dict,), "package versions as in the trials' `versions`, plus `python`"),
    "hardware": ((dict,), "the Ray cluster: `platform` (of the driver), `cpus`, `gpus` (counts), `nodes`, "
                 "`concurrent_trials`"),
    "planned": ((dict,), "planned trials per stage: `{\"tune\": n, \"confirm\": n}`"),
    "groups": ((list,), "planned (dataset, variant, arch, loss, replicate) groups: `[{\"dataset\", \"variant\", "
               "\"arch\", \"loss\", \"replicate\"}, ...]`"),
    "protocol": ((dict,), "the ranking protocol: `selection` and `ranking` (per dataset: split and case ids), "
                 "`early_stopping` (scope, rungs), `tuning` (quota, start-up trials, replicates), `confirmation` (seeds per "
                 "replicate), "
                 "`power` (per cell: the smallest adjusted p-value the design allows)"),
    "spaces": ((dict,), "per loss, its group's search space: `{name: {type, low, high, log} or {type, choices}}`, "
               "`companion_weight` included when the pairing adds one; the report reads bounds and scales from it"),
    "variants": ((dict,), "per dataset with variants, each variant's `axis` and `level` (null for the clean "
                 "reference) and `overrides` (the option sections it merges onto the dataset's)"),
    "datasets": ((dict,), "per dataset, `raysweep data inspect`'s statistics (classes, pixel shares, objects per "
                 "case, spacing, channels, warnings), or `skipped` with the reason"),
    "parts": ((list,), "only in a sweep merged from parts run apart (`raysweep merge`): each part's `sweep_id`, "
              "`cells`, `replicates` (`[first, last]`), `started_at`, `ended_at` and `wall_s`"),
}

_TRIAL_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


# -- schema documentation ----------------------------------------------------------------------------------------

def _type_name(t: pa.DataType) -> str:
    return {pa.string(): "string", pa.int64(): "int64", pa.float64(): "float64", pa.bool_(): "bool",
            _TS: "timestamp (UTC)"}.get(t, str(t))


def schema_markdown() -> str:
    """The schema as markdown (one table per Parquet table, then sweep.json): what docs/results.md shows."""
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
        return json.dumps(jsonable(value), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: cannot be stored as JSON ({exc})") from None



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
            check_trial_id(tid)
    return pa.Table.from_pydict(columns, schema=_with_version(schema))


def _with_version(schema: pa.Schema) -> pa.Schema:
    return schema.with_metadata({META_KEY: str(SCHEMA_VERSION).encode()})


def check_trial_id(trial_id: Any) -> str:
    """``trial_id`` unchanged when it is usable as a part file's name; ValueError otherwise."""
    if not isinstance(trial_id, str) or not _TRIAL_ID.match(trial_id):
        raise ValueError(f"trial_id {trial_id!r} is not usable as a file name: use letters, digits, '_', '-', '.'")
    return trial_id


def upgrade_params(text: str | None) -> str | None:
    """A ``params`` JSON text in the current naming: version 1's ``loss/<name>`` becomes ``<name>`` and
    ``companion/weight`` becomes ``companion_weight`` (version 2 names are returned unchanged)."""
    if not text or "/" not in text:
        return text
    params = json.loads(text)
    renamed = {("companion_weight" if k == "companion/weight" else k.split("/", 1)[1] if k.startswith("loss/") else k): v
               for k, v in params.items()}
    return json.dumps(renamed, sort_keys=True)
