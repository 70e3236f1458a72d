"""The shared core of every loss: input checks, masking, one-hot, soft counts and reductions.

Conventions (all losses):
    * ``logits``: float tensor ``(B, C, H, W)``, raw scores; softmax is applied inside the loss.
    * ``target``: int64 tensor ``(B, H, W)`` with values in ``[0, C)`` or ``ignore_index``.
    * Ignored pixels take part in no numerator, denominator or mean. They are mapped to class 0 before the one-hot
      (an out-of-range index would crash ``scatter`` on GPU) and then masked out of both prediction and target.
    * Everything is computed in float32, whatever the input dtype or an enclosing autocast region.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: The label of pixels that take no part in the loss (Cityscapes' convention, used throughout raysweep).
IGNORE_INDEX = 255


def check_inputs(logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None) -> bool:
    """Raise ``ValueError`` naming the problem and the fix when ``(logits, target)`` break the conventions.

    Returns whether at least one pixel is valid (not ``ignore_index``).

    Shape and dtype checks are free; the value checks (target range, non-finite logits) cost one reduction and one
    host synchronisation, which is small next to any loss.
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
    out_of_range = (target < 0) | (target >= c)
    if ignore_index is not None:
        out_of_range &= target != ignore_index
    has_valid = (target != ignore_index).any() if ignore_index is not None else torch.tensor(target.numel() > 0)
    bad = torch.stack([out_of_range.any(), ~torch.isfinite(logits).all(), has_valid.to(target.device)]).tolist()
    if bad[0]:
        values = torch.unique(target[out_of_range])[:10].tolist()
        raise ValueError(
            f"target has labels {values} outside [0, {c - 1}] for {c} classes"
            + (f" and ignore_index={ignore_index}" if ignore_index is not None else "")
            + "; remap them or set ignore_index"
        )
    if bad[1]:
        raise ValueError("logits contain NaN or inf; the model diverged (lower the learning rate or check the input)")
    return bool(bad[2])


@dataclass
class Prepared:
    """Masked float32 tensors shared by the losses.

    Attributes:
        log_probs: ``(B, C, H, W)`` log-softmax of the logits (not masked).
        probs: ``(B, C, H, W)`` softmax probabilities, zero on ignored pixels.
        onehot: ``(B, C, H, W)`` one-hot target, zero on ignored pixels.
        valid: ``(B, 1, H, W)`` 1.0 on pixels that count, 0.0 on ignored ones.
        labels: ``(B, H, W)`` target with ignored pixels mapped to 0 (safe for gather/scatter).
        n_valid: number of valid pixels (0-dim float tensor).
    """

    log_probs: torch.Tensor
    probs: torch.Tensor
    onehot: torch.Tensor
    valid: torch.Tensor
    labels: torch.Tensor
    n_valid: torch.Tensor


def prepare(logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None) -> Prepared:
    """Softmax, one-hot and masks for ``logits (B, C, H, W)`` and ``target (B, H, W)``, all float32."""
    logits = logits.float()
    log_probs = F.log_softmax(logits, dim=1)
    if ignore_index is None:
        valid_b = torch.ones_like(target, dtype=torch.bool)
        labels = target
    else:
        valid_b = target != ignore_index
        labels = target.masked_fill(~valid_b, 0)
    valid = valid_b.unsqueeze(1).float()
    probs = log_probs.exp() * valid
    onehot = torch.zeros_like(log_probs).scatter_(1, labels.unsqueeze(1), 1.0) * valid
    return Prepared(log_probs, probs, onehot, valid, labels, valid.sum())


def valid_mask(target: torch.Tensor, ignore_index: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(valid (B, H, W) bool, labels (B, H, W) int64 with ignored pixels mapped to 0)``."""
    if ignore_index is None:
        return torch.ones_like(target, dtype=torch.bool), target
    valid = target != ignore_index
    return valid, target.masked_fill(~valid, 0)


def pixel_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel ``-log p_true`` and ``log p_true``, both ``(B, H, W)`` float32."""
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)
    return -log_p, log_p


def masked_mean(values: torch.Tensor, valid: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values`` over valid pixels (optionally weighted); 0 with zero gradient when none is valid."""
    w = valid.to(values.dtype) if weights is None else weights * valid
    return (values * w).sum() / w.sum().clamp_min(1e-12)


def sum_dims(per_image: bool) -> tuple[int, ...]:
    """Dimensions of ``(B, C, H, W)`` summed for region statistics: batch-level ``(0, 2, 3)`` or per image ``(2, 3)``."""
    return (2, 3) if per_image else (0, 2, 3)


def soft_counts(prep: Prepared, per_image: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft true positives, false positives and false negatives per class.

    Returns three tensors of shape ``(C,)`` (batch-level) or ``(B, C)`` (``per_image``); ignored pixels excluded.
    """
    dims = sum_dims(per_image)
    tp = (prep.probs * prep.onehot).sum(dims)
    fp = prep.probs.sum(dims) - tp
    fn = prep.onehot.sum(dims) - tp
    return tp, fp, fn


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
