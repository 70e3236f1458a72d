"""Unified Focal loss, asymmetric multi-class form (survey 2.4.3)."""

from __future__ import annotations

import torch

from .._functional import IGNORE_INDEX, masked_mean, pixel_nll, soft_counts, tversky_index
from ..base import SegLoss, check_bool, check_range
from ..registry import Float, register


@register(
    "unified_focal",
    family="combination",
    contains={"ce"},
    title="Unified Focal loss",
    reference="Yeung, Sala, Schonlieb & Rundo, 'Unified Focal loss: generalising Dice and cross entropy-based "
    "losses to handle class imbalanced medical image segmentation', CMIG 2022",
    space={"weight": Float(0.1, 0.9), "delta": Float(0.3, 0.9), "gamma": Float(0.1, 0.9)},
)
class UnifiedFocalLoss(SegLoss):
    """Asymmetric Unified Focal loss ``weight * L_maF + (1 - weight) * L_maFTL``, multi-class.

    Class ``background_index`` is the dominant class and every other class is "rare" (Yeung et al.'s recipe for
    more than two classes):

    * ``L_maF`` (asymmetric focal), mean over valid pixels: a background pixel costs
      ``(1 - delta) (1 - p_t)^gamma (-ln p_t)`` (focal suppression), a rare-class pixel ``delta (-ln p_t)`` (no
      suppression, so rare classes keep their full gradient).
    * ``L_maFTL`` (asymmetric focal Tversky), mean over classes: ``1 - mTI`` for the background and
      ``(1 - mTI)^(1 - gamma)`` for rare classes, with ``mTI = (TP + s) / (TP + delta FN + (1 - delta) FP + s)``.

    The authors' code (mlyg/unified-focal-loss@411c9c5, ``loss_functions.py``, ``asym_unified_focal_loss``) differs
    from the paper in where lambda goes: it weighs the focal *Tversky* part by ``weight``; this class follows the
    paper (Yeung et al., Eq. 15: ``lambda L_maF + (1 - lambda) L_maFTL``), so ``weight=w`` here is ``weight=1-w``
    there (the same at the default 0.5). Their code is binary (channel 0 background, 1 foreground), takes
    probabilities, uses per-image Tversky sums and ``smooth = 1e-7``; with ``per_image=True, smooth=1e-7`` this class
    matches it on binary inputs within 1e-6 (``tests/test_fidelity_pixel_combo.py``). The multi-class form is their
    issue #8 recipe (every non-background class rare), checked against the paper's equations in
    ``tests/test_losses_values.py``. Batch-level sums are the default here, as for the other region terms.

    Args:
        weight: lambda, the weight of the focal part (0.5 in the paper).
        delta: false-negative weight / rare-class weight (0.6).
        gamma: focal parameter in (0, 1] (0.5); ``1 - gamma`` is the rare-class Tversky exponent.
        background_index: the dominant class, or None to treat every class as rare.
        smooth: Tversky smoothing.
        per_image: per-image Tversky sums (the reference implementation's) instead of batch-level ones.
        ignore_index: label excluded from both parts.

    Shapes: logits ``(B, C, H, W)``, target ``(B, H, W)`` int64; returns a 0-dim tensor.
    """

    def __init__(self, weight: float = 0.5, delta: float = 0.6, gamma: float = 0.5, background_index: int | None = 0,
                 smooth: float = 1e-6, per_image: bool = False, ignore_index: int | None = IGNORE_INDEX):
        super().__init__(ignore_index)
        self.weight = check_range("weight", weight, 0.0, 1.0)
        self.delta = check_range("delta", delta, 0.0, 1.0)
        self.gamma = check_range("gamma", gamma, 0.0, 1.0, low_open=True)
        if background_index is not None and (not isinstance(background_index, int) or background_index < 0):
            raise ValueError(f"background_index must be a class index or None, got {background_index!r}")
        self.background_index = background_index
        self.smooth = check_range("smooth", smooth, 0.0)
        self.per_image = check_bool("per_image", per_image)

    def compute(self, logits, t, **extra):
        c = t.num_classes
        if self.background_index is not None and self.background_index >= c:
            raise ValueError(f"background_index={self.background_index} but the logits have {c} classes")
        rare = torch.ones(c, dtype=torch.bool, device=logits.device)
        if self.background_index is not None:
            rare[self.background_index] = False

        nll = pixel_nll(logits, t)
        suppress = (-torch.expm1(-nll)).clamp_min(1e-12).pow(self.gamma)
        focal_px = torch.where(rare[t.labels], self.delta * nll, (1.0 - self.delta) * suppress * nll)
        focal = masked_mean(focal_px, t.valid)

        tp, fp, fn = soft_counts(logits.softmax(1), t, self.per_image)
        mti = tversky_index(tp, fp, fn, alpha=1.0 - self.delta, beta=self.delta, smooth=self.smooth)
        base = (1.0 - mti).clamp_min(1e-7)
        ftl = torch.where(rare, base.pow(1.0 - self.gamma), base).mean()
        return self.weight * focal + (1.0 - self.weight) * ftl
