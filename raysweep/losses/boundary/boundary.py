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
)
class BoundaryLoss(SegLoss):
    """``w_R L_region + w_B L_B`` with ``L_B = mean_{n,c} p_n^c phi_c(n)``, ``phi`` the signed distance maps.

    ``L_B`` alone has a trivial minimum (predict nothing, or negative values everywhere inside); Kervadec et al.
    always pair it with a region loss (GDL) and move weight from one to the other during training. That scheme is
    part of this loss and of its search space:

    * ``rebalance`` (MedIA 2021): ``(1 - a) L_R + a L_B`` with ``a = min(alpha + epoch * alpha_step, 0.9)`` (the
      region weight keeps a floor of 0.1, as their ``StealWeight``);
    * ``increase`` (MIDL 2019): ``L_R + a L_B`` with ``a = alpha + epoch * alpha_step``;
    * ``constant``: ``L_R + alpha L_B``.

    The trainer calls :meth:`set_epoch` at the start of every epoch; the schedule starts at epoch 0. The value can be
    negative (``L_B`` is, once predictions sit inside the regions).

    Args:
        alpha: boundary weight at epoch 0 (the paper's 0.01).
        alpha_step: increase of that weight per epoch (0.01).
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
        self.region_loss = build_loss(region, ignore_index=ignore_index)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Advance the rebalancing schedule to ``epoch`` (0-based)."""
        self.epoch = int(epoch)

    def weights(self) -> tuple[float, float]:
        """``(region weight, boundary weight)`` at the current epoch."""
        a = self.alpha + self.epoch * self.alpha_step
        if self.schedule == "rebalance":
            a = min(a, 0.9)
            return 1.0 - a, a
        if self.schedule == "increase":
            return 1.0, a
        return 1.0, self.alpha

    def boundary_term(self, logits, t, dist_map=None):
        """``L_B``: mean over valid pixels and classes of ``softmax * signed distance``."""
        dist_map = resolve_dist_map(dist_map, t.index, t.num_classes, t.ignore_index)
        valid = t.valid.unsqueeze(1).float()
        return (logits.softmax(1) * dist_map * valid).sum() / (valid.sum() * t.num_classes)

    def compute(self, logits, t, dist_map=None, **extra):
        w_region, w_boundary = self.weights()
        return w_region * self.region_loss.compute(logits, t) + w_boundary * self.boundary_term(logits, t, dist_map)
