"""Distance-map throughput: raysweep's maps against SciPy called per class (and MONAI's transform), on CPU.

    python -m benchmarks.maps [--quick] [--repeats N] [--out FILE.md] [--device cuda]

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
``--repeats`` runs (the reading least disturbed by other work on the machine). :func:`target_map_rows` and
:func:`field_rows` are the table's measurements.

With ``--device cuda`` it also prints :func:`on_device` (also :mod:`benchmarks.gpu_session`'s ``maps`` part) as JSON:
``distance_field`` on a CUDA batch of masks (the Hausdorff DT loss's per-step work), which path ran (cuCIM, CuPy or
the CPU ``edt`` fallback), CuPy's own ``cupyx.scipy.ndimage.distance_transform_edt`` as a GPU alternative, and the
per-sample target maps the DataLoader workers compute.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time

import numpy as np
import torch
from scipy import ndimage

from raysweep.losses import maps as M
from raysweep.losses.maps import distance_field, signed_distance_map

from ._common import emit, jsonable, label_maps, save_table, sync

NUM_CLASSES = 9


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


def target_map_rows(sizes, n: int, repeats: int) -> list[dict]:
    """Target maps (9 classes) per second at each size, raysweep against each peer: ``{size, ours, peer, rate}``."""
    out = []
    for size in sizes:
        maps = label_maps(n, NUM_CLASSES, size)
        ours = best_rate(lambda m: signed_distance_map(m, NUM_CLASSES), maps, repeats)
        peers = [("scipy per class (one_hot2dist)", best_rate(scipy_one_hot2dist, maps, repeats))]
        try:
            peers.append(("monai distance_transform_edt", best_rate(monai_one_hot2dist, maps, repeats)))
        except ImportError:
            pass
        out += [{"size": size, "ours": ours, "peer": label, "rate": rate} for label, rate in peers]
    return out


def field_rows(sizes, repeats: int) -> list[dict]:
    """Prediction fields of a batch of 8 x 8 masks per second at each size: ``{size, ours, peer, rate}``."""
    out = []
    for size in sizes:
        labels = torch.from_numpy(label_maps(8, NUM_CLASSES, size, seed=1))
        masks = torch.stack([labels == c for c in range(1, NUM_CLASSES)], 1).flatten(0, 1)  # (8 * 8, H, W)
        ours = best_rate(distance_field, [masks], repeats)

        def scipy_fields(batch):
            for m in batch.numpy():
                if m.any() and not m.all():
                    ndimage.distance_transform_edt(m) + ndimage.distance_transform_edt(~m)

        peers = [("scipy EDT(fg)+EDT(bg) per mask", best_rate(scipy_fields, [masks], repeats))]
        try:
            from kornia.contrib import distance_transform

            def kornia_fields(batch):
                x = batch.unsqueeze(1).float()
                distance_transform(x) + distance_transform(1 - x)

            peers.append(("kornia distance_transform (approx.)", best_rate(kornia_fields, [masks], repeats)))
        except ImportError:
            pass
        out += [{"size": size, "ours": ours, "peer": label, "rate": rate} for label, rate in peers]
    return out


def timed(fn, device, reps: int):
    """``(last output, median ms)`` of ``reps`` synchronised calls of ``fn()`` after one warm-up call."""
    fn()
    sync(device)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return out, 1e3 * statistics.median(times)


def on_device(device, b: int = 8, c: int = 9, size: int = 224, reps: int = 5, log=print,
              cpu_note: str = "needs CUDA") -> dict:
    """The maps on ``device``: ``distance_field`` of the ``(b * c, size, size)`` one-hot masks of ``b`` label maps
    (which path ran, median ms; the same from CPU tensors), CuPy's EDT (CUDA only: ms, first call, agreement) and
    ``signed_distance_map`` ms per sample (CPU). ``log`` prints progress; ``cpu_note`` says why CuPy's EDT was
    skipped on a CPU device."""
    box: dict = {}
    labels = label_maps(b, c, size)
    masks_cpu = torch.from_numpy(np.stack([labels == k for k in range(c)], 1)).flatten(0, 1)  # (B*C, H, W) bool
    box["masks_shape"] = list(masks_cpu.shape)
    box["cucim_installed"] = importlib.util.find_spec("cucim") is not None
    box["cupy_installed"] = importlib.util.find_spec("cupy") is not None
    masks = masks_cpu.to(device)
    flat = masks.flatten(1)
    has_boundary = flat.any(1) & ~flat.all(1)
    box["masks_with_boundary"] = int(has_boundary.sum())
    if masks.is_cuda:
        gpu_edt = M._gpu_edt()
        box["distance_field_path"] = (f"GPU ({gpu_edt.__module__})" if gpu_edt is not None else
                                      "edt on CPU (neither cuCIM nor CuPy importable; copies masks to the host and back)")
    else:
        box["distance_field_path"] = "edt on CPU (tensor on CPU: smoke run)"
    ref, ms = timed(lambda: M.distance_field(masks), device, reps)
    box["distance_field_ms"] = ms
    ref = ref.cpu()
    _, box["distance_field_cpu_input_ms"] = timed(lambda: M.distance_field(masks_cpu), torch.device("cpu"), reps)
    log(f"maps: distance_field path={box['distance_field_path']} {ms:.1f} ms on {tuple(masks.shape)}; "
        f"from CPU tensors {box['distance_field_cpu_input_ms']:.1f} ms")

    # CuPy's own EDT (CuPy >= 13 ships cupyx.scipy.ndimage.distance_transform_edt): a cuCIM-free GPU path
    alt = box.setdefault("cupyx_edt", {})
    if device.type != "cuda":
        alt["skipped"] = cpu_note
    else:
        try:
            import cupy
            from cupyx.scipy.ndimage import distance_transform_edt as cx_edt

            alt["cupy"] = cupy.__version__

            def cupy_field():
                out = torch.zeros(masks.shape, dtype=torch.float32, device=device)
                for i in torch.nonzero(has_boundary).flatten().tolist():
                    m = cupy.asarray(masks[i])
                    out[i] = torch.as_tensor(cx_edt(m) + cx_edt(~m), device=device)
                return out

            t = time.perf_counter()
            cupy_field()
            sync(device)
            alt["first_call_ms"] = 1e3 * (time.perf_counter() - t)  # kernel compilation
            got, alt["ms"] = timed(cupy_field, device, reps)
            alt["max_abs_diff_vs_edt"] = float((got.cpu() - ref).abs().max())
            alt["note"] = "per-mask loop like maps._distance_field_gpu, always cupyx"
        except Exception as exc:  # noqa: BLE001
            alt["error"] = f"{type(exc).__name__}: {exc}"[:600]
        log(f"maps: cupyx EDT {alt}")

    # target maps: what the DataLoader workers compute per sample (CPU)
    t = time.perf_counter()
    for lab in labels:
        M.signed_distance_map(lab, c)
    box["signed_distance_map_ms_per_sample"] = 1e3 * (time.perf_counter() - t) / len(labels)
    log(f"maps: signed_distance_map {box['signed_distance_map_ms_per_sample']:.1f} ms / sample ({c} classes, {size}^2)")
    return box


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer maps, 224x224 only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    parser.add_argument("--device", default="cpu", help="also time the maps on this device (cuda), printed as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = ["| workload | size | raysweep /s | peer | peer /s | speed-up |", "|---|---|---|---|---|---|"]
    print(rows[0], flush=True)

    sizes = [224] if args.quick else [224, 512]
    for r in target_map_rows(sizes, 4 if args.quick else 8, args.repeats):
        emit(rows, f"| target maps, 9 classes | {r['size']}x{r['size']} | {r['ours']:.1f} | {r['peer']} | "
                   f"{r['rate']:.1f} | {r['ours'] / r['rate']:.1f}x |")
    for r in field_rows(sizes, args.repeats):
        emit(rows, f"| prediction fields, batch 8x8 masks | {r['size']}x{r['size']} | {r['ours']:.2f} | {r['peer']} | "
                   f"{r['rate']:.2f} | {r['ours'] / r['rate']:.1f}x |")
    save_table(rows, args.out)
    if args.device != "cpu":
        print(json.dumps(jsonable(on_device(torch.device(args.device), reps=args.repeats))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
