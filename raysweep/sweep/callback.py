"""The results callback: on the driver, every trial lands in Parquet as it ends, with its overlays, and a progress
line is printed.

A packed Tune trial (``resources.pack``, :mod:`raysweep.sweep.packing`) lands as its members: each member's reports
arrive inside the pack's (:class:`~raysweep.sweep.packing.PackReport`), and each member is written as the trial it
would have been alone, with trial id ``<pack trial id>-<k>``, its own curves, cases and overlays.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import time
from pathlib import Path
from typing import Any, Mapping

from .. import results
from ..checks import finite
from ..config import Group
from .packing import PackReport, trial_members
from .scheduler import METRIC

__all__ = ["WRITE_FAILURES", "ResultsCallback", "delete_checkpoints"]

# results_dir -> the first write error of the running stage. Module state rather than an attribute: on a restored
# experiment Tune runs the callback it unpickled from tuner.pkl, not the one the driver built.
WRITE_FAILURES: dict[str, tuple[str, OSError]] = {}


def _callback_base():
    from ray.tune import Callback

    return Callback


class ResultsCallback(_callback_base()):
    """Writes every trial to Parquet on the driver as it ends (``raysweep.results``), writes the overlays its final
    report carried to ``overlays_dir/<trial_id>/``, and shows progress; with a ``tracker``
    (:mod:`raysweep.sweep.tracking`), the written trial then goes to MLflow too.

    Rows are keyed by trial id and written atomically, so a restored experiment rewrites rather than duplicates them.
    The per-report curve rows of running trials are kept in the callback's state, which Tune saves with the
    experiment.
    """

    def __init__(self, results_dir: Path, overlays_dir: Path, sweep_id: str, stage: str, planned: int,
                 versions: Mapping[str, str], quota: int = 1, progress: bool = True, tracker: Any = None):
        self.results_dir = Path(results_dir)
        self.tracker = tracker  # raysweep.sweep.tracking.MlflowTracker: each written trial also goes there
        self.overlays_dir = Path(overlays_dir)
        self.versions = dict(versions)  # recorded once per stage (environment()), not per trial
        self.sweep_id, self.stage = sweep_id, stage
        self.curves: dict[str, list[dict]] = {}
        self.members: dict[str, dict] = {}  # pack member id -> its last report (packed trials)
        self.pack_started: dict[str, float] = {}  # pack trial id -> when it started (seconds since the epoch)
        self.written: set[str] = set()
        self.progress = _Progress(stage, planned, progress)
        self.quota = quota
        self._ended: list[tuple[Any, str]] = []  # (filesystem, trial path) of trials ended since the last snapshot
        self._ended_before: list[tuple[Any, str]] = []  # ... ended before the last snapshot
        # Running trials that have checkpointed (trial id -> trial) and the name of the newest checkpoint each had at
        # the last snapshot (trial id -> checkpoint_<index>): see _prune_superseded.
        self._running: dict[str, Any] = {}
        self._marks: dict[str, str] = {}

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
        known = {tid for t in trials for tid, _ in trial_members(t)}
        have = results.stage_trial_ids(self.results_dir, self.stage)
        for trial_id in have - known:
            results.remove_trial_rows(self.results_dir, trial_id)
        if getattr(self, "tracker", None) is not None:  # (a callback pickled before tracking existed has none)
            self.tracker.forget(sorted(have - known))
        # A resumed stage: the progress line counts the trials that ended before, per group, and times this session.
        self.progress.resume([Group.of(tags).key for t in trials for tid, tags in trial_members(t) if tid in have])
        results.remove_incomplete(self.results_dir)
        for t in trials:
            if t.status == "TERMINATED" and any(tid not in have for tid, _ in trial_members(t)):
                self._write(t, trials, error=None, show=False)

    def get_state(self) -> dict | None:
        """Called by Tune for each experiment snapshot. Also frees disk: the checkpoints of trials that ended before
        the previous snapshot are deleted (that snapshot, complete by now, records them as ended, so no restore will
        ever read them), and so are running trials' checkpoints that the previous snapshot had already superseded
        (:meth:`_prune_superseded`)."""
        for fs, path in self._ended_before:
            delete_checkpoints(fs, path)
        self._ended_before, self._ended = self._ended, []
        self._prune_superseded()
        return {"curves": self.curves, "written": sorted(self.written), "members": self.members,
                "pack_started": self.pack_started}

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self._running[trial.trial_id] = trial

    def _prune_superseded(self) -> None:
        """Delete each running trial's checkpoints older than the newest one it had at the previous snapshot.

        Tune's own ``CheckpointConfig(num_to_keep)`` is not used: Tune deletes a checkpoint as soon as enough newer
        ones arrive, while the experiment snapshot on storage, written every ~10 s and synced in the background, may
        still name it as the trial's latest. A driver killed in between leaves a trial that cannot be restored
        ("Could not recover from checkpoint as it does not exist on storage anymore"; seen in the kill test, 3 runs
        in 8). Here a checkpoint goes only once a snapshot taken after a newer one existed is itself a snapshot old:
        the margin for ended trials, a full snapshot period (>= 10 s) for a background copy that takes milliseconds
        on a local disk, and Tune warns when one takes over 30 s."""
        for trial_id, trial in self._running.items():
            where = _storage(trial)
            if where is not None and trial_id in self._marks:
                delete_checkpoints(*where, before=self._marks[trial_id])
            latest = getattr(trial.checkpoint, "path", None)  # what the snapshot being written names
            if latest is not None:
                self._marks[trial_id] = Path(latest).name

    def on_trial_result(self, iteration, trials, trial, result, **info):
        pack = PackReport.of(result)
        if pack is None:
            self._curve(trial.trial_id, result)
            return
        # A member's time is its pack's: the members train side by side on the same batches, from the pack's start.
        if trial.trial_id not in self.pack_started and finite(result.get("time_total_s")):
            self.pack_started[trial.trial_id] = time.time() - float(result["time_total_s"])
        started, n_members = self.pack_started.get(trial.trial_id), len(trial_members(trial))
        for k, mid, report in pack.members(trial.trial_id):
            report = {**report, "member": k, "time_total_s": result.get("time_total_s"),
                      "members": n_members, "pack_started": started,
                      **{key: result[key] for key in ("hostname", "node_ip") if key in result}}
            self.members[mid] = report
            self._curve(mid, {k: v for k, v in report.items() if k not in _PACK_KEYS})

    def _curve(self, trial_id: str, result: dict) -> None:
        row = results.curve_row(result)
        rows = self.curves.setdefault(trial_id, [])
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
        """Write an ended Tune trial: itself, or each member of a pack (a member that ended on its own keeps its own
        status and error; the pack's error is given to the members it cut short)."""
        for trial_id, tags in trial_members(trial):
            started = None
            if trial_id == trial.trial_id:
                result = dict(trial.last_result or {})
                own_error = error
            else:
                result = dict(self.members.get(trial_id) or {})
                ended_alone = result.get("status") not in (None, "running")
                own_error = (result.get("error") if result.get("status") == "error" else None) if ended_alone \
                    else error
                if result.get("members"):  # its share of the pack's time, so that trial times still add up
                    started = result.get("pack_started")
                    result["time_total_s"] = _num_or_none(result.get("time_total_s"), result["members"])
            if not self._write_one(trial_id, tags, result, own_error, trials, trial, show, started):
                return
            self.members.pop(trial_id, None)
        self.pack_started.pop(trial.trial_id, None)
        self._running.pop(trial.trial_id, None)  # all its checkpoints go with the ended trial's (get_state)
        self._marks.pop(trial.trial_id, None)
        where = _storage(trial)
        if where is not None:
            self._ended.append(where)

    def _write_one(self, trial_id: str, tags: dict, result: dict, error: str | None, trials, trial,
                   show: bool, started: float | None = None) -> bool:
        rows = results.trial_rows(self.sweep_id, trial_id, tags, result, self.curves.get(trial_id, []),
                                  versions=self.versions, error=error, started=started)
        try:
            _write_overlays(result.get("overlays"), self.overlays_dir / trial_id)
            results.write_trial_rows(self.results_dir, trial_id, *rows)
        except OSError as exc:
            # Disk full or folder gone read-only: Tune would log this and go on, so that every later trial's results
            # were lost too. Stop the experiment the way Ctrl+C does instead: Tune saves its state, SweepRunner
            # raises a clear error, and the same command resumes; the trial is written then (on_step_begin).
            WRITE_FAILURES.setdefault(str(self.results_dir), (trial_id, exc))
            _interrupt_tune()
            return False
        self.curves.pop(trial_id, None)
        self.written.add(trial_id)
        if getattr(self, "tracker", None) is not None:  # after the Parquet write; a tracking failure is a warning
            self.tracker.log_trial(rows[0][0], rows[1], tags)
        if show:
            running = sum(1 for t in trials if t.status == "RUNNING" and t is not trial)
            self.progress.finished(Group.of(tags).key, result.get(METRIC), rows[0][0]["status"], running, self.quota)
        return True

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_reconciled", None)  # a restored copy (tuner.pkl) reconciles again
        # this driver session's disk bookkeeping only
        state["_ended"], state["_ended_before"], state["_running"], state["_marks"] = [], [], {}, {}
        return state

    def set_state(self, state: dict) -> None:
        self.curves = state.get("curves", {})
        self.written = set(state.get("written", []))
        self.members = state.get("members", {})
        self.pack_started = state.get("pack_started", {})


#: A member report's bookkeeping, not its metrics (kept out of its curves' ``extra``).
_PACK_KEYS = ("member", "members", "pack_started")


def _num_or_none(total: Any, members: int) -> float | None:
    return float(total) / members if finite(total) and members else None


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


def delete_checkpoints(fs, trial_path: str, before: str | None = None) -> None:
    """Delete the ``checkpoint_*`` folders of one trial (local or remote storage): all of them, or those written
    before the one named ``before`` (``checkpoint_<index>``, zero-padded: names sort in the order Tune wrote them).
    Best effort."""
    from pyarrow import fs as pafs

    try:
        for info in fs.get_file_info(pafs.FileSelector(trial_path, allow_not_found=True)):
            if (info.type == pafs.FileType.Directory and info.base_name.startswith("checkpoint_")
                    and (before is None or info.base_name < before)):
                fs.delete_dir(info.path)
    except OSError:
        pass  # a checkpoint left behind costs disk, never correctness


def _storage(trial) -> tuple[Any, str] | None:
    """(filesystem, path) of a Tune trial's folder on the experiment's storage, where it has one."""
    fs = getattr(getattr(trial, "storage", None), "storage_filesystem", None)
    return (fs, trial.path) if fs is not None and trial.path else None


class _Progress:
    """One line per finished trial on the driver: stage, done/planned, groups complete, running, best, ETA."""

    def __init__(self, stage: str, planned: int, enabled: bool):
        self.stage, self.planned, self.enabled = stage, planned, enabled
        self.t0 = time.time()
        self.done = self.base = 0
        self.best: tuple[float, str] | None = None
        self.per_group: dict[str, int] = {}

    def resume(self, ended: list[str]) -> None:
        """Start of a driver session: ``ended`` lists the group key of each trial of the stage that has ended already
        (none on a fresh start). They count as done; the ETA is timed on this session's trials only."""
        self.done = self.base = len(ended)
        self.per_group = {}
        for key in ended:
            self.per_group[key] = self.per_group.get(key, 0) + 1
        self.t0 = time.time()

    def finished(self, key: str, score: float | None, status: str, running: int, group_quota: int) -> None:
        self.done += 1
        self.per_group[key] = self.per_group.get(key, 0) + 1
        if finite(score) and (self.best is None or score > self.best[0]):
            self.best = (score, key)
        if not self.enabled:
            return
        elapsed = time.time() - self.t0
        eta = elapsed / max(self.done - getattr(self, "base", 0), 1) * max(self.planned - self.done, 0)
        groups = sum(1 for n in self.per_group.values() if n >= group_quota)
        best = f"{self.best[0]:.3f} ({self.best[1]})" if self.best else "-"
        print(f"[{self.stage}] {self.done}/{self.planned} trials, {groups} groups done, {running} running | "
              f"last: {key} {status} {score if finite(score) else float('nan'):.3f} | best {best} | "
              f"{elapsed / 60:.1f} min elapsed, ~{eta / 60:.1f} min left", flush=True)


def _write_overlays(encoded: str | None, dest: Path) -> None:
    """Write the overlay PNGs a trial's final report carried (``{"<name>.png": base64}``) to ``dest``, replacing
    older ones; nothing when it carried none. Raises OSError (a write failure)."""
    if not isinstance(encoded, str) or not encoded:
        return
    pngs = json.loads(encoded)
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.png"):
        old.unlink()
    for name, data in pngs.items():
        (dest / Path(name).name).write_bytes(base64.b64decode(data))
