"""The sweep: one Ray Tune experiment per stage over every (dataset, architecture, loss) group.

Stage ``tune``: one ``Tuner`` whose searcher (:class:`GroupSearcher`) hands out trials round-robin across one Optuna
study per group, with an equal quota each, the survey's defaults first; :class:`GroupScheduler` stops weak trials early
with one ASHA bracket per group, so a trial only ever competes with trials of its own (dataset, arch, loss) group and
every group gets the same rung schedule. The loss is never a tunable categorical (TPE would starve the losses that
start slowly) and no two Tuners run at once (Ray does not support it), so the cluster stays busy with no barrier
between groups. Tuning trials evaluate on each dataset's *selection* split.

Stage ``confirm``: the best configuration of each group, among its tuning trials that ran their full budget, is
retrained with ``confirmation.seeds`` new, distinct seeds and evaluated on the *ranking* split, which shares no case
with the selection split; the ranking uses only these runs. ``sweep.json``'s ``protocol`` records both case lists,
the rung schedule, the seeds and each cell's power limit.

Every trial lands in Parquet through :class:`ResultsCallback` on the driver (idempotent by trial id). Running the same
command on the same output folder resumes: a stage whose experiment exists is restored (``Tuner.restore``), a finished
stage is skipped. See ``raysweep run --help``.
"""

from __future__ import annotations

import errno
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from .config import Group, SweepConfig, n_startup_trials, power_limits, protocol_cases
from .search import GroupSpace, trial_config, tune_quota

METRIC = "score"
from .vocab import STAGES
#: Free space (bytes) the output folder must have before a sweep starts: Parquet rows are small, but every running
#: trial keeps one or two model checkpoints (tens of MB each) until it ends.
MIN_FREE_BYTES = 256 * 2**20


class OutputInUse(OSError):
    """Another ``raysweep run`` holds the output folder's lock."""


class ResultsWriteError(OSError):
    """The output folder cannot be written (read-only, disk full, permissions)."""


# results_dir -> the first write error of the running stage. Module state rather than an attribute: on a restored
# experiment Tune runs the callback it unpickled from tuner.pkl, not the one the driver built.
_WRITE_FAILURES: dict[str, tuple[str, OSError]] = {}


# ---------------------------------------------------------------------------------------------------- the trainable


def sweep_trainable(config: dict) -> None:
    """The function trainable: unpacks a sweep trial config and runs :func:`raysweep.trial.train_trial`."""
    from .trial import train_trial

    config = config.get("trial", config)  # the confirmation stage wraps configs in a grid_search entry
    train_trial(config["train"])


# ---------------------------------------------------------------------------------------------------- the searcher


def _searcher_base():
    from ray.tune.search import Searcher

    return Searcher


