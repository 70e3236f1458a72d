"""Several trials sharing one device: N concurrent ``train_trial`` processes (what ``gpus_per_trial`` 1, 0.5, 0.25
means in a sweep), started together behind a barrier once each has built its data.

    python -m benchmarks.fractional [--counts 1,2,4] [--model cnn] [--image-size 224] [--batch 24] [--steps 60]
                                    [--workers 2] [--threads 2] [--device auto] [--timeout 150] [--out FILE.json]

Per N: per-process and aggregate steps/s (each trial's last report covers its timed steps; see
:func:`benchmarks.train.trial_config`), peak memory per process, the spread of the start and end times, a conservative
aggregate (all steps over the union of the windows) and, on a GPU, its utilisation. :func:`run_concurrent` is the
measurement (also :mod:`benchmarks.gpu_session`'s ``fractional`` part); each trial is a child process of this module.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from ._common import jsonable
from .gpu_check import start_sampler, summarise_result
from .train import trial_config

ROOT = Path(__file__).resolve().parent.parent


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


def run_concurrent(n: int, make_cfg, sampler, timeout_s: float, tmp: Path) -> dict:
    """``n`` child processes, child ``i`` training ``make_cfg(i)``, released together once all are ready; killed
    after ``timeout_s``. Returns ``{n, setup_s, run_s, children, completed, per_process_steps_per_s,
    aggregate_steps_per_s, ...}``; the GPU utilisation from ``sampler`` if given."""
    procs, specs = [], []
    env = dict(os.environ)
    if torch.cuda.is_available():
        env["CUDA_VISIBLE_DEVICES"] = env.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or "0"
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)  # the children's -m
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
        procs.append((subprocess.Popen([sys.executable, "-m", __spec__.name, "--child", str(p_spec)], cwd=ROOT,
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="1,2,4", help="concurrent trials, comma-separated")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=24)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per trial (and as many warm-up steps)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers per trial")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per trial")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds per N before the children are killed")
    parser.add_argument("--out", help="also write the figures as JSON here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.child)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    sampler = start_sampler() if device.startswith("cuda") else None
    tmp = Path(tempfile.mkdtemp(prefix="fractional_"))
    runs = []
    try:
        for n in [int(x) for x in args.counts.split(",")]:
            def make_cfg(i):
                cfg = trial_config(args.model, "dice_ce", args.image_size, args.batch, args.steps, args.steps,
                                   args.workers, args.threads, device)
                cfg["seed"] = i
                return cfg

            r = run_concurrent(n, make_cfg, sampler, args.timeout, tmp)
            runs.append(r)
            print(f"N={n}: aggregate {r.get('aggregate_steps_per_s', float('nan')):.2f} steps/s, per process "
                  f"{r.get('per_process_steps_per_s')}, util {r.get('gpu_util_mean')}, peak MiB "
                  f"{r.get('peak_memory_mb_per_process')}, completed {r.get('completed')}/{n}", flush=True)
    finally:
        if sampler is not None:
            sampler.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.out:
        Path(args.out).write_text(json.dumps(jsonable({"args": vars(args), "runs": runs}), indent=1))
    return 0 if all(r.get("completed") == r["n"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
