"""Exponential logarithmic loss (survey 2.4.2)."""

from __future__ import annotations

from .._functional import IGNORE_INDEX, class_frequencies, dice_score, masked_mean, pixel_nll, soft_counts
from ..base import SegLoss, as_class_vector, check_range
from ..registry import Float, register

_GAMMA = Float(0.1, 2.0, log=True)


@register(
    "exp_log",
    family="combination",
    contains={"ce", "dice"},
    title="Exponential logarithmic loss",
    reference="Wong, Moradi, Tang & Syeda-Mahmood, '3D segmentation with exponential logarithmic loss for highly "
    "unbalanced object sizes', MICCAI 2018",
    space={"weight_dice": Float(0.1, 0.9), "gamma_dice": _GAMMA, "gamma_ce": _GAMMA},
)
class ExpLogLoss(SegLoss):
    """``w_dice * mean_c (-ln Dice_c)^gamma_dice + (1 - w_dice) * mean_n w_{t_n} (-ln p_{t_n})^gamma_ce``.

    As in Wong et al., the exponent of the CE part applies per pixel (SegLossOdyssey omits it) and the class weights
    are ``w_l = (sum_k f_k / f_l)^0.5`` from class pixel frequencies ``f``. ``gamma < 1`` focuses on the
    less accurately segmented classes and pixels. No code was released with the paper; the value is checked against
    Wong et al.'s Eqs. 1-4 computed independently in ``tests/test_fidelity_pixel_combo.py``. The Dice sums run over
    the whole batch (the batch is one "volume"), and ``f`` defaults to the batch's counts (the paper uses the
    training set's: pass ``class_frequencies``).

    Args:
        weight_dice: weight of the Dice part (Wong: 0.8); the CE part gets ``1 - weight_dice``.
        gamma_dice, gamma_ce: exponents (Wong: 0.3 both).
        smooth: Dice smoothing (Wong: 1).
        class_frequencies: training-set pixel counts ``(C,)`` for the weights; None uses the batch's counts.
        ignore_index: label excluded from both parts.

    Shapes: logits ``(B, C, H, W)``, target ``(B, H, W)`` int64; returns a 0-dim tensor.
    """

    def __init__(self, weight_dice: float = 0.8, gamma_dice: float = 0.3, gamma_ce: float = 0.3, smooth: float = 1.0,
                 class_frequencies=None, ignore_index: int | None = IGNORE_INDEX):
        super().__init__(ignore_index)
        self.weight_dice = check_range("weight_dice", weight_dice, 0.0, 1.0)
        self.gamma_dice = check_range("gamma_dice", gamma_dice, 0.0, low_open=True)
        self.gamma_ce = check_range("gamma_ce", gamma_ce, 0.0, low_open=True)
        self.smooth = check_range("smooth", smooth, 0.0)
        self.register_buffer("class_frequencies", as_class_vector("class_frequencies", class_frequencies),
                             persistent=False)

    def compute(self, logits, t, **extra):
        c = t.num_classes
        tp, fp, fn = soft_counts(logits.softmax(1), t, per_image=False)
        # The floors keep x^gamma differentiable (gamma < 1) at a perfect score.
        neg_log_dice = -dice_score(tp, fp, fn, self.smooth).clamp(1e-6, 1.0).log()
        dice_part = neg_log_dice.clamp_min(1e-6).pow(self.gamma_dice).mean()
        if self.class_frequencies is not None:
            freq = as_class_vector("class_frequencies", self.class_frequencies, c).to(logits.device)
        else:
            freq = class_frequencies(t.labels, t.valid, c)
        w = (freq.sum() / freq.clamp_min(1.0)).sqrt()
        nll = pixel_nll(logits, t)
        ce_part = masked_mean(w[t.labels] * nll.clamp_min(1e-6).pow(self.gamma_ce), t.valid)
        return self.weight_dice * dice_part + (1.0 - self.weight_dice) * ce_part
