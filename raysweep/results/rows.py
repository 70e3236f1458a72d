"""Rows of the results tables from what a trial reported: a pure mapping, no Ray, no torch, no I/O.

The sweep's results callback calls :func:`trial_rows` with the trial's tags (set when its config was composed, see
:func:`raysweep.config.compose_trial`), its last report, its curve rows and the environment recorded once per stage.
"""

from __future__ import annotations

import json
import time
from typing import Any, Mapping

from ..checks import finite, finite_or_none
from ..vocab import result_status

__all__ = ["ID_COLUMNS", "curve_row", "trial_rows"]

#: Identity columns every table carries (so any table can be grouped without a join).
ID_COLUMNS = ("sweep_id", "trial_id", "stage", "dataset", "variant", "arch", "loss", "replicate", "seed")
_CURVE_KEYS = ("training_iteration", "step", "epoch", "loss", "lr")
_PHASES = ("step", "data", "forward", "loss", "backward", "optimizer")


def curve_row(result: Mapping[str, Any]) -> dict[str, Any]:
    """The ``curves`` row of one report (identity columns excluded)."""
    primary = result.get("primary_metric", "dice")
    extra = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
             and k not in _CURVE_KEYS and "/" not in k}
    return {"training_iteration": result.get("training_iteration"), "step": result.get("step"),
            "epoch": result.get("epoch"), "time_s": result.get("time_total_s"),
            "metric": finite_or_none(result.get(primary)), "loss_value": finite_or_none(result.get("loss")),
            "lr": finite_or_none(result.get("lr")), "extra": json.dumps(extra)}


def trial_rows(sweep_id: str, trial_id: str, tags: Mapping[str, Any], result: Mapping[str, Any],
               curves: list[dict], *, versions: Mapping[str, str], error: str | None = None,
               now: float | None = None, started: float | None = None) -> tuple[list[dict], list[dict], list[dict]]:
    """``(trials, curves, cases)`` rows of one ended trial, in the schema of :mod:`raysweep.results.schema`.

    Args:
        tags: the trial's tags (``stage, dataset, variant, arch, loss, seed, params, is_default, proposal,
            budget_steps, title, family, in_survey``).
        result: its last report (empty if it never reported).
        curves: its ``curves`` rows (:func:`curve_row`), identity columns excluded.
        versions: package versions, recorded per row.
        error: the error summary of a trial that raised.
        now: the end time (seconds since the epoch; default: now).
        started: the start time (default: ``now`` less the trial's wall time; a packed run passes its pack's start,
            as its ``wall_s`` is its share of the pack's time).
    """
    now = time.time() if now is None else now
    budget = int(tags["budget_steps"])
    primary = result.get("primary_metric", "dice")
    steps_done = int(result.get("step") or 0)
    status = result_status(result.get("status"), steps_done, budget, errored=error is not None)
    ids = {"sweep_id": sweep_id, "trial_id": trial_id, **{k: tags.get(k) for k in ID_COLUMNS[2:]}}
    ids["variant"] = ids["variant"] or ""
    ids["replicate"] = int(ids["replicate"] or 0)
    curve_vals = [c["metric"] for c in curves if finite(c.get("metric"))]
    per_class = {k: v for k, v in result.items() if "/" in k and k.split("/")[0] in ("dice", "iou", "hd95", "miou")
                 and (v is None or isinstance(v, (int, float)))}
    wall = finite_or_none(result.get("time_total_s"))
    trial = {
        **ids,
        "loss_title": tags.get("title"),
        "family": tags.get("family"),
        "in_survey": tags.get("in_survey"),
        "params": json.dumps(dict(tags.get("params") or {}), sort_keys=True),
        "is_default": bool(tags.get("is_default")),
        "proposal": tags.get("proposal") if tags.get("stage") == "tune" else None,
        "status": status,
        "error": error or (f"diverged at step {result.get('diverged_step')}" if status == "diverged" else None)
        or (result.get("error") if isinstance(result.get("error"), str) else None),
        "budget_steps": budget,
        "steps_done": steps_done,
        "primary_metric": primary,
        "final_metric": finite_or_none(result.get(primary)),
        "best_metric": max(curve_vals) if curve_vals else finite_or_none(result.get(primary)),
        "dice": finite_or_none(result.get("dice")),
        "iou": finite_or_none(result.get("iou")),
        "miou": finite_or_none(result.get("miou")),
        "hd95": finite_or_none(result.get("hd95")),
        "per_class": json.dumps(per_class),
        **{f"{phase}_ms": finite_or_none(result.get(f"time/{phase}_ms")) for phase in _PHASES},
        "steps_per_s": finite_or_none(result.get("steps_per_s")),
        "peak_memory_mb": finite_or_none(result.get("peak_memory_mb")),
        "node": result.get("hostname") or result.get("node_ip"),
        "wall_s": wall,
        "ended_at": now,
        "started_at": started if started is not None else now - (wall or 0.0),
        "versions": json.dumps(dict(versions), sort_keys=True),
    }
    curve_rows = [{**ids, **c} for c in curves]
    # Both stages: tune trials' rows are scores on the selection cases, confirm trials' on the ranking cases, so
    # anyone can check from the tables that the two sets never meet.
    case_rows = [{**ids, **row} for row in json.loads(result["cases"])] if result.get("cases") else []
    return [trial], curve_rows, case_rows
