"""Distance-map throughput: raysweep's maps against SciPy called per class (and MONAI's transform), on CPU.

    python benchmarks/maps.py [--quick] [--repeats N] [--out FILE.md]

Two workloads:

* **target maps** (computed once per sample in the DataLoader workers): the per-class signed distance map of a label
  map (9 classes), raysweep's :func:`~raysweep.losses.maps.signed_distance_map` (``edt``: one multi-label pass for
  all inside distances, one pass per class outside) against Kervadec's ``one_hot2dist`` recipe with
  ``scipy.ndimage.distance_transform_edt`` (two transforms per class) and against MONAI's
  ``distance_transform_edt`` (per channel, SciPy on CPU). Sizes 224x224 and 512x512.
* **prediction fields** (the Hausdorff DT loss, every training step): the distance fields of a batch of thresholded
  predictions (B=8, 8 foreground classes), raysweep's :func:`~raysweep.losses.maps.distance_field` against SciPy's
  ``EDT(fg) + EDT(bg)`` per mask (what MONAI's ``HausdorffDTLoss`` does on CPU), and kornia's approximate,
  convolution-based ``distance_transform`` (the GPU-capable alternative, timed here on CPU).

Label maps are smoothed random fields' argmax: many touching regions of varied size. Throughput is the best of
``--repeats`` runs (the reading least disturbed by other work on the machine).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import emit, save_table  # noqa: E402
from raysweep.losses.maps import distance_field, signed_distance_map  # noqa: E402

NUM_CLASSES = 9


def label_maps(n: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.random((n, NUM_CLASSES, size, size)), (0, 0, size / 40, size / 40))
    return noise.argmax(1).astype(np.int64)


def scipy_one_hot2dist(labels: np.ndarray) -> np.ndarray:
    """Kervadec's recipe: two SciPy transforms per class."""
    out = np.zeros((NUM_CLASSES,) + labels.shape, np.float32)
    for c in range(NUM_CLASSES):
        pos = labels == c
        if pos.any() and not pos.all():
            neg = ~pos
            out[c] = ndimage.distance_transform_edt(neg) * neg - (ndimage.distance_transform_edt(pos) - 1) * pos
    return out


def monai_one_hot2dist(labels: np.ndarray):
    from monai.transforms.utils import distance_transform_edt

    onehot = np.stack([labels == c for c in range(NUM_CLASSES)])
    return distance_transform_edt(onehot), distance_transform_edt(~onehot)


def best_rate(fn, items, repeats: int) -> float:
    """Items per second, best of ``repeats`` passes over ``items``."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for x in items:
            fn(x)
        best = min(best, time.perf_counter() - t0)
    return len(items) / best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer maps, 224x224 only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = ["| workload | size | raysweep /s | peer | peer /s | speed-up |", "|---|---|---|---|---|---|"]
    print(rows[0], flush=True)

    sizes = [224] if args.quick else [224, 512]
    for size in sizes:
        n = 4 if args.quick else 8
        maps = label_maps(n, size)
        ours = best_rate(lambda m: signed_distance_map(m, NUM_CLASSES), maps, args.repeats)
        peers = [("scipy per class (one_hot2dist)", best_rate(scipy_one_hot2dist, maps, args.repeats))]
        try:
            peers.append(("monai distance_transform_edt", best_rate(monai_one_hot2dist, maps, args.repeats)))
        except ImportError:
            pass
        for label, rate in peers:
            row = f"| target maps, 9 classes | {size}x{size} | {ours:.1f} | {label} | {rate:.1f} | {ours / rate:.1f}x |"
            emit(rows, row)

    for size in sizes:
        labels = torch.from_numpy(label_maps(8, size, seed=1))
        masks = torch.stack([labels == c for c in range(1, NUM_CLASSES)], 1).flatten(0, 1)  # (8 * 8, H, W)
        ours = best_rate(distance_field, [masks], args.repeats)

        def scipy_fields(batch):
            for m in batch.numpy():
                if m.any() and not m.all():
                    ndimage.distance_transform_edt(m) + ndimage.distance_transform_edt(~m)

        peers = [("scipy EDT(fg)+EDT(bg) per mask", best_rate(scipy_fields, [masks], args.repeats))]
        try:
            from kornia.contrib import distance_transform

            def kornia_fields(batch):
                x = batch.unsqueeze(1).float()
                distance_transform(x) + distance_transform(1 - x)

            peers.append(("kornia distance_transform (approx.)", best_rate(kornia_fields, [masks], args.repeats)))
        except ImportError:
            pass
        for label, rate in peers:
            row = (f"| prediction fields, batch 8x8 masks | {size}x{size} | {ours:.2f} | {label} | {rate:.2f} | "
                   f"{ours / rate:.1f}x |")
            emit(rows, row)
    save_table(rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
