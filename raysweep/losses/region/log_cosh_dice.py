"""Log-Cosh Dice loss (survey 2.2.2)."""

from __future__ import annotations

import math

import torch.nn.functional as F

from ..registry import register
from ._space import REGION_SPACE
from .dice import DiceLoss


def log_cosh(x):
    """``log(cosh(x))`` computed as ``x + softplus(-2x) - log 2``, which never overflows."""
    return x + F.softplus(-2.0 * x) - math.log(2.0)


@register(
    "log_cosh_dice",
    family="region",
    contains={"dice"},
    title="Log-Cosh Dice loss",
    reference="Jadon, 'A survey of loss functions for semantic segmentation', CIBCB 2020",
    space=REGION_SPACE,
)
class LogCoshDiceLoss(DiceLoss):
    """``log(cosh(L_Dice))`` where ``L_Dice`` is :class:`~raysweep.losses.region.dice.DiceLoss` (same arguments).

    Equals Jadon's ``log_cosh_dice_loss`` (shruti-jadon/Semantic-Segmentation-Loss-Functions@00d3335) on a binary
    foreground with ``smooth=1, include_background=False``. Deliberate difference: Jadon's Dice flattens every channel
    into one score (with softmax and one-hot that is a soft pixel accuracy); raysweep averages the per-class Dice
    losses, as the survey's Dice does, before taking ``log cosh``.

    Shapes: logits ``(B, C, H, W)``, target ``(B, H, W)`` int64; returns a 0-dim tensor.
    """

    def compute(self, logits, t, **extra):
        return log_cosh(super().compute(logits, t))
