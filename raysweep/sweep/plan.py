"""What a sweep will cost before it runs: expected trials, optimiser steps, evaluations and hours (``raysweep plan``).

The counts come from the config alone:

* **tune**: every group (cell x architecture x loss) gets its quota (``tuning.trials_per_group``, 1 for a loss with
  nothing to tune). With ASHA (``tuning.scheduler: asha`` and more than one evaluation per trial) the expected number
  of a group's trials that pass rung ``k`` is ``max(1, quota / reduction_factor**k)``: ASHA's nominal fraction, with
  the first trial of a group always passing (:class:`raysweep.sweep.GroupScheduler`). A trial stopped at rung ``r``
  (in evaluations) has run ``r * eval.every`` steps; one that passes every rung runs ``train.steps``. The rungs are
  the sweep's own (:func:`raysweep.sweep.asha_rungs`, ``max_t`` = evaluations per trial).
* **confirm**: every group retrains its best point with ``confirmation.seeds`` seeds at the full budget, evaluated
  ``confirmation.evaluations`` times (or every ``eval.every`` steps).

The hours need a rate per architecture: the *aggregate* training steps per second of one device (a GPU, or the CPU
machine) running the trials that share it (``1 / resources.gpus_per_trial`` on a GPU), and the seconds one
evaluation takes. Either given (``--steps-per-s``, ``--eval-s``) or measured by a short calibration: ``2 K``
``train_trial`` steps of the config's first cell at its image size, batch and precision, on the local device, with
the dataset's selection split evaluated after step ``K`` and ``2 K``; the rate and the evaluation time are those of
the second half (compilation, cuDNN autotuning and loader start-up fall in the first). On a GPU shared by ``n``
trials, ``n`` calibration processes run at once and their rates add up; on the CPU one trial runs with
``resources.cpus_per_trial`` threads and the machine's rate is that times the trials that run side by side. With
``resources.pack`` K, each calibration process trains a pack of K copies (:mod:`raysweep.trial.pack`) and the steps
of all K count; ``eval_s`` is one member's evaluation, and ``n`` below counts packs (a pack's members evaluate one
after another).

Then, with ``D`` devices of ``n`` trials each: ``hours = steps / (rate * D) / 3600 + evaluations * eval_s / (n D)
/ 3600`` per stage and architecture; GPU-hours are ``hours * D``. Not counted: trial start-up (model build, data
loading), the tail of a stage where fewer trials than slots remain, and losses slower than the calibration's
(``dice_ce``; only ``hausdorff``'s step is several times CE's on a GPU, docs/benchmarks.md).
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

from ..power import PowerLimit

__all__ = ["CALIBRATION_LOSS", "calibrate", "expected_tune", "make_plan", "plan_as_text", "read_config",
           "stage_counts"]

#: The loss the calibration trains with: the nnU-Net baseline, a typical loss's cost.
CALIBRATION_LOSS = "dice_ce"


def read_config(path: str | Path, need_data: bool):
    """The sweep config at ``path``. Planning from given rates reads no data, so when ``need_data`` is false a data
    folder that does not exist here (a cluster's path) is allowed: the config is checked key by key (``parse``) with
    such folders replaced by an empty one. Returns ``(SweepConfig, missing roots)``."""
    from ..config import load_config, parse, read_yaml_mapping

    try:
        return load_config(path), []
    except FileNotFoundError:
        if need_data:
            raise
    raw = read_yaml_mapping(path, "sweep config")
    missing, empty = [], tempfile.mkdtemp(prefix="raysweep-plan-")
    for name, section in (raw.get("datasets") or {}).items():
        root = (section or {}).get("root") if isinstance(section, Mapping) else None
        if root and not Path(root).expanduser().is_dir():
            missing.append(f"{name}: {root}")
            section["root"] = empty
    try:
        return parse(raw, where=Path(path).name), missing
    finally:
        os.rmdir(empty)


def expected_tune(quota: int, steps: int, every: int | None, scheduler: str, grace_period: int,
                  reduction_factor: int) -> dict[str, float]:
    """Expected trials, full-budget trials, optimiser steps and evaluations of one group's tuning stage.

    Args:
        quota: the group's tuning trials; steps: ``train.steps`` (the full budget); every: ``eval.every`` (None: one
            evaluation at the end); scheduler, grace_period, reduction_factor: the ``tuning`` section.

    Returns:
        ``{"trials", "full_budget", "steps", "evaluations", "rungs"}`` (expected values, floats; ``rungs`` in
        evaluations).
    """
    from .scheduler import asha_rungs

    evals = 1 if not every else math.ceil(steps / every)
    rungs = []
    if scheduler == "asha" and evals > 1:
        rungs = asha_rungs(evals, min(grace_period, evals), reduction_factor)
    passing = [float(quota)]  # expected trials that reach rung k (k = 0: all of them start)
    for k in range(1, len(rungs) + 1):
        passing.append(min(passing[-1], max(1.0, quota / reduction_factor ** k)))
    total_steps = total_evals = 0.0
    for k, rung in enumerate(rungs):
        stopped = passing[k] - passing[k + 1]
        total_steps += stopped * min(rung * (every or steps), steps)
        total_evals += stopped * rung
    full = passing[-1]
    total_steps += full * steps
    total_evals += full * evals
    return {"trials": float(quota), "full_budget": full, "steps": total_steps, "evaluations": total_evals,
            "rungs": rungs}


def stage_counts(cfg) -> list[dict[str, Any]]:
    """Per stage and architecture: groups, expected trials, full-budget trials, optimiser steps and evaluations."""
    from ..config import tune_quota

    trial = cfg.resolved_trial
    steps, every = trial["train"]["steps"], trial["eval"]["every"]
    t, c = cfg.tuning, cfg.confirmation
    confirm_every = math.ceil(steps / c.evaluations) if c.evaluations else every
    confirm_evals = 1 if not confirm_every else math.ceil(steps / confirm_every)
    rows = []
    for arch in cfg.architectures:
        groups = [g for g in cfg.groups() if g.arch == arch]
        tune = {"stage": "tune", "arch": arch, "groups": len(groups), "trials": 0.0, "full_budget": 0.0,
                "steps": 0.0, "evaluations": 0.0}
        for g in groups:
            e = expected_tune(tune_quota(cfg, g), steps, every, t.scheduler, t.grace_period,
                              t.reduction_factor)
            for key in ("trials", "full_budget", "steps", "evaluations"):
                tune[key] += e[key]
            tune["rungs"] = e["rungs"] if e["rungs"] else tune.get("rungs", [])
        seeds = c.seeds
        confirm = {"stage": "confirm", "arch": arch, "groups": len(groups), "trials": float(len(groups) * seeds),
                   "full_budget": float(len(groups) * seeds), "steps": float(len(groups) * seeds * steps),
                   "evaluations": float(len(groups) * seeds * confirm_evals), "rungs": []}
        rows += [tune, confirm] if seeds else [tune]
    return rows


def _devices(cfg, gpus: int | None) -> dict[str, Any]:
    """The devices the sweep would use here (or ``gpus`` of them) and the trials that share each one."""
    cpus = os.cpu_count() or 1
    if gpus is None:
        try:
            import torch

            gpus = torch.cuda.device_count()
        except ImportError:
            gpus = 0
        seen = "seen here (torch)"
    else:
        seen = "given (--gpus)"
    from .trainable import trial_resources

    if gpus > 0:
        gpt = float(cfg.resources.gpus_per_trial) or 1.0
        per_device = max(1, int(1.0 / gpt + 1e-9))
        if cfg.resources.max_concurrent:
            per_device = max(1, min(per_device, cfg.resources.max_concurrent // gpus or 1))
        return {"kind": "gpu", "devices": gpus, "trials_per_device": per_device, "source": seen}
    _, slots = trial_resources(cfg, {"CPU": float(cpus), "GPU": 0.0})
    return {"kind": "cpu", "devices": 1, "trials_per_device": slots, "source": f"this machine ({cpus} CPUs)"}


def calibrate(cfg, arch: str, steps: int = 10, processes: int = 1, device: str = "auto") -> dict[str, float]:
    """Measure one architecture's rate on the local device: ``processes`` trials at once (spawned processes when
    more than one), each ``2 * steps`` steps of the config's first cell with :data:`CALIBRATION_LOSS`; the second
    half's rates and evaluation times (see the module docstring).

    Returns:
        ``{"steps_per_s": aggregate over the processes, "per_trial_steps_per_s", "eval_s": one evaluation, s}``.

    Raises:
        ValueError / FileNotFoundError: the config's data or model cannot be built here.
    """
    if steps < 1:
        raise ValueError(f"--calibrate-steps must be at least 1, got {steps}")
    trial = calibration_trial(cfg, arch, steps, device)
    run = functools.partial(_calibration_run, pack=cfg.resources.pack)
    if processes <= 1:
        results = [run(trial)]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(run, [trial] * processes))
    rates = [r["steps_per_s"] for r in results]
    return {"steps_per_s": float(sum(rates)), "per_trial_steps_per_s": float(sum(rates) / len(rates)),
            "eval_s": float(max(r["eval_s"] for r in results))}


def calibration_trial(cfg, arch: str, steps: int, device: str = "auto") -> dict[str, Any]:
    """The trial config a calibration runs: the sweep's tune-stage trial of (first cell, ``arch``, dice_ce)."""
    from ..config import Group, compose_trial
    from ..search import GroupSpace

    dataset, variant = cfg.cells()[0]
    group = Group(dataset, arch, CALIBRATION_LOSS, variant)
    trial = compose_trial(cfg, group, GroupSpace(CALIBRATION_LOSS, "none").defaults(), seed=cfg.tuning.seed,
                          stage="tune")["trial"]
    trial["companions"] = []
    train = trial.setdefault("train", {})
    train.update(steps=2 * steps, progress=False, device=device)
    train.setdefault("threads", max(1, int(cfg.resources.cpus_per_trial)))  # as the sweep pins them
    trial["eval"].update(every=steps, overlays=0, report_cases=False)
    trial["checkpoint"] = {"every": 0, "at_end": False}
    trial["output_dir"] = None
    return trial


