"""The run's records: ``state.json`` (which stages are done, the best points found: a rerun skips finished work),
``sweep.json`` (the config, the software and machine, the groups, the spaces, the protocol and the data), and the
environment every trial row repeats."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..config import (SweepConfig, confirmation_seeds, n_startup_trials, power_limits, protocol_cases, tune_quota,
                      tuning_seed)
from ..search import GroupSpace
from .outdir import iso_time
from .scheduler import asha_rungs

__all__ = ["dataset_statistics", "environment", "evaluations", "protocol", "read_state", "sweep_meta",
           "write_state"]


def read_state(path: Path) -> dict:
    """A sweep's ``state.json`` ({} before its first run)."""
    return json.loads(path.read_text()) if path.exists() else {}


def write_state(path: Path, state: dict) -> None:
    """Write ``state.json`` atomically (a killed driver leaves the previous one)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)


def evaluations(cfg: SweepConfig) -> int:
    """Reports per tuning trial (ASHA's max_t), from the trial config's steps and evaluation interval."""
    full = cfg.resolved_trial
    steps, every = full["train"]["steps"], full["eval"]["every"]
    return 1 if not every else math.ceil(steps / every)


def sweep_meta(cfg: SweepConfig, state: dict, env: dict[str, Any], cluster: dict, slots: int,
               data_check: dict[str, Any] | None) -> dict[str, Any]:
    """``sweep.json`` at the start of a run (``raysweep.results`` writes it; the end time is added at the end).

    Args:
        state: ``state.json`` (sweep id, start time, wall time so far); env: :func:`environment`; cluster: Ray's
            ``cluster_resources()``; slots: the concurrent trials; data_check: the pre-run data check's record.
    """
    groups = cfg.groups()
    return {
        "sweep_id": state["sweep_id"],
        "config": cfg.to_dict(),
        "config_text": cfg.text or "",
        "started_at": iso_time(state["started"]),
        "ended_at": None,
        "wall_s": state.get("wall_s", 0.0),
        "git_commit": env["git_commit"],
        "versions": {**env["versions"], "python": env["python"]},
        "hardware": {"platform": env["platform"], "cpus": cluster.get("CPU"), "gpus": cluster.get("GPU", 0),
                     "nodes": len([k for k in cluster if k.startswith("node:") and "internal" not in k]),
                     "concurrent_trials": slots},
        "planned": {"tune": sum(tune_quota(cfg, g) for g in groups),
                    "confirm": len(groups) * cfg.confirmation.seeds},
        "groups": [{"dataset": g.dataset, "variant": g.variant, "arch": g.arch, "loss": g.loss,
                    "replicate": g.replicate} for g in groups],
        "variants": {d: {name: {"axis": v.get("axis"), "level": v.get("level"),
                                "overrides": {k: v[k] for k in ("options", "train_options", "eval_options",
                                                                "select_options") if v.get(k)}}
                         for name, v in s["variants"].items()}
                     for d, s in cfg.datasets.items() if s.get("variants")},
        "spaces": {loss: GroupSpace(loss, cfg.pairing).to_dict() for loss in cfg.losses},
        "protocol": protocol(cfg, data_check),
        "datasets": dataset_statistics(cfg, data_check),
    }


def dataset_statistics(cfg: SweepConfig, data_check: dict[str, Any] | None = None) -> dict[str, Any]:
    """What each dataset holds (``raysweep data inspect``: classes, pixel shares, objects, spacing, warnings), for
    sweep.json and the report's data section: a ranking holds for data of this kind. Datasets inspect does not
    read are recorded as skipped."""
    from ..data.inspect import inspect_config

    print("inspecting the datasets (raysweep data inspect)", flush=True)
    full = (data_check or {}).get("status") != "skipped"  # --skip-data-check: no full read here either
    return {r["dataset"]: r for r in inspect_config(cfg.datasets, full_check=full)}


def protocol(cfg: SweepConfig, data_check: dict[str, Any] | None = None) -> dict[str, Any]:
    """What makes the ranking fair, recorded in sweep.json: the cases that select and the cases that rank (per
    dataset), the early-stopping scope and rungs, the tuning quota and start-up trials, the confirmation seeds,
    each cell's power limit and the pre-run data check."""
    trial = cfg.resolved_trial
    evals = evaluations(cfg)
    t = cfg.tuning
    asha = t.scheduler == "asha" and evals > 1
    cases = protocol_cases(cfg)
    return {
        "alpha": cfg.confirmation.alpha,
        **cases,
        "early_stopping": {"scheduler": "asha" if asha else "none", "scope": "group",
                           "time_attr": "training_iteration", "grace_period": min(t.grace_period, evals),
                           "reduction_factor": t.reduction_factor, "max_t": evals,
                           "rungs": asha_rungs(evals, min(t.grace_period, evals), t.reduction_factor)
                           if asha else [],
                           "eval_every": trial["eval"]["every"], "budget_steps": trial["train"]["steps"]},
        "tuning": {"trials_per_group": t.trials_per_group, "n_startup_trials": n_startup_trials(cfg),
                   "seed": t.seed, "sampler": "tpe", "replicates": t.replicates,
                   "startup": "stratified", **({"first_replicate": t.first_replicate} if t.first_replicate else {})},
        # Replicate 0's seeds stay a plain list (as before replicates); every replicate's are listed by index.
        "confirmation": {"seeds": confirmation_seeds(cfg),
                         "replicate_seeds": {str(r): {"tune": tuning_seed(cfg, r),
                                                      "confirm": confirmation_seeds(cfg, r)}
                                             for r in cfg.replicate_ids()}},
        "power": {cell: limit.to_dict() for cell, limit in power_limits(cfg, cases).items()},
        "data_check": data_check or {"status": "not run"},
    }


def environment() -> dict[str, Any]:
    """Versions, hardware and git commit (``-dirty`` with uncommitted changes), for sweep.json and every trial row.
    Computed once per run."""
    import importlib.metadata as md

    versions = {}
    for pkg in ("raysweep", "torch", "ray", "optuna", "segmentation-models-pytorch", "pyarrow", "numpy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=here).stdout.strip() or None
        if commit and subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                     text=True, timeout=10, cwd=here).stdout.strip():
            commit += "-dirty"
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"versions": versions, "python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count(), "git_commit": commit}
