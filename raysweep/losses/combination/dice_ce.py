"""Dice + cross-entropy, the baseline most medical methods use (outside the survey's 25)."""

from __future__ import annotations

import torch.nn.functional as F

from .._functional import IGNORE_INDEX, dice_score, soft_counts
from ..base import SegLoss, check_bool, check_range
from ..registry import Float, register


@register(
    "dice_ce",
    family="combination",
    contains={"ce", "dice"},
    title="Dice + cross-entropy",
    reference="Isensee et al., nnU-Net, Nature Methods 2021 (MONAI DiceCELoss)",
    space={"lambda_ce": Float(0.1, 10.0, log=True)},
    in_survey=False,
)
class DiceCELoss(SegLoss):
    """``lambda_dice * L_Dice + lambda_ce * CE`` with :class:`~raysweep.losses.region.dice.DiceLoss` semantics.

    With the defaults it equals MONAI's ``DiceCELoss(softmax=True, to_onehot_y=True, batch=True)``. Against nnU-Net's
    ``DC_and_CE_loss`` (MIC-DKFZ/nnUNet@0e49508, ``nnunetv2/training/loss/compound_losses.py``, as
    ``nnUNetTrainer._build_loss`` builds it) it agrees within 1e-6, ignore label included, up to the constant
    ``lambda_dice``: nnU-Net's Dice term is ``-Dice``, here ``1 - Dice`` (non-negative, same gradients). nnU-Net
    leaves the background out of the Dice (``do_bg=False``); the default here keeps it (MONAI's default) --
    ``include_background=False`` gives nnU-Net's. ``per_image`` is nnU-Net's ``batch_dice=False``.

    Args:
        lambda_dice, lambda_ce: weights of the two terms (1 and 1, as MONAI and nnU-Net).
        smooth, per_image, include_background: Dice options, see :class:`~raysweep.losses.base.RegionLoss`.
        ignore_index: label excluded from both terms.

    Shapes: logits ``(B, C, H, W)``, target ``(B, H, W)`` int64; returns a 0-dim tensor.
    """

    def __init__(self, lambda_dice: float = 1.0, lambda_ce: float = 1.0, smooth: float = 1e-5,
                 per_image: bool = False, include_background: bool = True, ignore_index: int | None = IGNORE_INDEX):
        super().__init__(ignore_index)
        self.lambda_dice = check_range("lambda_dice", lambda_dice, 0.0)
        self.lambda_ce = check_range("lambda_ce", lambda_ce, 0.0)
        self.smooth = check_range("smooth", smooth, 0.0)
        self.per_image = check_bool("per_image", per_image)
        self.include_background = check_bool("include_background", include_background)

    def compute(self, logits, t, **extra):
        tp, fp, fn = soft_counts(logits.softmax(1), t, self.per_image)
        dice = 1.0 - dice_score(tp, fp, fn, self.smooth)
        if not self.include_background:
            dice = dice[..., 1:]
        ce = F.cross_entropy(logits, t.index, ignore_index=t.torch_ignore_index)
        return self.lambda_dice * dice.mean() + self.lambda_ce * ce
