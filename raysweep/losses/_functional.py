"""The shared core of every loss: input checks, masking, one-hot, soft counts and reductions.

Conventions (all losses):
    * ``logits``: float tensor ``(B, C, H, W)``, raw scores; softmax is applied inside the loss.
    * ``target``: int64 tensor ``(B, H, W)`` with values in ``[0, C)`` or ``ignore_index``.
    * Ignored pixels take part in no numerator, denominator or mean. They are mapped to class 0 before the one-hot
      (an out-of-range index would crash ``scatter`` on GPU) and then masked out of both prediction and target.
    * Everything is computed in float32, whatever the input dtype or an enclosing autocast region.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from ..vocab import IGNORE_INDEX  # the label of pixels that take no part in any loss


@dataclass(frozen=True)
class Target:
    """A validated target, computed once per call by :class:`~raysweep.losses.base.SegLoss` and shared by its terms.

    Attributes:
        index: ``(B, H, W)`` int64, the target as given (ignored pixels keep ``ignore_index``).
        labels: ``(B, H, W)`` int64 with ignored pixels mapped to class 0, safe for gather/scatter/one-hot.
        valid: ``(B, H, W)`` bool, True where the pixel counts.
        ignore_index: the ignored label, or None.
        num_classes: ``C``.
    """

    index: torch.Tensor
    labels: torch.Tensor
    valid: torch.Tensor
    ignore_index: int | None
    num_classes: int

    @property
    def torch_ignore_index(self) -> int:
        """The value to pass as ``ignore_index`` to ``torch.nn.functional.cross_entropy``."""
        return -100 if self.ignore_index is None else self.ignore_index


def check_inputs(logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None,
                 extras: Mapping[str, Any] | None = None) -> Target | None:
    """Validate ``(logits, target)`` and return the :class:`Target`, or None when every pixel is ignored.

    ``extras`` are the extra inputs the loss uses (``dist_map``, ``features``, ``aux_logits`` ...): each must be a
    finite floating-point ``(B, ., ., .)`` tensor with the logits' batch size, on their device (the losses check the
    exact shape they need).

    Raises ``ValueError`` naming the problem and the fix when the inputs break the conventions. Shape and dtype checks
    are free; the value checks (target range, non-finite logits or extras) share one host synchronisation and cost
    three reductions plus one per extra (a min/max of the labels, an any, and a sum of the logits and of each extra,
    whose non-finiteness reveals NaN or inf).
    """
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise ValueError("loss inputs must be torch tensors: logits (B, C, H, W) float and target (B, H, W) int64")
    if logits.ndim != 4:
        raise ValueError(f"logits must be (B, C, H, W), got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if target.ndim == 4 and target.shape[1] == 1:
        raise ValueError(
            f"target must be (B, H, W) class indices, got {tuple(target.shape)}; squeeze the channel: target[:, 0]"
        )
    if target.ndim != 3:
        raise ValueError(f"target must be (B, H, W) class indices, got shape {tuple(target.shape)}")
    if target.dtype != torch.int64:
        hint = " (it looks like a one-hot or probability map; pass argmax indices)" if target.is_floating_point() else ""
        raise ValueError(f"target must be int64 class indices, got {target.dtype}{hint}; use target.long()")
    b, c, h, w = logits.shape
    if target.shape != (b, h, w):
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}: expected {(b, h, w)}"
        )
    if target.device != logits.device:
        raise ValueError(f"logits on {logits.device} but target on {target.device}; move both to one device")
    if target.numel() == 0:
        raise ValueError(f"empty batch: target has shape {tuple(target.shape)}")
    extras = dict(extras or {})
    for key, value in extras.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{key} must be a torch tensor (B, ., ., .) with B={b}, got {type(value).__name__}")
        if not value.is_floating_point():
            raise ValueError(f"{key} must be a floating-point tensor, got {value.dtype}")
        if value.ndim != 4 or value.shape[0] != b:
            raise ValueError(f"{key} has shape {tuple(value.shape)}; expected a 4-D (B, ., ., .) tensor with the "
                             f"logits' batch size B={b}")
        if value.device != logits.device:
            raise ValueError(f"logits on {logits.device} but {key} on {value.device}; move both to one device")
    if ignore_index is None:
        valid = torch.ones_like(target, dtype=torch.bool)
        labels = target
    else:
        valid = target != ignore_index
        labels = target.masked_fill(~valid, 0)
    lo, hi = labels.aminmax()
    lo, hi, any_valid, total, *extra_totals = torch.stack(
        [lo.double(), hi.double(), valid.any().double(), logits.detach().sum().double()]
        + [v.detach().sum().double() for v in extras.values()]
    ).tolist()
    if lo < 0 or hi >= c:
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
    if not any_valid:
        return None
    return Target(target, labels, valid, ignore_index, c)


def onehot(t: Target) -> torch.Tensor:
    """``(B, C, H, W)`` float32 one-hot of the labels, zero on ignored pixels (no extra masking pass)."""
    b, h, w = t.labels.shape
    out = torch.zeros(b, t.num_classes, h, w, device=t.labels.device)
    return out.scatter_(1, t.labels.unsqueeze(1), t.valid.unsqueeze(1).float())


def pixel_nll(logits: torch.Tensor, t: Target) -> torch.Tensor:
    """Per-pixel cross-entropy ``-log p_true``, ``(B, H, W)`` float32, 0 on ignored pixels."""
    return F.cross_entropy(logits.float(), t.index, ignore_index=t.torch_ignore_index, reduction="none")


def masked_mean(values: torch.Tensor, valid: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values (B, H, W)`` over valid pixels, optionally weighted; 0 with zero gradient when none is valid."""
    w = valid.to(values.dtype) if weights is None else weights * valid
    return (values * w).sum() / w.sum().clamp_min(1e-12)


