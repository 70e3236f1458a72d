"""The whole sweep measured end to end on one GPU (issue 16), in one prepared run of about nine minutes: how many
trials share the card well, whether packing or ``torch.compile`` pay, whether the loaders keep up, and what a real
``raysweep run`` achieves in trials per hour. Not part of the tests (their smoke run is).

    python -m benchmarks.gpu_sweep [--out gpu_sweep.json] [--budget 540] [--parts env,concurrency,...] [--caps P=S,...]
                                   [--archs cnn,transformer] [--steps1 60] [--target-s 5] [--loader-s 3]
    python -m benchmarks.gpu_sweep --smoke --out /tmp/gsw.json     # every code path on the CPU, tiny sizes
    bash benchmarks/gpu_sweep.sh                                     # on the GPU machine: carried wheels, hard timeout

"Synapse-shaped" below means configs/synapse.yaml's recipe (its two architectures, image size, batch, optimiser,
LR schedule, precision and per-trial CPUs, read from the file) on the synthetic dataset at that size: the same tensor
shapes and 9 classes as Synapse, no files needed. Parts, in priority order (the budget may run out; each part also
stops at its own cap, ``--caps``, so that the later parts keep some time; each records what it measured and what it
skipped and why; each runs in its own try/except and the JSON is rewritten after every part and sub-measurement, so
a failed part or a killed run still leaves every figure measured so far):

1. ``env``: Python, torch, CUDA, cuDNN, the device, CPUs, ``nvidia-smi``, package versions (ray, optuna, smp, ...)
   without importing them (:func:`benchmarks.gpu_session.part_env`), and pandas/pyarrow (the results store).
2. ``concurrency``: N = 1, 2, 4, 8 concurrent ``train_trial`` processes on the GPU (what ``gpus_per_trial`` 1, 0.5,
   0.25, 0.125 mean in a sweep), Synapse-shaped, ``dice_ce``, for the recipe's CNN and then its Transformer,
   released together behind a barrier once each has built its data (:func:`benchmarks.fractional.run_concurrent`):
   steps/s per trial and aggregate, the aggregate against N = 1, peak memory per process, GPU utilisation sampled
   every 0.2 s. Each trial runs ``2 T`` steps with ``eval.every = T``: the first T warm up (cuDNN autotuning,
   loader start-up), the last report's ``steps_per_s`` covers the T timed steps only; T at N = 1 is
   ``--steps1``, then about ``--target-s`` seconds' worth at the N = 1 rate over N.
3. ``packing``: ``train_pack`` (:mod:`raysweep.trial.pack`) with K = 1, 2, 4, 8 members of one cell (the CNN; the
   Transformer too if its share of the cap allows) with different survey losses, each member run for the same T as
   the K concurrent trials of part 2, so that the two ways of putting K trials on one card compare: aggregate
   member-steps/s, its ratio to part 2's aggregate at N = K, and peak memory (the pack's process against K times one
   trial's). A member's reported ``steps_per_s`` covers one round of all members' steps plus the other members'
   evaluations at the report; the latter (their ``time/eval_s``) are subtracted, the uncorrected sum is kept too.
   The losses need no target maps (like ``dice_ce`` in part 2), so both sides feed the same kind of pipeline.
4. ``compile``: ``train.compile`` false, true and "reduce-overhead" (:func:`raysweep.trial.build.compile_model`),
   CNN then Transformer, Synapse-shaped, each in a fresh process (cold inductor cache, a hung compile killed at
   its timeout): steps/s after the warm-up, and the compile time, i.e. the seconds of the run beyond its steady
   steps and evaluations, minus the same for eager (``compile_s_vs_eager``; it includes compiling the evaluation
   graph at the first evaluation).
5. ``loader``: items/s of the Synapse-shaped synthetic training split with the target maps of the ``boundary`` loss
   (per-class signed distance maps, computed in the workers after augmentation, as a trial does) through the
   trainer's own DataLoader (:func:`raysweep.trial.sampling.make_loader`) at num_workers 0, 4, 8, 15; the first
   batch (worker start-up) apart, the rate over at least ``--loader-s`` seconds after it.
6. ``sweep_default``: ``configs/default.yaml`` as is, run by :func:`raysweep.sweep.run_sweep` in a child process
   (its own Ray instance), stopped at the part's cap if it has not finished (SIGINT twice, then SIGKILL to what is
   left of its process tree): wall time, rows of the Parquet ``trials`` table per stage and status, trials/hour
   (rows over the wall, and over the window from the first trial's start to the last one's end), the planned
   trials, and the GPU utilisation and memory over time from ``nvidia-smi`` every second (``gpu_timeline``:
   ``[t_s, util_pct, mem_mib]``). ``finished`` says whether it ran to its end (an interrupted stage is not
   marked done in the ``state`` copied from its state.json: the runner raises ``SweepInterrupted``).
7. ``sweep_synapse_shaped``: a Synapse-shaped sweep of both architectures and four losses (one with distance maps),
   one tuning trial per group and one confirmation seed, ``resources.gpus_per_trial: 0.25``, with a step budget
   chosen from part 2's per-trial rate at N = 4 so that the run fits about half of what is left; then, if the
   remaining time allows another run as long as the first, the same with ``resources.pack: 4`` (both stages pack:
   each cell's four losses train as one Ray trial). Figures as in part 6; a packed member is a row of its own.

Sizes: ``--smoke`` runs every part on the CPU at 32 x 32, batch 2, 2 timed steps, N and K up to 2, the CNN only
in ``compile`` (false and true), workers 0 and 2 in ``loader``, and both sweeps cut to the CNN, two losses and 4
steps: about 4 minutes on 2 cores (1.5 of them the three sweeps, 1 the compile part with a warm inductor cache;
with a cold one it takes minutes more).

Output (``--out``, strict JSON, NaN written as "nan")::

    {"meta": {smoke, budget_s, caps_s, argv, started, finished, elapsed_s, recipe, modules_ray_optuna},
     "parts": {<part>: {"status": "ok"|"error", "wall_s", "skipped": [{"what", "reason"}], ...figures}},
     "errors": {<part>: traceback}}

``concurrency.<arch>.runs[]`` are :func:`~benchmarks.fractional.run_concurrent`'s records plus
``timed_steps_per_process``, ``workers_per_process`` and ``aggregate_vs_n1``; ``packing.<arch>.runs[]`` hold ``k``,
``losses``, ``timed_steps``, ``member_steps_per_s``, ``vs_concurrent``, ``peak_memory_mb``, the members' reports;
``compile.<arch>.runs[]`` hold ``compile``, ``steps_per_s``, ``first_steps_excess_s``, ``compile_s_vs_eager``;
``loader.runs[]`` hold ``num_workers``, ``items_per_s``, ``first_batch_s``; a sweep part holds ``wall_s``,
``finished``, ``rows``, ``rows_by_stage``, ``rows_by_status``, ``trials_per_hour``, ``trials_per_hour_window``,
``planned``, ``gpu_timeline`` and ``trials`` (one compact row per trial).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from . import fractional, gpu_check, gpu_session
from ._common import PartsRun, elapsed, fmt, jsonable, log
from .train import trial_config

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("env", "concurrency", "packing", "compile", "loader", "sweep_default", "sweep_synapse_shaped")
#: Seconds each part may take at most on the GPU (the last one takes what is left). They add up to the default
#: budget less the reserve, so that every part gets a share even when the earlier ones use all of theirs.
CAPS = {"env": 10.0, "concurrency": 150.0, "packing": 60.0, "compile": 80.0, "loader": 25.0, "sweep_default": 75.0,
        "sweep_synapse_shaped": float("inf")}
#: Survey losses for the packs: none needs target maps, so a pack's pipeline is the plain one of part 2's trials.
PACK_LOSSES = ("dice", "ce", "focal", "tversky", "lovasz", "jaccard", "combo", "log_cosh_dice")
#: The Synapse-shaped sweep's losses: two region, two pixel/boundary; ``boundary`` brings the distance maps.
SWEEP_LOSSES = ("dice", "ce", "boundary", "focal")


# ---------------------------------------------------------------------------------------------------------------
# the recipe and the session


def read_recipe(smoke: bool, only: list[str] | None = None) -> dict:
    """configs/synapse.yaml's training recipe, Synapse-shaped on synthetic data (tiny sizes with ``smoke``; the
    architectures ``only`` if given)."""
    from raysweep.config import read_yaml_mapping

    raw = read_yaml_mapping(ROOT / "configs" / "synapse.yaml", "sweep config")
    trial = raw.get("trial") or {}
    train = trial.get("train") or {}
    archs = {name: {"arch": a["arch"], "encoder": a["encoder"], **({"options": a["options"]} if a.get("options")
                                                                   else {})}
             for name, a in raw["architectures"].items() if not only or name in only}
    if not archs:
        raise ValueError(f"--archs {only}: configs/synapse.yaml has {', '.join(raw['architectures'])}")
    recipe = {
        "source": "configs/synapse.yaml",
        "image_size": int(raw["datasets"]["synapse"]["options"]["image_size"]),
        "batch": int(train["batch_size"]),
        "amp": train.get("amp", "auto"),
        "optimizer": dict(trial.get("optimizer") or {}),
        "scheduler": dict(trial.get("scheduler") or {}),
        "cpus_per_trial": int((raw.get("resources") or {}).get("cpus_per_trial", 1)),
        "num_workers": int(train.get("num_workers", 0)),
        "archs": archs,
        # Synthetic volumes of 16 slices: 6 make 96 training slices (4 steps per epoch at batch 24) and keep the
        # data generation in each trial process to about a second; the rate does not depend on the set's size.
        "dataset_options": {"num_volumes": 6},
    }
    if smoke:
        recipe.update(image_size=32, batch=2, num_workers=0, archs=archs,
                      dataset_options={"num_volumes": 2, "depth": 4})
    return recipe


class Session(PartsRun):
    """The run's settings, results, time budget and part caps."""

    def __init__(self, args) -> None:
        self.args = args
        self.smoke = args.smoke
        self.cuda = torch.cuda.is_available() and not args.smoke
        self.device = "cuda" if self.cuda else "cpu"
        self.ncpu = os.cpu_count() or 2
        self.budget = args.budget if args.budget is not None else (900.0 if args.smoke else 540.0)
        # Tiny sizes on a slow CPU: the global budget alone, unless caps are given (to try the stopping paths).
        self.caps = dict.fromkeys(PARTS, float("inf")) if args.smoke else dict(CAPS)
        for item in filter(None, (args.caps or "").split(",")):
            name, _, value = item.partition("=")
            self.caps[name.strip()] = float(value)
        self.recipe = read_recipe(args.smoke, [a for a in (args.archs or "").split(",") if a])
        self.deadline = self.budget
        self.tmp = Path(tempfile.mkdtemp(prefix="gpu_sweep_"))
        super().__init__(args.out, {"smoke": args.smoke, "budget_s": self.budget, "caps_s": self.caps,
                                    "recipe": self.recipe, "device": self.device})

    def left(self) -> float:
        """Seconds left to the current part (its cap, or the budget less the reserve)."""
        return self.deadline - elapsed()

    def part(self, name: str, fn) -> None:
        self.deadline = min(elapsed() + self.caps.get(name, float("inf")), self.budget - self.args.reserve_s)
        log(f"=== part {name} ({self.left():.0f}s for it, {self.budget - elapsed():.0f}s of the budget left)")
        box = self.results["parts"].setdefault(name, {})
        box.setdefault("skipped", [])

        def run() -> None:
            if self.left() <= 0:
                raise TimeoutError("no time left in the budget")
            fn(self, box)

        self.run_part(name, run, box)

    def recipe_trial(self, arch: str, loss: str, steps: int, workers: int, threads: int | None,
                     seed: int = 0) -> dict:
        """A Synapse-shaped trial whose last report covers ``steps`` timed steps after as many warm-up steps."""
        from raysweep.models import MODELS

        r = self.recipe
        # The recipe's arch and encoder override the registry entry; its name only has to be one.
        name = arch if arch in MODELS else next(iter(MODELS))
        cfg = trial_config(name, loss, r["image_size"], r["batch"], steps, steps, workers, threads, self.device,
                           amp=r["amp"], arch=r["archs"][arch])
        cfg["dataset"]["options"].update(r["dataset_options"])
        cfg["optimizer"] = dict(r["optimizer"])
        cfg["scheduler"] = dict(r["scheduler"])
        cfg["seed"] = seed
        return cfg

    def skip(self, box: dict, what: str, reason: str) -> None:
        box["skipped"].append({"what": what, "reason": reason})
        log(f"skipped {what}: {reason}")


