"""Forward+backward time and peak memory of every loss, beside its peer implementations in the same process.

    python benchmarks/losses.py [--quick] [--loss NAME ...] [--repeats N] [--device cpu|cuda] [--out FILE.md]

Sizes: (B=8, C=9, 224x224) (Synapse at TransUNet's resolution) and (B=2, C=19, 512x1024) (Cityscapes at half
resolution); ``--quick`` runs only the first. Time is the best of ``--repeats`` runs after one warm-up run (the
minimum is the reading least disturbed by other work on the machine).
Peak memory is the extra memory a forward+backward needs on top of its inputs: on CUDA from the caching allocator's
statistics; on CPU from the process's peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs`` before
each measurement), with glibc's mmap threshold lowered so that freed buffers leave the resident set at once.
Ratios are ours / peer: below 1 means raysweep is faster (or lighter). Losses that use distance maps get them
precomputed (as in training, where the DataLoader workers compute them); ``benchmarks/maps.py`` times the maps and
``benchmarks/loss_step.py`` the whole training step with maps precomputed and on the fly.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import sys
import time
from pathlib import Path

# Freed tensors must leave the resident set immediately for the CPU peak-memory reading; glibc reads this at start-up.
if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None and sys.platform.startswith("linux"):
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    os.execv(sys.executable, [sys.executable, *sys.argv])

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import emit, ensure_inversenet, save_table  # noqa: E402
from raysweep.losses import LOSSES, build_loss  # noqa: E402
from raysweep.losses.maps import batch_signed_distance  # noqa: E402

SIZES = {"8x9x224x224": (8, 9, 224, 224), "2x19x512x1024": (2, 19, 512, 1024)}


def peers(name: str):
    """Peer implementations of loss ``name`` as ``(label, fn(logits, target))``, configured to compute the same value
    where the peer can (same reduction, ignore_index, smoothing); only importable peers are returned."""
    import torch.nn.functional as F

    out = []
    if name == "ce":
        out.append(("torch.cross_entropy", lambda x, t: F.cross_entropy(x, t, ignore_index=255)))
    if name == "wce":
        def torch_wce(x, t):
            valid = t != 255
            freq = torch.bincount(t[valid], minlength=x.shape[1]).float()
            w = torch.where(freq > 0, freq.sum() / freq.clamp_min(1), torch.zeros_like(freq))
            return F.cross_entropy(x, t, weight=w, ignore_index=255)
        out.append(("torch.cross_entropy(weight)", torch_wce))
    try:
        import monai.losses as ml

        def monai_idx(loss):
            return lambda x, t: loss(x, t.unsqueeze(1))

        def monai_no_ignore(loss):
            # These MONAI losses have no ignore_index (255 would crash the one-hot): map it to class 0.
            return lambda x, t: loss(x, t.masked_fill(t == 255, 0).unsqueeze(1))

        table = {
            "dice": lambda: ml.DiceLoss(softmax=True, to_onehot_y=True, batch=True, ignore_index=255),
            "jaccard": lambda: ml.DiceLoss(softmax=True, to_onehot_y=True, batch=True, jaccard=True, ignore_index=255),
            "tversky": lambda: ml.TverskyLoss(softmax=True, to_onehot_y=True, batch=True, alpha=0.3, beta=0.7,
                                              ignore_index=255),
            "focal": lambda: ml.FocalLoss(to_onehot_y=True, use_softmax=True, gamma=2.0, ignore_index=255),
        }
        no_ignore = {
            "generalized_dice": lambda: ml.GeneralizedDiceLoss(softmax=True, to_onehot_y=True, batch=True),
            "dice_ce": lambda: ml.DiceCELoss(softmax=True, to_onehot_y=True, batch=True),
        }
        if name in table:
            out.append(("monai", monai_idx(table[name]())))
        if name in no_ignore:
            out.append(("monai (no ignore_index)", monai_no_ignore(no_ignore[name]())))
        if name == "hausdorff":
            hd = ml.HausdorffDTLoss(softmax=True, to_onehot_y=True)
            out.append(("monai (no ignore_index)", lambda x, t: hd(x, t.masked_fill(t == 255, 0).unsqueeze(1))))
        if name == "gwdl":
            gw = None

            def monai_gwdl(x, t):
                nonlocal gw
                if gw is None:
                    gw = ml.GeneralizedWassersteinDiceLoss(dist_matrix=1 - torch.eye(x.shape[1]))
                return gw(x, t.masked_fill(t == 255, 0))
            out.append(("monai (no ignore_index)", monai_gwdl))
    except ImportError:
        pass
    try:
        import segmentation_models_pytorch.losses as sl

        table = {
            "dice": lambda: sl.DiceLoss("multiclass", ignore_index=255),
            "jaccard": lambda: sl.JaccardLoss("multiclass", ignore_index=255),
            "tversky": lambda: sl.TverskyLoss("multiclass", alpha=0.3, beta=0.7, ignore_index=255),
            "focal_tversky": lambda: sl.TverskyLoss("multiclass", alpha=0.3, beta=0.7, gamma=0.75, ignore_index=255),
            "lovasz": lambda: sl.LovaszLoss("multiclass", ignore_index=255),
        }
        if name in table:
            out.append(("smp", table[name]()))
    except ImportError:
        pass
    try:
        import kornia.losses as kl

        if name == "focal":
            out.append(("kornia", kl.FocalLoss(alpha=None, gamma=2.0, reduction="mean", ignore_index=255)))
    except ImportError:
        pass
    return out


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{key}:\s+(\d+) kB", f.read()).group(1)) * 1024


def extras(name: str, logits: torch.Tensor, target: torch.Tensor, dist_map: torch.Tensor) -> dict:
    """What a training loop passes to loss ``name`` besides (logits, target): precomputed maps and head outputs."""
    needs = LOSSES[name].needs
    b, _, h, w = logits.shape
    out = {}
    if "dist_map" in needs:
        out["dist_map"] = dist_map
    if "aux_logits" in needs:
        out["aux_logits"] = torch.randn(b, LOSSES[name].defaults["num_bins"], h, w, device=logits.device)
    if "features" in needs:
        out["features"] = torch.randn(b, 16, h, w, device=logits.device)
    return out


def measure(fn, logits, target, repeats: int, **extra) -> tuple[float, float]:
    """``(best ms, peak extra MiB)`` of ``fn(logits, target, **extra).backward()``."""
    device = logits.device

    def step():
        x = logits.detach().requires_grad_(True)
        fn(x, target, **extra).backward()
        return x.grad

    step()  # warm-up (lazy initialisation, caches)
    if device.type == "cuda":
        torch.cuda.synchronize()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            base = _status_bytes("VmRSS")
            step()
            peak = _status_bytes("VmHWM") - base
        except OSError:
            peak = float("nan")
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3, peak / 2**20


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="only the small size")
    parser.add_argument("--loss", action="append", help="only these losses (repeatable)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    args = parser.parse_args(argv)

    names = args.loss or sorted(LOSSES, key=lambda n: (LOSSES[n].family, n))
    unknown = [n for n in names if n not in LOSSES]
    if unknown:
        parser.error(f"unknown loss(es) {unknown}; known: {sorted(LOSSES)}")
    sizes = dict(list(SIZES.items())[:1]) if args.quick else SIZES
    device = torch.device(args.device)
    if "inverseform" in names:
        ensure_inversenet()
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} repeats={args.repeats}",
          flush=True)
    header = "| loss | size | ours ms | ours MiB | peer | peer ms | peer MiB | time ours/peer | mem ours/peer |"
    rows = [header, "|---|---|---|---|---|---|---|---|---|"]
    print(header, flush=True)
    for size_name, (b, c, h, w) in sizes.items():
        g = torch.Generator().manual_seed(0)
        logits = (torch.randn(b, c, h, w, generator=g) * 2).to(device)
        target = torch.randint(0, c, (b, h, w), generator=g)
        target[torch.rand(b, h, w, generator=g) < 0.05] = 255
        target = target.to(device)
        dist_map = None
        if any("dist_map" in LOSSES[n].needs for n in names):
            dist_map = batch_signed_distance(target, c)  # precomputed, as the DataLoader workers provide it
        for name in names:
            ours = build_loss(name).to(device)
            ms, mib = measure(ours, logits, target, args.repeats, **extras(name, logits, target, dist_map))
            peer_rows = []
            for label, fn in peers(name):
                pms, pmib = measure(fn, logits, target, args.repeats)
                peer_rows.append((label, pms, pmib))
            if not peer_rows:
                peer_rows = [("-", float("nan"), float("nan"))]
            # Fastest peer first: the target is to be no slower than the fastest one.
            for label, pms, pmib in sorted(peer_rows, key=lambda r: r[1]):
                row = (f"| {name} | {size_name} | {ms:.1f} | {mib:.0f} | {label} | {pms:.1f} | {pmib:.0f} | "
                       f"{ms / pms:.2f} | {mib / pmib if pmib else float('nan'):.2f} |")
                emit(rows, row)
    save_table(rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