class GroupSearcher(_searcher_base()):
    """Multiplexes one Optuna study per group behind a single Tune searcher, with an equal quota per group.

    Suggestions go round-robin over the groups that still have quota; results and completions are routed to the study
    that proposed the trial. A group whose loss has nothing to tune gets a single trial (its defaults). Returns
    ``Searcher.FINISHED`` once every quota is issued. Pickled whole by Tune (module-level classes only).
    """

    def __init__(self, cfg: SweepConfig, metric: str = METRIC, mode: str = "max"):
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        from .trial.schema import resolve_config

        super().__init__(metric=metric, mode=mode)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.cfg = cfg
        self.groups = cfg.groups()
        self.quota: dict[str, int] = {}
        self.subs: dict[str, Any] = {}
        self.spaces: dict[str, GroupSpace] = {}
        self.budget = resolve_config(cfg.trial)["train"]["steps"]
        self.n_startup = n_startup_trials(cfg)
        # Trials of each group told to its study as COMPLETE or PRUNED: what TPE counts against n_startup_trials.
        self.finished: dict[str, int] = {g.key: 0 for g in self.groups}
        seed = cfg.tuning["seed"]
        for i, g in enumerate(self.groups):
            space = GroupSpace(g.loss, cfg.pairing)
            self.spaces[g.key] = space
            self.quota[g.key] = tune_quota(cfg, g)
            if space.is_empty():
                continue
            self.subs[g.key] = OptunaSearch(
                space=space, metric=metric, mode=mode, points_to_evaluate=[space.defaults()],
                sampler=optuna.samplers.TPESampler(seed=seed * 10007 + i, n_startup_trials=self.n_startup),
                study_name=f"{cfg.name}-{g.key}",  # unique: groups never merge into one study
            )
        self.issued = {g.key: 0 for g in self.groups}
        self.owner: dict[str, Group] = {}
        self.cursor = 0

    @property
    def total(self) -> int:
        return sum(self.quota.values())

    def suggest(self, trial_id: str):
        from ray.tune.utils import flatten_dict

        n = len(self.groups)
        for k in range(n):
            g = self.groups[(self.cursor + k) % n]
            if self.issued[g.key] >= self.quota[g.key]:
                continue
            self.cursor = (self.cursor + k + 1) % n
            sub = self.subs.get(g.key)
            if sub is None:
                point, proposal = {}, "fixed"
            else:
                point = sub.suggest(trial_id)
                if not isinstance(point, dict):  # the study has nothing to propose now
                    continue
                point = flatten_dict(point, delimiter="/")
                # The first point is the survey's defaults (points_to_evaluate); after it, TPE samples at random
                # until n_startup trials of the group have finished (Optuna's own rule, counted here).
                proposal = ("default" if self.issued[g.key] == 0 else
                            "random" if self.finished[g.key] < self.n_startup else "model")
            self.issued[g.key] += 1
            self.owner[trial_id] = g
            return trial_config(self.cfg, g, point, seed=self.cfg.tuning["seed"], stage="tune", proposal=proposal)
        return self.FINISHED if all(self.issued[k] >= q for k, q in self.quota.items()) else None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        sub = self._sub(trial_id)
        if sub is not None and METRIC in result:
            sub.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        sub = self._sub(trial_id)
        if sub is None:
            return
        if result is not None and not _finite(result.get(METRIC)):
            error = True  # Optuna cannot store NaN; an OOM trial says nothing about its config
        if not error and result is not None and int(result.get("step") or 0) < self.budget \
                and result.get("status") == "running":
            # Stopped early by the group's ASHA: PRUNED, not COMPLETE, so TPE ranks it by its intermediate values
            # (reported at every evaluation) instead of mistaking a partial-budget score for a final one.
            result = None
        sub.on_trial_complete(trial_id, result=result, error=error)
        if not error:
            self.finished[self.owner[trial_id].key] += 1

    def _sub(self, trial_id: str):
        g = self.owner.get(trial_id)
        return None if g is None else self.subs.get(g.key)

    def save(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


def _asha_base():
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler


def asha_rungs(max_t: int, grace_period: int, reduction_factor: int) -> list[int]:
    """The milestones (in reports) at which ASHA may stop a trial, ascending: ``grace_period * rf**k`` below
    ``max_t`` (Ray's ``_Bracket`` with one bracket; a trial reaching ``max_t`` has run its full budget)."""
    rungs, r = [], grace_period
    while r < max_t:
        rungs.append(r)
        r *= reduction_factor
    return rungs


class GroupScheduler(_asha_base()):
    """Early stopping inside each group: one ASHA bracket per (dataset, arch, loss) group behind one Tune scheduler.

    A single ASHA over the whole tuning Tuner would stop a trial whose score at a rung is low *relative to other
    losses' trials*, so slow-starting losses would be cut and tuned less. Here a trial competes only with earlier
    trials of its own group at the same rung; every group has the same rung schedule (``grace_period``,
    ``reduction_factor``, ``max_t``) and the same quota (the searcher's), and the first trial of a group to reach a
    rung always passes it, so every group has at least one full-budget trial unless its trials fail.
    """

    def __init__(self, max_t: int, grace_period: int, reduction_factor: int, metric: str = METRIC,
                 mode: str = "max"):
        super().__init__()
        self.asha = {"time_attr": "training_iteration", "metric": metric, "mode": mode, "max_t": max_t,
                     "grace_period": grace_period, "reduction_factor": reduction_factor, "brackets": 1,
                     "stop_last_trials": True}
        self.rungs = asha_rungs(max_t, grace_period, reduction_factor)
        self.groups: dict[str, Any] = {}  # group key -> its AsyncHyperBandScheduler
        self.group_of: dict[str, str] = {}  # trial id -> group key

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return metric in (None, self.asha["metric"]) and mode in (None, self.asha["mode"])

    def _sub(self, trial):
        key = self.group_of.get(trial.trial_id)
        return None if key is None else self.groups[key]

    def on_trial_add(self, tune_controller, trial) -> None:
        from ray.tune.schedulers import AsyncHyperBandScheduler

        tags = trial.config.get("sweep", {})
        key = Group(tags.get("dataset"), tags.get("arch"), tags.get("loss")).key
        if key not in self.groups:
            self.groups[key] = AsyncHyperBandScheduler(**self.asha)
        self.group_of[trial.trial_id] = key
        self.groups[key].on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        sub = self._sub(trial)
        return self.CONTINUE if sub is None else sub.on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        sub = self._sub(trial)
        if sub is not None and trial.trial_id in sub._trial_info:
            sub.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        sub = self._sub(trial)
        if sub is not None:
            sub._trial_info.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        return f"Early stopping inside each of {len(self.groups)} groups (ASHA, rungs {self.rungs})"


class _tune_environment:
    """Tune settings for the sweep's duration only (a library call must not change its caller's environment)."""

    SETTINGS = {
        "RAY_CHDIR_TO_TRIAL_DIR": "0",
        "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
        # raysweep prints its own progress line per trial; Tune's tables and snapshot warnings would drown it.
        "RAY_AIR_NEW_OUTPUT": "0",
        "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    }

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in self.SETTINGS}
        for k, v in self.SETTINGS.items():
            os.environ.setdefault(k, v)

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def state_key(path: Path) -> str:
    import hashlib

    return hashlib.sha1(str(path).encode()).hexdigest()[:8]


def _iso(t: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat()


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


# ---------------------------------------------------------------------------------------------------- results


def _callback_base():
    from ray.tune import Callback

    return Callback


class ResultsCallback(_callback_base()):
    """Writes every trial to Parquet on the driver as it ends (``raysweep.results``), and shows progress.

    Rows are keyed by trial id and written atomically, so a restored experiment rewrites rather than duplicates them.
    The per-report curve rows of running trials are kept in the callback's state, which Tune saves with the
    experiment.
    """

    def __init__(self, results_dir: Path, overlays_dir: Path, sweep_id: str, stage: str, planned: int,
                 quota: int = 1, progress: bool = True):
        self.results_dir = Path(results_dir)
        self.overlays_dir = Path(overlays_dir)
        self.sweep_id, self.stage = sweep_id, stage
        self.curves: dict[str, list[dict]] = {}
        self.written: set[str] = set()
        self.progress = _Progress(stage, planned, progress)
        self.quota = quota
        self._ended: list[tuple[Any, str]] = []  # (filesystem, trial path) of trials ended since the last snapshot
        self._ended_before: list[tuple[Any, str]] = []  # ... ended before the last snapshot

    def on_step_begin(self, iteration, trials, **info):
        """Once per driver session, before any trial runs, make the Parquet folder agree with the experiment.

        - Rows of this stage whose trial the experiment does not know are dropped. Tune snapshots the experiment
          (trials, searcher, this callback) every ~10 s; a trial that ended after the last snapshot of a killed
          driver has a row but is unknown to the restored experiment, whose searcher proposes a replacement. Keeping
          the row would leave one trial too many in the group.
        - Trials the experiment records as ended but that have no row (their write failed: disk full, read-only
          folder) are written now, from the result and curves saved with the experiment.
        - Leftovers of a writer killed mid-trial are removed: temporary files, and curves/cases files whose trial
          has no ``trials`` row (the ``trials`` file is written last). Readers ignore both anyway.
        """
        if getattr(self, "_reconciled", False):
            return
        self._reconciled = True
        from . import results

        known = {t.trial_id for t in trials}
        have = results.stage_trial_ids(self.results_dir, self.stage)
        for trial_id in have - known:
            results.remove_trial_rows(self.results_dir, trial_id)
        results.remove_incomplete(self.results_dir)
        for t in trials:
            if t.status == "TERMINATED" and t.trial_id not in have:
                self._write(t, trials, error=None, show=False)

    def get_state(self) -> dict | None:
        """Called by Tune for each experiment snapshot. Also frees disk: the checkpoints of trials that ended before
        the previous snapshot are deleted (that snapshot, complete by now, records them as ended, so no restore will
        ever read them; a running trial's checkpoints are kept until then)."""
        for fs, path in self._ended_before:
            _delete_checkpoints(fs, path)
        self._ended_before, self._ended = self._ended, []
        return {"curves": self.curves, "written": sorted(self.written)}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        row = _curve_row(result)
        rows = self.curves.setdefault(trial.trial_id, [])
        # A trial restarted from a checkpoint reports again the iterations after it: keep the new rows (a report
        # that reached the driver but whose checkpoint did not survive the failure is superseded).
        while rows and row["training_iteration"] is not None and (rows[-1]["training_iteration"] or 0) >= row[
                "training_iteration"]:
            rows.pop()
        rows.append(row)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._write(trial, trials, error=None)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._write(trial, trials, error=_error_summary(trial))

    def _write(self, trial, trials, error: str | None, show: bool = True) -> None:
        from . import results

        config = trial.config.get("trial", trial.config)
        tags = config.get("sweep", {})
        result = dict(trial.last_result or {})
        rows = trial_rows(self.sweep_id, trial.trial_id, config, result, self.curves.get(trial.trial_id, []),
                          error=error)
        try:
            results.write_trial_rows(self.results_dir, trial.trial_id, *rows)
        except OSError as exc:
            # Disk full or folder gone read-only: Tune would log this and go on, so that every later trial's results
            # were lost too. Stop the experiment the way Ctrl+C does instead: Tune saves its state, SweepRunner
            # raises a clear error, and the same command resumes; the trial is written then (on_step_begin).
            _WRITE_FAILURES.setdefault(str(self.results_dir), (trial.trial_id, exc))
            _interrupt_tune()
            return
        self.curves.pop(trial.trial_id, None)
        self.written.add(trial.trial_id)
        fs = getattr(getattr(trial, "storage", None), "storage_filesystem", None)
        if fs is not None and trial.path:
            self._ended.append((fs, trial.path))
        if show:
            running = sum(1 for t in trials if t.status == "RUNNING" and t is not trial)
            key = f"{tags.get('dataset')}/{tags.get('arch')}/{tags.get('loss')}"
            self.progress.finished(key, result.get(METRIC), rows[0][0]["status"], running, self.quota)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_reconciled", None)  # a restored copy (tuner.pkl) reconciles again
        state["_ended"], state["_ended_before"] = [], []  # this driver session's disk bookkeeping only
        return state

    def set_state(self, state: dict) -> None:
        self.curves = state.get("curves", {})
        self.written = set(state.get("written", []))


def _error_summary(trial) -> str:
    """The exception line of a failed trial's last traceback (``TypeError: ...``), its attempts, and where the full
    tracebacks are (Tune's ``error.txt`` in the trial folder)."""
    text = ""
    try:
        text = Path(trial.error_file).read_text() if getattr(trial, "error_file", None) else ""
    except OSError:
        pass
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # Ray colours its tracebacks
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith((" ", "Failure #"))]
    last = lines[-1][:500] if lines else "the trial raised an error"
    attempts = getattr(trial, "num_failures", 0) or 1
    where = f"; tracebacks in {trial.error_file}" if getattr(trial, "error_file", None) else ""
    return f"{last} ({attempts} attempt{'s' if attempts > 1 else ''}{where})"


def _interrupt_tune() -> bool:
    """End the running ``Tuner.fit`` as Ctrl+C does (Tune saves the experiment; running trials resume later).

    Calls Tune's SIGINT handler directly, which ``fit`` installs in the main thread. Returns False where it is not
    installed (``fit`` in another thread, or ``TUNE_DISABLE_SIGINT_HANDLER=1``): the stage then runs to its end and
    SweepRunner reports the failure afterwards.
    """
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and getattr(handler, "__name__", "") == "signal_interrupt_tune_run":
        handler(signal.SIGINT, None)
        return True
    return False


def _delete_checkpoints(fs, trial_path: str) -> None:
    """Delete the ``checkpoint_*`` folders of one ended trial (local or remote storage). Best effort."""
    from pyarrow import fs as pafs

    try:
        for info in fs.get_file_info(pafs.FileSelector(trial_path, allow_not_found=True)):
            if info.type == pafs.FileType.Directory and info.base_name.startswith("checkpoint_"):
                fs.delete_dir(info.path)
    except OSError:
        pass  # a checkpoint left behind costs disk, never correctness


_CURVE_KEYS = ("training_iteration", "step", "epoch", "loss", "lr")


def _curve_row(result: dict) -> dict:
    primary = result.get("primary_metric", "dice")
    extra = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
             and k not in _CURVE_KEYS and "/" not in k}
    return {"training_iteration": result.get("training_iteration"), "step": result.get("step"),
            "epoch": result.get("epoch"), "time_s": result.get("time_total_s"), "metric": _num(result.get(primary)),
            "loss_value": _num(result.get("loss")), "lr": _num(result.get("lr")), "extra": json.dumps(extra)}


