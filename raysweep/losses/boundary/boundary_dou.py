"""Boundary difference over union loss (survey 2.3.7)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._functional import IGNORE_INDEX, onehot
from ..base import SegLoss, check_range
from ..registry import Float, register


def inner_boundary(onehot_target: torch.Tensor, width: int = 1) -> torch.Tensor:
    """The outermost ``width`` pixels of each class region, ``(B, C, H, W)`` or ``(B, C, D, H, W)`` float, by
    cross-kernel erosion (the 4 face neighbours in 2-D, the 6 in 3-D).

    As in the authors' code (a zero-padded convolution), the image border counts as outside; in 3-D the first and
    last slices are border too (the zero-padded ``Conv3d`` of the same kernel).
    """
    eroded = onehot_target
    spatial = onehot_target.ndim - 2
    for _ in range(width):
        # A pixel survives erosion when it and its face neighbours are all inside (a minimum over the cross).
        padded = F.pad(eroded, (1, 1) * spatial, value=0.0)
        centre = (Ellipsis, *[slice(1, -1)] * spatial)
        shifted = [padded[centre]]
        for axis in range(spatial):
            for lo, hi in ((None, -2), (2, None)):
                index = [slice(1, -1)] * spatial
                index[axis] = slice(lo, hi)
                shifted.append(padded[(Ellipsis, *index)])
        eroded = torch.stack(shifted).amin(0)
    return onehot_target - eroded


@register(
    "boundary_dou",
    family="boundary",
    title="Boundary difference over union loss",
    reference="Sun et al., 'Boundary difference over union loss for medical image segmentation', MICCAI 2023",
    space={"alpha_max": Float(0.5, 0.95)},
    dims=(2, 3),
    dims_note="3-D: the authors' zero-padded cross erosion with the 6 face neighbours; the first and last slices "
              "are border, so a one-slice volume is all boundary and does not reproduce the 2-D loss.",
)
class BoundaryDoULoss(SegLoss):
    """``mean_c (|G u P| - |G n P|) / (|G u P| - alpha_c |G n P|)`` on softmax probabilities, batch-level.

    Soft sets as in the authors' code: ``|G n P| = sum p t``, ``|G u P| = sum p^2 + sum t^2 - sum p t``.
    ``alpha_c = 1 - 2 C_c / S_c`` from the boundary length ``C_c`` (pixels of the ``width``-pixel inner boundary) and
    the area ``S_c`` of class ``c`` in the batch, capped at ``alpha_max``: near 1 for large compact objects (the loss
    then focuses on the boundary), lower for small or thin ones.

    This is the authors' ``BoundaryDoULoss`` (sunfan-bvb/BoundaryDoULoss, ``TransUNet/utils.py``): same soft sets,
    same cross-kernel boundary count with a zero-padded border, same ``alpha`` cap and smoothing, batch-level sums, mean
    over all classes with background; ``tests/test_fidelity_boundary_b.py`` records their values. Deliberate
    differences:

    * a class absent from the target is not their constant 1 with zero gradient (``(z + s) / (z + s)``): its loss is
      ``sum p^2 / (sum p^2 + 1)``, so false positives on it are still pushed down (the fidelity test checks that the
      two differ by exactly that, on a batch with one class removed);
    * ignored pixels take no part in any sum (their code has no ignore label; the probabilities of a 255 pixel would
      count in ``sum p^2``).

    Args:
        alpha_max: cap of ``alpha`` (the authors' 0.8).
        width: boundary width in pixels (the authors' 1).
        smooth: added to numerator and denominator (1e-5).
        ignore_index: label excluded from every sum.

    Shapes: logits ``(B, C, H, W)``, target ``(B, H, W)`` int64; returns a 0-dim tensor.
    """

    def __init__(self, alpha_max: float = 0.8, width: int = 1, smooth: float = 1e-5,
                 ignore_index: int | None = IGNORE_INDEX):
        super().__init__(ignore_index)
        self.alpha_max = check_range("alpha_max", alpha_max, 0.0, 1.0, high_open=True)
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise ValueError(f"width must be a positive int, got {width!r}")
        self.width = width
        self.smooth = check_range("smooth", smooth, 0.0)

    def compute(self, logits, t, **extra):
        valid = t.valid.unsqueeze(1).float()
        target = onehot(t)
        probs = logits.softmax(1) * valid
        dims = (0, *range(2, logits.ndim))
        with torch.no_grad():
            area = target.sum(dims)
            perimeter = inner_boundary(target, self.width).sum(dims)
            alpha = (1.0 - 2.0 * (perimeter + self.smooth) / (area + self.smooth)).clamp_max(self.alpha_max)
        inter = (probs * target).sum(dims)
        z = probs.square().sum(dims)
        union = z + area - inter
        present = (union - inter + self.smooth) / (union - alpha * inter + self.smooth)
        absent = z / (z + 1.0)
        return torch.where(area > 0, present, absent).mean()
