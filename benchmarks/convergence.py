"""How many steps until a loss levels off? The report's convergence check, measured against the training budget.

    python -m benchmarks.convergence [--config configs/default.yaml] [--arch cnn] [--loss dice --loss combo ...]
                                     [--steps 100 150 200] [--seeds 11 12 13 14] [--md PATH]

For each loss, each budget (``trial.train.steps``) and each seed, one confirmation run of the config's cell exactly as
the sweep composes it (:func:`raysweep.config.compose.compose_trial`, stage ``confirm``: the ranking split, evaluated
``confirmation.evaluations`` times, evenly spaced and ending at the budget) with the loss's survey defaults. From each
run's reports: the *last-20% gain* (the metric at the budget minus the metric at the evaluation at 80% of it, the
report's convergence check, which flags a top-5 loss whose mean gain is 0.02 or more) and the final metric. Printed
per (loss, budget): mean and largest gain over the seeds, and the mean final metric.

It runs whole trainings in this process (no Ray); the default (5 losses x 3 budgets x 4 seeds) takes about 10 minutes
on an idle 2-core CPU. Not part of ``make bench``: it sizes a sweep design, it does not time code.
"""

from __future__ import annotations

import argparse
import copy
import sys
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The CNN cell's five best losses in the quick design's sweeps (configs/quick.yaml; seeds 0, 100, 200, 300).
TOP_CNN = ["boundary_dou", "log_cosh_dice", "dice", "combo", "exp_log"]
GAIN_LIMIT = 0.02


@contextmanager
def recorded_reports():
    """Every report a direct ``train_trial`` call makes, in order (the local sink keeps only the last one on disk)."""
    from raysweep.trial import sink

    reports: list[dict] = []
    original = sink.LocalSink.report

    def report(self, metrics, overlays, state):
        reports.append(dict(metrics))
        return original(self, metrics, overlays, state)

    sink.LocalSink.report = report
    try:
        yield reports
    finally:
        sink.LocalSink.report = original


def last20_gain(curve: list[tuple[int, float]]) -> float:
    """Metric at the last step minus the metric at the last evaluation at or before 80% of it."""
    curve = sorted(curve)
    last = curve[-1][0]
    before = [m for s, m in curve if s <= 0.8 * last]
    return curve[-1][1] - before[-1] if before else float("nan")


def measure(config: Path, arch: str, losses: list[str], budgets: list[int], seeds: list[int]) -> list[dict]:
    """One row per (loss, budget): ``gain_mean``, ``gain_max``, ``final_mean`` over ``seeds``."""
    from raysweep.config import load_config
    from raysweep.config.compose import compose_trial
    from raysweep.config.model import Group
    from raysweep.search import GroupSpace
    from raysweep.trial import train_trial

    cfg = load_config(config)
    dataset = next(iter(cfg.datasets))
    rows = []
    for loss in losses:
        for steps in budgets:
            gains, finals = [], []
            for seed in seeds:
                c = copy.deepcopy(cfg)
                c.trial.setdefault("train", {})["steps"] = steps
                envelope = compose_trial(c, Group(dataset, arch, loss), GroupSpace(loss, c.pairing).defaults(), seed,
                                         "confirm")
                trial = envelope["trial"]
                trial["checkpoint"] = {"every": 0, "every_s": None, "at_end": False}
                with recorded_reports() as reports:
                    result = train_trial(trial)
                primary = result["primary_metric"]
                curve = [(r["step"], r[primary]) for r in reports if r.get(primary) is not None]
                gains.append(last20_gain(curve))
                finals.append(result[primary])
            rows.append({"loss": loss, "steps": steps, "seeds": len(seeds), "gain_mean": sum(gains) / len(gains),
                         "gain_max": max(gains), "final_mean": sum(finals) / len(finals)})
            print(f"{loss:>16} {steps:>5} steps: last-20% gain mean {rows[-1]['gain_mean']:.4f} max "
                  f"{rows[-1]['gain_max']:.4f}, final {rows[-1]['final_mean']:.4f}", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| loss | steps | last-20% gain: mean (largest) over seeds | final metric, mean |", "|---|---|---|---|"]
    for r in rows:
        flag = "" if r["gain_mean"] < GAIN_LIMIT else " (flagged)"
        lines.append(f"| {r['loss']} | {r['steps']} | {r['gain_mean']:.4f} ({r['gain_max']:.4f}){flag} | "
                     f"{r['final_mean']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "default.yaml")
    ap.add_argument("--arch", default="cnn", help="an architecture of the config (default: cnn)")
    ap.add_argument("--loss", action="append", default=[], help=f"repeatable (default: {' '.join(TOP_CNN)})")
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 150, 200], help="budgets (default: 100 150 200)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13, 14], help="training seeds per budget")
    ap.add_argument("--md", type=Path, default=None, help="also write the table here (markdown)")
    args = ap.parse_args(argv)
    text = markdown(measure(args.config, args.arch, args.loss or TOP_CNN, args.steps, args.seeds))
    print(text)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