def trial_rows(sweep_id: str, trial_id: str, config: dict, result: dict, curves: list[dict],
               error: str | None = None) -> tuple[list[dict], list[dict], list[dict]]:
    """``(trials, curves, cases)`` rows of one finished trial, in the schema of :mod:`raysweep.results`."""
    from .losses import LOSSES
    from .trial.schema import resolve_config

    tags = config.get("sweep", {})
    train_cfg = resolve_config(config["train"])
    budget = train_cfg["train"]["steps"]
    primary = result.get("primary_metric", "dice")
    status = result.get("status", "error" if error else "completed")
    steps_done = int(result.get("step") or 0)
    if error:
        status = "error"
    elif status == "running":  # the scheduler stopped it before its budget
        status = "stopped" if steps_done < budget else "completed"
    ids = {"sweep_id": sweep_id, "trial_id": trial_id, "stage": tags.get("stage"), "dataset": tags.get("dataset"),
           "arch": tags.get("arch"), "loss": tags.get("loss"), "seed": tags.get("seed")}
    curve_vals = [c["metric"] for c in curves if _finite(c.get("metric"))]
    per_class = {k: v for k, v in result.items() if "/" in k and k.split("/")[0] in ("dice", "iou", "hd95", "miou")
                 and (v is None or isinstance(v, (int, float)))}
    spec = LOSSES.get(tags.get("loss"))
    point = tags.get("point", {})
    from .search import GroupSpace

    is_default = bool(tags.get("loss")) and point == GroupSpace(tags["loss"], _pairing_of(config)).defaults()
    trial = {
        **ids,
        "loss_title": spec.title if spec else None,
        "family": spec.family if spec else None,
        "in_survey": bool(spec.in_survey) if spec else None,
        "params": json.dumps(point, sort_keys=True),
        "is_default": is_default,
        "proposal": tags.get("proposal") if tags.get("stage") == "tune" else None,
        "status": status,
        "error": error or (f"diverged at step {result.get('diverged_step')}" if status == "diverged" else None)
        or (result.get("error") if isinstance(result.get("error"), str) else None),
        "budget_steps": budget,
        "steps_done": steps_done,
        "primary_metric": primary,
        "final_metric": _num(result.get(primary)),
        "best_metric": max(curve_vals) if curve_vals else _num(result.get(primary)),
        "dice": _num(result.get("dice")),
        "iou": _num(result.get("iou")),
        "miou": _num(result.get("miou")),
        "hd95": _num(result.get("hd95")),
        "per_class": json.dumps(per_class),
        **{f"{phase}_ms": _num(result.get(f"time/{phase}_ms"))
           for phase in ("step", "data", "forward", "loss", "backward", "optimizer")},
        "steps_per_s": _num(result.get("steps_per_s")),
        "peak_memory_mb": _num(result.get("peak_memory_mb")),
        "node": result.get("hostname") or result.get("node_ip"),
        "wall_s": _num(result.get("time_total_s")),
        "ended_at": time.time(),
        "started_at": time.time() - (_num(result.get("time_total_s")) or 0.0),
        "versions": json.dumps(environment()["versions"]),
    }
    curve_rows = [{**{k: ids[k] for k in ("sweep_id", "trial_id", "stage", "dataset", "arch", "loss", "seed")}, **c}
                  for c in curves]
    case_rows = []
    # Both stages: tune trials' rows are scores on the selection cases, confirm trials' on the ranking cases, so
    # anyone can check from the tables that the two sets never meet.
    if result.get("cases"):
        for row in json.loads(result["cases"]):
            case_rows.append({**{k: ids[k] for k in ("sweep_id", "trial_id", "stage", "dataset", "arch", "loss",
                                                     "seed")}, **row})
    return [trial], curve_rows, case_rows


