"""One GPU session, measured in one go: environment, every loss on CUDA, distance maps, training throughput with AMP,
and several trials sharing one GPU (fractional ``gpus_per_trial``). Not part of the tests.

    python benchmarks/gpu_session.py [--out gpu_session.json] [--budget 450] [--parts env,losses,maps,training,fractional]
    python benchmarks/gpu_session.py --smoke --out /tmp/gs.json      # every code path on the CPU, tiny sizes

Parts (each in its own try/except; the JSON is rewritten after every part, so a part that fails or a run that is
killed still leaves the figures measured so far; every part also stops early when the time budget runs out and says
what it skipped):

1. ``env``: torch / CUDA / cuDNN versions, device, bf16 support, ``nvidia-smi``, versions of the carried packages.
2. ``losses``: every registered loss at (B=2, C=4, 64x64) with ignored pixels: value and gradient on CPU (fp32) and on
   CUDA (fp32), their differences, and finiteness (and difference to fp32) with bf16 and fp16 logits under
   ``torch.autocast``; then forward+backward time (median of ``--loss-reps`` after warm-up, synchronised) and peak
   extra memory on CUDA at (8, 9, 224, 224), fp32 logits and bf16 logits under autocast, with the ratio to ``ce``.
   Losses that take ``dist_map`` get it precomputed (as the DataLoader workers provide it) and are also timed without
   it (maps computed by the loss on the CPU, on the fly).
3. ``maps``: :func:`raysweep.losses.maps.distance_field` on a CUDA batch of masks (the Hausdorff DT loss's per-step
   work): which path ran (cuCIM or the CPU ``edt`` fallback) and its time; the CPU time; CuPy's own
   ``cupyx.scipy.ndimage.distance_transform_edt`` as a GPU alternative (time and agreement); the per-sample target
   maps (``signed_distance_map``) that the DataLoader workers compute.
4. ``training``: ``train_trial`` steps/s of the ``cnn`` and ``transformer`` models at 224x224, batch 24, AMP auto
   (bf16), ``--workers`` DataLoader workers, with phases, peak memory, GPU utilisation and the bare-loop steps/s of
   ``benchmarks/train.py`` (overhead); and the ``cnn`` with AMP off (the AMP speed-up).
5. ``fractional``: N = 1, 2, 4 concurrent ``train_trial`` processes on the same GPU (what ``gpus_per_trial`` 1, 0.5,
   0.25 means in a sweep), started together behind a barrier once each has built its data: per-process and
   aggregate steps/s, peak memory per process, GPU utilisation; for the recipe size (cnn, 224, batch 24) and, if time
   is left, for the default sweep's trial (configs/default.yaml: U-Net/ResNet-18 depth 3, 32x32, batch 8).

Timing note: a ``train_trial`` reports ``steps_per_s`` over the steps since its previous report, so each trial here
runs ``2 * T`` steps with ``eval.every = T``: the first T steps are the warm-up (cuDNN autotuning, worker start-up) and
the final report covers the T timed steps only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

T0 = time.perf_counter()


def elapsed() -> float:
    return time.perf_counter() - T0


def log(*args) -> None:
    print(f"[{elapsed():6.1f}s]", *args, flush=True)


def jsonable(x):
    """Strict JSON: non-finite floats become strings, tensors and numpy scalars plain numbers."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        x = x.item()
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return repr(x)


class Session:
    def __init__(self, args) -> None:
        self.args = args
        self.budget = args.budget
        self.out = Path(args.out) if args.out else None
        self.results: dict = {"meta": {"smoke": args.smoke, "budget_s": args.budget, "argv": sys.argv[1:],
                                       "started": time.strftime("%Y-%m-%d %H:%M:%S")},
                              "parts": {}, "errors": {}}

    def left(self) -> float:
        return self.budget - elapsed()

    def save(self) -> None:
        self.results["meta"]["elapsed_s"] = round(elapsed(), 1)
        if self.out:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.out.with_suffix(".tmp")
            tmp.write_text(json.dumps(jsonable(self.results), indent=1))
            tmp.replace(self.out)

    def part(self, name: str, fn) -> None:
        log(f"=== part {name} (budget left {self.left():.0f}s)")
        t = time.perf_counter()
        box = self.results["parts"].setdefault(name, {})
        try:
            fn(box)
            box["status"] = box.get("status", "ok")
        except BaseException as exc:  # noqa: BLE001 - record and go on (KeyboardInterrupt too: the JSON must land)
            box["status"] = "error"
            self.results["errors"][name] = "".join(traceback.format_exception(exc))[-4000:]
            log(f"part {name} failed: {type(exc).__name__}: {exc}")
            if isinstance(exc, KeyboardInterrupt):
                raise
        finally:
            box["wall_s"] = round(time.perf_counter() - t, 2)
            self.save()


# ---------------------------------------------------------------------------------------------------------------
# 1. environment


