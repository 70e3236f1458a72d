"""Cross-entropy and weighted cross-entropy (survey 2.1.1)."""

from __future__ import annotations

import torch

import torch.nn.functional as F

from .._functional import IGNORE_INDEX, class_frequencies, masked_mean, pixel_nll
from ..base import SegLoss, as_class_vector, check_choice
from ..registry import Categorical, register


@register(
    "ce",
    family="pixel",
    contains={"ce"},
    title="Cross-entropy",
    reference="Long, Shelhamer & Darrell, FCN, CVPR 2015 (standard since)",
)
class CrossEntropyLoss(SegLoss):
    """Mean cross-entropy ``-log p_true`` over valid pixels.

    Shapes: logits ``(B, C, H, W)`` float, target ``(B, H, W)`` int64; returns a 0-dim tensor. Equal to
    ``torch.nn.functional.cross_entropy(logits, target, ignore_index=...)`` except that an all-ignored batch gives 0
    (not NaN); recorded in ``tests/test_fidelity_pixel_combo.py``.
    """

    def __init__(self, ignore_index: int | None = IGNORE_INDEX):
        super().__init__(ignore_index)

    def compute(self, logits, t, **extra):
        # The base class guarantees a valid pixel, so torch's fused kernel never divides by zero.
        return F.cross_entropy(logits, t.index, ignore_index=t.torch_ignore_index)


#: How class weights are derived from class pixel frequencies ``f_c``.
WEIGHTINGS = ("inverse", "sqrt_inverse", "median", "log_inverse")


def frequency_weights(freq: torch.Tensor, weighting: str) -> torch.Tensor:
    """Class weights from pixel counts ``freq (C,)``; classes with no pixels get weight 0 (they have no pixel to weigh).

    * ``inverse``: ``1 / f_c``; ``sqrt_inverse``: ``1 / sqrt(f_c)``;
    * ``median``: ``median(f) / f_c`` (Eigen & Fergus, 2015). Under the weighted mean used here it gives exactly the
      same loss as ``inverse`` (the constant cancels); kept because configs use the name.
    * ``log_inverse``: ``1 / ln(1.02 + f_c / sum f)`` (ENet, Paszke et al. 2016), a bounded weighting.
    """
    present = freq > 0
    f = freq / freq.sum().clamp_min(1.0)
    safe = torch.where(present, f, torch.ones_like(f))
    if weighting == "inverse":
        w = 1.0 / safe
    elif weighting == "sqrt_inverse":
        w = safe.rsqrt()
    elif weighting == "median":
        # nanmedian over the present classes: the lower median, as median(), without a host sync (if no class is
        # present, NaN, and every weight is 0 below either way).
        med = torch.where(present, f, torch.full_like(f, float("nan"))).nanmedian()
        w = med / safe
    else:
        w = 1.0 / torch.log(1.02 + safe)
    return torch.where(present, w, torch.zeros_like(w))


@register(
    "wce",
    family="pixel",
    contains={"ce"},
    title="Weighted cross-entropy",
    reference="Long, Shelhamer & Darrell, CVPR 2015; median frequency: Eigen & Fergus, ICCV 2015; ENet: Paszke et al. 2016",
    space={"weighting": Categorical(("inverse", "sqrt_inverse", "log_inverse"))},
)
class WeightedCrossEntropyLoss(SegLoss):
    """Class-weighted cross-entropy: ``sum_n w_{t_n} CE_n / sum_n w_{t_n}`` over valid pixels (PyTorch's weighted mean).

    Args:
        class_weights: explicit weights ``(C,)``; when given, ``weighting`` is not used.
        weighting: how to derive weights from class frequencies when ``class_weights`` is None, one of
            :data:`WEIGHTINGS` (see :func:`frequency_weights`).
        class_frequencies: pixel counts or frequencies ``(C,)`` of the training set; when None the current batch's
            valid-pixel counts are used.
        ignore_index: label excluded from the loss.

    Equal to ``torch.nn.functional.cross_entropy(..., weight=w)`` (recorded in ``tests/test_fidelity_pixel_combo.py``);
    frequency weights default to the batch's counts, not a training-set statistic (pass ``class_frequencies``).

    Shapes: logits ``(B, C, H, W)``, target ``(B, H, W)`` int64; returns a 0-dim tensor.
    """

    def __init__(self, class_weights=None, weighting: str = "inverse", class_frequencies=None,
                 ignore_index: int | None = IGNORE_INDEX):
        super().__init__(ignore_index)
        self.weighting = check_choice("weighting", weighting, WEIGHTINGS)
        self.register_buffer("class_weights", as_class_vector("class_weights", class_weights), persistent=False)
        self.register_buffer("class_frequencies", as_class_vector("class_frequencies", class_frequencies),
                             persistent=False)

    def weights(self, labels: torch.Tensor, valid: torch.Tensor | None, num_classes: int) -> torch.Tensor:
        """The class weights ``(C,)`` used for this batch (``valid=None``: every pixel counts)."""
        if self.class_weights is not None:
            as_class_vector("class_weights", self.class_weights, num_classes)
            return self.class_weights.to(labels.device)
        if self.class_frequencies is not None:
            freq = as_class_vector("class_frequencies", self.class_frequencies, num_classes).to(labels.device)
        else:
            freq = class_frequencies(labels, valid, num_classes)
        return frequency_weights(freq, self.weighting)

    def compute(self, logits, t, **extra):
        valid = None if t.dense else t.valid  # a dense target needs no masking (same value)
        w = self.weights(t.labels, valid, t.num_classes)
        if self.class_weights is None and self.class_frequencies is None:
            # Batch frequencies give every present class a positive weight, so the weighted mean never divides by
            # zero: torch's fused kernel (ignore_index included) computes sum w CE / sum w in one pass.
            return F.cross_entropy(logits, t.index, weight=w, ignore_index=t.torch_ignore_index)
        return masked_mean(pixel_nll(logits, t), valid, w[t.labels])  # explicit weights may all be 0: then 0
