"""Where a trial's reports, checkpoints and overlays go: Ray Tune, or a local folder. Chosen once per trial.

* :class:`TuneSink`: every report goes through ``ray.tune.report`` (a checkpoint directory attached when one is due);
  the final report carries the overlays (``overlays``: JSON of base64 PNGs), which the sweep's results callback
  writes next to the results; a restarted trial resumes from ``ray.tune.get_checkpoint()``.
* :class:`LocalSink` (tests, ``raysweep train``): reports are returned; with ``output_dir`` set, checkpoints
  (``checkpoint_<step>``), ``overlays/`` and ``result.json`` are written there; ``checkpoint.resume`` names a
  checkpoint directory to resume from.

A pack's members each report to a sink too, handed out by the pack's :class:`raysweep.trial.pack.PackSink`.
"""

from __future__ import annotations

import json
import sys
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..checks import jsonable
from . import checkpoint
from .overlays import encode_overlays, write_overlays

__all__ = ["LocalSink", "Sink", "TuneSink", "in_tune", "sink_for"]

Overlays = list[tuple[str, np.ndarray]]


def in_tune() -> bool:
    """Whether this runs inside a Ray Tune trial. Ray is not imported for a direct call (it costs about a second)."""
    if "ray.tune" not in sys.modules:
        return False
    import ray.tune

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # outside a session get_trial_id warns and returns None
        return ray.tune.get_context().get_trial_id() is not None


class Sink:
    """The interface: restore a state, send a report (with a checkpoint when ``state`` is given), end a trial."""

    #: whether overlays are rendered at every report (they cost PNG encoding)
    keeps_overlays: bool = False
    #: whether the final report renders them (for the driver)
    final_overlays: bool = False
    #: whether the tqdm bar shows under ``train.progress: auto``
    shows_progress: bool = False
    #: whether reports carry ``training_iteration`` themselves (Tune adds its own)
    counts_reports: bool = False

    def restore(self) -> tuple[dict[str, Any], str] | None:
        """The state to resume from and where it came from, or None for a fresh start."""
        raise NotImplementedError

    def report(self, metrics: dict[str, Any], overlays: Overlays, state: Callable[[], dict] | None) -> None:
        raise NotImplementedError

    def fail(self, metrics: dict[str, Any]) -> None:
        raise NotImplementedError

    def returns(self, metrics: dict[str, Any]) -> dict[str, Any] | None:
        """What ``train_trial`` returns: the final report, or None under Tune (everything went through reports)."""
        return metrics


class TuneSink(Sink):
    final_overlays = True

    def __init__(self) -> None:
        import ray.tune

        self.tune = ray.tune

    def restore(self) -> tuple[dict[str, Any], str] | None:
        found = self.tune.get_checkpoint()
        if found is None:
            return None
        with found.as_directory() as d:
            return checkpoint.read_dir(Path(d)), str(d)

    def report(self, metrics: dict[str, Any], overlays: Overlays, state: Callable[[], dict] | None) -> None:
        if overlays:
            metrics["overlays"] = encode_overlays(overlays)
        if state is not None:
            with tempfile.TemporaryDirectory(prefix="raysweep-ckpt-") as d:
                _write_artifacts(Path(d), metrics, [], state())
                self.tune.report(metrics, checkpoint=self.tune.Checkpoint.from_directory(d))
            return
        self.tune.report(metrics)

    def fail(self, metrics: dict[str, Any]) -> None:
        self.tune.report(metrics)

    def returns(self, metrics: dict[str, Any]) -> None:
        return None


class LocalSink(Sink):
    shows_progress = True
    counts_reports = True

    def __init__(self, output_dir: str | None, resume: str | None, keep: int) -> None:
        self.out = Path(output_dir).expanduser() if output_dir is not None else None
        self.resume, self.keep = resume, keep
        self.keeps_overlays = self.out is not None

    @classmethod
    def for_config(cls, cfg: Mapping[str, Any]) -> "LocalSink":
        """The local sink of a resolved trial config: its ``output_dir`` and ``checkpoint.resume`` / ``keep``."""
        c = cfg["checkpoint"]
        return cls(cfg["output_dir"], c["resume"], c["keep"])

    def restore(self) -> tuple[dict[str, Any], str] | None:
        if self.resume is None:
            return None
        d = Path(self.resume).expanduser()
        return checkpoint.read_dir(d), str(d)

    def report(self, metrics: dict[str, Any], overlays: Overlays, state: Callable[[], dict] | None) -> None:
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        if state is not None:
            _write_artifacts(self.out / f"checkpoint_{metrics['step']:06d}", metrics, overlays, state())
            checkpoint.prune(self.out, self.keep)
        if overlays:
            write_overlays(self.out / "overlays", overlays)
        (self.out / "result.json").write_text(json.dumps(jsonable(metrics), indent=1))

    def fail(self, metrics: dict[str, Any]) -> None:
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "result.json").write_text(json.dumps(jsonable(metrics), indent=1))


def sink_for(cfg: dict[str, Any]) -> Sink:
    """The Tune sink inside a Tune trial, else the local one."""
    if in_tune():
        return TuneSink()
    return LocalSink.for_config(cfg)


def _write_artifacts(d: Path, metrics: dict[str, Any], overlays: Overlays, state: dict) -> None:
    checkpoint.write_dir(d, state)
    (d / "metrics.json").write_text(json.dumps(jsonable(metrics), indent=1))
    if overlays:
        write_overlays(d / "overlays", overlays)
