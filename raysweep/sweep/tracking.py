"""MLflow runs of a sweep (config ``tracking: {mlflow: {tracking_uri, experiment}}``, extra ``raysweep[mlflow]``).

One parent run per sweep (tags ``sweep_id``, ``role: sweep``) holding ``sweep.json`` and the HTML report as
artifacts, and under it one run per trial (a pack's members each have theirs): the trial's parameters, its tags
(dataset, variant, arch, loss, family, stage, seed, replicate, trial_id, status, proposal) and, at every evaluation,
the primary metric (named by it, e.g. ``dice``), the loss and the learning rate, at step = training steps.

The driver is the only writer: :class:`~raysweep.sweep.callback.ResultsCallback` hands each trial to
:meth:`MlflowTracker.log_trial` after its Parquet rows are written, from the same rows. MLflow's client is used
directly (no fluent API: nothing global is set in the caller's process). Tracking never costs a result: every call
is wrapped, a failure (server down, refused, slow) is a warning, and after :data:`MAX_FAILURES` in a row (or when the
sweep's run cannot be opened at all) tracking is off for the rest of the stage.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

__all__ = ["MAX_FAILURES", "MlflowTracker", "finish_tracking", "log_report", "tracker_for"]

#: Failed MLflow calls in a row after which tracking is off for the rest of the stage.
MAX_FAILURES = 3
#: MLflow settings while raysweep calls it, unless the environment sets them: its HTTP defaults retry a dead server
#: for minutes, per call, on the driver; and it would print two links per run among the progress lines.
_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
             "MLFLOW_HTTP_REQUEST_TIMEOUT": "30", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
#: Tags copied from a trial's tags to its run.
_TAGS = ("dataset", "variant", "arch", "loss", "family", "stage", "seed", "replicate", "proposal", "pairing")


def tracker_for(cfg, sweep_id: str) -> "MlflowTracker | None":
    """The sweep's tracker, or None when its config asks for no tracking."""
    mlflow = cfg.tracking.mlflow if cfg.tracking is not None else None
    return None if mlflow is None else MlflowTracker(mlflow.model_dump(), cfg.name, sweep_id)


def finish_tracking(cfg, sweep_id: str, results_dir: str | Path) -> None:
    """At the end of a run of the sweep: ``sweep.json`` to the sweep's run, which is marked finished."""
    tracker = tracker_for(cfg, sweep_id)
    if tracker is not None:
        tracker.finish(results_dir)


def log_report(cfg, sweep_id: str, html: str | Path) -> None:
    """The HTML report to the sweep's run (``raysweep run`` calls this after building it)."""
    tracker = tracker_for(cfg, sweep_id)
    if tracker is not None:
        tracker.call("the report upload", lambda: tracker.client.log_artifact(tracker.parent(), str(html)))


