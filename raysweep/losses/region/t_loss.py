"""Robust T-loss (survey 2.2.10)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .._functional import IGNORE_INDEX, onehot
from ..base import SegLoss, check_range
from ..registry import Float, register


@register(
    "t_loss",
    family="region",
    title="Robust T-loss",
    reference="Gonzalez-Jimenez et al., 'Robust T-loss for medical image segmentation', MICCAI 2023",
    space={"nu": Float(0.1, 10.0, log=True)},
    has_parameters=True,
)
class TLoss(SegLoss):
    """Negative log-likelihood of the residual ``softmax - onehot`` under a multivariate Student-t, per pixel mean.

    For an image with ``D = C x (valid pixels)`` residuals ``delta`` and identity scale, the Student-t NLL is
    ``-lnG((nu + D)/2) + lnG(nu/2) + (D/2) ln(pi nu) + ((nu + D)/2) ln(1 + |delta|^2 / nu)``; the loss is its mean
    over images of ``NLL / D``. Small ``nu`` is heavy-tailed (robust to label noise); ``nu -> inf`` tends to the
    Gaussian (MSE). The original is binary (foreground probability only); here every class's residual counts.

    Equals the authors' ``TLoss`` (Digital-Dermatology/t-loss@f132e87) fed the C residual maps of an image stacked
    into one map, with their constant log-precisions ``lambdas`` set to 0, divided by ``D``. Deliberate differences:
    ``Sigma = I`` as in the paper (their code fixes ``lambdas = 1``, i.e. ``Sigma = e^-1 I``); every class's residual
    (theirs is binary, foreground only); the per-element scale ``NLL / D`` (theirs grows with the image size), with
    ``D`` counting valid pixels (theirs is fixed at ``image_size^2``).

    **nu is learned**: it is the ``nn.Parameter`` ``log_nu`` of this module (``nu = exp(log_nu) + epsilon``), so the
    optimiser must include the loss's parameters, e.g. ``AdamW([*model.parameters(), *loss.parameters()])``.

    Args:
        nu: initial degrees of freedom ``> 0`` (the authors start at ``e``: their raw parameter starts at 1).
        epsilon: added to nu for numerical safety.
        ignore_index: ignored pixels contribute no residual and do not count in ``D``.

    Shapes: logits ``(B, C, H, W)``, target ``(B, H, W)`` int64; returns a 0-dim tensor.
    """

    def __init__(self, nu: float = 1.0, epsilon: float = 1e-8, ignore_index: int | None = IGNORE_INDEX):
        super().__init__(ignore_index)
        nu = check_range("nu", nu, 0.0, low_open=True)
        self.epsilon = check_range("epsilon", epsilon, 0.0)
        self.log_nu = nn.Parameter(torch.tensor(math.log(nu), dtype=torch.float32))

    @property
    def nu(self) -> float:
        """The current degrees of freedom."""
        return float(self.log_nu.detach().exp()) + self.epsilon

    def compute(self, logits, t, **extra):
        valid = t.valid.unsqueeze(1).float()
        sq = ((logits.softmax(1) * valid - onehot(t)).square().flatten(1).sum(1)).double()  # (B,), 0 where ignored
        d = (t.valid.flatten(1).sum(1) * t.num_classes).double()
        nu = self.log_nu.double().exp() + self.epsilon
        nll = (
            -torch.lgamma((nu + d) / 2)
            + torch.lgamma(nu / 2)
            + d / 2 * torch.log(math.pi * nu)
            + (nu + d) / 2 * torch.log1p(sq / nu)
        )
        has = d > 0
        per_image = torch.where(has, nll / d.clamp_min(1.0), torch.zeros_like(nll))
        return (per_image.sum() / has.sum().clamp_min(1)).float()
