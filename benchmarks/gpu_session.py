"""One GPU session, measured in one go: environment, every loss on CUDA, distance maps, training throughput with AMP,
and several trials sharing one GPU (fractional ``gpus_per_trial``). Not part of the tests.

    python -m benchmarks.gpu_session [--out gpu_session.json] [--budget 450] [--parts env,losses,maps,training,fractional]
    python -m benchmarks.gpu_session --smoke --out /tmp/gs.json      # every code path on the CPU, tiny sizes

Parts (each in its own try/except; the JSON is rewritten after every part, so a part that fails or a run that is
killed still leaves the figures measured so far; every part also stops early when the time budget runs out and says
what it skipped):

1. ``env``: torch / CUDA / cuDNN versions, device, bf16 support, ``nvidia-smi``, versions of the carried packages.
2. ``losses``: every registered loss at (B=2, C=4, 64x64) with ignored pixels: value and gradient on CPU (fp32) and on
   CUDA (fp32), their differences, and finiteness (and difference to fp32) with bf16 and fp16 logits under
   ``torch.autocast`` (:func:`benchmarks.precision.agreement`); then forward+backward time
   (:func:`benchmarks.losses.measure`) (median of ``--loss-reps`` after warm-up, synchronised) and peak
   extra memory on CUDA at (8, 9, 224, 224), fp32 logits and bf16 logits under autocast, with the ratio to ``ce``.
   Losses that take ``dist_map`` get it precomputed (as the DataLoader workers provide it) and are also timed without
   it (maps computed by the loss on the CPU, on the fly).
3. ``maps``: :func:`raysweep.losses.maps.distance_field` on a CUDA batch of masks (the Hausdorff DT loss's per-step
   work): which path ran (cuCIM or the CPU ``edt`` fallback) and its time; the CPU time; CuPy's own
   ``cupyx.scipy.ndimage.distance_transform_edt`` as a GPU alternative (time and agreement); the per-sample target
   maps (``signed_distance_map``) that the DataLoader workers compute (:func:`benchmarks.maps.on_device`).
4. ``training``: ``train_trial`` steps/s of the ``cnn`` and ``transformer`` models at 224x224, batch 24, AMP auto
   (bf16), ``--workers`` DataLoader workers, with phases, peak memory, GPU utilisation and the bare-loop steps/s of
   :mod:`benchmarks.train` (overhead); and the ``cnn`` with AMP off (the AMP speed-up)
   (:func:`benchmarks.gpu_check.measure_training`).
5. ``fractional``: N = 1, 2, 4 concurrent ``train_trial`` processes on the same GPU (what ``gpus_per_trial`` 1, 0.5,
   0.25 means in a sweep), started together behind a barrier once each has built its data: per-process and
   aggregate steps/s, peak memory per process, GPU utilisation; for the recipe size (cnn, 224, batch 24) and, if time
   is left, for the default sweep's trial (configs/default.yaml: U-Net/ResNet-18 depth 3, 32x32, batch 8)
   (:func:`benchmarks.fractional.run_concurrent`).

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
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from . import fractional, gpu_check, losses, maps, precision
from ._common import PartsRun, elapsed, ensure_inversenet, fmt, jsonable, log
from .train import trial_config

class Session(PartsRun):
    def __init__(self, args) -> None:
        super().__init__(args.out, {"smoke": args.smoke, "budget_s": args.budget})
        self.args = args
        self.budget = args.budget

    def left(self) -> float:
        return self.budget - elapsed()

    def part(self, name: str, fn) -> None:
        log(f"=== part {name} (budget left {self.left():.0f}s)")
        box = self.results["parts"].setdefault(name, {})
        self.run_part(name, lambda: fn(box), box)


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


def part_losses(s: Session, box: dict) -> None:
    from raysweep.losses import LOSSES, build_loss

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
            ensure_inversenet()
            build_loss("inverseform")
            box["inversenet"] = {"trained_s": round(time.perf_counter() - t, 2),
                                 "cache": os.environ.get("RAYSWEEP_CACHE")}
        except Exception as exc:  # noqa: BLE001
            skip["inverseform"] = f"no InverseNet: {type(exc).__name__}: {exc}"
    box["skipped"] = skip

    # --- agreement: CPU fp32 vs CUDA fp32, and bf16/fp16 autocast
    box["agreement_size"] = list(precision.SIZE)
    box["agreement"] = precision.agreement([n for n in names if n not in skip], dev, stop=lambda: s.left() < 60,
                                           log=log)
    s.save()

    # --- speed and memory at the Synapse recipe size
    deadline = elapsed() + (s.args.loss_timing_s if not smoke else 120)
    losses.device_timing(box, names, (2, 4, 64, 64) if smoke else tuple(s.args.loss_size), dev,
                         3 if smoke else s.args.loss_reps, autocast=cuda or smoke, skip=skip,
                         stop=lambda: elapsed() > deadline or s.left() < 30, log=log)


# ---------------------------------------------------------------------------------------------------------------
# 3. distance maps


def part_maps(s: Session, box: dict) -> None:
    smoke = s.args.smoke
    dev = torch.device("cuda" if torch.cuda.is_available() and not smoke else "cpu")
    b, c, size = (2, 4, 64) if smoke else (8, 9, 224)
    box.update(maps.on_device(dev, b, c, size, reps=2 if smoke else 5, log=log,
                              cpu_note="smoke run (CPU)" if smoke else "needs CUDA"))


# ---------------------------------------------------------------------------------------------------------------
# 4. training throughput


def part_training(s: Session, box: dict) -> None:
    smoke = s.args.smoke
    cuda = torch.cuda.is_available() and not smoke
    device = "cuda" if cuda else "cpu"
    size, batch = (64, 2) if smoke else (s.args.image_size, s.args.batch)
    steps = 3 if smoke else s.args.train_steps
    workers = 2 if smoke else s.args.workers
    box.update({"device": device, "image_size": size, "batch": batch, "timed_steps": steps, "workers": workers})
    runs = box.setdefault("runs", [])
    sampler = gpu_check.start_sampler() if cuda else None
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
                config = trial_config(model, "dice_ce", size, batch, steps, steps, workers, None, device, amp=amp)
                config["train"]["channels_last"] = cl
                r = gpu_check.measure_training(config, sampler, with_bare=bare)
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
    sampler = gpu_check.start_sampler() if cuda else None
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
                    cfg = trial_config(st["model"], "dice_ce", st["size"], st["batch"], steps, steps, st["workers"](n),
                                       st["threads"], device, amp="auto", depth=st["depth"], arch=st["arch"])
                    cfg["seed"] = i
                    return cfg

                timeout = min(s.left() - s.args.reserve_s / 2, 150.0 if not smoke else 120.0)
                r = fractional.run_concurrent(n, make_cfg, sampler, timeout, tmp)
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
    s.print_errors()
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
    args = parser.parse_args(argv)
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
