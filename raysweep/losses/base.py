"""The base class every raysweep loss derives from."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ._functional import IGNORE_INDEX, Target, check_inputs, zero_loss
from .registry import EXTRA_INPUTS


class SegLoss(nn.Module):
    """Base of all losses: validates inputs, disables autocast, and dispatches to :meth:`compute`.

    Call as ``loss(logits, target, **extra)``:
        * ``logits``: float ``(B, C, H, W)`` or, in 3-D, ``(B, C, D, H, W)``, raw scores (softmax is applied inside).
        * ``target``: int64 ``(B, H, W)`` or ``(B, D, H, W)``, class indices in ``[0, C)`` or ``ignore_index``.
          A loss that is 2-D by construction (``LossSpec.dims == (2,)``) refuses 3-D input with its reason.
        * ``extra``: optional inputs named in :data:`~raysweep.losses.registry.EXTRA_INPUTS` (distance maps, features,
          auxiliary logits). Losses ignore the extras they do not use, so a trainer can pass the same set to any loss.

    Returns a 0-dim float32 tensor. Losses are computed in float32 even inside a bf16/fp16 autocast region, because
    half-precision sums over 10^5+ pixels overflow or lose all precision.

    Checks (keyword-only, for trainers; a plain call keeps the defaults):
        * ``validate=True`` (default): every input is checked on every call, with one host synchronisation (labels
          in range, finite logits and extras), and a bad input raises ``ValueError`` naming the fix. That
          synchronisation also says whether any pixel is ignored; when none is, the loss takes its fast path (no
          masking; equal results).
        * ``validate=False``: the value checks are skipped and the call never synchronises the host (it can be
          queued on a GPU ahead of time). The caller vouches that the labels are in range and that at least one
          pixel is valid; non-finite logits give a non-finite loss instead of an error. The trainer validates the
          first step and every ``train.sync_every`` steps (see
          :class:`~raysweep.trial.objective.CombinedObjective`).
        * ``ignored``: with ``validate=False``, False when the caller knows no pixel is ignored (the fast path, see
          :func:`~raysweep.losses._functional.host_ignored`); None (unknown) or True take the masked path.
    """

    spec_name: str = ""
    #: The pixel spacing of the distance maps this loss was given (set by :meth:`target_maps`; None: 1 per axis), so
    #: that a loss computing distances of its own (``hausdorff``'s prediction fields) uses the same units.
    map_spacing = None

    def __init__(self, ignore_index: int | None = IGNORE_INDEX):
        super().__init__()
        if ignore_index is not None and not isinstance(ignore_index, int):
            raise ValueError(f"ignore_index must be an int or None, got {ignore_index!r}")
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor, *, validate: bool = True, ignored: bool | None = None,
                **extra: Any) -> torch.Tensor:
        unknown = set(extra) - set(EXTRA_INPUTS)
        if unknown:
            raise ValueError(
                f"{type(self).__name__} got unknown extra input(s) {sorted(unknown)}; known: {sorted(EXTRA_INPUTS)}"
            )
        if isinstance(logits, torch.Tensor) and logits.ndim == 5:
            self._check_3d()
        used = self._used_extras()
        t = check_inputs(logits, target, self.ignore_index,
                         {k: v for k, v in extra.items() if k in used and v is not None},
                         validate=validate, ignored=ignored)
        if t is None:
            # Every pixel ignored: nothing to learn from, so 0 with zero gradient (never 0/0 = NaN).
            return zero_loss(logits)
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self.compute(logits.float(), t, **extra)

    @classmethod
    def _check_3d(cls) -> None:
        """Refuse 3-D input for a loss that is 2-D by construction, quoting its reason."""
        from .registry import LOSSES

        spec = LOSSES.get(cls.spec_name)
        if spec is not None and 3 not in spec.dims:
            raise ValueError(f"loss {spec.name!r} takes 2-D input only (B, C, H, W), got 3-D logits: {spec.dims_note} "
                             "Train it on 2-D slices, or choose a loss whose LossSpec.dims has 3.")

    @classmethod
    def _used_extras(cls) -> frozenset:
        """The extra inputs this loss uses (its ``LossSpec.needs``); checked with the logits, the rest ignored."""
        from .registry import LOSSES

        spec = LOSSES.get(cls.spec_name)
        return spec.needs if spec is not None else frozenset()

    def target_maps(self, num_classes: int, spacing=None):
        """The per-sample maps this loss uses, as a picklable ``mask (H, W) or (D, H, W) -> {name: array}`` callable
        for the datasets' ``target_maps`` hook (computed in DataLoader workers, after augmentation), or None if it
        needs none.

        Pass the batch's maps back to the loss as keyword inputs: ``loss(logits, mask, **maps)``.
        """
        from .maps import DistanceMaps
        from .registry import LOSSES

        spec = LOSSES.get(self.spec_name)
        if spec is not None and "dist_map" in spec.needs:
            self.map_spacing = spacing
            return DistanceMaps(num_classes, spacing, self.ignore_index)
        return None

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer at the start of each epoch; losses with a schedule (``boundary``) override it."""

    def compute(self, logits: torch.Tensor, t: Target, **extra: Any) -> torch.Tensor:
        """The loss of float32 ``logits (B, C, H, W)`` or ``(B, C, D, H, W)`` against the validated target ``t``; at
        least one pixel is valid. Subclasses implement this."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        from .registry import LOSSES

        spec = LOSSES.get(self.spec_name)
        if spec is None:
            return ""
        parts = [f"{k}={getattr(self, k, v)!r}" for k, v in spec.defaults.items() if not isinstance(v, (list, tuple))]
        return ", ".join(parts + [f"ignore_index={self.ignore_index}"])


def check_range(name: str, value: Any, low: float = -math.inf, high: float = math.inf, *, low_open=False,
                high_open=False) -> float:
    """Return ``float(value)`` or raise ``ValueError`` naming the hyperparameter and its valid range."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(f"{name} must be a number in {lo}{low:g}, {high:g}{hi}, got {value!r}")
    return float(value)


