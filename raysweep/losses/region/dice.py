"""Soft Dice loss (survey 2.2.1)."""

from __future__ import annotations

from .._functional import IGNORE_INDEX, dice_score
from ..base import RegionLoss
from ..registry import register
from ._space import REGION_SPACE


@register(
    "dice",
    family="region",
    contains={"dice"},
    title="Dice loss",
    reference="Milletari, Navab & Ahmadi, 'V-Net', 3DV 2016",
    space=REGION_SPACE,
)
class DiceLoss(RegionLoss):
    """``1 - mean_c (2 TP_c + s) / (sum p_c + sum t_c + s)`` on softmax probabilities (L1 denominator).

    With the defaults (batch-level sums, background included, ``smooth=1e-5``) it equals MONAI's
    ``DiceLoss(softmax=True, to_onehot_y=True, batch=True)``; ``per_image=True`` equals ``batch=False``.

    Fidelity (``tests/test_fidelity_region.py``): V-Net's released Caffe layer (faustomilletari/VNet@584c150,
    ``pyLayer.py``) computes in its forward the Dice score of the *argmax* per image, and the soft Dice with a
    squared denominator (``sum p^2 + sum t^2``, the V-Net paper's eq. 1) only in its hand-written backward. raysweep
    follows the survey's L1 denominator (as MONAI, smp and nnU-Net); the two agree on hard predictions, where
    raysweep equals V-Net's forward. On soft predictions it equals Jadon's ``dice_loss`` (foreground, smooth 1) and
    the survey's equation.

    Shapes: logits ``(B, C, H, W)``, target ``(B, H, W)`` int64; returns a 0-dim tensor. See
    :class:`~raysweep.losses.base.RegionLoss` for the arguments.
    """

    def __init__(self, smooth: float = 1e-5, per_image: bool = False, include_background: bool = True,
                 ignore_index: int | None = IGNORE_INDEX):
        super().__init__(smooth, per_image, include_background, ignore_index)

    def per_class(self, logits, t):
        """Per-class soft Dice loss ``(C',)`` or ``(B, C')``."""
        tp, fp, fn = self.counts(logits, t)
        return 1.0 - dice_score(tp, fp, fn, self.smooth)

    def compute(self, logits, t, **extra):
        return self.reduce(self.per_class(logits, t))
