"""One training run: ``train_trial(config)`` (a plain function, Ray Tune's function-trainable convention).

Modules, one responsibility each:

* :mod:`.schema`: the trial config's defaults, ``resolve_config`` and the weight schedules (no training code);
* :mod:`.build`: device, data, model, objective, optimiser and scheduler, built before the loop exists;
* :mod:`.objective`: the loss and its companion terms with scheduled weights;
* :mod:`.sampling`: seeded, step-indexed batches and per-item augmentation seeds;
* :mod:`.timing`: per-phase step timing and peak memory;
* :mod:`.checkpoint`: what a checkpoint holds, when one is due, resuming;
* :mod:`.evaluate`: per-case metrics on the evaluation split;
* :mod:`.overlays`: prediction overlay PNGs;
* :mod:`.sink`: where reports go, Ray Tune or a local folder, chosen once;
* :mod:`.loop`: ``train_trial`` and the training loop.

The config layer imports :mod:`.schema` only; the training loop (torch, smp) is imported on first use.
"""

from __future__ import annotations

from typing import Any

from .schema import DEFAULTS, SCHEDULE_KINDS, resolve_config, schedule_weight

_LAZY = {"train_trial": "loop", "STATUSES": "loop", "DIVERGED_SCORE": "loop", "CombinedObjective": "objective"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DEFAULTS", "DIVERGED_SCORE", "SCHEDULE_KINDS", "STATUSES", "CombinedObjective", "resolve_config",
           "schedule_weight", "train_trial"]