def _calibration_run(trial: dict[str, Any], pack: int = 1) -> dict[str, float]:
    """One calibration process: the trial alone, or ``pack`` copies of it trained as a pack (``resources.pack``),
    whose members' steps add up (each advances one step per pack step). ``eval_s``: one member's evaluation."""
    import torch

    from ..trial import train_trial
    from ..trial.pack import train_pack

    threads = torch.get_num_threads()
    try:
        results = [train_trial(trial)] if pack <= 1 else train_pack([trial] * pack)
    finally:
        torch.set_num_threads(threads)
    for result in results:
        if result.get("status") != "completed":
            raise ValueError(f"calibration trial ended {result.get('status')!r}: {result.get('error', '')}")
    return {"steps_per_s": float(sum(r["steps_per_s"] for r in results)),
            "eval_s": float(sum(r["time/eval_s"] for r in results) / len(results))}


def _parse_rates(values: list[str] | None, archs: list[str], what: str) -> dict[str, float]:
    """``["63.5"]`` (every architecture) or ``["cnn=63.5", "transformer=20"]`` -> {arch: value}."""
    out: dict[str, float] = {}
    for item in values or []:
        name, sep, number = item.rpartition("=")
        try:
            value = float(number)
        except ValueError:
            raise ValueError(f"{what} expects RATE or ARCH=RATE, got {item!r}") from None
        if not math.isfinite(value) or value < 0 or (what == "--steps-per-s" and value == 0):
            raise ValueError(f"{what} must be a positive number, got {item!r}")
        if sep and name not in archs:
            raise ValueError(f"{what} {item!r}: the config has no architecture {name!r}; it has {', '.join(archs)}")
        for arch in ([name] if sep else archs):
            out[arch] = value
    return out


