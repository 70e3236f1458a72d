"""Sensitivity-specificity loss (survey 2.2.8)."""

from __future__ import annotations

from .._functional import IGNORE_INDEX, drop_background, onehot, sum_dims
from ..base import RegionLoss, check_range
from ..registry import Float, register
from ._space import REGION_SPACE


@register(
    "sens_spec",
    family="region",
    title="Sensitivity-specificity loss",
    reference="Brosch et al., 'Deep convolutional encoder networks for multiple sclerosis lesion segmentation', "
    "MICCAI 2015",
    space={"r": Float(0.01, 0.99, log=True), **REGION_SPACE},
)
class SensitivitySpecificityLoss(RegionLoss):
    """``mean_c [ r * sens_err_c + (1 - r) * spec_err_c ]`` with squared errors ``(t - p)^2``.

    ``sens_err_c = sum t (t - p)^2 / (sum t + s)`` (error on the class's pixels) and
    ``spec_err_c = sum (1 - t)(t - p)^2 / (sum (1 - t) + s)`` (error on the other pixels).

    Args:
        r: weight of the sensitivity term, in [0, 1]. Brosch et al. use a small r (0.05) because the specificity
            term is a mean over the huge background and would otherwise be negligible; SegLossOdyssey uses 0.1.
        smooth, per_image, include_background, ignore_index: see :class:`~raysweep.losses.base.RegionLoss`.

    Brosch et al. released no code. With ``per_image=True`` it equals NiftyNet's ``sensitivity_specificity_loss``
    (NifTK/NiftyNet@935bf43, per image, ``epsilon`` 1e-5 as ``smooth``) divided by ``C``: NiftyNet sums over
    classes, raysweep averages (the survey's ``1/C``) so the scale does not grow with the number of classes.
    (NiftyNet names the two parts the other way round; the arithmetic is the same.)

    Shapes: logits ``(B, C, H, W)``, target ``(B, H, W)`` int64; returns a 0-dim tensor.
    """

    def __init__(self, r: float = 0.05, smooth: float = 1e-5, per_image: bool = False,
                 include_background: bool = True, ignore_index: int | None = IGNORE_INDEX):
        super().__init__(smooth, per_image, include_background, ignore_index)
        self.r = check_range("r", r, 0.0, 1.0)

    def compute(self, logits, t, **extra):
        dims = sum_dims(self.per_image, logits.ndim)
        valid = t.valid.unsqueeze(1).float()
        pos = onehot(t)
        sq_err = (pos - logits.softmax(1) * valid).square()  # zero on ignored pixels: both are masked
        neg = valid - pos  # (1 - t) on valid pixels
        sens = (sq_err * pos).sum(dims) / (pos.sum(dims) + self.smooth)
        spec = (sq_err * neg).sum(dims) / (neg.sum(dims) + self.smooth)
        per_class = self.r * sens + (1.0 - self.r) * spec
        return self.reduce(drop_background(per_class, self.include_background))