def check_choice(name: str, value: Any, choices: tuple) -> Any:
    """Return ``value`` or raise ``ValueError`` listing the valid choices."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def as_class_vector(name: str, value: Any, num_classes: int | None = None) -> torch.Tensor | None:
    """Validate an optional per-class vector (weights, alphas) and return it as float32 ``(C,)``."""
    if value is None:
        return None
    t = torch.as_tensor(value, dtype=torch.float32).flatten()
    if t.numel() == 0 or not torch.isfinite(t).all() or (t < 0).any():
        raise ValueError(f"{name} must be a non-empty sequence of finite non-negative numbers, got {value!r}")
    if num_classes is not None and t.numel() != num_classes:
        raise ValueError(f"{name} has {t.numel()} entries but the logits have {num_classes} classes")
    return t


class RegionLoss(SegLoss):
    """Base of the overlap losses: soft per-class counts with smoothing, class mean, batch or per-image reduction.

    Args:
        smooth: added to numerator and denominator of every per-class score (MONAI's convention, default 1e-5), so an
            absent class that is also not predicted scores 1 (loss 0) instead of 0/0.
        per_image: sum the counts per image and average the per-image losses, instead of summing over the whole batch.
        include_background: keep class 0 in the class mean.
        ignore_index: label excluded from every count.
    """

    def __init__(self, smooth: float = 1e-5, per_image: bool = False, include_background: bool = True,
                 ignore_index: int | None = IGNORE_INDEX):
        super().__init__(ignore_index)
        self.smooth = check_range("smooth", smooth, 0.0)
        self.per_image = check_bool("per_image", per_image)
        self.include_background = check_bool("include_background", include_background)

    def counts(self, logits: torch.Tensor, t: Target):
        """``(tp, fp, fn)``, each ``(C',)`` or ``(B, C')`` where ``C'`` drops background unless included."""
        from ._functional import drop_background, soft_counts

        if not self.include_background and logits.shape[1] < 2:
            raise ValueError("include_background=False needs at least two classes")
        tp, fp, fn = soft_counts(logits.softmax(1), t, self.per_image)
        return tuple(drop_background(x, self.include_background) for x in (tp, fp, fn))

    @staticmethod
    def reduce(per_class: torch.Tensor) -> torch.Tensor:
        """Mean over classes, then over images when per image: ``(C,)`` or ``(B, C)`` -> 0-dim."""
        return per_class.mean()
