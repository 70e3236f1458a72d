"""Focal Tversky loss (survey 2.2.7)."""

from __future__ import annotations

from .._functional import IGNORE_INDEX
from ..base import check_range
from ..registry import Float, register
from ._space import REGION_SPACE
from .tversky import ALPHA_BETA, TverskyLoss


@register(
    "focal_tversky",
    family="region",
    title="Focal Tversky loss",
    reference="Abraham & Khan, 'A novel focal Tversky loss function with improved attention U-Net for lesion "
    "segmentation', ISBI 2019",
    space={"gamma": Float(1.0, 3.0), "alpha": ALPHA_BETA, "beta": ALPHA_BETA, **REGION_SPACE},
)
class FocalTverskyLoss(TverskyLoss):
    """``mean_c (1 - TI_c)^(1/gamma)``, the per-class form of Abraham & Khan (exponent ``1/gamma``, gamma = 4/3).

    ``gamma = 1`` is the Tversky loss; ``gamma > 1`` raises the loss of classes that are already well segmented
    less than that of hard ones. Other peers differ: smp applies the power after the class mean, the Unified Focal
    paper writes ``(1 - TI)^(1 - gamma)``.

    Equals the authors' ``focal_tversky`` (nabsabraham/focal-tversky-unet@347d391, exponent 0.75) on a binary
    foreground with ``smooth=1, include_background=False``. Their code flattens all channels into one index;
    raysweep follows the paper's per-class sum, as a mean over classes.

    Args:
        gamma: focal parameter, ``> 0`` (the survey recommends [1, 3]).
        alpha, beta: false-positive and false-negative weights, as in :class:`TverskyLoss`.
        smooth, per_image, include_background, ignore_index: see :class:`~raysweep.losses.base.RegionLoss`.

    Shapes: logits ``(B, C, H, W)``, target ``(B, H, W)`` int64; returns a 0-dim tensor.
    """

    def __init__(self, gamma: float = 4.0 / 3.0, alpha: float = 0.3, beta: float = 0.7, smooth: float = 1e-5,
                 per_image: bool = False, include_background: bool = True, ignore_index: int | None = IGNORE_INDEX):
        super().__init__(alpha, beta, smooth, per_image, include_background, ignore_index)
        self.gamma = check_range("gamma", gamma, 0.0, low_open=True)

    def compute(self, logits, t, **extra):
        # The floor keeps the gradient of x^(1/gamma) finite when a class is perfectly segmented (x = 0).
        base = (1.0 - self.index(logits, t)).clamp_min(1e-7)
        return self.reduce(base.pow(1.0 / self.gamma))