# ---------------------------------------------------------------------------------------------------------------
# child processes: a pack, a trial, a sweep


def child_main(kind: str, spec_path: str) -> int:
    """Run one measurement in this (child) process and write its record to ``spec["result"]``."""
    spec = json.loads(Path(spec_path).read_text())
    res: dict = {"pid": os.getpid(), "kind": kind}
    try:
        if kind == "sweep":
            from raysweep.config import load_config, validate
            from raysweep.sweep import run_sweep

            cfg = validate(spec["raw"], where=spec["name"]) if spec.get("raw") else load_config(spec["config"])
            res["t_start"] = time.time()
            run_sweep(cfg, spec["out"], fresh=True, progress=True)
            res["t_end"] = time.time()
            res["status"] = "completed"
        else:
            from raysweep.data import build_dataset

            configs = spec["configs"]
            opts = configs[0]["dataset"]["options"]
            build_dataset("synthetic", "train", **opts)  # generated (and cached in-process) outside the timing
            build_dataset("synthetic", "test", **opts)
            import segmentation_models_pytorch  # noqa: F401  (import outside the timing)

            cuda = configs[0]["train"]["device"].startswith("cuda")
            if cuda:
                torch.zeros(1, device="cuda")
                torch.cuda.reset_peak_memory_stats()
            res["t_start"] = time.time()
            if kind == "pack":
                from raysweep.trial.pack import train_pack

                finals = train_pack(configs)
            else:
                from raysweep.trial import train_trial

                finals = [train_trial(configs[0])]
            res["t_end"] = time.time()
            res["wall_s"] = res["t_end"] - res["t_start"]
            res["members"] = [gpu_check.summarise_result(f or {}) for f in finals]
            res["peak_memory_mb"] = (torch.cuda.max_memory_allocated() / 2**20 if cuda else
                                     max((f or {}).get("peak_memory_mb", float("nan")) for f in finals))
            res["status"] = "completed"
    except Exception as exc:  # noqa: BLE001
        res["status"] = "error"
        res["error"] = f"{type(exc).__name__}: {exc}"[:600]
        res["traceback"] = traceback.format_exc()[-3000:]
    Path(spec["result"]).write_text(json.dumps(jsonable(res)))
    return 0


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state, parent pid, ..., start time at [19])."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def _descendants(pid: int) -> dict[int, str]:
    """Every living descendant of ``pid`` (a Ray driver's raylet, GCS, workers, ...), from /proc: pid -> its start
    time, so that a pid reused by another process after ours ended is never signalled."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append((int(entry.name), fields[19]))
    out, todo = {}, [pid]
    while todo:
        for child, started in children.get(todo.pop(), []):
            out[child] = started
            todo.append(child)
    return out


def _stop_tree(proc: subprocess.Popen, grace: float) -> dict:
    """Stop a child started here and everything it started: SIGINT twice (a Ray driver then stops Tune and shuts
    Ray down), then after ``grace`` seconds SIGKILL to whatever of its process tree is left, by pid. Returns
    ``{"interrupted": True, "killed": n}``."""
    tree = _descendants(proc.pid)
    out = {"interrupted": True, "killed": 0}
    # Tune takes a first SIGINT as "stop gracefully" and a second as "stop now".
    for _ in range(2):
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=grace / 2)
            except subprocess.TimeoutExpired:
                tree.update(_descendants(proc.pid))
    if proc.poll() is None:
        tree.update(_descendants(proc.pid))
        proc.kill()
        proc.wait(timeout=10)
        out["killed"] += 1
    for pid, started in tree.items():
        fields = _stat(pid)
        if fields is None or fields[19] != started or fields[0] == "Z":
            continue  # ended by itself (or the pid is another process's now)
        try:
            os.kill(pid, signal.SIGKILL)
            out["killed"] += 1
        except (ProcessLookupError, PermissionError):
            pass
    return out


def run_child(s: Session, kind: str, spec: dict, timeout: float, label: str, grace: float = 5.0,
              sampler=None, keep_log: bool = False) -> dict:
    """``python -m benchmarks.gpu_sweep --child KIND SPEC`` with ``spec``, stopped after ``timeout`` seconds;
    its record (``status``: ``completed``, ``error``, ``timeout`` or ``no result``) plus ``child_wall_s``, and the
    tail of its output if it did not complete or ``keep_log``."""
    spec = {**spec, "result": str(s.tmp / f"{label}.result.json")}
    Path(spec["result"]).unlink(missing_ok=True)
    spec_path = s.tmp / f"{label}.spec.json"
    spec_path.write_text(json.dumps(jsonable(spec)))
    env = dict(os.environ, PYTHONUNBUFFERED="1", RAY_USAGE_STATS_ENABLED="0")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.pop("RAY_ADDRESS", None)  # the sweeps start a private Ray instance, never join another one
    env.setdefault("RAY_AUTH_MODE", "disabled")
    log_path = s.tmp / f"{label}.log"
    t = time.perf_counter()
    if sampler is not None:
        sampler.samples = []
        sampler.active = True
    with open(log_path, "w") as logf:
        proc = subprocess.Popen([sys.executable, "-m", __spec__.name, "--child", kind, str(spec_path)], cwd=ROOT,
                                env=env, stdout=logf, stderr=subprocess.STDOUT)
        stopped = None
        try:
            proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            stopped = _stop_tree(proc, grace)
        finally:
            if sampler is not None:
                sampler.active = False
            if proc.poll() is None:  # KeyboardInterrupt in the parent: leave nothing behind
                _stop_tree(proc, 2.0)
    wall = time.perf_counter() - t
    try:
        res = json.loads(Path(spec["result"]).read_text())
    except (OSError, ValueError) as exc:
        res = {"status": "timeout" if stopped else "no result", "error": f"{type(exc).__name__}: {exc}"}
    if stopped:
        # Stopped: whatever the child says of itself (an interrupted sweep may still end "completed"), it did not
        # run to its end.
        res.update(stopped, child_status=res.get("status"), status="timeout", timeout_s=round(timeout, 1))
    res["child_wall_s"] = round(wall, 2)
    res["exit_code"] = proc.returncode
    if res.get("status") != "completed" or keep_log:
        res["log_tail"] = log_path.read_text(errors="replace")[-2000:]
    return res


# ---------------------------------------------------------------------------------------------------------------
# 1. environment


def part_env(s: Session, box: dict) -> None:
    import importlib.metadata as md

    gpu_session.part_env(s, box)
    for pkg in ("pandas", "pyarrow", "pydantic"):
        try:
            box["packages"][pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            box["packages"][pkg] = None
    try:
        box["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                           cwd=ROOT).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        box["git_commit"] = None
    box["device_used"] = s.device


# ---------------------------------------------------------------------------------------------------------------
# 2. concurrent trials on one GPU


def part_concurrency(s: Session, box: dict) -> None:
    counts = [1, 2] if s.smoke else [1, 2, 4, 8]
    target = s.args.target_s
    box.update({"counts": counts, "loss": "dice_ce", "image_size": s.recipe["image_size"],
                "batch": s.recipe["batch"], "target_timed_s": target})
    if s.cuda:
        torch.cuda.empty_cache()  # this process's cached blocks would count against the children
    sampler = gpu_check.start_sampler() if s.cuda else None
    box["util_sampler"] = sampler is not None
    archs = list(s.recipe["archs"])
    try:
        for i, arch in enumerate(archs):
            rows = box.setdefault(arch, {"arch": s.recipe["archs"][arch], "runs": []})
            # The CNN gets its share of the cap, the Transformer the rest (whatever the CNN left).
            arch_end = elapsed() + s.left() / (len(archs) - i)
            rate1 = None
            for n in counts:
                need = 10.0 if s.smoke else 10.0 + n  # set-up plus a few seconds of steps, at least
                if min(arch_end, s.deadline) - elapsed() < need:
                    s.skip(box, f"{arch} N={n}", f"time (needs about {need:.0f}s)")
                    continue
                if s.smoke:
                    steps = 2
                elif n == 1 or not rate1:
                    steps = s.args.steps1
                else:
                    steps = int(min(1000, max(20, rate1 * target / n)))
                workers = 0 if s.smoke else max(2, min(8, (s.ncpu - n) // n))
                threads = 1 if s.smoke else 2

                def make_cfg(k, arch=arch, steps=steps, workers=workers, threads=threads):
                    return s.recipe_trial(arch, "dice_ce", steps, workers, threads, seed=k)

                # Started within the architecture's share, a run may finish within the part's.
                timeout = min(s.left(), 150.0)
                r = fractional.run_concurrent(n, make_cfg, sampler, timeout, s.tmp)
                for c in r.get("children", []):
                    if c.get("status") == "completed":
                        c.pop("traceback", None)
                r.update(timed_steps_per_process=steps, workers_per_process=workers, threads_per_process=threads)
                rows["runs"].append(r)
                if n == 1:
                    rate1 = r.get("aggregate_steps_per_s")
                log(f"concurrency {arch} N={n}: aggregate {_f(r.get('aggregate_steps_per_s'))} steps/s, per process "
                    f"{[_f(x) for x in r.get('per_process_steps_per_s') or []]}, util {_f(r.get('gpu_util_mean'), 0)}%,"
                    f" setup {r.get('setup_s')}s run {r.get('run_s')}s, completed {r.get('completed')}/{n}")
                s.save()
            base = next((r.get("aggregate_steps_per_s") for r in rows["runs"] if r.get("n") == 1), None)
            for r in rows["runs"]:
                if base and r.get("aggregate_steps_per_s"):
                    r["aggregate_vs_n1"] = r["aggregate_steps_per_s"] / base
    finally:
        if sampler is not None:
            sampler.stop()


def _concurrent_run(s: Session, arch: str, n: int) -> dict:
    """Part 2's record for ``arch`` at N = ``n`` (empty if it did not run)."""
    runs = s.results["parts"].get("concurrency", {}).get(arch, {}).get("runs", [])
    return next((r for r in runs if r.get("n") == n and r.get("completed")), {})


