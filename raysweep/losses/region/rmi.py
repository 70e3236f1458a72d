"""Region Mutual Information loss (survey 2.2.9)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._functional import IGNORE_INDEX, onehot, pixel_nll, masked_mean
from ..base import SegLoss, check_range
from ..registry import Categorical, Float, register

#: Added to the diagonals of the *unnormalised* (scatter) matrices, as the original's ``_POS_ALPHA``, so that the
#: inverse and the log-determinant are always defined. Added after dividing by the number of points it would
#: regularise n times more strongly (an earlier raysweep did that: the term moved by 1.6 % at 22x22 points).
_JITTER = 5e-4
#: Added to the masked probabilities, as in the original, so that all-zero neighbourhoods keep a defined covariance.
_CLIP_MIN = 1e-6


def _log_det_pd(a: torch.Tensor) -> torch.Tensor:
    """``log det`` of symmetric positive-definite matrices ``(..., d, d)`` through Cholesky; never raises.

    If Cholesky fails on a matrix (round-off can make a near-singular matrix indefinite), more jitter is added to
    that matrix until it succeeds.
    """
    a = 0.5 * (a + a.transpose(-1, -2))
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    jitter = 0.0
    for _ in range(8):
        chol, info = torch.linalg.cholesky_ex(a + jitter * eye)
        if not bool((info > 0).any()):
            return 2.0 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        jitter = _JITTER if jitter == 0.0 else jitter * 10.0
    # Last resort: eigenvalues floored at the jitter (only reached on pathological input).
    return torch.linalg.eigvalsh(a).clamp_min(_JITTER).log().sum(-1)


def _neighbourhoods(x: torch.Tensor, radius: int | tuple[int, ...]) -> torch.Tensor:
    """``(B, C, *spatial)`` -> ``(B, C, d, n)``: every position's ``radius``-sided neighbourhood as a ``d``-vector.

    2-D with one radius: ``F.unfold``, the authors' layout. Otherwise one ``Tensor.unfold`` per axis (``radius`` per
    axis); the order of the ``d`` coordinates differs from ``F.unfold``'s, which leaves every log-determinant as is.
    """
    b, c = x.shape[:2]
    if x.ndim == 4 and isinstance(radius, int):
        return F.unfold(x, radius).view(b, c, radius * radius, -1)
    radii = (radius,) * (x.ndim - 2) if isinstance(radius, int) else radius
    for axis, r in enumerate(radii):
        x = x.unfold(2 + axis, r, 1)  # (B, C, *windows, r_0, ..., r_axis)
    k = len(radii)
    x = x.flatten(-k)  # (B, C, *windows, d)
    return x.movedim(-1, 2).flatten(3)


def rmi_lower_bound(onehot: torch.Tensor, probs: torch.Tensor, radius: int | tuple[int, ...]) -> torch.Tensor:
    """Per-class RMI loss term ``0.5 log det(Sigma_{Y|P}) / d`` for maps ``(B, C, H, W)`` or ``(B, C, D, H, W)`` ->
    ``(B, C)`` float64.

    Each pixel and its ``radius x radius`` neighbourhood form a ``d = radius^2``-dimensional point (in 3-D, the
    ``radius^3`` neighbourhood, or one side per axis when ``radius`` is a tuple: ``d`` is their product). With the
    covariances of label points ``Y`` and prediction points ``P``, ``Sigma_{Y|P} = Sigma_Y - Sigma_YP Sigma_P^-1
    Sigma_YP^T`` is the posterior covariance of ``Y`` given ``P``; minimising its log-determinant maximises a lower
    bound of the mutual information ``I(Y; P)`` (Zhao et al., eq. 13).

    As in the authors' code (ZJULearning/RMI ``rmi_lower_bound``), the covariances are *not* divided by the number of
    points ``n`` and the jitter goes on the unnormalised matrices. The value therefore carries ``0.5 log n`` per class
    (a constant for a given input size, with no effect on the gradient) and is usually positive.
    """
    y = _neighbourhoods(onehot, radius).double()
    p = _neighbourhoods(probs, radius).double()
    d = y.shape[2]
    y = y - y.mean(-1, keepdim=True)
    p = p - p.mean(-1, keepdim=True)
    eye = torch.eye(d, dtype=torch.float64, device=probs.device)
    # Scatter matrices (n times the covariances), as the original: the jitter's strength relative to the data
    # depends on this choice, and the original's 5e-4 is meant for unnormalised ones.
    cov_y = y @ y.transpose(-1, -2)
    cov_p = p @ p.transpose(-1, -2) + _JITTER * eye
    cov_yp = y @ p.transpose(-1, -2)
    chol_p = torch.linalg.cholesky_ex(0.5 * (cov_p + cov_p.transpose(-1, -2)))[0]
    # Sigma_YP Sigma_P^-1 Sigma_YP^T through a Cholesky solve rather than an explicit inverse.
    explained = cov_yp @ torch.cholesky_solve(cov_yp.transpose(-1, -2), chol_p)
    posterior = cov_y - explained + _JITTER * eye
    return 0.5 * _log_det_pd(posterior) / d


@register(
    "rmi",
    family="region",
    contains={"ce"},
    title="Region Mutual Information loss",
    reference="Zhao, Wang, Chen & Cai, 'Region mutual information loss for semantic segmentation', NeurIPS 2019",
    space={
        "weight_ce": Float(0.1, 0.9),
        "radius": Categorical((2, 3)),
        "pool_size": Categorical((1, 2, 3, 4)),
    },
    dims=(2, 3),
    dims_note="3-D: raysweep's extension of the authors' 2-D code: radius^3 neighbourhoods (27-dimensional points "
              "at radius 3), axes pooled where long enough; a one-slice volume reproduces the 2-D loss.",
)
class RMILoss(SegLoss):
    """``weight_ce * CE + (1 - weight_ce) * sum_c mean_b RMI_bc``: cross-entropy plus the region mutual information.

    The RMI term equals the authors' ``RMILoss.rmi_lower_bound`` (ZJULearning/RMI@10a40cd: max-pool with padding
    ``pool_size // 2``, unnormalised covariances with the 5e-4 jitter, ``/ d``, mean over images, *sum* over classes)
    when fed the same probabilities. Deliberate difference: the original pairs RMI with a per-class sigmoid BCE and
    computes RMI on sigmoid probabilities; raysweep's losses are softmax-based, so RMI is computed on softmax
    probabilities and paired with the softmax cross-entropy. Only the term's decrease matters (it carries a constant
    ``0.5 log n`` per class, see :func:`rmi_lower_bound`).

    Args:
        weight_ce: weight of the cross-entropy term, in [0, 1] (the original's lambda, 0.5).
        radius: neighbourhood side (3 means 3x3, 9-dimensional points).
        pool_size: max-pooling kernel and stride (padding ``pool_size // 2``) applied to labels and probabilities
            before the RMI term (the original's downsampling, 3); 1 disables it. It keeps the cost small at high
            resolution. Skipped when the image is smaller than ``pool_size * radius`` (the original always pools).
        ignore_index: ignored pixels are excluded from the CE; in the RMI term their labels are 0 and their
            probabilities the 1e-6 floor (as the original's ``labels < num_classes`` mask).

    Computed in float64 on any device; the log-determinant never fails (Cholesky with adaptive jitter).
    Shapes: logits ``(B, C, H, W)``, target ``(B, H, W)`` int64; returns a 0-dim tensor.
    """

    def __init__(self, weight_ce: float = 0.5, radius: int = 3, pool_size: int = 3,
                 ignore_index: int | None = IGNORE_INDEX):
        super().__init__(ignore_index)
        self.weight_ce = check_range("weight_ce", weight_ce, 0.0, 1.0)
        if not isinstance(radius, int) or isinstance(radius, bool) or radius < 1:
            raise ValueError(f"radius must be a positive int, got {radius!r}")
        if not isinstance(pool_size, int) or isinstance(pool_size, bool) or pool_size < 1:
            raise ValueError(f"pool_size must be a positive int, got {pool_size!r}")
        self.radius, self.pool_size = radius, pool_size

    def compute(self, logits, t, **extra):
        ce = masked_mean(pixel_nll(logits, t), t.valid)
        valid = t.valid.unsqueeze(1).float()
        labels, probs = onehot(t), logits.softmax(1) * valid + _CLIP_MIN
        if logits.ndim == 5:
            labels, probs, radius = self._pool_3d(labels, probs)
        else:
            if self.pool_size > 1 and min(logits.shape[-2:]) >= self.pool_size * self.radius:
                pad = self.pool_size // 2  # the original pads (11x11, not 10x10, from 32x32 with size 3)
                labels = F.max_pool2d(labels, self.pool_size, self.pool_size, padding=pad)
                probs = F.max_pool2d(probs, self.pool_size, self.pool_size, padding=pad)
            radius = min(self.radius, *probs.shape[-2:])
        # Mean over images, sum over classes: the original's reduction (_IS_SUM = 1).
        rmi = rmi_lower_bound(labels, probs, radius).mean(0).sum().float()
        return self.weight_ce * ce + (1.0 - self.weight_ce) * rmi

    def _pool_3d(self, labels: torch.Tensor, probs: torch.Tensor):
        """The 3-D form, axis by axis: an axis at least ``pool_size * radius`` long is max-pooled (kernel and stride
        ``pool_size``, padding ``pool_size // 2``), the others are not; the neighbourhood side is ``min(radius,
        size)`` per axis. A volume of one slice is thus exactly the 2-D loss of that slice."""
        sizes = probs.shape[2:]
        kernel = tuple(self.pool_size if n >= self.pool_size * self.radius else 1 for n in sizes)
        if max(kernel) > 1:
            pad = tuple(k // 2 for k in kernel)
            labels = F.max_pool3d(labels, kernel, kernel, padding=pad)
            probs = F.max_pool3d(probs, kernel, kernel, padding=pad)
        return labels, probs, tuple(min(self.radius, n) for n in probs.shape[2:])
