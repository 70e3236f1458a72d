"""Soft Jaccard (IoU) loss (survey 2.2.4)."""

from __future__ import annotations

from .._functional import IGNORE_INDEX
from ..base import RegionLoss
from ..registry import register
from ._space import REGION_SPACE


@register(
    "jaccard",
    family="region",
    title="Jaccard (IoU) loss",
    reference="Rahman & Wang, 'Optimizing intersection-over-union in deep neural networks', ISVC 2016",
    space=REGION_SPACE,
)
class JaccardLoss(RegionLoss):
    """``1 - mean_c (TP_c + s) / (TP_c + FP_c + FN_c + s)`` on softmax probabilities.

    Rahman & Wang released no code; this is their ``I / U`` with ``U = sum (t + y - t y)`` (``= TP + FP + FN``),
    checked against the equation in ``tests/test_fidelity_region.py``.

    Shapes: logits ``(B, C, H, W)``, target ``(B, H, W)`` int64; returns a 0-dim tensor. See
    :class:`~raysweep.losses.base.RegionLoss` for the arguments.
    """

    def __init__(self, smooth: float = 1e-5, per_image: bool = False, include_background: bool = True,
                 ignore_index: int | None = IGNORE_INDEX):
        super().__init__(smooth, per_image, include_background, ignore_index)

    def compute(self, logits, t, **extra):
        tp, fp, fn = self.counts(logits, t)
        return self.reduce(1.0 - (tp + self.smooth) / (tp + fp + fn + self.smooth))