def make_plan(cfg, gpus: int | None = None, steps_per_s: list[str] | None = None, eval_s: list[str] | None = None,
              calibrate_steps: int = 10, processes: int | None = None, missing_roots: list[str] | None = None
              ) -> dict[str, Any]:
    """The plan of a validated sweep config as plain data (``raysweep plan --json``).

    Args:
        gpus: devices to plan for (None: the GPUs torch sees here; 0: the CPU machine).
        steps_per_s: ``RATE`` or ``ARCH=RATE`` items, aggregate steps/s per device; architectures without one are
            calibrated here.
        eval_s: ``SECONDS`` or ``ARCH=SECONDS`` per evaluation (default: measured when calibrating, else 0).
        calibrate_steps: K of the calibration (2 K steps, the second K measured).
        processes: calibration trials at once (None: the trials that share a device, on a GPU; 1 on the CPU).
    """
    archs = list(cfg.architectures)
    rates = _parse_rates(steps_per_s, archs, "--steps-per-s")
    evals = _parse_rates(eval_s, archs, "--eval-s")
    dev = _devices(cfg, gpus)
    per_arch: dict[str, dict[str, Any]] = {}
    for arch in archs:
        if arch in rates:
            per_arch[arch] = {"steps_per_s": rates[arch], "eval_s": evals.get(arch, 0.0), "source": "given"}
            continue
        here = _devices(cfg, None)
        n = processes or (here["trials_per_device"] if here["kind"] == "gpu" else 1)
        m = calibrate(cfg, arch, calibrate_steps, n)
        rate = m["steps_per_s"] * (here["trials_per_device"] if here["kind"] == "cpu" else 1)
        per_arch[arch] = {"steps_per_s": rate, "eval_s": evals.get(arch, m["eval_s"]),
                          "source": f"calibrated here ({here['kind']}, {n} trial(s) at once, "
                                    f"{calibrate_steps} of {2 * calibrate_steps} steps timed)",
                          "per_trial_steps_per_s": m["per_trial_steps_per_s"]}
    d, n = dev["devices"], dev["trials_per_device"]
    rows = stage_counts(cfg)
    for row in rows:
        r = per_arch[row["arch"]]
        seconds = row["steps"] / (r["steps_per_s"] * d) + row["evaluations"] * r["eval_s"] / (n * d)
        row["hours"] = seconds / 3600.0
        row["device_hours"] = row["hours"] * d
    total = {key: sum(row[key] for row in rows) for key in ("trials", "full_budget", "steps", "evaluations",
                                                              "hours", "device_hours")}
    notes = ["a projection: trial start-up, the end-of-stage tail and losses slower than dice_ce are not counted",
             "tune-stage counts are ASHA's nominal fractions (1/reduction_factor per rung, at least one trial per "
             "group passing); the real fraction depends on the scores"]
    if any(v["source"] == "given" and v["eval_s"] == 0 for v in per_arch.values()):
        notes.append("evaluation time not counted where no --eval-s was given")
    if missing_roots:
        notes.append("data folders not found here (planned from the config alone): " + "; ".join(missing_roots))
    if cfg.tuning.replicates > 1:
        notes.append(f"groups count each (dataset, arch, loss) {cfg.tuning.replicates} times: tuning.replicates "
                     "runs its tuning and confirmation that many times, independently")
    return {"config": cfg.name, "device": dev, "rates": per_arch, "stages": rows, "total": total, "notes": notes,
            "design": _design(cfg)}