def sum_dims(per_image: bool) -> tuple[int, ...]:
    """Dimensions of ``(B, C, H, W)`` summed for region statistics: batch-level ``(0, 2, 3)`` or per image ``(2, 3)``."""
    return (2, 3) if per_image else (0, 2, 3)


def soft_counts(probs: torch.Tensor, t: Target, per_image: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft true positives, false positives and false negatives per class, without building a one-hot.

    Args:
        probs: ``(B, C, H, W)`` softmax probabilities (not masked).
        t: the validated target.
        per_image: per-image counts ``(B, C)`` instead of batch-level ``(C,)``.

    ``TP_c = sum_{n: t_n = c} p_n^c`` is a gather of the true-class probabilities followed by an ``index_add`` per
    (image, class); ``sum_n p_n^c`` over valid pixels is one batched matrix product; ``sum_n t_n^c`` is a bincount.
    This touches the ``(B, C, H, W)`` tensor twice instead of the five times of the one-hot formulation.
    """
    b, c = probs.shape[:2]
    validf = t.valid.float()
    p_true = probs.gather(1, t.labels.unsqueeze(1)).squeeze(1) * validf
    slot = (torch.arange(b, device=probs.device).view(b, 1, 1) * c + t.labels).flatten()
    tp = torch.zeros(b * c, device=probs.device, dtype=probs.dtype).index_add_(0, slot, p_true.flatten()).view(b, c)
    sum_p = torch.bmm(probs.flatten(2), validf.flatten(1).unsqueeze(2)).squeeze(2)
    n_true = torch.bincount(slot[t.valid.flatten()], minlength=b * c).view(b, c).to(probs.dtype)
    if not per_image:
        tp, sum_p, n_true = tp.sum(0), sum_p.sum(0), n_true.sum(0)
    return tp, sum_p - tp, n_true - tp


def drop_background(x: torch.Tensor, include_background: bool) -> torch.Tensor:
    """Drop class 0 from the last (class) dimension unless ``include_background``."""
    return x if include_background else x[..., 1:]


def zero_loss(logits: torch.Tensor) -> torch.Tensor:
    """A 0-dim zero connected to the graph, so ``backward()`` works and gives zero gradients."""
    return logits.float().sum() * 0.0


def class_frequencies(labels: torch.Tensor, valid: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Pixel count per class over valid pixels, float32 ``(C,)``."""
    return torch.bincount(labels[valid], minlength=num_classes).float()


def tversky_index(tp, fp, fn, alpha: float, beta: float, smooth: float) -> torch.Tensor:
    """``(tp + s) / (tp + alpha * fp + beta * fn + s)``: alpha weighs false positives, beta false negatives."""
    return (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def dice_score(tp, fp, fn, smooth: float) -> torch.Tensor:
    """Soft Dice ``(2 tp + s) / (2 tp + fp + fn + s)`` (= Tversky with alpha = beta = 0.5, up to the smoothing)."""
    return (2 * tp + smooth) / (2 * tp + fp + fn + smooth)
