"""The shared core of every loss: input checks, masking, one-hot, soft counts and reductions.

Conventions (all losses):
    * ``logits``: float tensor ``(B, C, H, W)`` (2-D) or ``(B, C, D, H, W)`` (3-D), raw scores; softmax is applied
      inside the loss. The shapes below write the 2-D case; a 3-D input has ``D`` before ``H, W`` everywhere, and a
      "pixel" is then a voxel. The losses that are 2-D by construction refuse 3-D input with their reason
      (``LossSpec.dims``).
    * ``target``: int64 tensor ``(B, H, W)`` or ``(B, D, H, W)`` with values in ``[0, C)`` or ``ignore_index``.
    * Ignored pixels take part in no numerator, denominator or mean. They are mapped to class 0 before the one-hot
      (an out-of-range index would crash ``scatter`` on GPU) and then masked out of both prediction and target.
    * Everything is computed in float32, whatever the input dtype or an enclosing autocast region.

Checks and the fast path:
    * A standalone call ``loss(logits, target)`` checks every input (``validate=True``): shapes, dtypes and devices
      (free) and the values (labels in range, finite logits and extras: one host synchronisation). The same
      synchronisation tells whether any pixel is ignored; when none is, the :class:`Target` is *dense* and the losses
      that pay for masking (``ce``, ``wce``, ``dice_ce``, the soft counts of the region losses, ``gwdl``) skip it.
    * A trainer may defer the value checks (``validate=False``): no host synchronisation at all, and it vouches for
      the labels. It may pass ``ignored=False`` when it knows from the host copy of the batch that no pixel is ignored
      (the dense path), ``ignored=True`` when some but not all are; see :func:`host_ignored`.
    * No loss computation below synchronises the host (no ``.item()``, no boolean indexing, no CUDA ``bincount``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from ..vocab import IGNORE_INDEX  # the label of pixels that take no part in any loss


@dataclass(frozen=True)
class Target:
    """A validated target, computed once per call by :class:`~raysweep.losses.base.SegLoss` and shared by its terms.

    Attributes:
        index: ``(B, H, W)`` int64, the target as given (ignored pixels keep ``ignore_index``).
        valid: ``(B, H, W)`` bool, True where the pixel counts.
        ignore_index: the ignored label, or None.
        num_classes: ``C``.
        dense: True when no pixel is ignored (``labels`` is ``index`` and ``valid`` is all True): the losses may
            skip their masking, with results equal to the masked path's (bitwise, or to float32 rounding where a
            masked sum becomes a plain one).
        labels: ``(B, H, W)`` int64 with ignored pixels mapped to class 0, safe for gather/scatter/one-hot; built on
            first use (``ce`` never needs it) and kept.
    """

    index: torch.Tensor
    valid: torch.Tensor
    ignore_index: int | None
    num_classes: int
    dense: bool = False

    @cached_property
    def labels(self) -> torch.Tensor:
        return self.index if self.dense else self.index.masked_fill(~self.valid, 0)

    @property
    def torch_ignore_index(self) -> int:
        """The value to pass as ``ignore_index`` to ``torch.nn.functional.cross_entropy``."""
        return -100 if self.ignore_index is None else self.ignore_index


def check_inputs(logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None,
                 extras: Mapping[str, Any] | None = None, *, validate: bool = True,
                 ignored: bool | None = None) -> Target | None:
    """Validate ``(logits, target)`` and return the :class:`Target`, or None when every pixel is ignored.

    ``validate=True`` (what a standalone loss call does): every check below, with one host synchronisation that also
    learns whether any pixel is ignored (a :attr:`Target.dense` target when none is; ``ignored`` is not used).
    ``validate=False`` (a trainer that checks every N steps): only the free shape, dtype and device checks, and no
    host synchronisation; the caller vouches that the labels are in range and that at least one pixel is valid
    (so None is never returned). The target is dense only when the caller passes ``ignored=False``; ``None`` or
    ``True`` take the masked path, which is correct either way.

    ``extras`` are the extra inputs the loss uses (``dist_map``, ``features``, ``aux_logits`` ...): each must be a
    finite floating-point ``(B, ., ., .)`` tensor with the logits' batch size, on their device (the losses check the
    exact shape they need).

    Raises ``ValueError`` naming the problem and the fix when the inputs break the conventions. Shape and dtype checks
    are free; the value checks (target range, non-finite logits or extras) share one host synchronisation and cost
    four reductions plus one per extra (a min/max of the target, counts of its valid pixels and of those >= C, and a
    sum of the logits and of each extra, whose non-finiteness reveals NaN or inf). A negative ``ignore_index`` or a
    label out of range takes a second synchronisation (the range of the non-ignored labels).
    """
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise ValueError("loss inputs must be torch tensors: logits (B, C, H, W) or (B, C, D, H, W) float and target "
                         "(B, H, W) or (B, D, H, W) int64")
    if logits.ndim not in (4, 5):
        raise ValueError(f"logits must be (B, C, H, W) or (B, C, D, H, W), got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got {logits.dtype}")
    spatial = tuple(logits.shape[2:])
    axes = "(B, H, W)" if logits.ndim == 4 else "(B, D, H, W)"
    if target.ndim == logits.ndim and target.shape[1] == 1:
        raise ValueError(
            f"target must be {axes} class indices, got {tuple(target.shape)}; squeeze the channel: target[:, 0]"
        )
    if target.ndim != logits.ndim - 1:
        raise ValueError(f"target must be {axes} class indices for logits of shape {tuple(logits.shape)}, got shape "
                         f"{tuple(target.shape)} (2-D and 3-D inputs cannot be mixed)")
    if target.dtype != torch.int64:
        hint = " (it looks like a one-hot or probability map; pass argmax indices)" if target.is_floating_point() else ""
        raise ValueError(f"target must be int64 class indices, got {target.dtype}{hint}; use target.long()")
    b, c = logits.shape[:2]
    if tuple(target.shape) != (b, *spatial):
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}: expected {(b, *spatial)}"
        )
    if target.device != logits.device:
        raise ValueError(f"logits on {logits.device} but target on {target.device}; move both to one device")
    if target.numel() == 0:
        raise ValueError(f"empty batch: target has shape {tuple(target.shape)}")
    extras = dict(extras or {})
    for key, value in extras.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{key} must be a torch tensor shaped like the logits (B, ., spatial...) with B={b}, got "
                             f"{type(value).__name__}")
        if not value.is_floating_point():
            raise ValueError(f"{key} must be a floating-point tensor, got {value.dtype}")
        if value.ndim != logits.ndim or value.shape[0] != b:
            raise ValueError(f"{key} has shape {tuple(value.shape)}; expected a {logits.ndim}-D (B, ., spatial...) "
                             f"tensor like the logits {tuple(logits.shape)}, with the logits' batch size B={b}")
        if value.device != logits.device:
            raise ValueError(f"logits on {logits.device} but {key} on {value.device}; move both to one device")
    if not validate:
        if ignore_index is None or ignored is False:
            return Target(target, torch.ones_like(target, dtype=torch.bool), ignore_index, c, dense=True)
        return Target(target, target != ignore_index, ignore_index, c)
    # One host synchronisation: the target's range, its valid pixels and those >= C, the logits' and extras' sums.
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    lo, hi = target.aminmax()
    lo, hi, n_valid, n_high, total, *extra_totals = torch.stack(
        [lo.double(), hi.double(), valid.count_nonzero().double(), (target >= c).count_nonzero().double(),
         logits.detach().sum().double()]
        + [v.detach().sum().double() for v in extras.values()]
    ).tolist()
    n_ignored = target.numel() - n_valid
    t = Target(target, valid, ignore_index, c, dense=n_ignored == 0)
    if n_ignored and n_valid and ignore_index >= c and lo >= 0 and n_high == n_ignored:
        hi = 0  # every label >= C is the ignored one, and none is negative: the others are in range
    elif n_ignored and n_valid and not 0 <= ignore_index < c:
        # A negative ignore_index, or labels out of range: the range of the others (a second synchronisation).
        lo, hi = t.labels.aminmax()
        lo, hi = int(lo), int(hi)
    if n_valid > 0 and (lo < 0 or hi >= c):
        labels = t.labels
        bad = labels[(labels < 0) | (labels >= c)]
        values = torch.unique(bad)[:10].tolist()
        raise ValueError(
            f"target has labels {values} outside [0, {c - 1}] for {c} classes"
            + (f" and ignore_index={ignore_index}" if ignore_index is not None else "")
            + "; remap them or set ignore_index"
        )
    if not math.isfinite(total) and not bool(torch.isfinite(logits).all()):
        raise ValueError("logits contain NaN or inf; the model diverged (lower the learning rate or check the input)")
    for (key, value), value_total in zip(extras.items(), extra_totals):
        if not math.isfinite(value_total) and not bool(torch.isfinite(value).all()):
            raise ValueError(f"{key} contains NaN or inf; recompute it (maps come from the target, features and "
                             "auxiliary logits from the model)")
    return t if n_valid > 0 else None


def host_ignored(target: torch.Tensor, ignore_index: int | None, num_classes: int) -> bool | None:
    """What a trainer can learn about a batch's target on the host, to call the losses with ``validate=False``.

    Args:
        target: ``(B, H, W)`` int64 on the CPU (the DataLoader's batch before its transfer to the GPU).
        ignore_index: the losses' ignored label, or None.
        num_classes: ``C``.

    Returns False when no pixel is ignored and every label is in ``[0, C)`` (the dense fast path), True when some
    pixels are ignored, at least one is not and the others are in range, and None when the batch needs the full
    checks (every pixel ignored, or a label out of range: the losses then return 0 or raise their clear error).
    Cost: one or two passes over the target on the CPU, no device synchronisation.
    """
    if target.numel() == 0:
        return None
    lo, hi = target.aminmax()
    if 0 <= int(lo) and int(hi) < num_classes and (ignore_index is None or not 0 <= ignore_index < num_classes):
        return False
    if ignore_index is None:
        return None
    valid = target != ignore_index
    n_valid = int(valid.sum())
    if n_valid == 0:
        return None
    if n_valid == target.numel():
        return False if 0 <= int(lo) and int(hi) < num_classes else None
    lo, hi = target.masked_fill(~valid, 0).aminmax()
    return True if 0 <= int(lo) and int(hi) < num_classes else None


def onehot(t: Target) -> torch.Tensor:
    """``(B, C, *spatial)`` float32 one-hot of the labels, zero on ignored pixels (no extra masking pass)."""
    b, *spatial = t.labels.shape
    out = torch.zeros(b, t.num_classes, *spatial, device=t.labels.device)
    if t.dense:
        return out.scatter_(1, t.labels.unsqueeze(1), 1.0)
    return out.scatter_(1, t.labels.unsqueeze(1), t.valid.unsqueeze(1).float())


def pixel_nll(logits: torch.Tensor, t: Target) -> torch.Tensor:
    """Per-pixel cross-entropy ``-log p_true``, ``(B, H, W)`` float32, 0 on ignored pixels."""
    return F.cross_entropy(logits.float(), t.index, ignore_index=t.torch_ignore_index, reduction="none")


def masked_mean(values: torch.Tensor, valid: torch.Tensor | None, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values (B, H, W)`` over valid pixels, optionally weighted; 0 with zero gradient when none is valid.

    ``valid=None`` means every pixel is valid (a dense target): the same value without the masking.
    """
    if valid is None:
        if weights is None:
            return values.sum() / max(values.numel(), 1)
        return (values * weights).sum() / weights.sum().clamp_min(1e-12)
    w = valid.to(values.dtype) if weights is None else weights * valid
    return (values * w).sum() / w.sum().clamp_min(1e-12)


def sum_dims(per_image: bool, ndim: int = 4) -> tuple[int, ...]:
    """Dimensions of an ``ndim``-D ``(B, C, *spatial)`` tensor summed for region statistics: batch-level
    ``(0, 2, 3[, 4])`` or per image ``(2, 3[, 4])``."""
    spatial = tuple(range(2, ndim))
    return spatial if per_image else (0, *spatial)


def soft_counts(probs: torch.Tensor, t: Target, per_image: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft true positives, false positives and false negatives per class, without building a one-hot.

    Args:
        probs: ``(B, C, H, W)`` or ``(B, C, D, H, W)`` softmax probabilities (not masked).
        t: the validated target.
        per_image: per-image counts ``(B, C)`` instead of batch-level ``(C,)``.

    ``TP_c = sum_{n: t_n = c} p_n^c`` is a gather of the true-class probabilities followed by an ``index_add`` per
    (image, class); ``sum_n p_n^c`` over valid pixels is one batched matrix product; ``sum_n t_n^c`` is a bincount.
    This touches the ``(B, C, H, W)`` tensor twice instead of the five times of the one-hot formulation. A dense
    target skips the masking (a plain sum instead of the matrix product with the valid mask; equal to float32
    rounding). Nothing here synchronises the host (counts by ``index_add_``, not ``bincount`` or boolean indexing).
    """
    b, c = probs.shape[:2]
    slot = (torch.arange(b, device=probs.device).view(b, *(1,) * (probs.ndim - 2)) * c + t.labels).flatten()
    p_true = probs.gather(1, t.labels.unsqueeze(1)).squeeze(1)
    if t.dense:
        ones = torch.ones((), device=probs.device, dtype=probs.dtype).expand(slot.shape[0])
        sum_p = probs.flatten(2).sum(2)
    else:
        validf = t.valid.to(probs.dtype)
        p_true = p_true * validf
        ones = validf.flatten()
        sum_p = torch.bmm(probs.flatten(2), validf.flatten(1).unsqueeze(2)).squeeze(2)
    tp = torch.zeros(b * c, device=probs.device, dtype=probs.dtype).index_add_(0, slot, p_true.flatten()).view(b, c)
    # Integer counts per (image, class), exact in float32 below 2^24 pixels per image.
    n_true = torch.zeros(b * c, device=probs.device, dtype=probs.dtype).index_add_(0, slot, ones).view(b, c)
    if not per_image:
        tp, sum_p, n_true = tp.sum(0), sum_p.sum(0), n_true.sum(0)
    return tp, sum_p - tp, n_true - tp


def drop_background(x: torch.Tensor, include_background: bool) -> torch.Tensor:
    """Drop class 0 from the last (class) dimension unless ``include_background``."""
    return x if include_background else x[..., 1:]


def zero_loss(logits: torch.Tensor) -> torch.Tensor:
    """A 0-dim zero connected to the graph, so ``backward()`` works and gives zero gradients."""
    return logits.float().sum() * 0.0


def class_frequencies(labels: torch.Tensor, valid: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """Pixel count per class over valid pixels (``valid=None``: every pixel), float32 ``(C,)``.

    Counted with ``index_add_`` in int64 (no host synchronisation, unlike boolean indexing or CUDA's ``bincount``);
    invalid pixels go to an extra slot that is dropped.
    """
    index = labels.flatten()
    if valid is not None:
        index = index.masked_fill(~valid.flatten(), num_classes)
    ones = torch.ones((), dtype=torch.int64, device=labels.device).expand(index.shape[0])
    counts = torch.zeros(num_classes + 1, dtype=torch.int64, device=labels.device).index_add_(0, index, ones)
    return counts[:num_classes].float()


def tversky_index(tp, fp, fn, alpha: float, beta: float, smooth: float) -> torch.Tensor:
    """``(tp + s) / (tp + alpha * fp + beta * fn + s)``: alpha weighs false positives, beta false negatives."""
    return (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def dice_score(tp, fp, fn, smooth: float) -> torch.Tensor:
    """Soft Dice ``(2 tp + s) / (2 tp + fp + fn + s)`` (= Tversky with alpha = beta = 0.5, up to the smoothing)."""
    return (2 * tp + smooth) / (2 * tp + fp + fn + smooth)
