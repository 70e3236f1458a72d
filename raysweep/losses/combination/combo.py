"""Combo loss (survey 2.4.1)."""

from __future__ import annotations

import torch

from .._functional import IGNORE_INDEX, dice_score, onehot, soft_counts
from ..base import SegLoss, check_bool, check_range
from ..registry import Float, register

#: Probability floor/ceiling for ``log(p)`` and ``log(1 - p)``, as in the reference implementation (1e-7).
_EPS = 1e-7


@register(
    "combo",
    family="combination",
    contains={"ce", "dice"},
    title="Combo loss",
    reference="Taghanaki et al., 'Combo loss: handling input and output imbalance in multi-organ segmentation', "
    "CMIG 2019",
    space={"alpha": Float(0.1, 0.9), "beta": Float(0.1, 0.9)},
)
class ComboLoss(SegLoss):
    """``alpha * L_mBCE(beta) + (1 - alpha) * (1 - Dice)``: a false-negative/false-positive weighted CE plus Dice.

    ``L_mBCE = -mean_{n,c} [beta t log p + (1 - beta)(1 - t) log(1 - p)]`` over valid pixels and classes, on softmax
    probabilities; ``beta > 0.5`` penalises false negatives more. ``Dice`` is the mean soft Dice over classes
    (batch-level sums, smoothing ``smooth``). The paper subtracts the Dice score; ``1 - Dice`` only shifts the value
    by the constant ``1 - alpha`` so the loss stays non-negative, with identical gradients.

    Fidelity (``tests/test_fidelity_pixel_combo.py``): the authors' Keras ``Combo_loss`` (asgsaeid/ComboLoss@86d6247,
    ``combo_loss.py``) is binary; applied to each class channel and averaged over classes it equals this loss
    (``smooth=1`` as theirs) up to the constant ``1 - alpha``, within 1e-6 -- once its CE line is fixed. As released
    it *adds* ``(1 - beta)(1 - t) log(1 - p)`` instead of subtracting it, which rewards confident false positives;
    this class follows the paper's sign. Other differences: the Dice smoothing default (1e-5 here, 1 there) and the
    ignore label (theirs has none).

    Args:
        alpha: weight of the CE term, in [0, 1].
        beta: false-negative weight inside the CE term, in [0, 1].
        smooth: Dice smoothing.
        per_image: per-image Dice (batch-level by default).
        ignore_index: label excluded from both terms.

    Shapes: logits ``(B, C, H, W)``, target ``(B, H, W)`` int64; returns a 0-dim tensor.
    """

    def __init__(self, alpha: float = 0.5, beta: float = 0.5, smooth: float = 1e-5, per_image: bool = False,
                 ignore_index: int | None = IGNORE_INDEX):
        super().__init__(ignore_index)
        self.alpha = check_range("alpha", alpha, 0.0, 1.0)
        self.beta = check_range("beta", beta, 0.0, 1.0)
        self.smooth = check_range("smooth", smooth, 0.0)
        self.per_image = check_bool("per_image", per_image)

    def compute(self, logits, t, **extra):
        probs = logits.softmax(1)
        p = probs.clamp(_EPS, 1.0 - _EPS)
        pos = onehot(t)
        neg = t.valid.unsqueeze(1).float() - pos
        bce = -(self.beta * pos * p.log() + (1.0 - self.beta) * neg * torch.log1p(-p))
        bce = bce.sum() / (t.valid.sum() * t.num_classes)
        tp, fp, fn = soft_counts(probs, t, self.per_image)
        dice = dice_score(tp, fp, fn, self.smooth).mean()
        return self.alpha * bce + (1.0 - self.alpha) * (1.0 - dice)
