"""Trial packing on the local device: K trials of the default sweep's cell trained as one pack
(:func:`raysweep.trial.pack.train_pack`) against the same K trials one after another, with the same threads.

    python -m benchmarks.pack [--quick] [--config configs/default.yaml] [--arch cnn] [--loss NAME ...] [--threads 1]

Each trial is the config's tuning trial of (first cell, ``--arch``, loss) at the survey's defaults, as a sweep
composes it. Both ways run the same configurations for their whole budget, evaluations included: the ratio is the
wall time of K trials alone over the pack's (best of ``--repeats`` alternate runs, after a warm-up trial), and every
member's final Dice must equal its run alone (the run fails otherwise). On a CPU the gain is what a pack shares: one data pipeline, and its distance maps, computed once for all
members. On a launch-bound GPU it is more (``benchmarks.gpu_sweep``, part ``packing``). ``--quick``: 20 steps.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

#: Two region/pixel losses and two that need distance maps (the pipeline computes them once for the pack).
LOSSES = ("dice_ce", "focal", "boundary", "hausdorff")


def trials(config: str, arch: str, losses: list[str], threads: int, steps: int | None) -> list[dict]:
    from raysweep.config import Group, compose_trial, load_config
    from raysweep.search import GroupSpace

    cfg = load_config(config)
    dataset, variant = cfg.cells()[0]
    out = []
    for loss in losses:
        trial = compose_trial(cfg, Group(dataset, arch, loss, variant), GroupSpace(loss, "none").defaults(),
                              seed=cfg.tuning.seed, stage="tune")["trial"]
        trial["train"].update(progress=False, threads=threads, device="cpu" if not torch.cuda.is_available() else
                              trial["train"].get("device", "auto"))
        if steps is not None:
            trial["train"]["steps"] = steps
            trial["eval"]["every"] = steps // 2
        out.append(trial)
    return out


def measure(configs: list[dict], repeats: int = 2) -> dict:
    """Both ways ``repeats`` times, alternately, after a warm-up trial; the best (lowest) wall time of each."""
    from raysweep.trial import train_trial
    from raysweep.trial.pack import train_pack

    train_trial({**configs[0], "train": {**configs[0]["train"], "steps": 2}})  # imports, caches, allocator
    best_alone = best_pack = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        alone = [train_trial(c) for c in configs]
        best_alone = min(best_alone, time.perf_counter() - t0)
        t0 = time.perf_counter()
        packed = train_pack(configs)
        best_pack = min(best_pack, time.perf_counter() - t0)
        differ = [c["loss"]["name"] for c, a, p in zip(configs, alone, packed) if a.get("dice") != p.get("dice")]
        if differ:
            raise SystemExit(f"packed members differ from their runs alone: {differ}")
    return {"k": len(configs), "losses": [c["loss"]["name"] for c in configs], "repeats": repeats,
            "alone_s": round(best_alone, 1), "pack_s": round(best_pack, 1), "speedup": round(best_alone / best_pack, 3),
            "dice": [round(float(a["dice"]), 4) for a in alone]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 steps per trial instead of the config's budget")
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--arch", default="cnn")
    parser.add_argument("--loss", action="append", help=f"the pack's losses (default: {', '.join(LOSSES)})")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, the same for both ways (default 1)")
    parser.add_argument("--repeats", type=int, default=2, help="alternate runs of both ways; the best of each counts")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = measure(trials(args.config, args.arch, args.loss or list(LOSSES), args.threads,
                            20 if args.quick else None), args.repeats)
    print(json.dumps(result))
    print(f"K={result['k']} ({', '.join(result['losses'])}): {result['alone_s']} s one after another, "
          f"{result['pack_s']} s as a pack: {result['speedup']}x, every member's Dice equal to its run alone")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
