"""A small sweep's results with planted answers, written through ``raysweep.results`` (the sweep's own writer).

Two cells of the ``synthetic`` dataset, five losses, three classes of very different size, 20 evaluation cases,
3 confirmation seeds:

* ``(synthetic, cnn)`` has a clear winner: ``boundary`` is 0.15 Dice above every other loss on every case. ``focal``
  is planted as the best loss on the *small* class (and poor on the large one), so the size view's small-object
  winner differs from the overall one.
* ``(synthetic, transformer)`` has a planted tie: ``dice`` and ``dice_ce`` score the same on every case up to a
  +-0.001 jitter of alternating sign, 0.05 or more above the rest; ``ce`` has tuning trials but no confirmation runs
  (a partial sweep), so the report must say it is missing.
* ``dice`` in the cnn cell also confirms its defaults (``is_default`` rows, 0.02 lower): they must not be ranked, and
  give the tuning gain. ``focal``'s tuning trials depend strongly on ``gamma`` and barely on the companion weight.
* Failed tuning trials: one diverged, one oom, one error, one early-stopped (at report 4 of 10: it reached rungs 1,
  2 and 4 but not 8).
* The protocol: sweep.json's ``protocol`` (selection cases ``val000``-``val007``, ranking cases ``case000``-
  ``case019``, ASHA rungs 1, 2, 4, 8 of ``max_t`` 10 reports, one report every 10 of the 100 steps, 3 confirmation
  seeds, the planned power). Tune trials record who proposed them (``proposal``: the default first, two ``random``
  start-up trials, then ``model``) and write per-case rows on the selection cases (never on ranking cases). Every
  group confirms the params of its tune trial 2 (a full-budget ``random`` trial).
* Curves: one report per 10 steps; a run's metric climbs to its final value, gaining :data:`GAINS` over the last 20%
  of the budget (steps 80 to 100): ``dice`` in the cnn cell gains 0.03 (the cell is "not converged"), the rest 0.005.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from raysweep import results
from raysweep.power import power_limit

SWEEP_ID = "fixture-sweep"
CLEAR = ("synthetic", "cnn")
TIE = ("synthetic", "transformer")
LOSSES = {  # name -> (family, title, in_survey)
    "dice_ce": ("combination", "Dice + CE", True),
    "dice": ("region", "Dice", True),
    "ce": ("pixel", "Cross-entropy", True),
    "focal": ("pixel", "Focal", True),
    "boundary": ("boundary", "Boundary", True),
}
CLASSES = {1: ("small_organ", 0.01), 2: ("medium_organ", 0.08), 3: ("large_organ", 0.40)}
N_CASES, SEEDS, STEPS = 20, (0, 1, 2), 100
N_SELECTION, EVAL_EVERY, RUNGS = 8, 10, [1, 2, 4, 8]
MAX_T = STEPS // EVAL_EVERY
#: Planted last-20% gain of every run's curve per (cell, loss); DEFAULT_GAIN elsewhere.
GAINS = {(CLEAR, "dice"): 0.03}
DEFAULT_GAIN = 0.005
CONFIRMED_FROM = 2  # the tune trial index whose params each group confirms
# Per-cell loss effects on Dice, per class (small, medium, large).
EFFECTS = {
    CLEAR: {"boundary": (0.15, 0.15, 0.15), "dice_ce": (0.0, 0.0, 0.0), "dice": (-0.03, -0.03, -0.03),
            "ce": (-0.06, -0.06, -0.06), "focal": (0.25, 0.0, -0.10)},
    TIE: {"dice": (0.10, 0.10, 0.10), "dice_ce": (0.10, 0.10, 0.10), "boundary": (0.05, 0.05, 0.05),
          "focal": (0.0, 0.0, 0.0), "ce": (0.02, 0.02, 0.02)},
}
FAILED = {"tune-cnn-ce-4": "diverged", "tune-cnn-ce-5": "oom", "tune-cnn-dice-4": "error",
          "tune-cnn-dice-5": "stopped"}

ANSWERS = {"clear_cell": CLEAR, "winner": "boundary", "tie_cell": TIE, "tied": {"dice", "dice_ce"},
           "small_winner": "focal", "large_winner": "boundary", "missing_confirm": (TIE, "ce"),
           "failed": FAILED, "important_param": "gamma", "not_converged": {CLEAR: ["dice"], TIE: []},
           "selection_cases": [f"val{i:03d}" for i in range(N_SELECTION)],
           "ranking_cases": [f"case{i:03d}" for i in range(N_CASES)]}


def protocol(cells: dict | None = None) -> dict:
    """sweep.json's ``protocol`` as the sweep writes it (the planned power of each cell with all five losses)."""
    power = {f"{d}/{a}": power_limit(N_CASES, len(LOSSES), 0.05).to_dict() for d, a in (cells or EFFECTS)}
    return {
        "alpha": 0.05,
        "selection": {"synthetic": {"split": "val", "cases": ANSWERS["selection_cases"]}},
        "ranking": {"synthetic": {"split": "test", "cases": ANSWERS["ranking_cases"]}},
        "early_stopping": {"scheduler": "asha", "scope": "group", "time_attr": "training_iteration",
                           "grace_period": 1, "reduction_factor": 2, "max_t": MAX_T, "rungs": RUNGS,
                           "eval_every": EVAL_EVERY, "budget_steps": STEPS},
        "tuning": {"trials_per_group": 6, "n_startup_trials": 2, "seed": 0, "sampler": "tpe"},
        "confirmation": {"seeds": list(SEEDS)},
        "power": power,
    }


