"""Focal loss, softmax form (survey 2.1.3)."""

from __future__ import annotations

import torch

from .._functional import IGNORE_INDEX, masked_mean, pixel_nll
from ..base import SegLoss, as_class_vector, check_range
from ..registry import Float, register


@register(
    "focal",
    family="pixel",
    contains={"ce"},
    title="Focal loss",
    reference="Lin, Goyal, Girshick, He & Dollar, 'Focal loss for dense object detection', ICCV 2017",
    space={"gamma": Float(0.0, 5.0)},
)
class FocalLoss(SegLoss):
    """Softmax focal loss ``-alpha_t (1 - p_t)^gamma log p_t``, mean over valid pixels.

    Lin et al. define the sigmoid (one-vs-rest) form; this is the multi-class softmax form used for segmentation. On
    two classes the two coincide (``softmax(z)_1 = sigmoid(z_1 - z_0)``): this class matches FAIR's reference
    ``sigmoid_focal_loss`` (facebookresearch/fvcore@3378afe, ``fvcore/nn/focal_loss.py``) on the logit difference,
    with fvcore's scalar ``alpha`` as ``[1 - alpha, alpha]``, and the multi-class softmax focal loss of
    AdeelH/pytorch-multi-class-focal-loss@2477bf6 (ignore label included), both within 1e-6
    (``tests/test_fidelity_pixel_combo.py``).

    Args:
        gamma: focusing parameter, ``>= 0``; ``gamma=0`` is cross-entropy.
        alpha: optional per-class weights ``(C,)`` (``alpha_t`` is the weight of the pixel's true class); None means
            1 for every class. The plain mean over valid pixels is used, as in the paper (not a weighted mean).
        ignore_index: label excluded from the loss.

    Shapes: logits ``(B, C, H, W)``, target ``(B, H, W)`` int64; returns a 0-dim tensor.
    """

    def __init__(self, gamma: float = 2.0, alpha=None, ignore_index: int | None = IGNORE_INDEX):
        super().__init__(ignore_index)
        self.gamma = check_range("gamma", gamma, 0.0)
        self.register_buffer("alpha", as_class_vector("alpha", alpha), persistent=False)

    def compute(self, logits, t, **extra):
        nll = pixel_nll(logits, t)
        # 1 - p_t via expm1 keeps precision when p_t is close to 1; the floor keeps the gradient of x^gamma finite
        # for gamma < 1 at a perfectly classified pixel.
        modulator = (-torch.expm1(-nll)).clamp_min(1e-12).pow(self.gamma) if self.gamma > 0 else 1.0
        loss = modulator * nll
        if self.alpha is not None:
            loss = loss * as_class_vector("alpha", self.alpha, t.num_classes).to(logits.device)[t.labels]
        return masked_mean(loss, t.valid)
