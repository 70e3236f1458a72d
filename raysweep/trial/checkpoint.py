"""Trial checkpoints: what a ``state.pt`` holds, when one is written, and how a trial resumes from it.

A checkpoint carries the model, optimiser, scheduler, grad scaler, loss parameters, RNG states and the step, plus a
fingerprint of the config sections that must agree for a resume (the rest -- output, progress, workers -- may change).
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .build import Parts

__all__ = ["CHECKPOINT_FILE", "CheckpointClock", "RoundClock", "diff_keys", "load_state", "prune", "read_dir",
           "rng_state", "set_rng_state", "state_dict", "write_dir"]

CHECKPOINT_FILE = "state.pt"
#: Config sections a checkpoint must agree on to be resumed.
_FINGERPRINT = ("seed", "dataset", "model", "loss", "companions", "optimizer", "scheduler")
_FINGERPRINT_TRAIN = ("steps", "batch_size")


def fingerprint(cfg: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config a checkpoint must match, as plain JSON data."""
    fp = {k: cfg[k] for k in _FINGERPRINT}
    fp["train"] = {k: cfg["train"][k] for k in _FINGERPRINT_TRAIN}
    return json.loads(json.dumps(fp, default=str))


def state_dict(cfg: dict[str, Any], parts: Parts, step: int, reports: int) -> dict[str, Any]:
    """Everything needed to continue the trial at ``step`` exactly as if it had never stopped."""
    return {
        "format": 1,
        "config": fingerprint(cfg),
        "step": step,
        "reports": reports,
        "model": parts.model.state_dict(),
        "objective": parts.objective.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,
        "rng": rng_state(),
    }


def rng_state() -> dict[str, Any]:
    """The global RNG states (Python, NumPy, torch, CUDA), as tensors and plain containers (``weights_only``-safe)."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(rng: dict[str, Any]) -> None:
    """Restore the global RNG states :func:`rng_state` returned (or a checkpoint's copy of them)."""
    random.setstate(_as_tuple(rng["python"]))
    kind, key, *rest = rng["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def load_state(cfg: dict[str, Any], parts: Parts, state: dict[str, Any], source: str) -> tuple[int, int]:
    """Restore ``parts`` and the RNGs from ``state``; returns ``(step, reports)``.

    Raises:
        ValueError: the checkpoint was written by a config that differs in a fingerprinted section.
    """
    mine = fingerprint(cfg)
    if state.get("config") != mine:
        diff = diff_keys(state.get("config") or {}, mine)
        raise ValueError(f"checkpoint {source} was written by a different config (differs in: "
                         f"{', '.join(diff[:8]) or '?'}); resume with the config that wrote it")
    parts.model.load_state_dict(state["model"])
    parts.objective.load_state_dict(state["objective"])
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scheduler.load_state_dict(state["scheduler"])
    if parts.scaler is not None and state["scaler"] is not None:
        parts.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return int(state["step"]), int(state["reports"])


def read_dir(d: Path) -> dict[str, Any]:
    """The state stored in checkpoint directory ``d`` (on the CPU; tensors and plain containers only)."""
    f = d / CHECKPOINT_FILE
    if not f.is_file():
        raise FileNotFoundError(f"no {CHECKPOINT_FILE} in checkpoint directory {d} (checkpoint.resume must be a "
                                "directory written by train_trial, e.g. OUTPUT_DIR/checkpoint_000040)")
    from ..safe_load import load_tensors

    # On the CPU first: RNG states must stay CPU tensors; load_state_dict moves the rest to the parameters' device.
    # weights_only: a state.pt holding any pickled object other than tensors and plain containers is refused
    # (ValueError naming the file) before anything in it runs.
    state = load_tensors(f, "checkpoint")
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {f}: expected a dict written by train_trial, got {type(state).__name__}")
    return state


def write_dir(d: Path, state: dict[str, Any]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    torch.save(state, d / CHECKPOINT_FILE)


def prune(out: Path, keep: int) -> None:
    """Keep the newest ``keep`` checkpoint directories of a direct run's output folder."""
    found = sorted(p for p in out.glob("checkpoint_*") if (p / CHECKPOINT_FILE).is_file())
    for old in found[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


class CheckpointClock:
    """Whether a report writes a checkpoint: every ``checkpoint.every`` reports, once ``checkpoint.every_s`` seconds
    passed since the last one (or since the start), and at the end (``checkpoint.at_end``).

    A time interval bounds the work a lost node costs without writing the model and optimiser state (tens of MB)
    at every report of a trial that lasts seconds."""

    def __init__(self, section: dict[str, Any]) -> None:
        self.every, self.every_s, self.at_end = section["every"], section["every_s"], section["at_end"]
        self.last = time.perf_counter()

    def due(self, status: str, reports: int) -> bool:
        if status == "completed" and self.at_end:
            return True
        if self.every > 0 and reports % self.every == 0:
            return True
        return self.every_s is not None and time.perf_counter() - self.last >= self.every_s

    def written(self) -> None:
        self.last = time.perf_counter()


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def diff_keys(a: Any, b: Any, where: str = "") -> list[str]:
    """The dotted keys (sorted, ``"<root>"`` for unequal non-mappings) where nested mappings ``a`` and ``b`` differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += diff_keys(a.get(k), b.get(k), f"{where}.{k}" if where else k)
        return out
    return [] if a == b else [where or "<root>"]


class RoundClock(CheckpointClock):
    """One decision per report for all members of a pack: each asks in turn, all get the first answer, so they
    checkpoint at the same reports and a killed pack resumes its members from one step."""

    def __init__(self, section: dict[str, Any]) -> None:
        super().__init__(section)
        self._asked: tuple[str, int] | None = None
        self._answer = False

    def due(self, status: str, reports: int) -> bool:
        if self._asked != (status, reports):
            self._asked, self._answer = (status, reports), super().due(status, reports)
        return self._answer
