"""Boundary loss of Kervadec et al. with its region-loss rebalancing (survey 2.3.1)."""

from __future__ import annotations

from .._functional import IGNORE_INDEX
from ..base import SegLoss, check_choice, check_range
from ..maps import resolve_dist_map
from ..registry import Categorical, Float, register

SCHEDULES = ("rebalance", "increase", "constant")


@register(
    "boundary",
    family="boundary",
    contains={"dice"},
    title="Boundary loss",
    reference="Kervadec et al., 'Boundary loss for highly unbalanced segmentation', MIDL 2019 / MedIA 2021",
    space={
        "alpha": Float(0.001, 0.1, log=True),
        "alpha_step": Float(0.001, 0.05, log=True),
        "region": Categorical(("generalized_dice", "dice")),
        "schedule": Categorical(("rebalance", "increase")),
    },
    needs={"dist_map"},
    dims=(2, 3),
    dims_note="3-D as Kervadec's code: 3-D signed distance maps.",
)
class BoundaryLoss(SegLoss):
    """``w_R L_region + w_B L_B`` with ``L_B = mean_{n,c} p_n^c phi_c(n)``, ``phi`` the signed distance maps.

    ``L_B`` alone has a trivial minimum (predict nothing, or negative values everywhere inside); Kervadec et al.
    always pair it with a region loss (GDL) and move weight from one to the other during training. That scheme is
    part of this loss and of its search space (``e`` = epoch, from 0):

    * ``rebalance`` (MedIA 2021): the authors' ``StealWeight``, ``w_R = max(0.1, 1 - e * alpha_step)`` and
      ``w_B = alpha + e * alpha_step``: the region weight stops at its floor of 0.1 (epoch 90 with the defaults) while
      the boundary weight keeps growing (1.22 at epoch 121), exactly as their scheduler does;
    * ``increase`` (MIDL 2019): their ``AddWeightLoss``, ``w_R = 1`` and ``w_B = alpha + e * alpha_step``;
    * ``constant``: ``L_R + alpha L_B``.

    As in the authors' code (LIVIAETS/boundary-loss, ``losses.py``), the region loss is per image with a 1e-10
    smoothing (``GeneralizedDice``/``DiceLoss`` there; ``per_image=True, smooth=1e-10`` here), and ``phi`` is their
    ``one_hot2dist`` (0 on the inner boundary, negative inside, zero for an absent class). Deliberate differences:
    ignored pixels take no part in either term (their code has no ignore label); a class absent from an image gets the
    largest finite GDL weight of that image instead of their ``1 / (0 + 1e-10)^2``; a class filling the whole image
    gets a zero map (SciPy's transform of an all-foreground mask measures to a virtual pixel outside the image).
    ``tests/test_fidelity_boundary_b.py`` compares the terms, the schedule and the total with their code.

    The trainer calls :meth:`set_epoch` at the start of every epoch (their ``main.py`` steps the scheduler at the end
    of every epoch from the initial weights ``(1, alpha)``: the same sequence). The value can be negative (``L_B``
    is, once predictions sit inside the regions).

    Args:
        alpha: boundary weight at epoch 0 (the paper's 0.01).
        alpha_step: weight moved per epoch (their ``to_steal``, 0.01).
        region: the region loss: ``generalized_dice`` (the paper's) or ``dice``.
        schedule: one of :data:`SCHEDULES`.
        ignore_index: label excluded from both terms.

    Extra input ``dist_map`` (B, C, H, W) from :class:`~raysweep.losses.maps.DistanceMaps`; computed from the target
    when absent. Shapes: logits ``(B, C, H, W)``, target ``(B, H, W)`` int64; returns a 0-dim tensor.
    """

    def __init__(self, alpha: float = 0.01, alpha_step: float = 0.01, region: str = "generalized_dice",
                 schedule: str = "rebalance", ignore_index: int | None = IGNORE_INDEX):
        super().__init__(ignore_index)
        from ..registry import build_loss

        self.alpha = check_range("alpha", alpha, 0.0, 1.0)
        self.alpha_step = check_range("alpha_step", alpha_step, 0.0, 1.0)
        self.region = check_choice("region", region, ("generalized_dice", "dice"))
        self.schedule = check_choice("schedule", schedule, SCHEDULES)
        # Per image, smoothing 1e-10: the authors' GeneralizedDice and DiceLoss (losses.py).
        self.region_loss = build_loss(region, smooth=1e-10, per_image=True, ignore_index=ignore_index)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Advance the rebalancing schedule to ``epoch`` (0-based)."""
        self.epoch = int(epoch)

    def weights(self) -> tuple[float, float]:
        """``(region weight, boundary weight)`` at the current epoch."""
        moved = self.epoch * self.alpha_step
        if self.schedule == "rebalance":
            # StealWeight: the region weight loses alpha_step per epoch down to 0.1; the boundary weight is uncapped.
            return max(0.1, 1.0 - moved), self.alpha + moved
        if self.schedule == "increase":
            return 1.0, self.alpha + moved
        return 1.0, self.alpha

    def boundary_term(self, logits, t, dist_map=None):
        """``L_B``: mean over valid pixels and classes of ``softmax * signed distance``."""
        dist_map = resolve_dist_map(dist_map, t.index, t.num_classes, t.ignore_index)
        valid = t.valid.unsqueeze(1).float()
        return (logits.softmax(1) * dist_map * valid).sum() / (valid.sum() * t.num_classes)

    def compute(self, logits, t, dist_map=None, **extra):
        w_region, w_boundary = self.weights()
        return w_region * self.region_loss.compute(logits, t) + w_boundary * self.boundary_term(logits, t, dist_map)