def _pairing_of(config: dict) -> str:
    companions = config.get("train", {}).get("companions") or []
    return companions[0]["name"] if companions else "none"


def _num(x):
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


# ---------------------------------------------------------------------------------------------------- resources


def trial_resources(cfg: SweepConfig, cluster: dict[str, float]) -> tuple[dict[str, float], int]:
    """Per-trial resources and the concurrency they allow on ``cluster`` (``ray.cluster_resources()``).

    A GPU is requested only when the cluster has one (a GPU request on a CPU cluster would wait forever), so one
    config runs on a laptop and on a GPU cluster; fractional GPUs let several trials share one. A config that insists
    on CUDA (``trial.train.device: cuda``) on a cluster without GPUs is an error, raised before any trial starts.
    """
    cpus = float(cfg.resources["cpus_per_trial"])
    total_cpu = float(cluster.get("CPU", 1))
    total_gpu = float(cluster.get("GPU", 0))
    if cpus > total_cpu:
        raise ValueError(f"resources.cpus_per_trial={cpus:g} but the cluster has {total_cpu:g} CPUs; lower it")
    device = str((cfg.trial.get("train") or {}).get("device", "auto"))
    if device.startswith("cuda") and total_gpu == 0:
        raise ValueError(f"trial.train.device is {device!r} but the Ray cluster has no GPU: set it to 'auto' (GPU "
                         "where the cluster has one, else CPU) or 'cpu', or run on a cluster with GPUs")
    gpus = float(cfg.resources["gpus_per_trial"]) if total_gpu > 0 else 0.0
    res = {"cpu": cpus, "gpu": gpus}
    slots = int(total_cpu // cpus)
    if gpus > 0:
        slots = min(slots, int(total_gpu // gpus + 1e-9))
    if cfg.resources["max_concurrent"]:
        slots = min(slots, int(cfg.resources["max_concurrent"]))
    return res, max(1, slots)


# ---------------------------------------------------------------------------------------------------- the driver


def check_writable(out: Path, min_free: int = MIN_FREE_BYTES) -> None:
    """Fail early, before Ray starts, when ``out`` cannot hold a sweep: not creatable, not writable, or less than
    ``min_free`` bytes free. Raises :class:`ResultsWriteError` naming the folder and the fix; writes nothing."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".raysweep-probe-{os.getpid()}"
        try:
            with open(probe, "wb") as f:
                f.write(b"\0" * 4096)
                f.flush()
                os.fsync(f.fileno())
        finally:
            probe.unlink(missing_ok=True)
    except OSError as exc:
        raise ResultsWriteError(exc.errno, f"the output folder {out} is not writable ({exc.strerror or exc}): fix its "
                                "permissions, free space, or choose another --out") from None
    free = shutil.disk_usage(out).free
    if free < min_free:
        raise ResultsWriteError(errno.ENOSPC, f"only {free / 2**20:.0f} MiB free under {out}; a sweep needs at least "
                                f"{min_free / 2**20:.0f} MiB (the running trials' checkpoints and the results): free "
                                "space or choose another --out")


class OutputLock:
    """An exclusive lock on an output folder (``<out>/.lock``, ``flock``): one ``raysweep run`` per folder.

    The kernel releases it when the holder exits, however it exits (a SIGKILLed driver leaves no stale lock), so the
    rerun that resumes a killed sweep takes it without help. On NFS, ``flock`` works across hosts only with NFSv4
    and a lock-enabled mount; elsewhere run one driver per folder by hand.
    """

    def __init__(self, out: Path):
        self.path = Path(out) / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> "OutputLock":
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            os.close(fd)
            try:
                info = json.loads(holder)
                who = f"pid {info['pid']} on {info['host']}, since {info['since']}"
            except (ValueError, KeyError, TypeError):
                who = "another process"
            raise OutputInUse(errno.EBUSY, f"{self.path.parent} is in use by another `raysweep run` ({who}); wait "
                              "for it to finish (or stop it), or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "since": _iso(time.time())}).encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock; the file stays (deleting it would race a waiting process)
            self.fd = None


class SweepRunner:
    """Runs (or resumes) a sweep into ``out_dir``: ``ray/`` (Tune experiments), ``results/`` (Parquet, sweep.json),
    ``overlays/`` and the HTML report."""

    def __init__(self, cfg: SweepConfig, out_dir: str | Path, address: str | None = None, fresh: bool = False,
                 progress: bool = True, storage: str | None = None):
        self.cfg = cfg
        self.out = Path(out_dir).expanduser().resolve()
        # Tune's experiment folders: shared storage (s3://, gs://, NFS) on a multi-node cluster; Parquet results are
        # written by the driver and stay under out_dir.
        self.storage = storage or str(self.out / "ray")
        self.address = address
        self.fresh = fresh
        self.progress = progress
        self.results_dir = self.out / "results"
        self.state_path = self.out / "state.json"

    # state: which stages are done and the best points found, so a rerun skips finished work
    def _state(self) -> dict:
        if self.state_path.exists():
            return json.loads(self.state_path.read_text())
        return {}

    def _save_state(self, state: dict) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_path)

    def run(self) -> dict:
        """Run or resume the sweep; returns its state (``state.json``).

        Raises:
            ResultsWriteError: ``out_dir`` is not writable or has too little free space (checked before anything
                starts), or results could not be written mid-sweep (the sweep stops and can be resumed).
            OutputInUse: another ``raysweep run`` is using ``out_dir``.
            ValueError: ``out_dir`` holds a sweep with a different config (and ``fresh`` is not set).
        """
        check_writable(self.out)
        with OutputLock(self.out):
            if self.fresh:
                for sub in ("ray", "results", "overlays", "state.json"):
                    p = self.out / sub
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            state = self._state()
            if state and state.get("config") != self.cfg.to_dict():
                raise ValueError(f"{self.out} holds a sweep with a different config; pass --fresh to start over or "
                                 "choose another --out")
            state.setdefault("config", self.cfg.to_dict())
            state.setdefault("sweep_id", uuid.uuid4().hex[:12])
            state.setdefault("started", time.time())
            self._save_state(state)

            with _tune_environment():
                return self._run(state)

    def _run(self, state: dict) -> dict:
        import ray

        if not ray.is_initialized():
            if self.address is None and os.environ.get("RAY_ADDRESS"):
                self.address = os.environ["RAY_ADDRESS"]  # Ray's own way to name a cluster
            if self.address in (None, "local"):
                # address="local": always a private instance. Without it Ray joins whatever cluster `ray start` last
                # recorded in /tmp/ray (run.py passes --address auto for that case).
                ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False,
                         dashboard_host="127.0.0.1")
            else:
                ray.init(address=self.address, log_to_driver=False)
        cluster = ray.cluster_resources()
        resources, slots = trial_resources(self.cfg, cluster)  # before any work: it checks the config's demands
        self._ensure_inversenets()
        self._write_meta(state, cluster, slots)
        t0 = time.time()
        if not state.get("tune_done"):
            best = self._tune(state, resources, slots)
            state.update(tune_done=True, best=best)
            self._save_state(state)
            self._prune_checkpoints("tune")
        if self.cfg.confirmation["seeds"] > 0 and not state.get("confirm_done"):
            self._confirm(state, resources, slots)
            state["confirm_done"] = True
            self._save_state(state)
            self._prune_checkpoints("confirm")
        state["ended"] = time.time()
        state["wall_s"] = state.get("wall_s", 0.0) + (time.time() - t0)
        self._save_state(state)
        from . import results

        results.update_sweep_meta(self.results_dir, ended_at=_iso(state["ended"]), wall_s=state["wall_s"])
        return state

    def _write_meta(self, state: dict, cluster: dict, slots: int) -> None:
        from . import results

        env = environment()
        searcher_total = sum(tune_quota(self.cfg, g) for g in self.cfg.groups())
        results.write_sweep_meta(self.results_dir, {
            "sweep_id": state["sweep_id"],
            "config": self.cfg.to_dict(),
            "config_text": self.cfg.text or "",
            "started_at": _iso(state["started"]),
            "ended_at": None,
            "wall_s": state.get("wall_s", 0.0),
            "git_commit": env["git_commit"],
            "versions": {**env["versions"], "python": env["python"]},
            "hardware": {"platform": env["platform"], "cpus": cluster.get("CPU"), "gpus": cluster.get("GPU", 0),
                         "nodes": len([k for k in cluster if k.startswith("node:") and "internal" not in k]),
                         "concurrent_trials": slots},
            "planned": {"tune": searcher_total, "confirm": len(self.cfg.groups()) * self.cfg.confirmation["seeds"]},
            "groups": [{"dataset": g.dataset, "arch": g.arch, "loss": g.loss} for g in self.cfg.groups()],
            "protocol": self.protocol(),
            "datasets": self.dataset_statistics(),
        })

    def dataset_statistics(self) -> dict[str, Any]:
        """What each dataset holds (``raysweep data inspect``: classes, pixel shares, objects, spacing, warnings), for
        sweep.json and the report's data section: a ranking holds for data of this kind. Datasets inspect does not
        read are recorded as skipped."""
        from .data.inspect import inspect_config

        print("inspecting the datasets (raysweep data inspect)", flush=True)
        return {r["dataset"]: r for r in inspect_config(self.cfg.datasets)}

    def protocol(self) -> dict[str, Any]:
        """What makes the ranking fair, recorded in sweep.json: the cases that select and the cases that rank (per
        dataset), the early-stopping scope and rungs, the tuning quota and start-up trials, the confirmation seeds
        and each cell's power limit."""
        from .trial.schema import resolve_config

        trial = resolve_config(self.cfg.trial)
        evals = _evaluations(self.cfg.trial)
        t = self.cfg.tuning
        asha = t["scheduler"] == "asha" and evals > 1
        cases = protocol_cases(self.cfg)
        return {
            "alpha": self.cfg.confirmation["alpha"],
            **cases,
            "early_stopping": {"scheduler": "asha" if asha else "none", "scope": "group",
                               "time_attr": "training_iteration", "grace_period": min(t["grace_period"], evals),
                               "reduction_factor": t["reduction_factor"], "max_t": evals,
                               "rungs": asha_rungs(evals, min(t["grace_period"], evals), t["reduction_factor"])
                               if asha else [],
                               "eval_every": trial["eval"]["every"], "budget_steps": trial["train"]["steps"]},
            "tuning": {"trials_per_group": t["trials_per_group"], "n_startup_trials": n_startup_trials(self.cfg),
                       "seed": t["seed"], "sampler": "tpe"},
            "confirmation": {"seeds": confirmation_seeds(self.cfg)},
            "power": {cell: limit.to_dict() for cell, limit in power_limits(self.cfg, cases).items()},
        }

    def _ensure_inversenets(self) -> None:
        """Train (once, cached in the output folder) the InverseNet each dataset needs for the inverseform loss.

        The authors' checkpoint cannot be downloaded, so raysweep's own net is trained on the dataset's training
        masks before any trial starts; trials load it by path (on a multi-node cluster, --out must be shared).
        """
        if "inverseform" not in self.cfg.losses:
            return
        from .data import build_dataset
        from .losses.boundary import inverseform as inv

        for name, section in self.cfg.datasets.items():
            path = self.out / "inversenet" / f"{name}.pt"
            if not path.exists():
                print(f"training the InverseNet for {name} (inverseform loss), once per output folder", flush=True)
                options = {**section.get("options", {}), **section.get("train_options", {})}
                kwargs = {"root": section["root"]} if section.get("root") else {}
                ds = build_dataset(name, "train", **kwargs, **options)
                stride = max(1, len(ds) // 256)
                masks = [ds[i]["mask"].numpy() for i in range(0, len(ds), stride)][:256]
                edges = inv.edge_tiles_from_masks(masks, ds.info.num_classes, tile=32)
                net, summary = inv.train_inversenet(edges, steps=400, seed=self.cfg.tuning["seed"],
                                                    progress=self.progress)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = inv.save_inversenet(net, f"raysweep-{name}-{state_key(self.out)}", summary)
                tmp.replace(path)
                print(f"  {summary['explained']:.0%} of the transforms explained; saved {path}", flush=True)
            self.cfg.inversenets[name] = str(path)

    # ------------------------------------------------------------------ stages

    def _tuner(self, stage: str, trainable, **kwargs):
        from ray import tune

        path = f"{self.storage.rstrip('/')}/{self.cfg.name}-{stage}"
        if tune.Tuner.can_restore(path):
            return tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True,
                                      **({"param_space": kwargs["param_space"]} if "param_space" in kwargs else {}))
        return tune.Tuner(trainable, **kwargs)

    def _run_config(self, stage: str, state: dict, planned: int):
        from ray import tune

        callback = ResultsCallback(self.results_dir, self.out / "overlays", sweep_id=state["sweep_id"], stage=stage,
                                   planned=planned, progress=self.progress,
                                   quota=self.cfg.tuning["trials_per_group"] if stage == "tune"
                                   else self.cfg.confirmation["seeds"])
        return tune.RunConfig(
            name=f"{self.cfg.name}-{stage}",
            storage_path=self.storage,
            callbacks=[callback],
            verbose=0,
            # A lost node or a crashed worker: the trial restarts from its last checkpoint, up to twice.
            failure_config=tune.FailureConfig(max_failures=2),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        )

    def _with_threads(self, resources):
        from ray import tune

        return tune.with_resources(sweep_trainable, resources)

    def _tune(self, state: dict, resources: dict, slots: int) -> dict:
        from ray import tune

        searcher = GroupSearcher(self._threaded_cfg(resources))
        evals = _evaluations(self.cfg.trial)
        scheduler = None
        if self.cfg.tuning["scheduler"] == "asha" and evals > 1:
            scheduler = GroupScheduler(max_t=evals, grace_period=min(self.cfg.tuning["grace_period"], evals),
                                       reduction_factor=self.cfg.tuning["reduction_factor"])
        tuner = self._tuner(
            "tune", self._with_threads(resources),
            tune_config=tune.TuneConfig(metric=METRIC, mode="max", search_alg=searcher, scheduler=scheduler,
                                        num_samples=-1, max_concurrent_trials=slots, reuse_actors=True,
                                        trial_dirname_creator=_dirname),
            run_config=self._run_config("tune", state, searcher.total),
        )
        grid = tuner.fit()
        self._raise_write_failure("tune")
        return best_points(grid, self.cfg)

    def _confirm(self, state: dict, resources: dict, slots: int) -> None:
        from ray import tune

        cfg = self._threaded_cfg(resources)
        configs = []
        for g in cfg.groups():
            point = state["best"].get(g.key)
            if point is None:
                print(f"[confirm] {g.key}: no tuning trial ran its full budget; confirming the survey's defaults",
                      flush=True)
                point = GroupSpace(g.loss, cfg.pairing).defaults()
            for seed in confirmation_seeds(cfg):
                configs.append(trial_config(cfg, g, point, seed=seed, stage="confirm"))
        tuner = self._tuner(
            "confirm", self._with_threads(resources),
            param_space={"trial": tune.grid_search(configs)},
            tune_config=tune.TuneConfig(max_concurrent_trials=slots, reuse_actors=True,
                                        trial_dirname_creator=_dirname),
            run_config=self._run_config("confirm", state, len(configs)),
        )
        tuner.fit()
        self._raise_write_failure("confirm")

    def _raise_write_failure(self, stage: str) -> None:
        failure = _WRITE_FAILURES.pop(str(self.results_dir), None)
        if failure is None:
            return
        trial_id, exc = failure
        raise ResultsWriteError(
            exc.errno, f"could not write the results of trial {trial_id} ({exc.strerror or exc}: "
            f"{exc.filename or self.results_dir}). The {stage} stage stopped and saved its state; files already "
            f"written are unchanged. Free disk space or make {self.out} writable, then run the same command again "
            "to resume.")

    def _prune_checkpoints(self, stage: str) -> None:
        """Delete every trial checkpoint of a finished stage: its experiment is never restored again."""
        from pyarrow import fs as pafs

        path = f"{self.storage.rstrip('/')}/{self.cfg.name}-{stage}"
        try:
            fs, root = pafs.FileSystem.from_uri(path if "://" in path else Path(path).as_uri())
            trial_dirs = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
        except (OSError, ValueError):
            return
        for info in trial_dirs:
            if info.type == pafs.FileType.Directory:
                _delete_checkpoints(fs, info.path)

    def _threaded_cfg(self, resources: dict) -> SweepConfig:
        """The config with each trial's torch threads and device pinned to its resources."""
        import copy

        cfg = copy.copy(self.cfg)
        trial = copy.deepcopy(cfg.trial)
        train = trial.setdefault("train", {})
        train.setdefault("threads", max(1, int(resources["cpu"])))
        if resources["gpu"] == 0:
            train["device"] = "cpu"  # never touch a GPU the trial did not ask for
        train.setdefault("progress", False)
        cfg.trial = trial
        return cfg


class _Progress:
    """One line per finished trial on the driver: stage, done/planned, groups complete, running, best, ETA."""

    def __init__(self, stage: str, planned: int, enabled: bool):
        self.stage, self.planned, self.enabled = stage, planned, enabled
        self.t0 = time.time()
        self.done = 0
        self.best: tuple[float, str] | None = None
        self.per_group: dict[str, int] = {}

    def finished(self, key: str, score: float | None, status: str, running: int, group_quota: int) -> None:
        self.done += 1
        self.per_group[key] = self.per_group.get(key, 0) + 1
        if _finite(score) and (self.best is None or score > self.best[0]):
            self.best = (score, key)
        if not self.enabled:
            return
        elapsed = time.time() - self.t0
        eta = elapsed / self.done * max(self.planned - self.done, 0)
        groups = sum(1 for n in self.per_group.values() if n >= group_quota)
        best = f"{self.best[0]:.3f} ({self.best[1]})" if self.best else "-"
        print(f"[{self.stage}] {self.done}/{self.planned} trials, {groups} groups done, {running} running | "
              f"last: {key} {status} {score if _finite(score) else float('nan'):.3f} | best {best} | "
              f"{elapsed / 60:.1f} min elapsed, ~{eta / 60:.1f} min left", flush=True)


def _dirname(trial) -> str:
    sweep = trial.config.get("trial", trial.config).get("sweep", {})
    return f"{sweep.get('loss', 'trial')}-{sweep.get('arch', '')}-{trial.trial_id}"


def _evaluations(trial_cfg: dict) -> int:
    """Reports per trial (ASHA's max_t), from the trial config's steps and evaluation interval."""
    from .trial.schema import resolve_config

    full = resolve_config(trial_cfg)
    steps, every = full["train"]["steps"], full["eval"]["every"]
    return 1 if not every else math.ceil(steps / every)


def confirmation_seeds(cfg: SweepConfig) -> list[int]:
    """The training seeds of each group's confirmation runs: distinct, and distinct from the tuning seed."""
    return [cfg.tuning["seed"] + 1 + k for k in range(cfg.confirmation["seeds"])]


def best_points(grid, cfg: SweepConfig) -> dict[str, dict]:
    """Best sampled point per group: the highest final selection score among the group's tuning trials that
    completed their full budget (early-stopped, diverged and failed trials are never chosen: their scores are not
    comparable). A group without such a trial is absent (the confirmation stage then uses its defaults)."""
    from .trial.schema import resolve_config

    steps = resolve_config(cfg.trial)["train"]["steps"]
    best: dict[str, tuple[float, dict]] = {}
    for result in grid:
        config = result.config or {}
        tags = config.get("sweep")
        metrics = result.metrics or {}
        score = metrics.get(METRIC)
        if not tags or not _finite(score) or metrics.get("status") != "completed" or \
                int(metrics.get("step") or 0) < steps:
            continue
        key = Group(tags["dataset"], tags["arch"], tags["loss"]).key
        if key not in best or float(score) > best[key][0]:
            best[key] = (float(score), tags["point"])
    return {k: v[1] for k, v in best.items()}


def environment() -> dict[str, Any]:
    """Versions, hardware and git commit, for sweep.json and the report's metadata."""
    import importlib.metadata as md

    versions = {}
    for pkg in ("raysweep", "torch", "ray", "optuna", "segmentation-models-pytorch", "pyarrow", "numpy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"versions": versions, "python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count(), "git_commit": commit}
