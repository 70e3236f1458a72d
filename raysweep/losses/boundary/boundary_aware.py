"""Boundary-aware loss of Hayder et al. (survey 2.3.3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._functional import IGNORE_INDEX, masked_mean
from ..base import SegLoss, check_range
from ..maps import inside_distance, min_step, resolve_dist_map
from ..registry import Float, Int, register


def distance_bins(dist_map: torch.Tensor, labels: torch.Tensor, truncation: float, num_bins: int,
                  step: float = 1.0) -> torch.Tensor:
    """Hayder's target encoding: the truncated, quantised distance of each pixel to its region's boundary.

    ``D = min(ceil(d), R)`` with ``d`` the distance to the nearest pixel of another class (1 on the inner boundary),
    split into ``K`` uniform bins over ``[1, R]``: returns int64 ``(B, *spatial)`` in ``[0, K)``. A pixel whose class
    fills the image (no boundary) is in the last bin. ``step``: the map's smallest spacing (see
    :func:`~raysweep.losses.maps.inside_distance`).
    """
    d = inside_distance(dist_map, labels, step)
    d = torch.where(d > 0, d.ceil(), torch.full_like(d, truncation)).clamp(1.0, truncation)
    return ((d - 1.0) / max(truncation - 1.0, 1e-6) * num_bins).long().clamp(0, num_bins - 1)


@register(
    "boundary_aware",
    family="boundary",
    contains={"ce"},
    title="Boundary-aware loss",
    reference="Hayder, He & Salzmann, 'Boundary-aware instance segmentation', CVPR 2017",
    space={"truncation": Float(3.0, 30.0, log=True), "num_bins": Int(3, 8), "weight": Float(0.1, 10.0, log=True)},
    needs={"aux_logits", "dist_map"},
    dims=(2, 3),
    dims_note="3-D: raysweep's extension of Hayder's 2-D encoding: the bins of the 3-D distance to the region's "
              "boundary.",
)
class BoundaryAwareLoss(SegLoss):
    """``CE(logits) + weight * mean_k BCE(aux_k, [bin == k])``: segmentation plus a truncated distance-map head.

    Hayder et al. represent each region by its truncated distance transform, quantised into ``K`` bins and predicted
    as ``K`` binary maps; the segmentation is rebuilt from it. Here the model keeps its ordinary segmentation head
    (trained with CE) and gets an auxiliary head with :attr:`aux_channels` = ``num_bins`` outputs at full resolution
    (``raysweep.models.build_model(..., aux_channels=loss.aux_channels)``), trained on the binary bin maps of
    :func:`distance_bins`. The distance supervision sharpens the features near boundaries.

    Hayder et al. released no code; ``tests/test_fidelity_boundary_b.py`` checks this loss against their equation
    computed independently (brute-force distances in NumPy). Readings of the paper, stated because they change
    values: it is written for instance masks inside a box (pixels outside the object are not encoded), while here every
    pixel belongs to the region of its class, so every pixel gets a distance; ``Q`` ("the pixels on the object
    boundary") is taken as the pixels just across the boundary, so ``D >= 1`` on the region's own boundary pixels and
    the ``K`` uniform bins span ``[1, R]``; the ``K`` binary cross-entropies are averaged rather than summed (a
    factor ``K`` absorbed by ``weight``). Ignored pixels count as "another class" for the distances and are excluded
    from both terms.

    Args:
        truncation: ``R``, the distance (pixels) beyond which all pixels share the last bin.
        num_bins: ``K``; also the number of channels of the auxiliary head.
        weight: weight of the distance-bin term.
        ignore_index: label excluded from both terms.

    Extra inputs: ``aux_logits`` (B, K, H, W), required; ``dist_map`` (B, C, H, W), computed when absent.
    Shapes: logits ``(B, C, H, W)``, target ``(B, H, W)`` int64; returns a 0-dim tensor.
    """

    def __init__(self, truncation: float = 10.0, num_bins: int = 5, weight: float = 1.0,
                 ignore_index: int | None = IGNORE_INDEX):
        super().__init__(ignore_index)
        self.truncation = check_range("truncation", truncation, 1.0, low_open=True)
        if not isinstance(num_bins, int) or isinstance(num_bins, bool) or num_bins < 2:
            raise ValueError(f"num_bins must be an int >= 2, got {num_bins!r}")
        self.num_bins = num_bins
        self.weight = check_range("weight", weight, 0.0)

    @property
    def aux_channels(self) -> int:
        """Channels of the auxiliary head the model must provide (``aux_logits``)."""
        return self.num_bins

    def compute(self, logits, t, aux_logits=None, dist_map=None, **extra):
        b, _, *spatial = logits.shape
        if aux_logits is None:
            raise ValueError(
                "boundary_aware needs aux_logits (B, num_bins, *spatial) from an auxiliary head: build the model "
                f"with raysweep.models.build_model(..., aux_channels=loss.aux_channels) (= {self.num_bins})"
            )
        if tuple(aux_logits.shape) != (b, self.num_bins, *spatial):
            raise ValueError(f"aux_logits has shape {tuple(aux_logits.shape)}, expected "
                             f"{(b, self.num_bins, *spatial)}")
        ce = F.cross_entropy(logits, t.index, ignore_index=t.torch_ignore_index)
        with torch.no_grad():
            sd = resolve_dist_map(dist_map, t.index, t.num_classes, t.ignore_index, spacing=self.map_spacing)
            step = min_step(self.map_spacing, t.labels.ndim - 1)
            bins = F.one_hot(distance_bins(sd, t.labels, self.truncation, self.num_bins, step), self.num_bins)
        bce = F.binary_cross_entropy_with_logits(aux_logits.float(), bins.movedim(-1, 1).float(),
                                                 reduction="none").mean(1)
        return ce + self.weight * masked_mean(bce, t.valid)