def curve(final: float, n_reports: int, gain: float) -> list[float]:
    """Metric at reports 1..n_reports (one per EVAL_EVERY steps): ``final`` at the last, ``final - gain`` at report
    ``n_reports - 2`` (step 80 of 100 for a full run), lower before."""
    out = []
    for i in range(1, n_reports + 1):
        left = n_reports - i
        out.append(final - gain * left / 2 if left <= 2 else final - gain - 0.01 * (left - 2))
    return out

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def _png(path: Path, color: tuple[int, int, int]) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), color).save(path)


class _Writer:
    def __init__(self, results_dir: Path, title_override: str | None) -> None:
        self.dir = results_dir
        self.title_override = title_override
        self.clock = T0
        self.n = {"tune": 0, "confirm": 0}

    def trial(self, trial_id, stage, cell, loss, seed, params, is_default, status, case_dice, error=None,
              proposal=None):
        """One trial; ``case_dice``: (cases, classes) Dice of its last evaluation, or None."""
        family, title, in_survey = LOSSES[loss]
        if self.title_override and loss == "ce":
            title = self.title_override
        dataset, arch = cell
        if case_dice is not None:
            final = float(case_dice.mean())
            per_class = {}
            for j, (cid, (name, _)) in enumerate(CLASSES.items()):
                per_class[f"dice/{name}"] = float(case_dice[:, j].mean())
                per_class[f"hd95/{name}"] = float((10 * (1 - case_dice[:, j])).mean())
        else:
            final, per_class = None, {}
        if status == "diverged":
            final = 0.0
        steps_done = {"completed": STEPS, "diverged": 7, "stopped": 4 * EVAL_EVERY}.get(status, 5)
        start = self.clock
        self.clock += timedelta(seconds=30)
        row = dict(sweep_id=SWEEP_ID, trial_id=trial_id, stage=stage, dataset=dataset, arch=arch, loss=loss,
                   loss_title=title, family=family, in_survey=in_survey, params=params, is_default=is_default,
                   seed=seed, proposal=proposal, status=status, error=error, budget_steps=STEPS,
                   steps_done=steps_done, primary_metric="dice", final_metric=final,
                   best_metric=final, dice=final, iou=None if final is None else final * 0.8,
                   hd95=None if final is None else 10 * (1 - final), per_class=per_class,
                   step_ms=20.0 + 5 * list(LOSSES).index(loss), data_ms=2.0, forward_ms=6.0, loss_ms=3.0,
                   backward_ms=7.0, optimizer_ms=2.0, steps_per_s=40.0, peak_memory_mb=500.0 + 10 * seed,
                   node="node-1", wall_s=30.0, started_at=start, ended_at=self.clock,
                   versions={"raysweep": "0.1.0"})
        curves = []
        if final is not None:
            metrics = curve(final, steps_done // EVAL_EVERY, GAINS.get((cell, loss), DEFAULT_GAIN))
            for i, m in enumerate(metrics, start=1):
                curves.append(dict(training_iteration=i, step=i * EVAL_EVERY, epoch=i / 2, time_s=3.0 * i,
                                   metric=m, loss_value=1.0 / i, lr=0.01, extra={"dice": m}))
        cases = []
        if stage == "tune" and case_dice is not None and status in ("completed", "stopped"):
            # Selection cases: distinct ids from the ranking cases (the protocol's split).
            for ci in range(N_SELECTION):
                for j, (cid, (name, frac)) in enumerate(CLASSES.items()):
                    d = float(case_dice[ci, j])
                    cases.append(dict(case=f"val{ci:03d}", class_id=cid, class_name=name, dice=d, iou=d / (2 - d),
                                      hd95=10 * (1 - d), gt_fraction=frac))
        if stage == "confirm" and case_dice is not None:
            for ci in range(N_CASES):
                for j, (cid, (name, frac)) in enumerate(CLASSES.items()):
                    d = float(case_dice[ci, j])
                    cases.append(dict(case=f"case{ci:03d}", class_id=cid, class_name=name, dice=d, iou=d / (2 - d),
                                      hd95=10 * (1 - d), gt_fraction=frac * (1 + 0.1 * math.sin(ci))))
        results.write_trial_rows(self.dir, trial_id, row, curves, cases)
        self.n[stage] += 1


def make_fixture(results_dir: str | Path, *, title_override: str | None = None, config_extra: dict | None = None,
                 overlays: bool = True) -> dict:
    """Write the fixture under ``results_dir`` (the tables and sweep.json); return :data:`ANSWERS`.

    ``title_override``: display title of ``ce`` (e.g. a planted ``<script>``); ``config_extra``: merged into
    sweep.json's config.
    """
    results_dir = Path(results_dir)
    rng = np.random.default_rng(42)
    w = _Writer(results_dir, title_override)
    base = rng.uniform(0.55, 0.70, size=(N_CASES, len(CLASSES)))  # case x class difficulty, shared by all losses
    jitter = np.where(np.arange(N_CASES) % 2 == 0, 0.001, -0.001)[:, None]
    for cell, effects in EFFECTS.items():
        short = cell[1]
        for loss, eff in effects.items():
            # Tuning: the default first, then TPE-like trials (focal: metric depends on gamma).
            n_tune = 10 if loss == "focal" else 6
            for i in range(n_tune):
                tid = f"tune-{short}-{loss}-{i}"
                gamma = float(np.exp(rng.uniform(np.log(0.5), np.log(5.0)))) if i else 2.0
                weight = float(rng.uniform(0.1, 1.0)) if i else 1.0
                params = {"gamma": gamma, "companions.dice.weight": weight} if loss == "focal" else {
                    "companions.ce.weight": weight}
                quality = -0.05 * (math.log(gamma) - math.log(2.0)) ** 2 if loss == "focal" else -0.01 * weight
                status = FAILED.get(tid, "completed") if short == "cnn" else "completed"
                dice = np.clip(base + np.array(eff) + quality + rng.normal(0, 0.004), 0, 1)
                error = {"diverged": "non-finite loss at step 7", "oom": "CUDA out of memory",
                         "error": "RuntimeError: <boom> & friends"}.get(status)
                proposal = "default" if i == 0 else "random" if i <= 2 else "model"
                w.trial(tid, "tune", cell, loss, 0, params, i == 0, status,
                        None if status in ("oom", "error") else dice, error, proposal)
                if i == CONFIRMED_FROM:
                    best = params
            if cell == TIE and loss == "ce":
                continue  # partial sweep: ce's confirmation runs in the transformer cell have not run yet
            for seed in SEEDS:
                seed_noise = rng.normal(0, 0.004)
                if cell == TIE and loss in ("dice", "dice_ce"):
                    dice = base + np.array(eff) + (jitter if loss == "dice_ce" else 0.0)
                else:
                    dice = base + np.array(eff) + rng.normal(0, 0.01, size=base.shape) + seed_noise
                w.trial(f"confirm-{short}-{loss}-s{seed}", "confirm", cell, loss, seed, best, False, "completed",
                        np.clip(dice, 0, 1))
                if cell == CLEAR and loss == "dice":  # the defaults confirmed too: measured, not ranked
                    w.trial(f"confirm-{short}-{loss}-default-s{seed}", "confirm", cell, loss, seed,
                            {"companions.ce.weight": 1.0}, True, "completed", np.clip(dice - 0.02, 0, 1))
    if overlays:
        for loss, color in (("boundary", (0, 200, 0)), ("ce", (200, 0, 0))):
            for case in ("case000", "case001"):
                _png(results_dir.parent / "overlays" / f"confirm-cnn-{loss}-s0" / f"{case}.png", color)
    meta = {
        "sweep_id": SWEEP_ID,
        "config": {"datasets": ["synthetic"], "archs": ["cnn", "transformer"], "losses": list(LOSSES),
                   "tune": {"trials_per_group": 6}, "confirm": {"seeds": 3}, **(config_extra or {})},
        "config_text": "datasets: [synthetic]\narchs: [cnn, transformer]\n",
        "started_at": T0, "ended_at": None, "wall_s": (w.clock - T0).total_seconds(),
        "git_commit": "0123abc", "versions": {"python": "3.11", "raysweep": "0.1.0", "optuna": "5.0.0"},
        "hardware": {"cpus": 2, "gpus": []},
        "planned": {"tune": w.n["tune"] + 4, "confirm": w.n["confirm"] + 3},
        "groups": [{"dataset": d, "arch": a, "loss": loss} for (d, a) in EFFECTS for loss in LOSSES],
        "protocol": protocol(),
    }
    results.write_sweep_meta(results_dir, meta)
    return ANSWERS


def write_planted_cell(results_dir: str | Path, scores: dict[str, np.ndarray], *, dataset: str = "d",
                       arch: str = "m", curves: dict[str, list[list[tuple[int, float]]]] | None = None,
                       tune_cases: dict[str, np.ndarray] | None = None, tune_case_ids: list[str] | None = None,
                       budget: int = 100, titles: dict[str, str] | None = None, sweep_id: str = "planted",
                       replicates: int = 1) -> None:
    """One cell with planted per-case scores, written through the sweep's writer (one class per case).

    ``scores``: loss -> (seeds, cases) array; each confirm trial's per-case Dice is a row, its ``final_metric`` the
    row mean; row ``i`` is seed ``i`` of replicate ``i % replicates``. ``curves``: loss -> per seed, ``[(step, metric), ...]`` reports. ``tune_cases``: loss -> (cases,) values
    of one tune trial's case rows (stage ``tune``), on ``tune_case_ids`` (default ``sel000``, ...).
    """
    for loss, s in scores.items():
        s = np.atleast_2d(np.asarray(s, float))
        for seed, row_scores in enumerate(s):
            tid = f"confirm-{arch}-{loss}-s{seed}"
            row = dict(sweep_id=sweep_id, trial_id=tid, stage="confirm", dataset=dataset, arch=arch, loss=loss,
                       loss_title=(titles or {}).get(loss, loss), family="region", in_survey=True,
                       params={"w": 0.5}, is_default=False, seed=seed, replicate=seed % replicates,
                       status="completed", budget_steps=budget,
                       steps_done=budget, primary_metric="dice", final_metric=float(row_scores.mean()))
            cases = [dict(case=f"case{i:03d}", class_id=1, class_name="x", dice=float(v))
                     for i, v in enumerate(row_scores)]
            reports = (curves or {}).get(loss, [[]] * len(s))[seed]
            rows = [dict(training_iteration=i, step=step, metric=m) for i, (step, m) in enumerate(reports, start=1)]
            results.write_trial_rows(results_dir, tid, row, rows, cases)
    for loss, values in (tune_cases or {}).items():
        tid = f"tune-{arch}-{loss}-0"
        ids = tune_case_ids or [f"sel{i:03d}" for i in range(len(values))]
        row = dict(sweep_id=sweep_id, trial_id=tid, stage="tune", dataset=dataset, arch=arch, loss=loss,
                   loss_title=(titles or {}).get(loss, loss), family="region", in_survey=True, params={"w": 0.5},
                   is_default=True, seed=0, proposal="default", status="completed", budget_steps=budget,
                   steps_done=budget, primary_metric="dice", final_metric=float(np.mean(values)))
        cases = [dict(case=c, class_id=1, class_name="x", dice=float(v)) for c, v in zip(ids, values)]
        results.write_trial_rows(results_dir, tid, row, [], cases)
