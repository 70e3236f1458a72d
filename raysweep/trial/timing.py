"""Per-phase timing of the training steps, and peak memory."""

from __future__ import annotations

import time
from typing import Any

import torch

__all__ = ["StepTimer", "peak_memory_mb"]


class StepTimer:
    """Per-phase time of the training steps: data wait on the host, the GPU phases from CUDA events (no syncs in the
    step; the events are read at the next report), all phases from ``perf_counter`` on the CPU."""

    PHASES = ("data", "forward", "loss", "backward", "optimizer")

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.reset()

    def reset(self) -> None:
        self.sums = dict.fromkeys(self.PHASES, 0.0)
        self.steps = 0
        self.pending: list[list[Any]] = []
        self._t = 0.0
        self._events: list[Any] = []

    def begin(self, waited: float = 0.0) -> None:
        """A step starts; ``waited``: seconds already spent on its batch elsewhere (a pack's shared loader)."""
        self._t = time.perf_counter() - waited

    def mark(self, phase: str) -> None:
        if phase == "data" or not self.cuda:
            now = time.perf_counter()
            self.sums[phase] += now - self._t
            self._t = now
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            if phase == "data":
                self._events = [event]
            else:
                self._events.append(event)
                if phase == "optimizer":
                    self.pending.append(self._events)
        if phase == "optimizer":
            self.steps += 1

    def means_ms(self) -> dict[str, float]:
        for events in self.pending:
            events[-1].synchronize()
            for i, phase in enumerate(self.PHASES[1:]):
                self.sums[phase] += events[i].elapsed_time(events[i + 1]) / 1000.0
        self.pending = []
        n = max(self.steps, 1)
        return {f"time/{p}_ms": 1000.0 * self.sums[p] / n for p in self.PHASES}




def peak_memory_mb(device: torch.device) -> float:
    """CUDA: peak allocated memory; CPU: the process's peak resident set (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
