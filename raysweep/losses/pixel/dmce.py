"""Distance-map-derived cross-entropy (survey 2.1.4)."""

from __future__ import annotations

import torch

from .._functional import IGNORE_INDEX, masked_mean, pixel_nll
from ..base import SegLoss, check_range
from ..maps import inside_distance, min_step, resolve_dist_map
from ..registry import Float, register


@register(
    "dmce",
    family="pixel",
    contains={"ce"},
    title="Distance-map-derived cross-entropy",
    reference="Caliva, Iriondo, Martinez, Majumdar & Pedoia, 'Distance map loss penalty term for semantic "
    "segmentation', MIDL 2019",
    space={"decay": Float(0.5, 20.0, log=True), "weight": Float(0.5, 10.0, log=True)},
    needs={"dist_map"},
    dims=(2, 3),
    dims_note="3-D: the weights from the 3-D distance to the region's boundary.",
)
class DistanceMapCrossEntropyLoss(SegLoss):
    """``mean_n (1 + weight * Phi_n) CE_n``: cross-entropy weighted up near the boundaries of the ground truth.

    ``Phi_n = exp(-(d_n - 1) / decay)`` where ``d_n`` is the distance of pixel ``n`` to the nearest pixel of another
    class (1 on a region's inner boundary, growing inwards): the inverted, decaying distance map of Calivá et al., so
    boundary pixels weigh ``1 + weight`` and pixels deep inside a region weigh 1 (the ``+1`` keeps their gradient).
    A class filling the whole image has no boundary: its pixels weigh 1. No code was released with the paper; the
    value is checked against the equation computed independently (brute-force distances) in
    ``tests/test_fidelity_pixel_combo.py``. The exponential decay form of ``Phi`` is raysweep's choice (the paper
    inverts and normalises the distance map; the survey names its decay the key hyperparameter).

    Args:
        decay: decay length of the weighting, in pixels (or spacing units) -- the survey's key hyperparameter.
        weight: the extra weight at the boundary (the paper's 1).
        ignore_index: label excluded from the loss.

    Extra input ``dist_map`` (B, C, H, W): the signed distance maps of :mod:`raysweep.losses.maps`; computed from the
    target when absent. Shapes: logits ``(B, C, H, W)``, target ``(B, H, W)`` int64; returns a 0-dim tensor.
    """

    def __init__(self, decay: float = 3.0, weight: float = 1.0, ignore_index: int | None = IGNORE_INDEX):
        super().__init__(ignore_index)
        self.decay = check_range("decay", decay, 0.0, low_open=True)
        self.weight = check_range("weight", weight, 0.0)

    def compute(self, logits, t, dist_map=None, **extra):
        dist_map = resolve_dist_map(dist_map, t.index, t.num_classes, t.ignore_index, spacing=self.map_spacing)
        d = inside_distance(dist_map, t.labels, min_step(self.map_spacing, t.labels.ndim - 1))
        phi = torch.where(d > 0, torch.exp(-(d - 1.0).clamp_min(0) / self.decay), torch.zeros_like(d))
        return masked_mean((1.0 + self.weight * phi) * pixel_nll(logits, t), t.valid)
