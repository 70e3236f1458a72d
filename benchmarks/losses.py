"""Forward+backward time and peak memory of every loss, beside its peer implementations in the same process.

    python -m benchmarks.losses [--quick] [--loss NAME ...] [--repeats N] [--device cpu|cuda] [--out FILE.md]
                                [--ignore-frac F] [--deferred] [--threads N] [--dims 2|3|2,3] [--size-3d BxCxDxHxW]

Sizes: (B=8, C=9, 224x224) (Synapse at TransUNet's resolution) and (B=2, C=19, 512x1024) (Cityscapes at half
resolution); ``--quick`` runs only the first. Time is the best of ``--repeats`` runs after one warm-up run (the
minimum is the reading least disturbed by other work on the machine).
3-D (``--dims 3``, or with the 2-D sizes by default): every 3-D-capable loss on volumes (B=2, C=4, 64x64x64)
(``--size-3d``) without ignored voxels, ``dice``, ``tversky``, ``focal``, ``dice_ce`` and ``hausdorff`` against
MONAI's 3-D losses configured to the same value (checked before timing), called alternately with them (median of
``--repeats``); :data:`SMALL_3D` names the losses measured on fewer voxels.
Peak memory is the extra memory a forward+backward needs on top of its inputs: on CUDA from the caching allocator's
statistics; on CPU from the process's peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs`` before
each measurement), with glibc's mmap threshold lowered so that freed buffers leave the resident set at once.
Ratios are ours / peer: below 1 means raysweep is faster (or lighter). Losses that use distance maps get them
precomputed (as in training, where the DataLoader workers compute them); :mod:`benchmarks.maps` times the maps and
:mod:`benchmarks.loss_step` the whole training step with maps precomputed and on the fly.
:func:`measure` is the measurement, :func:`time_losses` and :func:`time_losses_3d` the tables' rows;
:func:`device_timing` (fp32, bf16 autocast and maps on the fly, relative to CE, on one device) is
:mod:`benchmarks.gpu_session`'s.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import re
import statistics
import sys
import time
from contextlib import nullcontext
from typing import Iterator

# Freed tensors must leave the resident set immediately for the CPU peak-memory reading; glibc reads this at start-up.
if __name__ == "__main__" and os.environ.get("MALLOC_MMAP_THRESHOLD_") is None and sys.platform.startswith("linux"):
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    os.execv(sys.executable, [sys.executable, "-m", __spec__.name if __spec__ else "benchmarks.losses", *sys.argv[1:]])

import torch  # noqa: E402

from raysweep.losses import LOSSES, build_loss  # noqa: E402
from raysweep.losses.maps import batch_signed_distance  # noqa: E402

from ._common import blob_batch, emit, ensure_inversenet, fake_extras, save_table, sync  # noqa: E402

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


def device_timing(out: dict, names, size, device, reps: int, *, autocast: bool, skip=None, stop=lambda: False,
                  log=print) -> dict:
    """Each loss of ``names`` on ``device`` at ``size`` ``(B, C, H, W)`` (:func:`~benchmarks._common.blob_batch`
    inputs, distance maps precomputed): :func:`measure` in fp32 (median of ``reps``, at most ~8 s), under bf16
    autocast if ``autocast``, and, for losses that take ``dist_map``, with the maps computed by the loss on the fly.

    Fills ``out`` (and returns it) as it goes: ``timing_size``, ``timing_device``, ``target_maps_batch_cpu_ms`` and
    ``timing`` ``{loss: {fp32, bf16_autocast, fp32_maps_on_the_fly, ratio_to_ce, bf16_ratio_to_ce} | {skipped} |
    {error}}``; ``ce`` is timed first. ``skip`` ``{loss: reason}`` are not run; the rest are skipped once ``stop()``.
    """
    skip = skip or {}
    out["timing_size"] = list(size)
    out["timing_device"] = str(device)
    timing = out.setdefault("timing", {})
    logits, target = blob_batch(*size, seed=1)
    t = time.perf_counter()
    dmap = batch_signed_distance(target, size[1])
    out["target_maps_batch_cpu_ms"] = 1e3 * (time.perf_counter() - t)
    logits, target, dmap = logits.to(device), target.to(device), dmap.to(device)
    for name in ["ce"] + [n for n in names if n != "ce"] if "ce" in names else names:
        if name in skip or stop():
            timing[name] = {"skipped": skip.get(name, "time budget")}
            continue
        row = timing.setdefault(name, {})
        try:
            loss = build_loss(name).to(device)
            ex = fake_extras(name, logits, dmap)
            row["fp32"] = measure(loss, logits, target, reps, max_s=8.0, **ex)
            if autocast:
                amp_dt = torch.bfloat16
                ex_h = {k: (v if k == "dist_map" else v.to(amp_dt)) for k, v in ex.items()}
                row["bf16_autocast"] = measure(loss, logits.to(amp_dt), target, reps, amp_dtype=amp_dt, max_s=8.0,
                                               **ex_h)
            if "dist_map" in LOSSES[name].needs:
                ex_nomap = {k: v for k, v in ex.items() if k != "dist_map"}
                row["fp32_maps_on_the_fly"] = measure(loss, logits, target, max(3, reps // 2), max_s=8.0, **ex_nomap)
        except Exception as exc:  # noqa: BLE001
            row["error"] = f"{type(exc).__name__}: {exc}"[:400]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log(f"time  {name:<22} fp32 {row.get('fp32', {}).get('ms', float('nan')):8.2f} ms  "
            f"bf16 {row.get('bf16_autocast', {}).get('ms', float('nan')):8.2f} ms  "
            f"peak {row.get('fp32', {}).get('peak_extra_mib') or float('nan'):8.1f} MiB {row.get('error', '')}")
    ce = timing.get("ce", {}).get("fp32", {}).get("ms")
    ce_bf = timing.get("ce", {}).get("bf16_autocast", {}).get("ms")
    for row in timing.values():
        if ce and "fp32" in row:
            row["ratio_to_ce"] = row["fp32"]["ms"] / ce
        if ce_bf and "bf16_autocast" in row:
            row["bf16_ratio_to_ce"] = row["bf16_autocast"]["ms"] / ce_bf
    return out


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{key}:\s+(\d+) kB", f.read()).group(1)) * 1024


def _stepper(fn, logits, target, amp_dtype=None, **extra):
    """One forward+backward of ``fn(logits, target, **extra)`` on a fresh leaf copy of ``logits`` (under
    ``torch.autocast(amp_dtype)`` if given), as a callable that returns the gradient."""
    ctx = (lambda: torch.autocast(logits.device.type, dtype=amp_dtype)) if amp_dtype is not None else nullcontext

    def step():
        x = logits.detach().requires_grad_(True)
        with ctx():
            value = fn(x, target, **extra)
        value.backward()
        return x.grad

    return step


def _timed(step, device) -> float:
    """Seconds one synchronised call of ``step`` takes."""
    t0 = time.perf_counter()
    step()
    sync(device)
    return time.perf_counter() - t0


def _peak_extra_bytes(step, device) -> float:
    """The extra memory one call of ``step`` needs on top of what is allocated: on CUDA from the caching allocator,
    on CPU from ``VmHWM`` (reset through ``/proc/self/clear_refs``); NaN where unreadable."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _status_bytes("VmRSS")
        step()
        return _status_bytes("VmHWM") - base
    except OSError:
        return float("nan")