def part_env(s: Session, box: dict) -> None:
    import importlib.metadata as md

    box["python"] = platform.python_version()
    box["torch"] = torch.__version__
    box["torch_cuda"] = torch.version.cuda
    box["cuda_available"] = torch.cuda.is_available()
    box["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    box["cpu_count"] = os.cpu_count()
    box["torch_threads"] = torch.get_num_threads()
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        box["device"] = p.name
        box["capability"] = f"{p.major}.{p.minor}"
        box["memory_gib"] = round(p.total_memory / 2**30, 1)
        box["sm_count"] = p.multi_processor_count
        box["bf16_supported"] = torch.cuda.is_bf16_supported()
        box["device_count"] = torch.cuda.device_count()
    smi = shutil.which("nvidia-smi")
    if smi:
        q = "name,driver_version,memory.total,memory.used,power.limit,clocks.max.sm,utilization.gpu,compute_mode,mig.mode.current"
        r = subprocess.run([smi, f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        box["nvidia_smi"] = (r.stdout.strip() or r.stderr.strip())
        box["nvidia_smi_fields"] = q
    else:
        box["nvidia_smi"] = "nvidia-smi not found"
    versions = {}
    for pkg in ("numpy", "scipy", "torchvision", "segmentation_models_pytorch", "timm", "albumentations", "albucore",
                "pydantic", "edt", "opencv-python-headless", "cupy-cuda13x", "cupy-cuda12x", "cucim",
                "cucim-cu12", "cucim-cu13", "ray", "optuna", "tqdm", "typing_extensions"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    box["packages"] = versions
    box["ray_imported"] = "ray" in sys.modules
    box["optuna_imported"] = "optuna" in sys.modules
    log(f"torch {torch.__version__} cuda {torch.version.cuda} device {box.get('device', 'cpu')}; smi: {box['nvidia_smi']}")


# ---------------------------------------------------------------------------------------------------------------
# 2. losses


def make_batch(b, c, h, w, seed=0, ignore_frac=0.05, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, h, w, generator=g) * scale
    target = torch.randint(0, c, (b, h, w), generator=g)
    # a few blobs make the boundary family see real regions, not salt-and-pepper noise
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    for i in range(b):
        base = torch.zeros(h, w, dtype=torch.long)
        for k in range(1, c):
            cy, cx = (torch.randint(h // 8, h - h // 8, (1,), generator=g).item(),
                      torch.randint(w // 8, w - w // 8, (1,), generator=g).item())
            r = torch.randint(max(h // 10, 2), max(h // 4, 3), (1,), generator=g).item()
            base[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = k
        noise = torch.rand(h, w, generator=g) < 0.1
        target[i] = torch.where(noise, target[i], base)
    target[torch.rand(b, h, w, generator=g) < ignore_frac] = 255
    return logits, target


def loss_extras(name, logits, dist_map, seed=0, features_like="conftest"):
    """What a training loop passes besides (logits, target) (tests/conftest.py ``extras_for`` plus the dist map)."""
    from raysweep.losses import LOSSES

    spec = LOSSES[name]
    g = torch.Generator().manual_seed(seed)
    b, _, h, w = logits.shape
    out = {}
    if "dist_map" in spec.needs and dist_map is not None:
        out["dist_map"] = dist_map
    if "aux_logits" in spec.needs:
        out["aux_logits"] = torch.randn(b, spec.defaults["num_bins"], h, w, generator=g)
    if "features" in spec.needs:
        if features_like == "conftest":
            out["features"] = torch.randn(b, 8, max(h // 2, 1), max(w // 2, 1), generator=g)
        else:  # U-Net decoder output: D = 16 at full resolution
            out["features"] = torch.randn(b, 16, h, w, generator=g)
    return out


def value_and_grad(name, logits, target, extras, device, amp_dtype=None):
    from raysweep.losses import build_loss

    torch.manual_seed(0)
    loss = build_loss(name).to(device)
    x = logits.detach().to(device)
    ex = {}
    for k, v in extras.items():
        v = v.to(device)
        if amp_dtype is not None and k != "dist_map":
            v = v.to(amp_dtype)  # model outputs are half precision under autocast; maps stay float32
        ex[k] = v
    if amp_dtype is not None:
        x = x.to(amp_dtype)
    x.requires_grad_(True)
    ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    with ctx:
        v = loss(x, target.to(device), **ex)
    v.backward()
    grad = x.grad.detach().float().cpu() if x.grad is not None else torch.zeros(logits.shape)
    return v.detach().float().cpu(), grad, str(v.dtype)


def compare(ref_v, ref_g, v, g) -> dict:
    scale = float(ref_g.abs().max())
    return {"value": float(v), "value_abs_diff": abs(float(v) - float(ref_v)),
            "value_rel_diff": abs(float(v) - float(ref_v)) / max(abs(float(ref_v)), 1e-12),
            "grad_max_abs_diff": float((g - ref_g).abs().max()),
            "grad_rel_diff": float((g - ref_g).abs().max()) / max(scale, 1e-30),
            "value_finite": bool(torch.isfinite(v)), "grad_finite": bool(torch.isfinite(g).all())}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_loss(loss, logits, target, extras, device, reps, amp_dtype=None, max_s=8.0) -> dict:
    """Median wall ms of forward+backward (synchronised), and peak extra memory (CUDA) of one step."""
    ctx = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype is not None else nullcontext

    def step():
        x = logits.detach().requires_grad_(True)
        with ctx():
            v = loss(x, target, **extras)
        v.backward()
        return v

    t = time.perf_counter()
    step()  # warm-up: lazy init, cuDNN/cuBLAS handles, caches
    sync(device)
    first = time.perf_counter() - t
    step()
    sync(device)
    peak = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        sync(device)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    n = reps if first * reps < max_s else max(2, int(max_s / max(first, 1e-6)))
    times = []
    for _ in range(n):
        t = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t)
    return {"ms": 1e3 * statistics.median(times), "ms_min": 1e3 * min(times), "reps": n,
            "first_call_ms": 1e3 * first, "peak_extra_mib": peak}


def part_losses(s: Session, box: dict) -> None:
    from raysweep.losses import LOSSES, build_loss
    from raysweep.losses.maps import batch_signed_distance

    smoke = s.args.smoke
    cuda = torch.cuda.is_available() and not smoke
    dev = torch.device("cuda" if cuda else "cpu")
    box["device"] = str(dev)
    names = sorted(LOSSES, key=lambda n: (LOSSES[n].family, n))
    if s.args.loss:
        names = [n for n in names if n in s.args.loss]
    box["names"] = names

    # InverseForm needs a trained InverseNet: a tiny one trained here (quality irrelevant for cost and agreement).
    skip: dict[str, str] = {}
    if "inverseform" in names:
        t = time.perf_counter()
        try:
            from _common import ensure_inversenet

            ensure_inversenet()
            build_loss("inverseform")
            box["inversenet"] = {"trained_s": round(time.perf_counter() - t, 2),
                                 "cache": os.environ.get("RAYSWEEP_CACHE")}
        except Exception as exc:  # noqa: BLE001
            skip["inverseform"] = f"no InverseNet: {type(exc).__name__}: {exc}"
    box["skipped"] = skip

    # --- agreement: CPU fp32 vs CUDA fp32, and bf16/fp16 autocast
    logits, target = make_batch(2, 4, 64, 64, seed=0)
    dmap = batch_signed_distance(target, 4)
    agree = box.setdefault("agreement", {})
    box["agreement_size"] = [2, 4, 64, 64]
    for name in names:
        if name in skip:
            continue
        if s.left() < 60:
            agree[name] = {"skipped": "time budget"}
            continue
        row = agree.setdefault(name, {})
        try:
            ex = loss_extras(name, logits, dmap)
            ref_v, ref_g, _ = value_and_grad(name, logits, target, ex, torch.device("cpu"))
            row["cpu_value"] = float(ref_v)
            row["cpu_grad_finite"] = bool(torch.isfinite(ref_g).all())
            v, g, _ = value_and_grad(name, logits, target, ex, dev)
            row["fp32"] = compare(ref_v, ref_g, v, g)
            for label, dt in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
                try:
                    v, g, vdt = value_and_grad(name, logits, target, ex, dev, amp_dtype=dt)
                    row[label] = compare(ref_v, ref_g, v, g)
                    row[label]["out_dtype"] = vdt
                except Exception as exc:  # noqa: BLE001
                    row[label] = {"error": f"{type(exc).__name__}: {exc}"[:400]}
        except Exception as exc:  # noqa: BLE001
            row["error"] = f"{type(exc).__name__}: {exc}"[:400]
        f = row.get("fp32", {})
        log(f"agree {name:<22} cpu={row.get('cpu_value', float('nan')):.6g} dv={f.get('value_abs_diff', float('nan')):.2e}"
            f" dg_rel={f.get('grad_rel_diff', float('nan')):.2e} bf16_finite={row.get('bf16', {}).get('grad_finite')}"
            f" fp16_finite={row.get('fp16', {}).get('grad_finite')} {row.get('error', '')}")
    s.save()

    # --- speed and memory at the Synapse recipe size
    size = (2, 4, 64, 64) if smoke else tuple(s.args.loss_size)
    reps = 3 if smoke else s.args.loss_reps
    box["timing_size"] = list(size)
    box["timing_device"] = str(dev)
    timing = box.setdefault("timing", {})
    logits, target = make_batch(*size, seed=1)
    t = time.perf_counter()
    dmap_cpu = batch_signed_distance(target, size[1])
    box["target_maps_batch_cpu_ms"] = 1e3 * (time.perf_counter() - t)
    logits, target, dmap = logits.to(dev), target.to(dev), dmap_cpu.to(dev)
    deadline = elapsed() + (s.args.loss_timing_s if not smoke else 120)
    order = ["ce"] + [n for n in names if n != "ce"] if "ce" in names else names
    for name in order:
        if name in skip:
            timing[name] = {"skipped": skip[name]}
            continue
        if elapsed() > deadline or s.left() < 30:
            timing[name] = {"skipped": "time budget"}
            continue
        row = timing.setdefault(name, {})
        try:
            loss = build_loss(name).to(dev)
            ex = {k: v.to(dev) for k, v in loss_extras(name, logits.cpu(), dmap_cpu, features_like="unet").items()}
            row["fp32"] = time_loss(loss, logits, target, ex, dev, reps)
            if cuda or smoke:
                amp_dt = torch.bfloat16
                ex_h = {k: (v if k == "dist_map" else v.to(amp_dt)) for k, v in ex.items()}
                row["bf16_autocast"] = time_loss(loss, logits.to(amp_dt), target, ex_h, dev, reps, amp_dtype=amp_dt)
            if "dist_map" in LOSSES[name].needs:
                ex_nomap = {k: v for k, v in ex.items() if k != "dist_map"}
                row["fp32_maps_on_the_fly"] = time_loss(loss, logits, target, ex_nomap, dev, max(3, reps // 2))
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception as exc:  # noqa: BLE001
            row["error"] = f"{type(exc).__name__}: {exc}"[:400]
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        log(f"time  {name:<22} fp32 {row.get('fp32', {}).get('ms', float('nan')):8.2f} ms  "
            f"bf16 {row.get('bf16_autocast', {}).get('ms', float('nan')):8.2f} ms  "
            f"peak {row.get('fp32', {}).get('peak_extra_mib') or float('nan'):8.1f} MiB {row.get('error', '')}")
    ce = timing.get("ce", {}).get("fp32", {}).get("ms")
    ce_bf = timing.get("ce", {}).get("bf16_autocast", {}).get("ms")
    for name, row in timing.items():
        if ce and "fp32" in row:
            row["ratio_to_ce"] = row["fp32"]["ms"] / ce
        if ce_bf and "bf16_autocast" in row:
            row["bf16_ratio_to_ce"] = row["bf16_autocast"]["ms"] / ce_bf


# ---------------------------------------------------------------------------------------------------------------
# 3. distance maps


def label_maps(n, c, size, seed=0):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.random((n, c, size, size)), (0, 0, size / 40, size / 40))
    return noise.argmax(1).astype(np.int64)


def timed(fn, device, reps):
    fn()
    sync(device)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return out, 1e3 * statistics.median(times)


def part_maps(s: Session, box: dict) -> None:
    import importlib.util

    from raysweep.losses import maps as M

    smoke = s.args.smoke
    cuda = torch.cuda.is_available() and not smoke
    dev = torch.device("cuda" if cuda else "cpu")
    b, c, size = (2, 4, 64) if smoke else (8, 9, 224)
    reps = 2 if smoke else 5
    labels = label_maps(b, c, size)
    masks_cpu = torch.from_numpy(np.stack([labels == k for k in range(c)], 1)).flatten(0, 1)  # (B*C, H, W) bool
    box["masks_shape"] = list(masks_cpu.shape)
    box["cucim_installed"] = importlib.util.find_spec("cucim") is not None
    box["cupy_installed"] = importlib.util.find_spec("cupy") is not None
    masks = masks_cpu.to(dev)
    flat = masks.flatten(1)
    has_boundary = flat.any(1) & ~flat.all(1)
    box["masks_with_boundary"] = int(has_boundary.sum())
    if masks.is_cuda:
        gpu_edt = M._gpu_edt()
        box["distance_field_path"] = (f"GPU ({gpu_edt.__module__})" if gpu_edt is not None else
                                      "edt on CPU (neither cuCIM nor CuPy importable; copies masks to the host and back)")
    else:
        box["distance_field_path"] = "edt on CPU (tensor on CPU: smoke run)"
    ref, ms = timed(lambda: M.distance_field(masks), dev, reps)
    box["distance_field_ms"] = ms
    ref = ref.cpu()
    _, box["distance_field_cpu_input_ms"] = timed(lambda: M.distance_field(masks_cpu), torch.device("cpu"), reps)
    log(f"maps: distance_field path={box['distance_field_path']} {ms:.1f} ms on {tuple(masks.shape)}; "
        f"from CPU tensors {box['distance_field_cpu_input_ms']:.1f} ms")

    # CuPy's own EDT (CuPy >= 13 ships cupyx.scipy.ndimage.distance_transform_edt): a cuCIM-free GPU path
    alt = box.setdefault("cupyx_edt", {})
    if not cuda:
        alt["skipped"] = "needs CUDA" if not smoke else "smoke run (CPU)"
    else:
        try:
            import cupy
            from cupyx.scipy.ndimage import distance_transform_edt as cx_edt

            alt["cupy"] = cupy.__version__

            def cupy_field():
                out = torch.zeros(masks.shape, dtype=torch.float32, device=dev)
                for i in torch.nonzero(has_boundary).flatten().tolist():
                    m = cupy.asarray(masks[i])
                    out[i] = torch.as_tensor(cx_edt(m) + cx_edt(~m), device=dev)
                return out

            t = time.perf_counter()
            cupy_field()
            sync(dev)
            alt["first_call_ms"] = 1e3 * (time.perf_counter() - t)  # kernel compilation
            got, alt["ms"] = timed(cupy_field, dev, reps)
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


# ---------------------------------------------------------------------------------------------------------------
# 4. training throughput


def trial_cfg(model, image_size, batch, timed_steps, workers, device, amp="auto", threads=None, arch=None,
              depth=None, sync_every=None):
    """``2 * timed_steps`` steps, a report after the first half (warm-up) and at the end (the timed half)."""
    ds_opts = {"image_size": image_size}
    if depth is not None:
        ds_opts["depth"] = depth
    cfg = {
        "dataset": {"name": "synthetic", "options": ds_opts},
        "model": {"name": model},
        "loss": {"name": "dice_ce"},
        "train": {"steps": 2 * timed_steps, "batch_size": batch, "num_workers": workers, "threads": threads,
                  "device": device, "amp": amp, "progress": False, "sync_every": sync_every},
        "eval": {"every": timed_steps, "max_cases": 1, "hd95": False, "overlays": 0, "report_cases": False},
        "checkpoint": {"every": 0},
    }
    if arch:
        cfg["model"].update(arch)
    return cfg


def summarise_result(result: dict) -> dict:
    keep = {k: v for k, v in result.items() if k.startswith("time/") or k in (
        "status", "step", "steps_per_s", "peak_memory_mb", "loss", "dice", "error", "diverged_step", "oom_step")}
    return keep


def measure_training(s: Session, model: str, amp: str, device: str, sampler, size, batch, steps, workers,
                     with_bare=True, channels_last="auto") -> dict:
    from train import bare_steps_per_s  # benchmarks/train.py

    from raysweep.data import build_dataset
    from raysweep.models import MODELS
    from raysweep.trial import train_trial

    config = trial_cfg(model, size, batch, steps, workers, device, amp=amp)
    config["train"]["channels_last"] = channels_last
    t = time.perf_counter()
    build_dataset("synthetic", "train", **config["dataset"]["options"])  # cached in-process: out of the timing
    build_dataset("synthetic", "test", **config["dataset"]["options"])
    data_s = time.perf_counter() - t
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    if sampler is not None:
        sampler.samples = []
        sampler.active = True
    t0 = time.perf_counter()
    result = train_trial(config)
    wall = time.perf_counter() - t0
    if sampler is not None:
        sampler.active = False
    util = [u for u, _ in sampler.samples] if sampler is not None else []
    mem = [m for _, m in sampler.samples] if sampler is not None else []
    out = {"model": model, "arch": f"{MODELS[model]['arch']}/{MODELS[model]['encoder']}", "amp": amp,
           "image_size": size, "batch": batch, "timed_steps": steps, "warmup_steps": steps, "workers": workers,
           "data_gen_s": round(data_s, 2), "trial_wall_s": round(wall, 2), "result": summarise_result(result),
           "status": result.get("status")}
    if result.get("status") != "completed":
        return out
    out["steps_per_s"] = result["steps_per_s"]
    out["images_per_s"] = result["steps_per_s"] * batch
    out["peak_memory_mb"] = result.get("peak_memory_mb")
    out["phases_ms"] = {k[5:-3]: round(v, 2) for k, v in result.items() if k.startswith("time/") and k.endswith("_ms")}
    out["gpu_util_mean"] = sum(util) / len(util) if util else None
    out["gpu_util_median"] = sorted(util)[len(util) // 2] if util else None
    out["gpu_mem_used_max_mib"] = max(mem) if mem else None
    out["util_samples"] = len(util)
    if with_bare:
        t = time.perf_counter()
        bare = bare_steps_per_s(config)  # bare loop: AMP whenever CUDA (bf16 where supported), channels-last
        out["bare_steps_per_s"] = bare
        out["bare_wall_s"] = round(time.perf_counter() - t, 2)
        out["overhead"] = 1.0 - result["steps_per_s"] / bare
    return out


def new_sampler():
    try:
        from gpu_check import UtilisationSampler  # benchmarks/gpu_check.py

        sampler = UtilisationSampler(0.2)
        if not torch.cuda.is_available() and shutil.which("nvidia-smi") is None:
            return None
        sampler.start()
        return sampler
    except Exception:  # noqa: BLE001
        return None


def part_training(s: Session, box: dict) -> None:
    smoke = s.args.smoke
    cuda = torch.cuda.is_available() and not smoke
    device = "cuda" if cuda else "cpu"
    size, batch = (64, 2) if smoke else (s.args.image_size, s.args.batch)
    steps = 3 if smoke else s.args.train_steps
    workers = 2 if smoke else s.args.workers
    box.update({"device": device, "image_size": size, "batch": batch, "timed_steps": steps, "workers": workers})
    runs = box.setdefault("runs", [])
    sampler = new_sampler() if cuda else None
    box["util_sampler"] = sampler is not None
    # --train-plan: model:amp[:channels_last[:batch]] items; the bare loop only for the first of each model.
    plan, seen = [], set()
    for item in s.args.train_plan.split(","):
        model, amp, *rest = item.split(":")
        cl = {"cl": True, "nocl": False}.get(rest[0], "auto") if rest else "auto"
        b = int(rest[1]) if len(rest) > 1 else batch
        plan.append((model, amp, model not in seen, cl, b))
        seen.add(model)
    est = {"cnn": 35.0, "transformer": 35.0}
    try:
        for model, amp, bare, cl, batch in plan:
            need = 25.0 if smoke else est[model]
            if s.left() < need + s.args.reserve_s:
                runs.append({"model": model, "amp": amp, "status": "skipped", "reason": "time budget"})
                continue
            try:
                r = measure_training(s, model, amp, device, sampler, size, batch, steps, workers, with_bare=bare,
                                     channels_last=cl)
                r["channels_last"] = cl
            except Exception as exc:  # noqa: BLE001
                r = {"model": model, "amp": amp, "status": "error", "error": f"{type(exc).__name__}: {exc}"[:600],
                     "traceback": traceback.format_exc()[-2000:]}
            runs.append(r)
            log(f"train {model} amp={amp} channels_last={cl} batch={batch}: " + json.dumps(jsonable({k: r.get(k) for k in (
                "status", "steps_per_s", "bare_steps_per_s", "overhead", "peak_memory_mb", "gpu_util_mean",
                "trial_wall_s", "data_gen_s", "error")})))
            s.save()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    finally:
        if sampler is not None:
            sampler.stop()
    by = {(r["model"], r["amp"]): r for r in runs}
    on, off = by.get(("cnn", "auto"), {}), by.get(("cnn", "off"), {})
    if on.get("steps_per_s") and off.get("steps_per_s"):
        box["cnn_amp_speedup"] = on["steps_per_s"] / off["steps_per_s"]


# ---------------------------------------------------------------------------------------------------------------
# 5. several trials on one GPU


def child_main(spec_path: str) -> int:
    """One concurrent trial: build the data, wait for the go file, run train_trial, write the result."""
    spec = json.loads(Path(spec_path).read_text())
    from raysweep.data import build_dataset
    from raysweep.trial import train_trial

    res = {"pid": os.getpid()}
    try:
        cfg = spec["config"]
        opts = cfg["dataset"]["options"]
        build_dataset("synthetic", "train", **opts)
        build_dataset("synthetic", "test", **opts)
        import segmentation_models_pytorch  # noqa: F401  (import outside the timing)

        if cfg["train"]["device"].startswith("cuda"):
            torch.zeros(1, device="cuda")  # CUDA context before the barrier
        Path(spec["ready"]).write_text("1")
        t_wait = time.time()
        while not Path(spec["go"]).exists():
            if time.time() - t_wait > spec["wait_s"]:
                raise TimeoutError("no go signal")
            time.sleep(0.02)
        res["t_start"] = time.time()
        result = train_trial(cfg)
        res["t_end"] = time.time()
        res.update(summarise_result(result))
    except Exception as exc:  # noqa: BLE001
        res["status"] = "error"
        res["error"] = f"{type(exc).__name__}: {exc}"[:600]
        res["traceback"] = traceback.format_exc()[-2000:]
    Path(spec["result"]).write_text(json.dumps(jsonable(res)))
    return 0


def run_concurrent(s: Session, n: int, make_cfg, sampler, timeout_s: float, tmp: Path) -> dict:
    procs, specs = [], []
    env = dict(os.environ)
    if torch.cuda.is_available():
        env["CUDA_VISIBLE_DEVICES"] = env.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or "0"
    env["PYTHONUNBUFFERED"] = "1"
    go = tmp / f"go_{n}_{time.time_ns()}"
    t_launch = time.perf_counter()
    for i in range(n):
        spec = {"config": make_cfg(i), "ready": str(tmp / f"ready_{n}_{i}"), "go": str(go),
                "result": str(tmp / f"result_{n}_{i}.json"), "wait_s": timeout_s}
        for k in ("ready", "result"):
            Path(spec[k]).unlink(missing_ok=True)
        p_spec = tmp / f"spec_{n}_{i}.json"
        p_spec.write_text(json.dumps(spec))
        logf = open(tmp / f"child_{n}_{i}.log", "w")
        procs.append((subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", str(p_spec)],
                                       env=env, stdout=logf, stderr=subprocess.STDOUT), logf))
        specs.append(spec)
    out = {"n": n}
    deadline = time.perf_counter() + timeout_s
    try:
        while not all(Path(sp["ready"]).exists() for sp in specs):
            if time.perf_counter() > deadline or any(p.poll() is not None for p, _ in procs):
                break
            time.sleep(0.05)
        out["setup_s"] = round(time.perf_counter() - t_launch, 2)
        if sampler is not None:
            sampler.samples = []
            sampler.active = True
        t_go = time.perf_counter()
        go.write_text("1")
        for p, _ in procs:
            try:
                p.wait(timeout=max(1.0, deadline - time.perf_counter()))
            except subprocess.TimeoutExpired:
                pass
        out["run_s"] = round(time.perf_counter() - t_go, 2)
    finally:
        if sampler is not None:
            sampler.active = False
        for p, logf in procs:
            if p.poll() is None:
                p.kill()  # only the children started here, by handle
                p.wait(timeout=10)
                out.setdefault("killed", 0)
                out["killed"] += 1
            logf.close()
    children = []
    for i, sp in enumerate(specs):
        try:
            children.append(json.loads(Path(sp["result"]).read_text()))
        except Exception as exc:  # noqa: BLE001
            tail = (tmp / f"child_{n}_{i}.log").read_text()[-1500:] if (tmp / f"child_{n}_{i}.log").exists() else ""
            children.append({"status": "no result", "error": f"{type(exc).__name__}: {exc}", "log_tail": tail})
    out["children"] = children
    ok = [c for c in children if c.get("status") == "completed" and c.get("steps_per_s")]
    out["completed"] = len(ok)
    if ok:
        rates = [c["steps_per_s"] for c in ok]
        out["per_process_steps_per_s"] = rates
        out["aggregate_steps_per_s"] = sum(rates)
        out["mean_per_process_steps_per_s"] = sum(rates) / len(rates)
        out["peak_memory_mb_per_process"] = [c.get("peak_memory_mb") for c in ok]
        starts, ends = [c["t_start"] for c in ok], [c["t_end"] for c in ok]
        steps_total = sum(c.get("step", 0) for c in ok)
        out["start_spread_s"] = max(starts) - min(starts)
        out["end_spread_s"] = max(ends) - min(ends)
        # conservative: all steps (warm-up and evaluations included) over the union of the windows
        out["aggregate_steps_per_s_wall_incl_warmup"] = steps_total / (max(ends) - min(starts))
    if sampler is not None and sampler.samples:
        util = [u for u, _ in sampler.samples]
        mem = [m for _, m in sampler.samples]
        out["gpu_util_mean"] = sum(util) / len(util)
        out["gpu_util_median"] = sorted(util)[len(util) // 2]
        out["gpu_mem_used_max_mib"] = max(mem)
        out["util_samples"] = len(util)
    return out


def part_fractional(s: Session, box: dict) -> None:
    smoke = s.args.smoke
    cuda = torch.cuda.is_available() and not smoke
    device = "cuda" if cuda else "cpu"
    ncpu = os.cpu_count() or 4
    counts = [int(x) for x in s.args.fractions.split(",")] if not smoke else [1, 2]
    box["device"] = device
    box["counts"] = counts
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # this process's cached blocks would count against the children
    sampler = new_sampler() if cuda else None
    tmp = Path(tempfile.mkdtemp(prefix="gpu_session_"))
    box["tmp"] = str(tmp)

    # single-process rate from part 4 decides the step count (about target_s of timed steps per N)
    train_runs = s.results["parts"].get("training", {}).get("runs", [])
    rate1 = next((r.get("steps_per_s") for r in train_runs if r.get("model") == "cnn" and r.get("amp") == "auto"
                  and r.get("steps_per_s")), None)
    box["single_rate_from_training"] = rate1

    sweep_arch = {"arch": "Unet", "encoder": "resnet18",
                  "options": {"encoder_depth": 3, "decoder_channels": [64, 32, 16]}}  # configs/default.yaml's cnn
    setups = []
    if smoke:
        setups.append(("recipe", {"model": "cnn", "size": 64, "batch": 2, "arch": None, "depth": None,
                                  "steps": lambda n: 3, "workers": lambda n: 1, "threads": 1}))
        setups.append(("default_sweep_trial", {"model": "cnn", "size": 32, "batch": 8, "depth": 8, "arch": sweep_arch,
                                               "steps": lambda n: 5, "workers": lambda n: 0, "threads": 1}))
    else:
        target = s.args.frac_target_s
        r1 = rate1 or 15.0
        setups.append(("recipe", {
            "model": "cnn", "size": s.args.image_size, "batch": s.args.batch, "arch": None, "depth": None,
            "steps": lambda n: int(min(2000, max(30, r1 * target / n))),
            "workers": lambda n: max(2, min(8, (ncpu - n) // n)), "threads": 2}))
        setups.append(("default_sweep_trial", {
            "model": "cnn", "size": 32, "batch": 8, "depth": 8,
            "arch": sweep_arch, "steps": lambda n: 300, "workers": lambda n: 0, "threads": 1}))
    try:
        for label, st in setups:
            rows = box.setdefault(label, {"config": {k: v for k, v in st.items() if not callable(v)}, "runs": []})
            for n in counts:
                est = 40.0 if label == "recipe" else 25.0
                if smoke:
                    est = 10.0
                if s.left() < est + s.args.reserve_s:
                    rows["runs"].append({"n": n, "status": "skipped", "reason": "time budget"})
                    continue
                steps = st["steps"](n)

                def make_cfg(i, st=st, steps=steps, n=n):
                    cfg = trial_cfg(st["model"], st["size"], st["batch"], steps, st["workers"](n), device,
                                    threads=st["threads"], arch=st["arch"], depth=st["depth"])
                    cfg["seed"] = i
                    return cfg

                timeout = min(s.left() - s.args.reserve_s / 2, 150.0 if not smoke else 120.0)
                r = run_concurrent(s, n, make_cfg, sampler, timeout, tmp)
                r["timed_steps_per_process"] = steps
                r["workers_per_process"] = st["workers"](n)
                r["threads_per_process"] = st["threads"]
                rows["runs"].append(r)
                log(f"frac {label} N={n}: aggregate {r.get('aggregate_steps_per_s', float('nan')):.2f} steps/s, per "
                    f"process {r.get('per_process_steps_per_s')}, util {r.get('gpu_util_mean')}, peak MiB "
                    f"{r.get('peak_memory_mb_per_process')}, setup {r.get('setup_s')}s run {r.get('run_s')}s, "
                    f"completed {r.get('completed')}/{n}")
                s.save()
            base = next((r.get("aggregate_steps_per_s") for r in rows["runs"] if r.get("n") == 1), None)
            if base:
                for r in rows["runs"]:
                    if r.get("aggregate_steps_per_s"):
                        r["aggregate_vs_n1"] = r["aggregate_steps_per_s"] / base
    finally:
        if sampler is not None:
            sampler.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# summary


def fmt(x, spec=".2f", dash="-"):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return dash
    try:
        return format(x, spec)
    except (TypeError, ValueError):
        return str(x)


def print_summary(s: Session) -> None:
    P = s.results["parts"]
    print("\n" + "=" * 100)
    print(f"GPU session summary ({'SMOKE, CPU' if s.args.smoke else 'device'}), {elapsed():.0f}s")
    env = P.get("env", {})
    print(f"env: torch {env.get('torch')} cuda {env.get('torch_cuda')} cudnn {env.get('cudnn')} device "
          f"{env.get('device', 'cpu')} bf16={env.get('bf16_supported')} | {env.get('nvidia_smi')}")
    L = P.get("losses", {})
    if L:
        print(f"\nlosses: agreement at {L.get('agreement_size')} CPU fp32 vs {L.get('device')}; timing at "
              f"{L.get('timing_size')} on {L.get('timing_device')}")
        print(f"{'loss':<22}{'|dv|':>10}{'grad rel':>10}{'bf16 ok':>8}{'bf16 dv':>9}{'fp16 ok':>8}{'fp16 dv':>9}"
              f"{'fp32 ms':>9}{'x ce':>7}{'bf16 ms':>9}{'peak MiB':>9}{'otf ms':>8}")
        agree, timing = L.get("agreement", {}), L.get("timing", {})
        for name in L.get("names", []):
            a, t = agree.get(name, {}), timing.get(name, {})
            f = a.get("fp32", {})

            def ok(k):
                d = a.get(k, {})
                if "error" in d:
                    return "ERR"
                if not d:
                    return "-"
                return "yes" if d.get("value_finite") and d.get("grad_finite") else "NO"

            err = a.get("error") or t.get("error") or t.get("skipped") or a.get("skipped") or ""
            print(f"{name:<22}{fmt(f.get('value_abs_diff'), '.1e'):>10}{fmt(f.get('grad_rel_diff'), '.1e'):>10}"
                  f"{ok('bf16'):>8}{fmt(a.get('bf16', {}).get('value_rel_diff'), '.1e'):>9}{ok('fp16'):>8}"
                  f"{fmt(a.get('fp16', {}).get('value_rel_diff'), '.1e'):>9}"
                  f"{fmt(t.get('fp32', {}).get('ms')):>9}{fmt(t.get('ratio_to_ce'), '.1f'):>7}"
                  f"{fmt(t.get('bf16_autocast', {}).get('ms')):>9}{fmt(t.get('fp32', {}).get('peak_extra_mib'), '.0f'):>9}"
                  f"{fmt(t.get('fp32_maps_on_the_fly', {}).get('ms'), '.1f'):>8}  {str(err)[:60]}")
    M = P.get("maps", {})
    if M:
        print(f"\nmaps: distance_field on {M.get('masks_shape')}: path = {M.get('distance_field_path')}, "
              f"{fmt(M.get('distance_field_ms'), '.1f')} ms (CPU input {fmt(M.get('distance_field_cpu_input_ms'), '.1f')} ms);"
              f" cupyx EDT: {fmt(M.get('cupyx_edt', {}).get('ms'), '.1f')} ms "
              f"(diff {fmt(M.get('cupyx_edt', {}).get('max_abs_diff_vs_edt'), '.1e')}) "
              f"{M.get('cupyx_edt', {}).get('error') or M.get('cupyx_edt', {}).get('skipped') or ''}; "
              f"signed_distance_map {fmt(M.get('signed_distance_map_ms_per_sample'), '.1f')} ms/sample")
    T = P.get("training", {})
    if T:
        print(f"\ntraining: {T.get('image_size')}x{T.get('image_size')} batch {T.get('batch')}, {T.get('timed_steps')} "
              f"timed steps after as many warm-up, {T.get('workers')} workers, device {T.get('device')}")
        print(f"{'model':<28}{'amp':>5}{'steps/s':>9}{'img/s':>8}{'bare':>8}{'ovh':>7}{'util%':>7}{'peak MiB':>9}  phases ms")
        for r in T.get("runs", []):
            ph = " ".join(f"{k}={v}" for k, v in (r.get("phases_ms") or {}).items())
            print(f"{r.get('model', '') + ' ' + str(r.get('arch', '')):<28}{r.get('amp', ''):>5}"
                  f"{fmt(r.get('steps_per_s')):>9}{fmt(r.get('images_per_s'), '.0f'):>8}{fmt(r.get('bare_steps_per_s')):>8}"
                  f"{fmt(100 * r['overhead'] if r.get('overhead') is not None else None, '.1f'):>7}"
                  f"{fmt(r.get('gpu_util_mean'), '.0f'):>7}{fmt(r.get('peak_memory_mb'), '.0f'):>9}  "
                  f"{ph or r.get('status', '')} {r.get('error', '') or r.get('reason', '')}")
        print(f"cnn AMP speed-up (auto vs off): {fmt(T.get('cnn_amp_speedup'))}")
    F = P.get("fractional", {})
    for label in ("recipe", "default_sweep_trial"):
        if label not in F:
            continue
        print(f"\nfractional GPU, {label}: {F[label].get('config')}")
        print(f"{'N':>3}{'aggregate':>11}{'x N=1':>7}{'per process steps/s':>34}{'util%':>7}{'smi MiB':>9}"
              f"{'peak MiB/proc':>16}{'wall agg':>9}{'done':>6}")
        for r in F[label]["runs"]:
            per = ", ".join(fmt(x) for x in r.get("per_process_steps_per_s") or [])
            peaks = ", ".join(fmt(x, ".0f") for x in r.get("peak_memory_mb_per_process") or [])
            print(f"{r.get('n'):>3}{fmt(r.get('aggregate_steps_per_s')):>11}{fmt(r.get('aggregate_vs_n1')):>7}"
                  f"{per:>34}{fmt(r.get('gpu_util_mean'), '.0f'):>7}{fmt(r.get('gpu_mem_used_max_mib'), '.0f'):>9}"
                  f"{peaks:>16}{fmt(r.get('aggregate_steps_per_s_wall_incl_warmup')):>9}"
                  f"{str(r.get('completed', r.get('status'))):>6}  {r.get('reason', '')}")
    if s.results["errors"]:
        print("\nerrors in parts:", ", ".join(s.results["errors"]))
        for name, tb in s.results["errors"].items():
            print(f"--- {name}:\n{tb[-1200:]}")
    print("=" * 100, flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="every part on the CPU at tiny sizes")
    parser.add_argument("--out", default=None, help="JSON results (rewritten after every part)")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for the whole session")
    parser.add_argument("--reserve-s", type=float, default=15.0, help="seconds kept free at the end")
    parser.add_argument("--parts", default="env,losses,maps,training,fractional")
    parser.add_argument("--loss", action="append", help="only these losses (repeatable)")
    parser.add_argument("--loss-size", type=int, nargs=4, default=[8, 9, 224, 224])
    parser.add_argument("--loss-reps", type=int, default=10)
    parser.add_argument("--loss-timing-s", type=float, default=100.0, help="cap on the loss timing sub-part")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=24)
    parser.add_argument("--train-steps", type=int, default=60, help="timed steps (and as many warm-up steps)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--train-plan", default="cnn:auto,transformer:auto,cnn:off",
                        help="training runs, model:amp[:cl|nocl[:batch]] comma-separated")
    parser.add_argument("--fractions", default="1,2,4", help="concurrent trials per GPU")
    parser.add_argument("--frac-target-s", type=float, default=12.0, help="timed seconds per N (at the N=1 rate/N)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.child)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    s = Session(args)
    if not args.smoke and not torch.cuda.is_available():
        s.results["errors"]["cuda"] = "torch.cuda.is_available() is False; run with --smoke for the CPU code paths"
    parts = {"env": part_env, "losses": part_losses, "maps": part_maps, "training": part_training,
             "fractional": part_fractional}
    try:
        for name in args.parts.split(","):
            name = name.strip()
            if name not in parts:
                s.results["errors"][name] = "unknown part"
                continue
            s.part(name, lambda box, fn=parts[name]: fn(s, box))
    finally:
        s.results["meta"]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        s.results["meta"]["modules_ray_optuna"] = sorted(m for m in sys.modules if m.split(".")[0] in ("ray", "optuna"))
        s.save()
        try:
            print_summary(s)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
    return 0 if not s.results["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