# ---------------------------------------------------------------------------------------------------------------
# 3. trial packing


def pack_rates(members: list[dict], steps: int) -> dict:
    """Aggregate member-steps/s of a pack from its members' final reports (``steps`` timed steps each).

    A member's last report interval spans ``steps`` rounds of every member's training step plus the evaluations
    of the other members at the previous and at this report; those (``time/eval_s``, one per member and report) are
    subtracted, and the median over the members is the pack's rounds/s."""
    done = [m for m in members if m.get("status") == "completed" and m.get("steps_per_s")]
    out = {"members_completed": len(done)}
    if not done:
        return out
    out["member_steps_per_s_uncorrected"] = sum(m["steps_per_s"] for m in done)
    if len(done) != len(members):
        return out  # an ended member leaves the rounds shorter: no clean aggregate
    evals = [float(m.get("time/eval_s") or 0.0) for m in done]
    rounds = []
    for k, m in enumerate(done):
        interval = steps / m["steps_per_s"] - (sum(evals) - evals[k])
        if interval > 0:
            rounds.append(steps / interval)
    if rounds:
        out["rounds_per_s"] = statistics.median(rounds)
        out["member_steps_per_s"] = len(done) * out["rounds_per_s"]
    return out


def part_packing(s: Session, box: dict) -> None:
    ks = [1, 2] if s.smoke else [1, 2, 4, 8]
    box.update({"ks": ks, "losses": list(PACK_LOSSES[:max(ks)]), "image_size": s.recipe["image_size"],
                "batch": s.recipe["batch"]})
    if s.cuda:
        torch.cuda.empty_cache()
    sampler = gpu_check.start_sampler() if s.cuda else None
    archs = list(s.recipe["archs"])
    try:
        for i, arch in enumerate(archs):
            rows = box.setdefault(arch, {"arch": s.recipe["archs"][arch], "runs": []})
            arch_end = elapsed() + (s.left() if s.smoke or i == len(archs) - 1 else 0.75 * s.left())
            for k in ks:
                need = 10.0 if s.smoke else 10.0 + 2.0 * k
                if min(arch_end, s.deadline) - elapsed() < need:
                    s.skip(box, f"{arch} K={k}", f"time (needs about {need:.0f}s)")
                    continue
                alone = _concurrent_run(s, arch, k)
                steps = 2 if s.smoke else int(alone.get("timed_steps_per_process") or max(20, s.args.steps1 // k))
                losses = list(PACK_LOSSES[:k])
                workers = 0 if s.smoke else max(2, min(8, s.ncpu - 1))  # one pipeline: as many as one trial gets
                threads = 1 if s.smoke else 2
                configs = [s.recipe_trial(arch, loss, steps, workers, threads) for loss in losses]
                timeout = min(s.left(), 150.0)
                r = run_child(s, "pack", {"configs": configs}, timeout, f"pack_{arch}_{k}", sampler=sampler)
                row = {"k": k, "losses": losses, "timed_steps": steps, "workers": workers, "threads": threads,
                       **{key: r.get(key) for key in ("status", "error", "wall_s", "child_wall_s", "peak_memory_mb",
                                                       "members", "log_tail", "timeout_s")}}
                row.update(pack_rates(r.get("members") or [], steps))
                if sampler is not None and sampler.samples:
                    row["gpu_util_mean"] = sum(u for u, _ in sampler.samples) / len(sampler.samples)
                    row["gpu_mem_used_max_mib"] = max(m for _, m in sampler.samples)
                if alone:
                    row["concurrent_aggregate_steps_per_s"] = alone.get("aggregate_steps_per_s")
                    peaks = [p for p in alone.get("peak_memory_mb_per_process") or [] if p]
                    row["concurrent_peak_memory_mb_sum"] = sum(peaks) if peaks else None
                    if row.get("member_steps_per_s") and alone.get("aggregate_steps_per_s"):
                        row["vs_concurrent"] = row["member_steps_per_s"] / alone["aggregate_steps_per_s"]
                rows["runs"].append({key: v for key, v in row.items() if v is not None})
                log(f"pack {arch} K={k} ({', '.join(losses)}): {r.get('status')}, member-steps/s "
                    f"{_f(row.get('member_steps_per_s'))} (uncorrected {_f(row.get('member_steps_per_s_uncorrected'))})"
                    f", {k} concurrent trials {_f(row.get('concurrent_aggregate_steps_per_s'))}, peak MiB "
                    f"{_f(row.get('peak_memory_mb'), 0)} {row.get('error') or ''}")
                s.save()
    finally:
        if sampler is not None:
            sampler.stop()


# ---------------------------------------------------------------------------------------------------------------
# 4. torch.compile


def part_compile(s: Session, box: dict) -> None:
    modes = [False, True] if s.smoke else [False, True, "reduce-overhead"]
    archs = list(s.recipe["archs"])[:1] if s.smoke else list(s.recipe["archs"])
    box.update({"modes": modes, "loss": "dice_ce", "image_size": s.recipe["image_size"], "batch": s.recipe["batch"]})
    for arch in archs:
        rows = box.setdefault(arch, {"arch": s.recipe["archs"][arch], "runs": []})
        eager_excess = None
        for mode in modes:
            need = 15.0 if mode is False else 30.0
            if s.smoke:
                need = 5.0
            if s.left() < need:
                s.skip(box, f"{arch} compile={mode}", f"time (needs at least {need:.0f}s)")
                continue
            steps = 2 if s.smoke else int(_concurrent_run(s, arch, 1).get("timed_steps_per_process") or s.args.steps1)
            cfg = s.recipe_trial(arch, "dice_ce", steps, 0 if s.smoke else 8, 1 if s.smoke else 4)
            cfg["train"]["compile"] = mode
            r = run_child(s, "trial", {"configs": [cfg]}, min(s.left(), 240.0), f"compile_{arch}_{mode}")
            m = (r.get("members") or [{}])[0]
            row = {"compile": mode, "timed_steps": steps, "status": m.get("status") or r.get("status"),
                   "steps_per_s": m.get("steps_per_s"), "eval_s": m.get("time/eval_s"), "wall_s": r.get("wall_s"),
                   "child_wall_s": r.get("child_wall_s"), "peak_memory_mb": r.get("peak_memory_mb"),
                   "phases_ms": {k[5:-3]: v for k, v in m.items() if k.startswith("time/") and k.endswith("_ms")}}
            if r.get("status") != "completed":
                row.update(error=r.get("error"), log_tail=r.get("log_tail"), timeout_s=r.get("timeout_s"))
            if m.get("status") == "completed" and m.get("steps_per_s") and r.get("wall_s"):
                # Two intervals of `steps` steps and two evaluations; the rest is building, compiling, autotuning.
                excess = r["wall_s"] - 2 * steps / m["steps_per_s"] - 2 * float(m.get("time/eval_s") or 0.0)
                row["first_steps_excess_s"] = excess
                if mode is False:
                    eager_excess = excess
                elif eager_excess is not None:
                    row["compile_s_vs_eager"] = excess - eager_excess
            rows["runs"].append({k: v for k, v in row.items() if v is not None})
            log(f"compile {arch} {mode!r}: {row['status']}, {_f(row.get('steps_per_s'))} steps/s, compile "
                f"{_f(row.get('compile_s_vs_eager'), 1)}s (excess {_f(row.get('first_steps_excess_s'), 1)}s) "
                f"{row.get('error') or ''}")
            s.save()
        eager = next((r.get("steps_per_s") for r in rows["runs"] if r["compile"] is False), None)
        for r in rows["runs"]:
            if eager and r.get("steps_per_s"):
                r["speedup_vs_eager"] = r["steps_per_s"] / eager


# ---------------------------------------------------------------------------------------------------------------
# 5. data loading with distance maps


def part_loader(s: Session, box: dict) -> None:
    from raysweep.data import build_dataset, dataset_info
    from raysweep.trial.objective import CombinedObjective
    from raysweep.trial.sampling import SeededItems, make_loader
    from raysweep.trial.schema import resolve_config

    r = s.recipe
    counts = [0, 2] if s.smoke else [0, 4, 8, 15]
    batch = r["batch"]
    opts = {"image_size": r["image_size"], **r["dataset_options"]}
    min_s = 0.5 if s.smoke else s.args.loader_s
    box.update({"loss": "boundary", "batch": batch, "dataset_options": opts, "counts": counts, "min_timed_s": min_s})
    ds = build_dataset("synthetic", "train", **opts)
    info = dataset_info("synthetic", **opts)
    steps_per_epoch = len(ds) // batch
    # The trial's own construction: the loss's resolved term, its objective's target maps, the seeded items.
    objective = CombinedObjective([resolve_config({"loss": {"name": "boundary"}})["loss"]], 10_000, steps_per_epoch,
                                  num_classes=info.num_classes)
    ds.target_maps = objective.target_maps
    box["maps"] = type(objective.target_maps).__name__ if objective.target_maps is not None else None
    items = SeededItems(ds)
    runs = box.setdefault("runs", [])
    for workers in counts:
        need = 3.0 + min_s
        if s.left() < need:
            s.skip(box, f"num_workers={workers}", f"time (needs about {need:.0f}s)")
            continue
        t0 = time.perf_counter()
        loader = make_loader(items, batch_size=batch, seed=0, start=0, steps=10_000, num_workers=workers,
                             pin_memory=s.cuda)
        it = iter(loader)
        next(it)
        t1 = time.perf_counter()
        batches, stop_at = 0, t1 + min(min_s, max(0.5, s.left() - 2.0))
        # At least a full round of prefetched batches after the first, so that the rate is the workers' own.
        least = 3 + 4 * workers if not s.smoke else 2
        while time.perf_counter() < stop_at or batches < least:
            next(it)
            batches += 1
            if time.perf_counter() - t1 > max(2 * min_s, 10.0):
                break
        t2 = time.perf_counter()
        del it, loader
        row = {"num_workers": workers, "first_batch_s": t1 - t0, "timed_batches": batches,
               "items_per_s": batches * batch / (t2 - t1), "timed_s": t2 - t1}
        runs.append(row)
        log(f"loader workers={workers}: {row['items_per_s']:.0f} items/s with boundary maps "
            f"(first batch {row['first_batch_s']:.2f}s, {batches} batches timed)")
        s.save()
    # What the GPU consumes, for comparison: images/s of one trial and of four sharing the card (part 2).
    arch = next(iter(r["archs"]))
    for n in (1, 4):
        rate = _concurrent_run(s, arch, n).get("aggregate_steps_per_s")
        if rate:
            box[f"gpu_images_per_s_{arch}_n{n}"] = rate * batch


# ---------------------------------------------------------------------------------------------------------------
# 6-7. sweeps


class Timeline(gpu_check.UtilisationSampler):
    """``nvidia-smi`` read every ``interval`` seconds while active: ``samples`` = ``[t_s, util %, memory MiB]``,
    ``t_s`` from :meth:`restart`."""

    def restart(self) -> None:
        self.samples, self.t0, self.active = [], time.perf_counter(), True

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.active:
                try:
                    reading = self._read()
                except Exception:  # noqa: BLE001 - one failed read is a gap, not the end of the timeline
                    reading = None
                if reading is not None:
                    self.samples.append([round(time.perf_counter() - self.t0, 1), *reading])
            time.sleep(self.interval)


def sweep_figures(out: Path, wall_s: float) -> dict:
    """Trials, trials/hour and their timing from a (finished or stopped) sweep's results folder."""
    from raysweep.results import read_results

    res = out / "results"
    fig: dict = {}
    state = out / "state.json"
    if state.exists():
        st = json.loads(state.read_text())
        fig["state"] = {k: st.get(k) for k in ("tune_done", "confirm_done", "wall_s")}
    meta = res / "sweep.json"
    if meta.exists():
        m = json.loads(meta.read_text())
        fig["planned"] = m.get("planned")
        fig["hardware"] = m.get("hardware")
    if not res.is_dir():
        fig["rows"] = 0
        return fig
    trials = read_results(res)["trials"]
    fig["rows"] = len(trials)
    fig["rows_by_stage"] = {str(k): int(v) for k, v in trials["stage"].value_counts().items()}
    fig["rows_by_status"] = {str(k): int(v) for k, v in trials["status"].value_counts().items()}
    if wall_s > 0:
        fig["trials_per_hour"] = len(trials) / (wall_s / 3600)
    if len(trials):
        import pandas as pd

        start, end = trials["started_at"].min(), trials["ended_at"].max()
        if not pd.isna(start) and not pd.isna(end) and end > start:
            window = (end - start).total_seconds()
            fig["trials_window_s"] = window
            fig["trials_per_hour_window"] = len(trials) / (window / 3600)
        fig["trials"] = [
            {"stage": t.stage, "arch": t.arch, "loss": t.loss, "status": t.status, "steps_done": int(t.steps_done),
             "wall_s": None if pd.isna(t.wall_s) else round(float(t.wall_s), 2),
             "start_s": None if pd.isna(t.started_at) or pd.isna(start) else
             round((t.started_at - start).total_seconds(), 1)}
            for t in trials.sort_values("started_at").itertuples()]
        fig["trial_wall_s_median"] = float(trials["wall_s"].median())
    return fig


def run_sweep_part(s: Session, box: dict, label: str, spec: dict, timeout: float) -> dict:
    """One sweep in a child process, with the GPU timeline; its figures (also stored in ``box[label]``)."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise RuntimeError("ray is not importable here: install the carried Ray wheel (benchmarks/gpu_sweep.sh)")
    out = s.tmp / f"sweep_{label}"
    shutil.rmtree(out, ignore_errors=True)
    timeline = None
    if s.cuda and shutil.which("nvidia-smi"):
        timeline = Timeline(interval=1.0)
        timeline.start()
        timeline.restart()
    grace = 5.0 if s.smoke else 20.0
    t = time.perf_counter()
    try:
        r = run_child(s, "sweep", {**spec, "out": str(out)}, timeout - grace, label, grace=grace, keep_log=True)
    finally:
        if timeline is not None:
            timeline.active = False
            timeline.stop()
    wall = time.perf_counter() - t
    rec = {"status": r.get("status"), "finished": r.get("status") == "completed", "wall_s": wall,
           "sweep_s": (r["t_end"] - r["t_start"]) if r.get("t_end") and r.get("t_start") else None,
           "timeout_s": r.get("timeout_s"), "error": r.get("error"), "log_tail": r.get("log_tail"),
           "killed_processes": r.get("killed")}
    try:
        rec.update(sweep_figures(out, wall))
    except Exception as exc:  # noqa: BLE001 - a stopped sweep may leave nothing readable; say so
        rec["results_error"] = f"{type(exc).__name__}: {exc}"
    if timeline is not None:
        rec["gpu_timeline"] = timeline.samples
        util = [u for _, u, _ in timeline.samples]
        if util:
            rec["gpu_util_mean"] = sum(util) / len(util)
            rec["gpu_util_busy_fraction"] = sum(u > 0 for u in util) / len(util)
            rec["gpu_mem_used_max_mib"] = max(m for _, _, m in timeline.samples)
    else:
        rec["gpu_timeline"] = None
        rec["gpu_timeline_note"] = "no GPU sampled (CPU run or no nvidia-smi)"
    box[label] = {k: v for k, v in rec.items() if v is not None or k == "gpu_timeline"}
    log(f"sweep {label}: {rec['status']}, {rec.get('rows', 0)} trials in {wall:.0f}s "
        f"({_f(rec.get('trials_per_hour'), 0)}/h; window {_f(rec.get('trials_per_hour_window'), 0)}/h), by stage "
        f"{rec.get('rows_by_stage')}, GPU util {_f(rec.get('gpu_util_mean'), 0)}% {rec.get('error') or ''}")
    shutil.rmtree(out, ignore_errors=True)
    s.save()
    return rec


def part_sweep_default(s: Session, box: dict) -> None:
    path = ROOT / "configs" / "default.yaml"
    if s.smoke:
        # The default config cut to the CNN, two losses, 3 replicates and 4 steps: the same code path in about a
        # minute.
        from raysweep.config import read_yaml_mapping

        raw = read_yaml_mapping(path, "sweep config")
        raw["architectures"] = {"cnn": raw["architectures"]["cnn"]}
        raw["losses"] = ["dice", "ce"]
        raw["tuning"]["replicates"] = 3
        raw["trial"]["train"]["steps"] = 4
        raw["trial"]["eval"]["every"] = 2
        raw["confirmation"]["evaluations"] = 2
        raw["confirmation"]["seeds"] = 1
        spec = {"raw": raw, "name": "default.yaml (smoke cut)"}
    else:
        spec = {"config": str(path)}
    box["config"] = spec.get("name", "configs/default.yaml as is")
    run_sweep_part(s, box, "run", spec, s.left())


def synapse_shaped_sweep(s: Session, steps: int, pack: int) -> dict:
    """The Synapse-shaped sweep config (raw; validated in the child): ``steps`` per trial, two evaluations."""
    r = s.recipe
    archs = dict(list(r["archs"].items())[:1]) if s.smoke else r["archs"]
    every = max(1, steps // 2)
    return {
        "name": "synapse_shaped" + (f"_pack{pack}" if pack > 1 else ""),
        "datasets": {"synthetic": {"options": {"image_size": r["image_size"], **r["dataset_options"]},
                                   "select_options": {"num_volumes": 2}, "eval_options": {"num_volumes": 8}}},
        "architectures": archs,
        "losses": list(SWEEP_LOSSES[:2] if s.smoke else SWEEP_LOSSES),
        "pairing": "none",
        "tuning": {"trials_per_group": 1, "seed": 0, "scheduler": "asha", "grace_period": 1, "reduction_factor": 2},
        # 8 ranking volumes cannot separate 4 losses at alpha: the figures here are costs, not a ranking.
        "confirmation": {"seeds": 1, "evaluations": 2, "underpowered": "warn"},
        "resources": {"cpus_per_trial": min(r["cpus_per_trial"], s.ncpu), "gpus_per_trial": 0.25,
                      "max_concurrent": None, "pack": pack},
        "trial": {"optimizer": r["optimizer"], "scheduler": r["scheduler"],
                  "train": {"steps": steps, "batch_size": r["batch"], "num_workers": r["num_workers"],
                            "amp": r["amp"]},
                  "eval": {"every": every, "overlays": 0, "hd95": "final", "batch_size": 32},
                  # Checkpoints off as in configs/default.yaml: the figures are training and scheduling costs.
                  "checkpoint": {"every": 0, "at_end": False}},
    }


def part_sweep_synapse_shaped(s: Session, box: dict) -> None:
    if s.smoke:
        steps = 4
    else:
        # Per-trial rate with four trials on the card (part 2), the slower architecture's; then the steps that
        # make the first run take about half of what is left: fixed costs (Ray, data inspection, two stages) of
        # about 30 s and per wave of four trials about 10 s of start-up and evaluation besides the steps.
        rates = [statistics.mean(run["per_process_steps_per_s"]) for arch in s.recipe["archs"]
                 if (run := _concurrent_run(s, arch, 4)).get("per_process_steps_per_s")]
        rate = min(rates) if rates else 8.0
        n_archs, n_losses = len(s.recipe["archs"]), len(SWEEP_LOSSES)
        waves = 2 * math.ceil(n_archs * n_losses / 4)  # tune and confirm, one trial per group each
        per_wave = (0.5 * s.left() - 30.0) / waves - 10.0
        steps = int(min(2000, max(40, rate * per_wave)))
        steps -= steps % 2
        box["rate_per_trial_n4"] = rate
        box["waves"] = waves
    box["steps"] = steps
    box["losses"] = list(SWEEP_LOSSES[:2] if s.smoke else SWEEP_LOSSES)
    first = run_sweep_part(s, box, "gpus_0.25", {"raw": synapse_shaped_sweep(s, steps, 1),
                                                 "name": "synapse_shaped"}, 0.55 * s.left() if not s.smoke
                           else s.left())
    need = 1.1 * first["wall_s"]
    if s.left() < need:
        s.skip(box, "pack 4", f"time ({s.left():.0f}s left, the first run took {first['wall_s']:.0f}s)")
        return
    run_sweep_part(s, box, "gpus_0.25_pack4", {"raw": synapse_shaped_sweep(s, steps, 4),
                                               "name": "synapse_shaped_pack4"}, s.left())


# ---------------------------------------------------------------------------------------------------------------
# summary


def _f(x, digits: int = 2) -> str:
    return fmt(x, f".{digits}f")


def print_summary(s: Session) -> None:
    P = s.results["parts"]
    print("\n" + "=" * 100)
    print(f"GPU sweep benchmark ({'SMOKE, CPU' if s.smoke else s.device}), {elapsed():.0f}s of {s.budget:.0f}s")
    env = P.get("env", {})
    print(f"env: torch {env.get('torch')} cuda {env.get('torch_cuda')} device {env.get('device', 'cpu')} "
          f"cpus {env.get('cpu_count')} ray {(env.get('packages') or {}).get('ray')} | {env.get('nvidia_smi')}")
    C = P.get("concurrency", {})
    for arch in s.recipe["archs"]:
        if arch in C:
            print(f"\nconcurrency {arch} {C[arch]['arch']}: N, aggregate steps/s, x N=1, per process, util %, peak MiB")
            for r in C[arch]["runs"]:
                print(f"  {r.get('n'):>2} {_f(r.get('aggregate_steps_per_s')):>8} {_f(r.get('aggregate_vs_n1')):>6} "
                      f"{[_f(x) for x in r.get('per_process_steps_per_s') or []]} {_f(r.get('gpu_util_mean'), 0)} "
                      f"{[_f(x, 0) for x in r.get('peak_memory_mb_per_process') or []]} "
                      f"T={r.get('timed_steps_per_process')} done {r.get('completed')}/{r.get('n')}")
    K = P.get("packing", {})
    for arch in s.recipe["archs"]:
        if arch in K:
            print(f"\npacking {arch}: K, member-steps/s (uncorrected), K concurrent trials, ratio, peak MiB (K trials)")
            for r in K[arch]["runs"]:
                print(f"  {r['k']:>2} {_f(r.get('member_steps_per_s')):>8} "
                      f"({_f(r.get('member_steps_per_s_uncorrected'))}) "
                      f"{_f(r.get('concurrent_aggregate_steps_per_s')):>8} {_f(r.get('vs_concurrent')):>6} "
                      f"{_f(r.get('peak_memory_mb'), 0)} ({_f(r.get('concurrent_peak_memory_mb_sum'), 0)}) "
                      f"{r.get('status')} {r.get('error') or ''}")
    CO = P.get("compile", {})
    for arch in s.recipe["archs"]:
        if arch in CO:
            print(f"\ncompile {arch}: mode, steps/s, x eager, compile s vs eager, status")
            for r in CO[arch]["runs"]:
                print(f"  {str(r['compile']):<16} {_f(r.get('steps_per_s')):>8} {_f(r.get('speedup_vs_eager')):>6} "
                      f"{_f(r.get('compile_s_vs_eager'), 1):>8} {r.get('status')} {r.get('error') or ''}")
    L = P.get("loader", {})
    if L.get("runs"):
        print(f"\nloader ({L.get('loss')} maps, batch {L.get('batch')}): "
              + ", ".join(f"{r['num_workers']} workers {r['items_per_s']:.0f} items/s" for r in L["runs"]))
    for part in ("sweep_default", "sweep_synapse_shaped"):
        for label, rec in P.get(part, {}).items():
            if isinstance(rec, dict) and "rows" in rec:
                print(f"\n{part} {label}: {rec.get('status')}, {rec.get('rows')} trials {rec.get('rows_by_stage')} in "
                      f"{_f(rec.get('wall_s'), 0)}s: {_f(rec.get('trials_per_hour'), 0)} trials/h "
                      f"(window {_f(rec.get('trials_per_hour_window'), 0)}/h), planned {rec.get('planned')}, GPU "
                      f"util mean {_f(rec.get('gpu_util_mean'), 0)}%")
    skipped = {p: b.get("skipped") for p, b in P.items() if b.get("skipped")}
    if skipped:
        print("\nskipped:", json.dumps(skipped))
    s.print_errors()
    print("=" * 100, flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="every part on the CPU at tiny sizes")
    parser.add_argument("--out", default=None, help="JSON results (rewritten after every part)")
    parser.add_argument("--budget", type=float, default=None, help="seconds for the whole run (540; smoke 900)")
    parser.add_argument("--reserve-s", type=float, default=10.0, help="seconds kept free at the end")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated, run in the order of PARTS")
    parser.add_argument("--caps", default="", help="per-part caps in seconds, e.g. compile=60,loader=10")
    parser.add_argument("--archs", default="", help="only these of the recipe's architectures (default: all)")
    parser.add_argument("--steps1", type=int, default=60, help="timed steps of one trial alone (and as many warm-up)")
    parser.add_argument("--target-s", type=float, default=5.0,
                        help="timed seconds per N at the N=1 rate (each trial runs about target / N x slowdown)")
    parser.add_argument("--loader-s", type=float, default=3.0, help="timed seconds per loader setting, at least")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "SPEC"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(*args.child)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    s = Session(args)
    fns = {"env": part_env, "concurrency": part_concurrency, "packing": part_packing, "compile": part_compile,
           "loader": part_loader, "sweep_default": part_sweep_default,
           "sweep_synapse_shaped": part_sweep_synapse_shaped}
    wanted = [p.strip() for p in args.parts.split(",") if p.strip()]
    for name in wanted:
        if name not in fns:
            s.results["errors"][name] = f"unknown part; choose from {', '.join(PARTS)}"
    if not args.smoke and not torch.cuda.is_available():
        # The GPU sizes would run for hours on a CPU: the environment only, and say why.
        s.results["errors"]["cuda"] = "torch.cuda.is_available() is False; run with --smoke for the CPU code paths"
        wanted = [p for p in wanted if p == "env"]
    try:
        for name in PARTS:
            if name in wanted:
                s.part(name, fns[name])
    finally:
        s.results["meta"]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        s.results["meta"]["modules_ray_optuna"] = sorted(m for m in sys.modules if m.split(".")[0] in ("ray", "optuna"))
        s.save()
        shutil.rmtree(s.tmp, ignore_errors=True)
        try:
            print_summary(s)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
    return 0 if not s.results["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