def measure(fn, logits, target, repeats: int, *, amp_dtype=None, max_s: float | None = None, **extra) -> dict:
    """Time and memory of ``fn(logits, target, **extra).backward()`` (under ``torch.autocast(amp_dtype)`` if given).

    One warm-up call (timed: ``first_call_ms``), one call measuring the peak extra memory (``peak_extra_mib``: on CUDA
    from the caching allocator, on CPU from ``VmHWM``; NaN where unreadable), then ``repeats`` timed calls (fewer,
    at least 2, if ``max_s`` is given and the warm-up says they would take longer), synchronised. Returns ``{"ms":
    median, "ms_min": best, "reps", "first_call_ms", "peak_extra_mib"}``, times in ms.
    """
    device = logits.device
    step = _stepper(fn, logits, target, amp_dtype, **extra)
    first = _timed(step, device)  # warm-up (lazy initialisation, cuDNN/cuBLAS handles, caches)
    peak = _peak_extra_bytes(step, device)
    n = repeats if max_s is None or first * repeats < max_s else max(2, int(max_s / max(first, 1e-6)))
    times = [_timed(step, device) for _ in range(n)]
    return {"ms": 1e3 * statistics.median(times), "ms_min": 1e3 * min(times), "reps": n, "first_call_ms": 1e3 * first,
            "peak_extra_mib": peak / 2**20}