def _design(cfg) -> dict[str, Any]:
    """Each cell's power limit (:mod:`raysweep.power`), the statement the design makes before it runs; empty when
    the ranking cases cannot be listed here (data folders elsewhere)."""
    from ..config import power_limits

    try:
        return {cell: limit.to_dict() for cell, limit in power_limits(cfg).items()}
    except (FileNotFoundError, ValueError):
        return {}


def plan_as_text(plan: Mapping[str, Any]) -> str:
    """The plan as the table ``raysweep plan`` prints."""
    dev = plan["device"]
    unit = "GPU" if dev["kind"] == "gpu" else "CPU machine"
    lines = [f"raysweep plan: {plan['config']} on {dev['devices']} {unit}(s) ({dev['source']}), "
             f"{dev['trials_per_device']} trial(s) per device", ""]
    for arch, r in plan["rates"].items():
        lines.append(f"  {arch}: {r['steps_per_s']:.2f} steps/s per device, {r['eval_s']:.2f} s per evaluation "
                     f"({r['source']})")
    head = f"{'stage':<8}{'arch':<14}{'groups':>7}{'trials':>10}{'full':>9}{'steps':>14}{'evals':>10}{'hours':>9}" \
           f"{unit.split()[0] + '-h':>9}"
    lines += ["", head, "-" * len(head)]
    for row in [*plan["stages"], {"stage": "total", "arch": "", "groups": "", **plan["total"]}]:
        lines.append(f"{row['stage']:<8}{row['arch']:<14}{row['groups']!s:>7}{row['trials']:>10.1f}"
                     f"{row['full_budget']:>9.1f}{row['steps']:>14,.0f}{row['evaluations']:>10.1f}"
                     f"{row['hours']:>9.2f}{row['device_hours']:>9.2f}")
    rungs = next((r["rungs"] for r in plan["stages"] if r.get("rungs")), [])
    if rungs:
        lines.append(f"\nASHA rungs (evaluations): {rungs}")
    lines += [""] + [f"note: {n}" for n in plan["notes"]]
    by_sentence: dict[str, list[str]] = {}
    for cell, limit in (plan.get("design") or {}).items():
        by_sentence.setdefault(PowerLimit(**limit).sentence(), []).append(cell)
    lines += [f"design ({', '.join(cells)}): {sentence}" for sentence, cells in by_sentence.items()]
    return "\n".join(lines) + "\n"


def plan_as_json(plan: Mapping[str, Any]) -> str:
    return json.dumps(plan, indent=1)
