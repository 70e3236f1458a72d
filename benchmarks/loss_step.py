"""A whole training step with each loss, relative to the same step with cross-entropy.

    python -m benchmarks.loss_step [--quick] [--loss NAME ...] [--repeats N] [--device cpu|cuda] [--out FILE.md]

Step = forward of smp ``Unet(resnet18)`` + loss + backward + SGD update, at (B=8, 9 classes, 224x224) (``--quick``:
B=2, 96x96). For the losses that use distance maps the step is timed twice: with the maps precomputed (as the
DataLoader workers provide them; their cost is then off the training loop, see :mod:`benchmarks.maps`) and computed
by the loss on the fly. ``boundary_aware`` gets the auxiliary distance-bin head and ``conditional_boundary`` the decoder
features, as the model factory provides them. Times are the best of ``--repeats`` steps after two warm-up steps.
Target: with precomputed maps, no loss costs more than 1.15x the CE step. :func:`step_time` is the measurement,
:func:`step_rows` the table's rows.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Iterator

import numpy as np
import torch

from raysweep.losses import LOSSES, build_loss
from raysweep.losses.maps import DistanceMaps

from ._common import emit, ensure_inversenet, save_table, smooth_noise, sync

NUM_CLASSES = 9


def make_batch(b: int, size: int, device):
    """Image ``(b, 3, size, size)``, target ``(b, size, size)`` (argmax of smoothed noise, 9 classes) and its
    precomputed distance maps ``(b, 9, size, size)``, on ``device``."""
    noise = smooth_noise(b, NUM_CLASSES, size, seed=0, blur=30)
    target = noise.argmax(1).astype(np.int64)
    dist = np.stack([DistanceMaps(NUM_CLASSES)(t)["dist_map"] for t in target])
    image = torch.from_numpy(noise[:, :3].astype(np.float32))
    return image.to(device), torch.from_numpy(target).to(device), torch.from_numpy(dist).to(device)


def step_time(name: str, batch, device, repeats: int, precomputed: bool) -> float:
    """Best ms of ``repeats`` training steps (smp Unet(resnet18) forward + loss ``name`` + backward + SGD) on
    ``batch`` (:func:`make_batch`) after two warm-up steps; ``precomputed``: pass the distance maps."""
    import segmentation_models_pytorch as smp

    image, target, dist = batch
    torch.manual_seed(0)
    loss = build_loss(name).to(device)
    aux = getattr(loss, "aux_channels", 0)
    model = smp.Unet("resnet18", encoder_weights=None, classes=NUM_CLASSES + aux).to(device)
    opt = torch.optim.SGD([*model.parameters(), *loss.parameters()], lr=1e-3, momentum=0.9)
    needs = LOSSES[name].needs

    def step():
        decoded = model.decoder(model.encoder(image))
        out = model.segmentation_head(decoded)
        extra = {}
        if aux:
            extra["aux_logits"] = out[:, NUM_CLASSES:]
        if "features" in needs:
            extra["features"] = decoded
        if precomputed and "dist_map" in needs:
            extra["dist_map"] = dist
        value = loss(out[:, :NUM_CLASSES], target, **extra)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()

    step()  # warm-up: lazy initialisation, allocator and thread-pool start-up
    step()
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def step_rows(names, b: int, size: int, device, repeats: int) -> Iterator[dict]:
    """``ce`` first, then each loss of ``names``: ``{loss, family, pre, fly}`` (ms; ``fly`` None for losses without
    distance maps), yielded as measured."""
    batch = make_batch(b, size, device)
    names = ["ce"] + [n for n in names if n != "ce"]
    if "inverseform" in names:
        ensure_inversenet()
    for name in names:
        pre = step_time(name, batch, device, repeats, precomputed=True)
        fly = step_time(name, batch, device, repeats, precomputed=False) if "dist_map" in LOSSES[name].needs else None
        yield {"loss": name, "family": LOSSES[name].family, "pre": pre, "fly": fly}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="B=2 at 96x96")
    parser.add_argument("--loss", action="append", help="only these losses (repeatable; ce is always run)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    b, size = (2, 96) if args.quick else (8, 224)
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} batch={b} size={size}",
          flush=True)
    header = "| loss | family | step ms (maps precomputed) | x CE | step ms (maps on the fly) | x CE |"
    rows = [header, "|---|---|---|---|---|---|"]
    print(header, flush=True)
    ce_ms = None
    for r in step_rows(args.loss or sorted(LOSSES), b, size, device, args.repeats):
        ce_ms = ce_ms or r["pre"]
        fly_cols = f"{r['fly']:.0f} | {r['fly'] / ce_ms:.2f}" if r["fly"] is not None else "- | -"
        emit(rows, f"| {r['loss']} | {r['family']} | {r['pre']:.0f} | {r['pre'] / ce_ms:.2f} | {fly_cols} |")
    save_table(rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
