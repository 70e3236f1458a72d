"""Real example rows of the results tables, for the docs' schema section, and their *structure* (column names,
the keys inside JSON columns, sweep.json's keys), which a test compares with what a real sweep writes: the
documentation cannot drift from the code.

Regenerate after a change to what a sweep writes (the test's failure message says so)::

    python -m raysweep.results.examples <a sweep's --out folder> docs/results-example.json
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from .schema import SCHEMAS
from .store import read_results, read_sweep_meta, resolve_results_dir

__all__ = ["example_from", "example_markdown", "structure"]

#: sweep.json keys whose inner keys are part of the documented structure (the rest vary with the config).
_META_NESTED = ("versions", "hardware", "protocol", "planned")


def _plain(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def example_from(path: str | Path) -> dict[str, Any]:
    """One row of each table (a tuning trial of a loss with hyperparameters, its first curve and case rows) and
    the sweep.json of the sweep in ``path`` (its ``--out`` folder or results/ folder), as plain JSON data."""
    rdir = resolve_results_dir(path)
    frames = read_results(rdir)
    trials = frames["trials"]
    tuned = trials[(trials["stage"] == "tune") & (trials["params"] != "{}")]
    trial = (tuned if len(tuned) else trials).sort_values("trial_id").iloc[0]
    out: dict[str, Any] = {"trials": {k: _plain(v) for k, v in trial.items()}}
    for table in ("curves", "cases"):
        rows = frames[table][frames[table]["trial_id"] == trial["trial_id"]]
        out[table] = {k: _plain(v) for k, v in rows.iloc[0].items()} if len(rows) else {}
    meta = read_sweep_meta(rdir)
    out["sweep.json"] = {k: meta[k] for k in sorted(meta) if k not in ("config_text", "datasets", "config")}
    return out


def _key_pattern(key: str) -> str:
    """A per-class key such as ``dice/spleen`` becomes ``dice/<class>``: the classes depend on the dataset."""
    return re.sub(r"^(dice|iou|hd95|miou)/.+$", r"\1/<class>", key)


def structure(example: dict[str, Any]) -> dict[str, list[str]]:
    """What must agree between the docs and the code: each table's columns, the keys inside its JSON columns, and
    sweep.json's keys (with the inner keys of versions, hardware, protocol and planned)."""
    out: dict[str, list[str]] = {}
    for table, schema in SCHEMAS.items():
        row = example.get(table) or {}
        if not row:
            continue
        out[table] = sorted(row)
        for field in schema:
            if (field.metadata or {}).get(b"json") and isinstance(row.get(field.name), str):
                value = json.loads(row[field.name])
                if isinstance(value, dict):
                    out[f"{table}.{field.name}"] = sorted({_key_pattern(k) for k in value})
    meta = example.get("sweep.json") or {}
    out["sweep.json"] = sorted(meta)
    for key in _META_NESTED:
        if isinstance(meta.get(key), dict):
            out[f"sweep.json.{key}"] = sorted(meta[key])
    return out


def example_markdown(example: dict[str, Any]) -> str:
    """The docs' example block: a real tuning trial's JSON columns and identity, and sweep.json's keys."""
    trial = example.get("trials") or {}
    shown = {k: trial.get(k) for k in ("trial_id", "stage", "dataset", "arch", "loss", "family", "seed", "proposal",
                                       "is_default", "status", "final_metric", "params", "versions")}
    for key in ("params", "versions"):
        if isinstance(shown.get(key), str):
            shown[key] = json.loads(shown[key])
    meta = example.get("sweep.json") or {}
    lines = ["Example (one real tuning trial's row, JSON columns decoded; from `docs/results-example.json`):", "",
             "```json", json.dumps(shown, indent=1, sort_keys=False, default=str), "```", "",
             "`sweep.json` keys: " + ", ".join(f"`{k}`" for k in sorted(meta)) + "; `hardware`: "
             + ", ".join(f"`{k}`" for k in sorted(meta.get("hardware") or {})) + "."]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m raysweep.results.examples <sweep --out folder> <example.json>")
    Path(sys.argv[2]).write_text(json.dumps(example_from(sys.argv[1]), indent=1, sort_keys=True, default=str) + "\n")
    print(f"wrote {sys.argv[2]}")