class MlflowTracker:
    """Writes a sweep's runs to one MLflow tracking server (see the module docstring).

    Args:
        settings: the config's ``tracking.mlflow`` (``tracking_uri``: None is MLflow's default, i.e.
            ``MLFLOW_TRACKING_URI``; ``experiment``: None is the sweep's name).
        sweep_name: the sweep config's name.
        sweep_id: the sweep's id (``sweep.json``); the parent run is found again by it when a sweep resumes.

    Pickled with Tune's experiment (the callback holds it): only the settings travel, the client is made anew.
    """

    def __init__(self, settings: Mapping[str, Any], sweep_name: str, sweep_id: str):
        self.uri = settings.get("tracking_uri")
        self.experiment = settings.get("experiment") or sweep_name
        self.sweep_name, self.sweep_id = sweep_name, sweep_id
        self._reset()

    def _reset(self) -> None:
        self._client: Any = None
        self._experiment_id: str | None = None
        self._parent: str | None = None
        self._failures = 0
        self.off: str | None = None  # why tracking stopped, once it has

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_") and k != "off"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    # -- plumbing

    @property
    def client(self):
        """The ``mlflow.MlflowClient`` for ``tracking_uri``."""
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def call(self, what: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, or None and a warning when it (or an earlier call) failed; never raises."""
        if self.off is not None:
            return None
        try:
            with _mlflow_settings():
                out = fn()
        except Exception as exc:  # any failure of the tracker is a warning: the Parquet rows are the record
            self._failures += 1
            where = self.uri or "MLflow's default tracking URI"
            message = f"MLflow tracking ({where}): {what} failed: {type(exc).__name__}: {str(exc)[:300]}"
            if self._parent is None or self._failures >= MAX_FAILURES:
                self.off = message
                message += "; tracking is off for the rest of this stage (the Parquet results are complete)"
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            return None
        self._failures = 0
        return out

    def parent(self) -> str:
        """The sweep's run id: found by its ``sweep_id`` tag, or created (in the experiment, created if need be)."""
        if self._parent is not None:
            return self._parent
        client = self.client
        exp = client.get_experiment_by_name(self.experiment)
        self._experiment_id = exp.experiment_id if exp is not None else client.create_experiment(self.experiment)
        found = client.search_runs([self._experiment_id], max_results=1,
                                   filter_string=f"tags.sweep_id = '{self.sweep_id}' and tags.role = 'sweep'")
        if found:
            self._parent = found[0].info.run_id
        else:
            self._parent = client.create_run(self._experiment_id, run_name=f"{self.sweep_name} {self.sweep_id}",
                                             tags={"sweep_id": self.sweep_id, "role": "sweep",
                                                   "sweep": self.sweep_name}).info.run_id
        return self._parent

    def _children(self, trial_id: str) -> list:
        parent = self.parent()
        return self.client.search_runs([self._experiment_id], filter_string=(
            f"tags.sweep_id = '{self.sweep_id}' and tags.trial_id = '{trial_id}' and "
            f"tags.`mlflow.parentRunId` = '{parent}'"))

    # -- what the callback and the runner call

    def log_trial(self, trial: Mapping[str, Any], curves: Iterable[Mapping[str, Any]], tags: Mapping[str, Any]) -> None:
        """One ended trial as a run under the sweep's: ``trial`` is its ``trials`` row, ``curves`` its ``curves``
        rows (one per evaluation), ``tags`` its tags. A run the trial already had (a resumed sweep writing it
        again) is replaced."""
        self.call(f"logging trial {trial['trial_id']}", lambda: self._log_trial(trial, list(curves), tags))

    def _log_trial(self, trial: Mapping[str, Any], curves: list, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric, Param

        client, parent, trial_id = self.client, self.parent(), str(trial["trial_id"])
        for old in self._children(trial_id):
            client.delete_run(old.info.run_id)
        started = _ms(trial.get("started_at")) or int(time.time() * 1000)
        run_tags = {"mlflow.parentRunId": parent, "sweep_id": self.sweep_id, "trial_id": trial_id,
                    "status": str(trial.get("status")),
                    **{k: str(tags.get(k)) for k in _TAGS if tags.get(k) not in (None, "")}}
        run = client.create_run(self._experiment_id, start_time=started, tags=run_tags,
                                run_name=f"{tags.get('stage')} {trial_id} {tags.get('loss')}")
        primary = str(trial.get("primary_metric") or "metric")
        metrics = []
        for row in curves:
            step, at = int(row.get("step") or 0), started + int(1000 * (_num(row.get("time_s")) or 0.0))
            metrics.append(Metric(primary, _num(row.get("metric"), math.nan), at, step))  # NaN: a diverged trial
            metrics += [Metric(name, _num(row.get(col)), at, step)
                        for col, name in (("loss_value", "loss"), ("lr", "lr")) if _num(row.get(col)) is not None]
        params = [Param(str(k), str(v)[:6000]) for k, v in dict(tags.get("params") or {}).items()]
        params.append(Param("budget_steps", str(tags.get("budget_steps"))))
        for i in range(0, max(len(metrics), 1), 1000):  # MLflow's batch limits: 1000 metrics, 100 params
            client.log_batch(run.info.run_id, metrics=metrics[i:i + 1000], params=params[:100] if i == 0 else [])
        status = {"completed": "FINISHED", "error": "FAILED"}.get(str(trial.get("status")), "KILLED")
        client.set_terminated(run.info.run_id, status=status, end_time=_ms(trial.get("ended_at")))

    def forget(self, trial_ids: Iterable[str]) -> None:
        """Delete the runs of trials whose rows a resumed sweep dropped (they ended after its last snapshot)."""
        for trial_id in trial_ids:
            self.call(f"deleting the run of trial {trial_id}",
                      lambda t=trial_id: [self.client.delete_run(r.info.run_id) for r in self._children(t)])

    def finish(self, results_dir: str | Path) -> None:
        """``sweep.json`` to the sweep's run; the run is marked finished."""
        path = Path(results_dir) / "sweep.json"

        def _finish() -> None:
            parent = self.parent()
            if path.exists():
                self.client.log_artifact(parent, str(path))
            self.client.set_terminated(parent, status="FINISHED")

        self.call("closing the sweep's run", _finish)


@contextlib.contextmanager
def _mlflow_settings():
    """:data:`_SETTINGS` for the duration of a call, where the user set none."""
    added = {k: v for k, v in _SETTINGS.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _num(value: Any, default: float | None = None) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return default
    return value if math.isfinite(value) else default


def _ms(seconds: Any) -> int | None:
    """Milliseconds since the epoch, from seconds (a float) or a timestamp."""
    if hasattr(seconds, "timestamp"):
        seconds = seconds.timestamp()
    value = _num(seconds)
    return None if value is None else int(value * 1000)

