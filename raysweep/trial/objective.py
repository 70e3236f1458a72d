"""The trial's objective: its loss and companion terms, each with a scheduled weight (see :mod:`.schema`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from ..losses import LOSSES, build_loss
from ..losses._functional import host_ignored
from .schema import schedule_weight

__all__ = ["CombinedObjective", "merge_target_maps"]


class CombinedObjective(nn.Module):
    """The loss and its companion terms with scheduled weights.

    Args:
        terms: resolved term configs ``{name, params, weight, schedule}``; the first is the trial's loss.
        steps: total training steps (for ``linear`` schedules).
        steps_per_epoch: optimiser steps per pass over the training set (for ``steal`` schedules).
        num_classes: the dataset's classes, passed to each loss's ``target_maps(num_classes)``; None to leave the
            maps to the losses (they compute them from the target when absent, in the training loop: slower).

    Attributes:
        names: unique term names (the loss name, ``#2``-suffixed for repeats), used in report keys.
        needs: union of the terms' ``LossSpec.needs``.
        aux_channels: channels of the auxiliary head the terms need, or None.
        target_maps: a picklable ``mask (H, W) int64 -> {key: float32 (C, H, W)}`` merging the terms' maps (each
            distinct map computed once), or None when no term needs one.

    ``forward(outputs, mask, maps, step, validate=None, host_mask=None)`` takes the model's output dict, the int64
    mask (B, H, W), the batch's target maps and the 0-based step; it returns ``(total 0-dim float32, per-term values
    (T,) float32)`` with the weights of that step. Every term receives every available extra input and uses the ones
    it needs.

    Checks without host syncs: ``validate=True`` has every term check its inputs (one host sync per term; what the
    trainer does on the first step and every ``train.sync_every`` steps). ``validate=False`` calls the terms with
    their value checks deferred (no host sync; a non-finite loss is caught where the trainer brings the pending
    values to the host). ``host_mask`` is the same mask on the CPU (the DataLoader's batch before its transfer): from
    it :func:`~raysweep.losses._functional.host_ignored` learns, without touching the device, whether any pixel is
    ignored (the losses' fast path when none is), and a batch it cannot vouch for (every pixel ignored, a label out of
    range) is checked in full. Without ``host_mask`` the deferred terms take the masked path, which is correct for
    any target with a valid pixel. The trainer sets both for one call with ``with objective.input_checks(validate,
    host_mask): objective(...)`` (arguments given to ``forward`` take precedence; the default is ``validate=True``).
    """

    def __init__(self, terms: list[Mapping[str, Any]], steps: int, steps_per_epoch: int,
                 num_classes: int | None = None) -> None:
        super().__init__()
        self.terms = nn.ModuleList()
        self.names: list[str] = []
        self.weights0: list[float] = []
        self.schedules: list[dict[str, Any]] = []
        self.needs: frozenset = frozenset()
        self.steps, self.steps_per_epoch = int(steps), int(steps_per_epoch)
        self._checks: tuple[bool, torch.Tensor | None] = (True, None)  # (validate, host_mask), see input_checks
        aux: dict[str, int] = {}
        maps: list[Callable] = []
        for term in terms:
            name = term["name"]
            module = build_loss(name, **dict(term["params"]))
            spec = LOSSES[name]
            label = name if name not in self.names else f"{name}#{self.names.count(name) + 1}"
            while label in self.names:
                label += "'"
            self.terms.append(module)
            self.names.append(label)
            self.weights0.append(float(term["weight"]))
            self.schedules.append(dict(term["schedule"]))
            self.needs |= spec.needs
            if "aux_logits" in spec.needs:
                channels = getattr(module, "aux_channels", None)
                if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
                    raise ValueError(f"loss {name!r} needs 'aux_logits' but has no positive int `aux_channels`")
                aux[label] = channels
            make_maps = getattr(module, "target_maps", None)
            fn = make_maps(num_classes) if callable(make_maps) and num_classes is not None else None
            if fn is not None and not any(_same_maps(fn, other) for other in maps):
                maps.append(fn)
        if len(set(aux.values())) > 1:
            raise ValueError(f"terms need auxiliary heads of different sizes {aux}; the model has one auxiliary head")
        self.aux_channels = next(iter(aux.values()), None)
        self.target_maps = None if not maps else maps[0] if len(maps) == 1 else _MergedTargetMaps(maps)

    @contextmanager
    def input_checks(self, validate: bool, host_mask: torch.Tensor | None = None) -> Iterator[None]:
        """Within the block, ``forward`` calls the terms with ``validate`` and learns the fast path from
        ``host_mask`` (the CPU copy of the mask, ``(B, H, W)`` int64), unless its own arguments say otherwise."""
        before = self._checks
        self._checks = (bool(validate), host_mask)
        try:
            yield
        finally:
            self._checks = before

    def set_epoch(self, epoch: int) -> None:
        """Tell the terms the (0-based) epoch: losses with an internal schedule (``boundary``) follow it."""
        for module in self.terms:
            if hasattr(module, "set_epoch"):
                module.set_epoch(epoch)

    def weights(self, step: int) -> list[float]:
        """The terms' weights at 0-based ``step``."""
        return [schedule_weight(w, s, step, self.steps, self.steps_per_epoch)
                for w, s in zip(self.weights0, self.schedules)]

    def forward(self, outputs: Mapping[str, torch.Tensor], mask: torch.Tensor, maps: Mapping[str, torch.Tensor],
                step: int, *, validate: bool | None = None,
                host_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        validate = self._checks[0] if validate is None else validate
        host_mask = self._checks[1] if host_mask is None else host_mask
        logits = outputs["logits"]
        extra = dict(maps)
        for key in ("features", "aux_logits"):
            if key in outputs:
                extra[key] = outputs[key]
        total = logits.new_zeros((), dtype=torch.float32)
        values = []
        hints: dict[int | None, bool | None] = {}  # host_ignored per ignore_index, computed once per batch
        for module, w in zip(self.terms, self.weights(step)):
            if w == 0.0:  # not computed: saves the work, and a 0 * inf would be NaN
                values.append(total.new_zeros(()))
                continue
            checks: dict[str, Any] = {}
            if not validate:
                ignored = None
                if host_mask is not None:
                    key = getattr(module, "ignore_index", None)
                    if key not in hints:
                        hints[key] = host_ignored(host_mask, key, logits.shape[1])
                    ignored = hints[key]
                # A batch the host cannot vouch for (ignored None) is checked in full: the loss's clear error, or 0
                # when every pixel is ignored.
                if host_mask is None or ignored is not None:
                    checks = {"validate": False, "ignored": ignored}
            value = module(logits, mask, **checks, **extra).float()
            total = total + w * value
            values.append(value.detach())
        return total, torch.stack(values)


def merge_target_maps(objectives: list[CombinedObjective]) -> Callable | None:
    """One ``target_maps`` callable for several objectives (a pack's members sharing one data pipeline): every map
    any of them needs, each computed once.

    Raises:
        ValueError: two members need differently made maps of the same kind (they would overwrite each other).
    """
    fns: list[Callable] = []
    for objective in objectives:
        own = objective.target_maps
        for fn in (own.fns if isinstance(own, _MergedTargetMaps) else (own,) if own is not None else ()):
            if any(_same_maps(fn, other) for other in fns):
                continue
            clash = next((other for other in fns if type(other) is type(fn)), None)
            if clash is not None:
                raise ValueError(f"the pack's members need different target maps {clash!r} and {fn!r}; pack only "
                                 "members whose losses make their maps with the same settings")
            fns.append(fn)
    return None if not fns else fns[0] if len(fns) == 1 else _MergedTargetMaps(fns)


def _same_maps(a: Callable, b: Callable) -> bool:
    """Two map makers of the same class and settings (two losses that both need ``dist_map``)."""
    return type(a) is type(b) and getattr(a, "__dict__", None) is not None and vars(a) == vars(b)


class _MergedTargetMaps:
    """Several losses' ``target_maps`` as one picklable callable (for the DataLoader workers)."""

    def __init__(self, fns: list[Callable]) -> None:
        self.fns = tuple(fns)

    def __call__(self, mask: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for fn in self.fns:
            out.update(fn(mask))
        return out


