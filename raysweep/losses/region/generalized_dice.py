"""Generalised Dice loss (Sudre et al.), a baseline outside the survey's 25."""

from __future__ import annotations

import torch

from .._functional import IGNORE_INDEX
from ..base import RegionLoss, check_choice
from ..registry import Categorical, register


@register(
    "generalized_dice",
    family="region",
    contains={"dice"},
    title="Generalised Dice loss",
    reference="Sudre, Li, Vercauteren, Ourselin & Cardoso, DLMIA 2017",
    space={"weighting": Categorical(("square", "simple", "uniform"))},
    in_survey=False,
)
class GeneralizedDiceLoss(RegionLoss):
    """``1 - (2 sum_c w_c TP_c + s) / (sum_c w_c (sum p_c + sum t_c) + s)`` with ``w_c = 1 / (sum t_c)^2``.

    Args:
        weighting: ``square`` (``1/n_c^2``, Sudre), ``simple`` (``1/n_c``) or ``uniform`` (1).
            A class absent from the target would get an infinite weight; like MONAI it gets the largest finite
            weight instead (so false positives on it are still penalised).
        smooth, per_image, include_background, ignore_index: see :class:`~raysweep.losses.base.RegionLoss`.

    With the defaults it equals MONAI's ``GeneralizedDiceLoss(softmax=True, to_onehot_y=True, batch=True)``. With
    ``per_image=True, smooth=0`` it equals Sudre's NiftyNet ``generalised_dice_loss`` (NifTK/NiftyNet@935bf43), which
    works per image and floors the denominator at 1 instead of smoothing. The default (batch-level weights) is a
    deliberate choice: per-image weights ``1/n_c^2`` explode for classes small or absent in one image.
    Shapes: logits ``(B, C, H, W)``, target ``(B, H, W)`` int64; returns a 0-dim tensor.
    """

    def __init__(self, weighting: str = "square", smooth: float = 1e-5, per_image: bool = False,
                 include_background: bool = True, ignore_index: int | None = IGNORE_INDEX):
        super().__init__(smooth, per_image, include_background, ignore_index)
        self.weighting = check_choice("weighting", weighting, ("square", "simple", "uniform"))

    def compute(self, logits, t, **extra):
        tp, fp, fn = self.counts(logits, t)
        n_true = tp + fn
        if self.weighting == "uniform":
            w = torch.ones_like(n_true)
        else:
            w = 1.0 / (n_true * n_true if self.weighting == "square" else n_true)
            finite = torch.isfinite(w)
            w = torch.where(finite, w, torch.zeros_like(w))
            w_max = w.max(dim=-1, keepdim=True).values
            w = torch.where(finite, w, w_max)
        w = w.detach()
        num = 2.0 * (w * tp).sum(-1) + self.smooth
        den = (w * (2 * tp + fp + fn)).sum(-1) + self.smooth
        return (1.0 - num / den).mean()
