"""Active Boundary Loss (survey 2.3.4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._functional import IGNORE_INDEX, zero_loss
from ..base import SegLoss, check_range
from ..maps import inside_distance, resolve_dist_map
from ..registry import Float, register

#: The eight neighbour offsets (dy, dx); the direction classes of the loss.
OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _shift(x: torch.Tensor, dy: int, dx: int, fill: float | None = None) -> torch.Tensor:
    """``out[..., i, j] = x[..., i + dy, j + dx]``, with the border replicated (or ``fill``)."""
    h, w = x.shape[-2:]
    if fill is None:
        padded = F.pad(x, (1, 1, 1, 1), mode="replicate") if x.ndim == 4 else \
            F.pad(x.unsqueeze(1), (1, 1, 1, 1), mode="replicate").squeeze(1)
    else:
        padded = F.pad(x, (1, 1, 1, 1), value=fill)
    return padded[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]


def neighbour_kl(log_probs: torch.Tensor) -> torch.Tensor:
    """``KL(p_n || p_{n+o})`` for the eight offsets ``o``: ``(B, C, H, W)`` log-probabilities -> ``(B, 8, H, W)``."""
    probs = log_probs.exp()
    return torch.stack(
        [(probs * (log_probs - _shift(log_probs, dy, dx))).sum(1) for dy, dx in OFFSETS], dim=1
    )


@register(
    "active_boundary",
    family="boundary",
    contains={"ce"},
    title="Active Boundary Loss",
    reference="Wang et al., 'Active boundary loss for semantic segmentation', AAAI 2022",
    space={"weight": Float(0.1, 10.0, log=True), "theta": Float(5.0, 50.0, log=True)},
    needs={"dist_map"},
)
class ActiveBoundaryLoss(SegLoss):
    """``CE + weight * L_AB``: cross-entropy plus the active boundary term that moves predicted boundaries onto the
    ground-truth ones.

    The predicted boundary is where the KL divergence between a pixel's class distribution and its right and lower
    neighbours' is large: the top ``max_boundary_ratio`` of valid pixels (never below 1e-5). For each such pixel the
    target is the neighbour direction (of 8) in which the distance to the ground-truth boundary decreases most; the
    "logits" of the 8 directions are the KL divergences to those neighbours, trained with label-smoothed
    cross-entropy and weighted by ``min(d, theta) / theta`` (``d`` the pixel's distance to the ground-truth boundary).
    Pixels already on the ground-truth boundary are skipped.

    Unlike the authors' code this is device-agnostic and never returns None: with no predicted boundary the term is 0
    with zero gradient (the loss is then the cross-entropy). The authors pair ABL with CE (and Lovász); alone it does
    not train, hence the CE term here.

    Args:
        weight: weight of the ABL term.
        theta: distance clip of the weighting (20 in the paper).
        max_boundary_ratio: largest share of pixels taken as predicted boundary (0.01).
        label_smoothing: of the direction cross-entropy (0.2).
        ignore_index: label excluded from both terms.

    Extra input ``dist_map`` (B, C, H, W): the target's signed distance maps; computed when absent.
    Shapes: logits ``(B, C, H, W)``, target ``(B, H, W)`` int64; returns a 0-dim tensor.
    """

    def __init__(self, weight: float = 1.0, theta: float = 20.0, max_boundary_ratio: float = 0.01,
                 label_smoothing: float = 0.2, ignore_index: int | None = IGNORE_INDEX):
        super().__init__(ignore_index)
        self.weight = check_range("weight", weight, 0.0)
        self.theta = check_range("theta", theta, 0.0, low_open=True)
        self.max_boundary_ratio = check_range("max_boundary_ratio", max_boundary_ratio, 0.0, 1.0, low_open=True)
        self.label_smoothing = check_range("label_smoothing", label_smoothing, 0.0, 1.0, high_open=True)

    def boundary_term(self, logits, t, dist_map=None) -> torch.Tensor:
        """``L_AB`` alone (0 with zero gradient when no boundary is predicted)."""
        log_probs = F.log_softmax(logits, 1)
        kl = neighbour_kl(log_probs)  # (B, 8, H, W)
        with torch.no_grad():
            sd = resolve_dist_map(dist_map, t.index, t.num_classes, t.ignore_index)
            dist = inside_distance(sd, t.labels).masked_fill(~t.valid, float("inf"))
            # Predicted boundary: largest KL to the right (index 4) and lower (index 6) neighbours.
            score = (kl[:, 4] + kl[:, 6]).masked_fill(~t.valid, 0.0)
            k = max(1, int(self.max_boundary_ratio * int(t.valid.sum())))
            threshold = max(float(score.flatten().topk(k).values[-1]), 1e-5)
            neighbour_dist = torch.stack([_shift(dist, dy, dx, fill=float("inf")) for dy, dx in OFFSETS], 1)
            best, direction = neighbour_dist.min(1)
            selected = (score >= threshold) & t.valid & (best < dist)
            n = int(selected.sum())
        if n == 0:
            return zero_loss(logits)
        weight = dist.clamp_max(self.theta)[selected] / self.theta
        ce = F.cross_entropy(kl.permute(0, 2, 3, 1)[selected], direction[selected],
                             label_smoothing=self.label_smoothing, reduction="none")
        return (weight * ce).sum() / n

    def compute(self, logits, t, dist_map=None, **extra):
        ce = F.cross_entropy(logits, t.index, ignore_index=t.torch_ignore_index)
        return ce + self.weight * self.boundary_term(logits, t, dist_map)
