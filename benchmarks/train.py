"""Overhead of ``train_trial``'s loop over a minimal bare PyTorch loop: same model, data, loss, optimiser, AMP.

    python -m benchmarks.train [--quick] [--model cnn|transformer ...] [--loss NAME] [--image-size N] [--batch N]
                               [--steps N] [--warmup N] [--repeats N] [--workers N] [--threads N] [--device D]

For each model, both loops run ``warmup`` steps and then ``steps`` timed steps, in the same process, alternately,
``repeats`` times; the best (highest) steps/s of each is kept, the reading least disturbed by other work on the
machine. ``train_trial``'s figure is its own ``steps_per_s`` over the timed steps (its first report closes the warm-up;
evaluation and checkpoints are outside the timed interval, as they are outside the bare loop). The bare loop is what
a hand-written script does: a shuffling DataLoader over the same dataset, ``net(x)``, the loss, backward, AdamW and the
one-cycle schedule, under the same autocast and memory format. Overhead = 1 - trial / bare; the target is <= 5 %.
``--quick`` runs the Transformer only, with fewer steps. :func:`trial_config` is the one benchmark trial config
(also :mod:`benchmarks.gpu_check`'s and :mod:`benchmarks.gpu_session`'s), :func:`compare` the measurement.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext

import torch

from raysweep.data import build_dataset
from raysweep.losses import build_loss
from raysweep.models import MODELS, build_model
from raysweep.trial import resolve_config, train_trial


def trial_config(model: str, loss: str, image_size: int, batch: int, steps: int, warmup: int, workers: int,
                 threads: int | None, device: str, *, amp: str | None = None, depth: int | None = None,
                 arch: dict | None = None) -> dict:
    """A trial whose last report covers the ``steps`` timed steps only (``steps_per_s`` is per report interval):
    reports every ``steps`` steps, after at least ``warmup`` warm-up steps (rounded up to a multiple of ``steps``).

    Synthetic data of ``image_size`` (``depth`` slices per volume if given); ``amp`` sets ``train.amp`` if given;
    ``arch`` updates the ``model`` section (``arch``, ``encoder``, ``options``). Everything else keeps
    :func:`raysweep.trial.resolve_config`'s defaults, except that nothing is written (no overlays, checkpoints or
    per-case rows) and evaluation is one case without HD95."""
    warm = -(-warmup // steps) * steps if warmup > 0 else 0
    cfg = {
        "dataset": {"name": "synthetic", "options": {"image_size": image_size}},
        "model": {"name": model, **(arch or {})},
        "loss": {"name": loss},
        "train": {"steps": warm + steps, "batch_size": batch, "num_workers": workers, "threads": threads,
                  "device": device, "progress": False},
        "eval": {"every": steps, "max_cases": 1, "hd95": False, "overlays": 0, "report_cases": False},
        "checkpoint": {"every": 0},
    }
    if depth is not None:
        cfg["dataset"]["options"]["depth"] = depth
    if amp is not None:
        cfg["train"]["amp"] = amp
    return cfg


def trial_steps_per_s(config: dict) -> tuple[float, dict]:
    result = train_trial(config)
    if result["status"] != "completed":
        raise RuntimeError(f"benchmark trial ended with status {result['status']}: {result}")
    return result["steps_per_s"], result


def bare_steps_per_s(config: dict) -> float:
    """The minimal loop on the same model, data and loss; returns steps/s over the timed steps."""
    cfg = resolve_config(config)
    t, m = cfg["train"], cfg["model"]
    device = torch.device("cuda" if t["device"] == "auto" and torch.cuda.is_available() else
                          "cpu" if t["device"] == "auto" else t["device"])
    cuda = device.type == "cuda"
    amp = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else None
    torch.manual_seed(cfg["seed"])
    ds = build_dataset("synthetic", "train", **cfg["dataset"]["options"])
    net = build_model(m["arch"], m["encoder"], ds.info.num_classes, ds.info.in_channels).net.to(device)  # bare smp
    if cuda:
        net = net.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    loss_fn = build_loss(cfg["loss"]["name"]).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg["optimizer"]["lr"], weight_decay=cfg["optimizer"]["weight_decay"])
    total = t["steps"]
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["optimizer"]["lr"], total_steps=total)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    loader = torch.utils.data.DataLoader(ds, batch_size=t["batch_size"], shuffle=True, drop_last=True,
                                         num_workers=t["num_workers"], pin_memory=cuda,
                                         persistent_workers=t["num_workers"] > 0,
                                         generator=torch.Generator().manual_seed(0))
    warmup = total - cfg["eval"]["every"]  # the timed steps are the trial's last report interval
    step, start = 0, None
    while step < total:
        for batch in loader:
            if step == warmup:
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
            if step == total:
                break
            x = batch["image"].to(device, non_blocking=True)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            y = batch["mask"].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext():
                loss = loss_fn(net(x), y)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
    if cuda:
        torch.cuda.synchronize()
    return (total - warmup) / (time.perf_counter() - start)


def compare(config: dict, repeats: int) -> dict:
    """The bare loop and ``train_trial`` on ``config`` (:func:`trial_config`), alternately, ``repeats`` times:
    ``{model, arch, bare, trial, overhead, phases, all_bare, all_trial}`` (best steps/s; phases of the best trial)."""
    model = config["model"]["name"]
    bare, trial, phases = [], [], None
    for _ in range(repeats):
        bare.append(bare_steps_per_s(config))
        rate, result = trial_steps_per_s(config)
        trial.append(rate)
        if rate == max(trial):
            phases = {k[5:-3]: v for k, v in result.items() if k.startswith("time/") and k.endswith("_ms")}
    best_bare, best_trial = max(bare), max(trial)
    return {"model": model, "arch": f"{MODELS[model]['arch']}/{MODELS[model]['encoder']}", "bare": best_bare,
            "trial": best_trial, "overhead": 1.0 - best_trial / best_bare, "phases": phases,
            "all_bare": bare, "all_trial": trial}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Transformer only, fewer steps")
    parser.add_argument("--model", action="append", choices=sorted(MODELS), help="repeatable (default: both)")
    parser.add_argument("--loss", default="dice_ce")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 40, quick 15)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=None, help="default 3, quick 2")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    args.steps = args.steps or (15 if args.quick else 40)
    args.repeats = args.repeats or (2 if args.quick else 3)
    torch.set_num_threads(args.threads)
    models = args.model or (["transformer"] if args.quick else ["cnn", "transformer"])
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    print(f"train_trial loop vs bare loop: {args.loss}, synthetic {args.image_size}x{args.image_size}, "
          f"batch {args.batch}, {args.steps} timed steps after {args.warmup}, best of {args.repeats}, "
          f"{args.workers} workers, {args.threads} threads, device {device}")
    print(f"{'model':<28}{'bare steps/s':>13}{'trial steps/s':>14}{'overhead':>10}   trial step split (ms)")
    worst = -float("inf")
    for model in models:
        r = compare(trial_config(model, args.loss, args.image_size, args.batch, args.steps, args.warmup,
                                 args.workers, args.threads, args.device), args.repeats)
        worst = max(worst, r["overhead"])
        split = " ".join(f"{k}={v:.1f}" for k, v in r["phases"].items())
        print(f"{r['model'] + ' (' + r['arch'] + ')':<28}{r['bare']:>13.2f}{r['trial']:>14.2f}"
              f"{100 * r['overhead']:>9.1f}%   {split}")
        print(f"{'':<28}runs: bare {', '.join(f'{v:.2f}' for v in r['all_bare'])}; "
              f"trial {', '.join(f'{v:.2f}' for v in r['all_trial'])}")
    print(f"worst overhead {100 * worst:.1f}% (target <= 5%; negative = trial faster, i.e. noise)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
