"""A whole training step with each loss, relative to the same step with cross-entropy.

    python benchmarks/loss_step.py [--quick] [--loss NAME ...] [--repeats N] [--device cpu|cuda] [--out FILE.md]

Step = forward of smp ``Unet(resnet18)`` + loss + backward + SGD update, at (B=8, 9 classes, 224x224) (``--quick``:
B=2, 96x96). For the losses that use distance maps the step is timed twice: with the maps precomputed (as the
DataLoader workers provide them; their cost is then off the training loop, see ``benchmarks/maps.py``) and computed
by the loss on the fly. ``boundary_aware`` gets the auxiliary distance-bin head and ``conditional_boundary`` the decoder
features, as the model factory provides them. Times are the best of ``--repeats`` steps after two warm-up steps.
Target: with precomputed maps, no loss costs more than 1.15x the CE step.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import emit, ensure_inversenet, save_table  # noqa: E402
from raysweep.losses import LOSSES, build_loss  # noqa: E402
from raysweep.losses.maps import DistanceMaps  # noqa: E402

NUM_CLASSES = 9


def make_batch(b: int, size: int, device):
    from scipy import ndimage

    rng = np.random.default_rng(0)
    noise = ndimage.gaussian_filter(rng.random((b, NUM_CLASSES, size, size)), (0, 0, size / 30, size / 30))
    target = noise.argmax(1).astype(np.int64)
    dist = np.stack([DistanceMaps(NUM_CLASSES)(t)["dist_map"] for t in target])
    image = torch.from_numpy(noise[:, :3].astype(np.float32))
    return image.to(device), torch.from_numpy(target).to(device), torch.from_numpy(dist).to(device)


def main(argv=None) -> int:
    import segmentation_models_pytorch as smp

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="B=2 at 96x96")
    parser.add_argument("--loss", action="append", help="only these losses (repeatable; ce is always run)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    b, size = (2, 96) if args.quick else (8, 224)
    image, target, dist = make_batch(b, size, device)
    names = ["ce"] + [n for n in (args.loss or sorted(LOSSES)) if n != "ce"]
    if "inverseform" in names:
        ensure_inversenet()
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} batch={b} size={size}",
          flush=True)

    def step_time(name: str, precomputed: bool) -> float:
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
        for _ in range(args.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        return best * 1e3

    header = "| loss | family | step ms (maps precomputed) | x CE | step ms (maps on the fly) | x CE |"
    rows = [header, "|---|---|---|---|---|---|"]
    print(header, flush=True)
    ce_ms = None
    for name in names:
        pre = step_time(name, precomputed=True)
        ce_ms = ce_ms or pre
        if "dist_map" in LOSSES[name].needs:
            fly = step_time(name, precomputed=False)
            fly_cols = f"{fly:.0f} | {fly / ce_ms:.2f}"
        else:
            fly_cols = "- | -"
        row = f"| {name} | {LOSSES[name].family} | {pre:.0f} | {pre / ce_ms:.2f} | {fly_cols} |"
        emit(rows, row)
    save_table(rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
