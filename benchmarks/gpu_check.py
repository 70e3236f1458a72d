"""GPU check: steps/s of both default models at the Synapse recipe size with AMP, GPU utilisation, and the overhead
of ``train_trial`` over a bare loop. Needs CUDA; not part of the tests.

    python -m benchmarks.gpu_check [--steps 150] [--warmup 10] [--batch 24] [--image-size 224] [--workers 8]
                                   [--out gpu_check.json]

Size: TransUNet's Synapse recipe, 224 x 224 slices, batch 24, one channel, 9 classes -- on the synthetic dataset at
that size (same tensor shapes and class count as Synapse; no files needed). Per model it runs
``train_trial`` (AMP auto = bf16 where supported, channels-last) for ``warmup + steps`` steps and reports its
``steps_per_s`` over the timed steps, its per-phase split and peak memory, the GPU utilisation sampled every 0.2 s by
``nvidia-smi`` (or ``torch.cuda.utilization``) over the ``train_trial`` call (data generated beforehand, so the
samples cover model set-up, warm-up, training and two one-volume evaluations; the median is the training figure),
and the bare-loop steps/s of :mod:`benchmarks.train` on the same model and data. :func:`measure_training` is the
measurement (also :mod:`benchmarks.gpu_session`'s ``training`` part).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from raysweep.data import build_dataset
from raysweep.models import MODELS
from raysweep.trial import train_trial

from .train import bare_steps_per_s, trial_config


class UtilisationSampler:
    """Samples GPU utilisation (%) and memory used (MiB) in a thread while active."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval, self.samples, self.active = interval, [], False
        self._stop = threading.Event()
        self._smi = shutil.which("nvidia-smi")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> tuple[float, float] | None:
        if self._smi:
            out = subprocess.run([self._smi, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,"
                                  "nounits", "-i", "0"], capture_output=True, text=True, timeout=5).stdout
            util, mem = (float(v) for v in out.strip().splitlines()[0].split(","))
            return util, mem
        try:
            return float(torch.cuda.utilization()), float("nan")
        except Exception:  # noqa: BLE001 - pynvml missing: no reading
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.active:
                reading = self._read()
                if reading is not None:
                    self.samples.append(reading)
            time.sleep(self.interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def start_sampler(interval: float = 0.2) -> UtilisationSampler | None:
    """A started :class:`UtilisationSampler`, or None where there is no GPU to sample."""
    try:
        if not torch.cuda.is_available() and shutil.which("nvidia-smi") is None:
            return None
        sampler = UtilisationSampler(interval)
        sampler.start()
        return sampler
    except Exception:  # noqa: BLE001
        return None


def summarise_result(result: dict) -> dict:
    """The figures of a ``train_trial`` result worth keeping: status, step, rates, memory, phases, errors."""
    return {k: v for k, v in result.items() if k.startswith("time/") or k in (
        "status", "step", "steps_per_s", "peak_memory_mb", "loss", "dice", "error", "diverged_step", "oom_step")}


def measure_training(config: dict, sampler: UtilisationSampler | None = None, with_bare: bool = True) -> dict:
    """``train_trial(config)`` (:func:`benchmarks.train.trial_config`: the last report covers the timed steps) with
    the GPU utilisation sampled over the call, and the bare loop's steps/s on the same config (``with_bare``).

    Returns the run's settings, ``status``, ``steps_per_s``, ``images_per_s``, ``peak_memory_mb``, ``phases_ms``,
    ``gpu_util_mean`` / ``_median``, ``gpu_mem_used_max_mib``, ``util_samples``, ``trial_wall_s``, ``data_gen_s``,
    a summary of the ``result``, and ``bare_steps_per_s``, ``bare_wall_s`` and ``overhead`` (1 - trial / bare).
    """
    model, train, every = config["model"]["name"], config["train"], config["eval"]["every"]
    # Generate the synthetic data first (cached in-process), so that the utilisation samples taken during the
    # train_trial call cover model set-up and training, not data generation on the CPU.
    t = time.perf_counter()
    build_dataset("synthetic", "train", **config["dataset"]["options"])
    build_dataset("synthetic", "test", **config["dataset"]["options"])
    data_s = time.perf_counter() - t
    if str(train["device"]).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    if sampler is not None:
        sampler.samples = []
        sampler.active = True
    t0 = time.perf_counter()
    result = train_trial(config)
    wall = time.perf_counter() - t0
    if sampler is not None:
        sampler.active = False
    samples = sampler.samples if sampler is not None else []
    util, mem = [u for u, _ in samples], [m for _, m in samples]
    out = {"model": model, "arch": f"{MODELS[model]['arch']}/{MODELS[model]['encoder']}",
           "amp": train.get("amp", "auto"), "image_size": config["dataset"]["options"]["image_size"],
           "batch": train["batch_size"], "timed_steps": every, "warmup_steps": train["steps"] - every,
           "workers": train["num_workers"], "data_gen_s": round(data_s, 2), "trial_wall_s": round(wall, 2),
           "result": summarise_result(result), "status": result.get("status")}
    if result.get("status") != "completed":
        return out
    out["steps_per_s"] = result["steps_per_s"]
    out["images_per_s"] = result["steps_per_s"] * train["batch_size"]
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch", type=int, default=24)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    parser.add_argument("--model", action="append", choices=sorted(MODELS))
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device; nothing to measure", file=sys.stderr)
        return 2
    props = torch.cuda.get_device_properties(0)
    header = {"device": props.name, "memory_gib": round(props.total_memory / 2**30, 1), "torch": torch.__version__,
              "bf16": torch.cuda.is_bf16_supported(), "batch": args.batch, "image_size": args.image_size,
              "steps": args.steps, "warmup": args.warmup, "workers": args.workers, "amp": args.amp}
    print(json.dumps(header))
    sampler = UtilisationSampler()
    sampler.start()
    results = []
    try:
        for model in args.model or ["cnn", "transformer"]:
            r = measure_training(trial_config(model, "dice_ce", args.image_size, args.batch, args.steps, args.warmup,
                                              args.workers, threads=None, device="cuda", amp=args.amp), sampler)
            results.append(r)
            print(json.dumps(r), flush=True)
    finally:
        sampler.stop()
    print(f"\n{'model':<30}{'steps/s':>9}{'img/s':>9}{'bare':>9}{'overhead':>10}{'GPU util':>10}{'peak MiB':>10}")
    for r in results:
        if r["status"] != "completed":
            print(f"{r['model']:<30} {r['status']}")
            continue
        util = f"{r['gpu_util_mean']:.0f}%" if r["gpu_util_mean"] is not None else "n/a"
        print(f"{r['model'] + ' ' + r['arch']:<30}{r['steps_per_s']:>9.2f}{r['images_per_s']:>9.1f}"
              f"{r['bare_steps_per_s']:>9.2f}{100 * r['overhead']:>9.1f}%{util:>10}{r['peak_memory_mb']:>10.0f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"header": header, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
