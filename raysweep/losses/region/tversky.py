"""Tversky loss (survey 2.2.6)."""

from __future__ import annotations

from .._functional import IGNORE_INDEX, tversky_index
from ..base import RegionLoss, check_range
from ..registry import Float, register
from ._space import REGION_SPACE

ALPHA_BETA = Float(0.05, 1.0)


@register(
    "tversky",
    family="region",
    title="Tversky loss",
    reference="Salehi, Erdogmus & Gholipour, 'Tversky loss function for image segmentation', MLMI 2017",
    space={"alpha": ALPHA_BETA, "beta": ALPHA_BETA, **REGION_SPACE},
)
class TverskyLoss(RegionLoss):
    """``1 - mean_c TI_c`` with ``TI_c = (TP + s) / (TP + alpha FP + beta FN + s)``.

    Args:
        alpha: weight of false positives (Salehi; MONAI and smp agree; the survey's prose swaps the names).
        beta: weight of false negatives. ``alpha = beta = 0.5`` is Dice, ``alpha = beta = 1`` is Jaccard.
        smooth, per_image, include_background, ignore_index: see :class:`~raysweep.losses.base.RegionLoss`.

    Salehi et al. released no code. On a binary foreground (``smooth=1, include_background=False``) it equals
    ``tversky_loss`` of Abraham & Khan (nabsabraham/focal-tversky-unet@347d391: 0.7 on FN, 0.3 on FP), which
    flattens all channels into one index; raysweep averages the per-class losses (the survey's eq. 14).

    Shapes: logits ``(B, C, H, W)``, target ``(B, H, W)`` int64; returns a 0-dim tensor.
    """

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, smooth: float = 1e-5, per_image: bool = False,
                 include_background: bool = True, ignore_index: int | None = IGNORE_INDEX):
        super().__init__(smooth, per_image, include_background, ignore_index)
        self.alpha = check_range("alpha", alpha, 0.0)
        self.beta = check_range("beta", beta, 0.0)
        if self.alpha + self.beta == 0:
            raise ValueError("alpha and beta cannot both be 0 (the index would be 1 for any prediction)")

    def index(self, logits, t):
        """Per-class Tversky index ``(C',)`` or ``(B, C')``."""
        tp, fp, fn = self.counts(logits, t)
        return tversky_index(tp, fp, fn, self.alpha, self.beta, self.smooth)

    def compute(self, logits, t, **extra):
        return self.reduce(1.0 - self.index(logits, t))