def measure_interleaved(calls: dict, logits, target, repeats: int) -> dict:
    """:func:`measure` of several implementations of one computation, interleaved: ``calls`` ``{label: (fn,
    extra)}``; each is warmed up and its peak memory read, then ``repeats`` rounds call each once, the order
    reversed every other round (A B, B A, ...), so that a change in the machine's load hits them alike. Returns
    ``{label: measure's dict}`` (``ms``: the median)."""
    device = logits.device
    steps = {label: _stepper(fn, logits, target, **extra) for label, (fn, extra) in calls.items()}
    out = {}
    for label, step in steps.items():
        first = _timed(step, device)
        out[label] = {"first_call_ms": 1e3 * first, "peak_extra_mib": _peak_extra_bytes(step, device) / 2**20}
    times = {label: [] for label in steps}
    for i in range(repeats):
        for label in (list(steps) if i % 2 == 0 else list(steps)[::-1]):
            times[label].append(_timed(steps[label], device))
    for label, ts in times.items():
        out[label].update(ms=1e3 * statistics.median(ts), ms_min=1e3 * min(ts), reps=repeats)
    return out


def make_inputs(b: int, c: int, h: int, w: int, device, ignore_frac: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded logits ``(B, C, H, W)`` (N(0, 4)) and a uniform random target ``(B, H, W)`` with ``ignore_frac`` (5 %)
    of its pixels ignored (255)."""
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(b, c, h, w, generator=g) * 2).to(device)
    target = torch.randint(0, c, (b, h, w), generator=g)
    target[torch.rand(b, h, w, generator=g) < ignore_frac] = 255
    return logits, target.to(device)


def time_losses(names, sizes: dict, device, repeats: int, *, ignore_frac: float = 0.05,
                deferred: bool = False) -> Iterator[dict]:
    """Each loss in ``names`` and its peers at each size of ``sizes`` (``{label: (B, C, H, W)}``): one dict per
    (loss, size, peer), fastest peer first, with ``loss, size, ms, mib, peer, peer_ms, peer_mib`` (best ms), yielded
    as measured. ``ignore_frac``: the share of ignored pixels (0: the losses' fast path); ``deferred``: call ours as
    the trainer does between its checks (``validate=False``, ``ignored`` known), not as a standalone call."""
    if "inverseform" in names:
        ensure_inversenet()
    for size_name, (b, c, h, w) in sizes.items():
        logits, target = make_inputs(b, c, h, w, device, ignore_frac)
        dist_map = None
        if any("dist_map" in LOSSES[n].needs for n in names):
            dist_map = batch_signed_distance(target, c)  # precomputed, as the DataLoader workers provide it
        checks = {"validate": False, "ignored": bool((target == 255).any())} if deferred else {}
        for name in names:
            ours = build_loss(name).to(device)
            r = measure(ours, logits, target, repeats, **checks, **fake_extras(name, logits, dist_map))
            peer_rows = []
            for label, fn in peers(name):
                p = measure(fn, logits, target, repeats)
                peer_rows.append((label, p["ms_min"], p["peak_extra_mib"]))
            if not peer_rows:
                peer_rows = [("-", float("nan"), float("nan"))]
            # Fastest peer first: the target is to be no slower than the fastest one.
            for label, pms, pmib in sorted(peer_rows, key=lambda row: row[1]):
                yield {"loss": name, "size": size_name, "ms": r["ms_min"], "mib": r["peak_extra_mib"], "peer": label,
                       "peer_ms": pms, "peer_mib": pmib}


SIZE_3D = (2, 4, 64, 64, 64)
#: 3-D losses too slow at SIZE_3D for a CPU run: measured at this (D, H, W) instead, same B and C (the row says so).
SMALL_3D = {"conditional_boundary": (32, 32, 32)}
NOTE_3D = ("no ignored voxels (MONAI's ignore handling differs); ours and MONAI called alternately in the same "
           "process, ms = median")


def blob_volume(b: int, c: int, d: int, h: int, w: int, seed: int = 0, ignore_frac: float = 0.0, scale: float = 2.0):
    """Logits ``(b, c, d, h, w)`` float32 (N(0, scale^2)) and a target ``(b, d, h, w)`` int64: a ball per foreground
    class over 10 % uniform noise (:func:`~benchmarks._common.blob_batch` in 3-D), ``ignore_frac`` of the voxels
    255 (none by default: the MONAI comparison needs none)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, d, h, w, generator=g) * scale
    target = torch.randint(0, c, (b, d, h, w), generator=g)
    zz, yy, xx = torch.meshgrid(torch.arange(d), torch.arange(h), torch.arange(w), indexing="ij")
    for i in range(b):
        base = torch.zeros(d, h, w, dtype=torch.long)
        for k in range(1, c):
            centre = [torch.randint(n // 8, n - n // 8, (1,), generator=g).item() for n in (d, h, w)]
            r = torch.randint(max(min(d, h, w) // 10, 2), max(min(d, h, w) // 4, 3), (1,), generator=g).item()
            base[(zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 < r * r] = k
        target[i] = torch.where(torch.rand(d, h, w, generator=g) < 0.1, target[i], base)
    if ignore_frac:
        target[torch.rand(b, d, h, w, generator=g) < ignore_frac] = 255
    return logits, target


def extras_3d(name: str, logits: torch.Tensor, dist_map: torch.Tensor | None = None, seed: int = 0) -> dict:
    """:func:`~benchmarks._common.fake_extras` for volumes: ``dist_map`` passed on, ``aux_logits`` ``(B, num_bins,
    D, H, W)``, ``features`` ``(B, 16, D, H, W)`` (a 3-D U-Net decoder's output)."""
    spec = LOSSES[name]
    g = torch.Generator().manual_seed(seed)
    b, _, *spatial = logits.shape
    out = {}
    if "dist_map" in spec.needs and dist_map is not None:
        out["dist_map"] = dist_map
    if "aux_logits" in spec.needs:
        out["aux_logits"] = torch.randn(b, spec.defaults["num_bins"], *spatial, generator=g).to(logits.device)
    if "features" in spec.needs:
        out["features"] = torch.randn(b, 16, *spatial, generator=g).to(logits.device)
    return out


def peers_3d(name: str) -> list:
    """MONAI's 3-D losses configured to compute the value of raysweep's ``name`` at its defaults, on targets without
    ignored voxels, as ``(label, fn(logits, target), factor)``: ours = factor x MONAI (``focal``: MONAI averages over
    the classes too, so the factor is C, given as ``"C"``). Empty when MONAI is not installed or has no equivalent."""
    try:
        import monai.losses as ml
    except ImportError:
        return []
    spec = LOSSES[name].defaults
    table = {
        "dice": lambda: ml.DiceLoss(softmax=True, to_onehot_y=True, batch=True),
        "tversky": lambda: ml.TverskyLoss(softmax=True, to_onehot_y=True, batch=True, alpha=spec["alpha"],
                                          beta=spec["beta"]),
        "focal": lambda: ml.FocalLoss(use_softmax=True, to_onehot_y=True, gamma=spec["gamma"]),
        "dice_ce": lambda: ml.DiceCELoss(softmax=True, to_onehot_y=True, batch=True),
        # raysweep's default leaves the background channel out; MONAI's includes it unless told
        "hausdorff": lambda: ml.HausdorffDTLoss(softmax=True, to_onehot_y=True, alpha=spec["alpha"],
                                                include_background=spec["include_background"]),
    }
    if name not in table:
        return []
    loss = table[name]()
    return [("monai", lambda x, t: loss(x, t.unsqueeze(1)), "C" if name == "focal" else 1.0)]


def time_losses_3d(names, size=SIZE_3D, device=torch.device("cpu"), repeats: int = 5, *,
                   small: dict | None = None) -> Iterator[dict]:
    """Each 3-D-capable loss of ``names`` on volumes of ``size`` ``(B, C, D, H, W)`` (:func:`blob_volume`, no
    ignored voxels; ``small`` ``{loss: (D, H, W)}``, default :data:`SMALL_3D`, moves slow losses to fewer voxels),
    one dict per row as :func:`time_losses`'s, yielded as measured (``ms``: median of ``repeats``). A loss with MONAI
    peers (:func:`peers_3d`) is first checked to give MONAI's value (``ValueError`` if not: the benchmark must not
    time different computations), then timed interleaved with it (:func:`measure_interleaved`); ``hausdorff`` also
    gets a row with its target maps computed by the loss on each call, as MONAI's are. The rest are timed alone."""
    small = SMALL_3D if small is None else small
    names = [n for n in names if 3 in LOSSES[n].dims]
    inputs = {}
    for name in names:
        spatial = tuple(small.get(name, size[2:]))
        shape = (*size[:2], *spatial) if math.prod(spatial) < math.prod(size[2:]) else tuple(size)
        if shape not in inputs:
            inputs[shape] = [t.to(device) for t in blob_volume(*shape)] + [None]
        logits, target, dist_map = inputs[shape]
        if dist_map is None and "dist_map" in LOSSES[name].needs:
            # precomputed, as the DataLoader workers provide it
            dist_map = inputs[shape][2] = batch_signed_distance(target, shape[1])
        label = "x".join(map(str, shape))
        ours = build_loss(name).to(device)
        extra = extras_3d(name, logits, dist_map)
        peer = peers_3d(name)
        if not peer:
            r = measure(ours, logits, target, repeats, **extra)
            yield {"loss": name, "size": label, "ms": r["ms"], "mib": r["peak_extra_mib"], "peer": "-",
                   "peer_ms": float("nan"), "peer_mib": float("nan")}
            continue
        (peer_label, fn, factor), = peer
        factor = logits.shape[1] if factor == "C" else factor
        variants = {name: extra}
        if "dist_map" in extra:
            variants[f"{name} (maps on the fly)"] = {k: v for k, v in extra.items() if k != "dist_map"}
        with torch.no_grad():
            want = fn(logits, target) * factor
            for row_name, ex in variants.items():
                got = ours(logits, target, **ex)
                if not torch.allclose(got, want, rtol=1e-4, atol=1e-6):
                    raise ValueError(f"3-D {row_name}: raysweep {got.item():.6g} != {factor} x MONAI "
                                     f"{want.item() / factor:.6g}; the timings would compare different computations")
        for row_name, ex in variants.items():
            r = measure_interleaved({"ours": (ours, ex), "peer": (fn, {})}, logits, target, repeats)
            yield {"loss": row_name, "size": label, "ms": r["ours"]["ms"], "mib": r["ours"]["peak_extra_mib"],
                   "peer": peer_label + ("" if factor == 1 else f" (x{factor:g} = ours)"), "peer_ms": r["peer"]["ms"],
                   "peer_mib": r["peer"]["peak_extra_mib"]}


def _size(text: str) -> tuple[int, ...]:
    size = tuple(int(v) for v in text.lower().split("x"))
    if len(size) != 5:
        raise argparse.ArgumentTypeError(f"expected BxCxDxHxW, got {text!r}")
    return size


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="only the small size")
    parser.add_argument("--loss", action="append", help="only these losses (repeatable)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    parser.add_argument("--ignore-frac", type=float, default=0.05,
                        help="share of ignored pixels in the target (default 0.05; 0 times the losses' fast path)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's); 1 steadies the readings on a "
                        "busy machine, where every parallel region waits for its slowest thread")
    parser.add_argument("--deferred", action="store_true",
                        help="call ours with validate=False, as the trainer does between its checks")
    parser.add_argument("--dims", choices=["2", "3", "2,3"], default="2,3",
                        help="the 2-D sizes, the 3-D rows (against MONAI's 3-D losses, no ignored voxels), or both")
    parser.add_argument("--size-3d", type=_size, default=SIZE_3D, metavar="BxCxDxHxW",
                        help="shape of the 3-D rows (default 2x4x64x64x64)")
    args = parser.parse_args(argv)

    names = args.loss or sorted(LOSSES, key=lambda n: (LOSSES[n].family, n))
    unknown = [n for n in names if n not in LOSSES]
    if unknown:
        parser.error(f"unknown loss(es) {unknown}; known: {sorted(LOSSES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = dict(list(SIZES.items())[:1]) if args.quick else SIZES
    device = torch.device(args.device)
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} repeats={args.repeats} "
          f"ignore_frac={args.ignore_frac} checks={'deferred' if args.deferred else 'every call'}", flush=True)
    header = "| loss | size | ours ms | ours MiB | peer | peer ms | peer MiB | time ours/peer | mem ours/peer |"
    rows = []
    if "2" in args.dims:
        rows += [header, "|---|---|---|---|---|---|---|---|---|"]
        print(header, flush=True)
        for r in time_losses(names, sizes, device, args.repeats, ignore_frac=args.ignore_frac,
                             deferred=args.deferred):
            emit(rows, _table_row(r))
    if "3" in args.dims:
        flat = [n for n in names if 3 not in LOSSES[n].dims]
        size = "x".join(map(str, args.size_3d))
        for line in ["", f"3-D, {size} (ms: median of {args.repeats}): {NOTE_3D}. Other shapes are stated in the size "
                     f"column." + (f" 2-D only (LossSpec.dims): {', '.join(flat)}." if flat else ""), "", header,
                     "|---|---|---|---|---|---|---|---|---|"]:
            emit(rows, line)
        for r in time_losses_3d(names, args.size_3d, device, args.repeats):
            emit(rows, _table_row(r))
    save_table(rows, args.out)
    return 0


def _table_row(r: dict) -> str:
    return (f"| {r['loss']} | {r['size']} | {r['ms']:.1f} | {r['mib']:.0f} | {r['peer']} | {r['peer_ms']:.1f} | "
            f"{r['peer_mib']:.0f} | {r['ms'] / r['peer_ms']:.2f} | "
            f"{r['mib'] / r['peer_mib'] if r['peer_mib'] else float('nan'):.2f} |")


if __name__ == "__main__":
    sys.exit(main())
