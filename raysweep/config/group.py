"""A group: one (dataset, variant, architecture, loss, replicate) of a sweep, the unit that gets a tuning quota, an
Optuna study, an early-stopping bracket and a row of its cell's ranking (:meth:`raysweep.config.SweepConfig.groups`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..vocab import cell_label


@dataclass(frozen=True)
class Group:
    """One (dataset, variant, architecture, loss, replicate) group: one Optuna study, one row of a cell's ranking."""

    dataset: str
    arch: str
    loss: str
    variant: str = ""  # "" for the dataset as it is
    replicate: int = 0  # which independent replicate of the group's pipeline (tuning.replicates)

    @classmethod
    def of(cls, tags: Mapping[str, Any]) -> "Group":
        """The group a trial's tags (:func:`raysweep.config.compose_trial`) belong to."""
        return cls(tags["dataset"], tags["arch"], tags["loss"], tags.get("variant") or "",
                   int(tags.get("replicate") or 0))

    @property
    def cell(self) -> str:
        """The (dataset, variant) as named in keys: ``synthetic`` or ``synthetic:noise1``."""
        return cell_label(self.dataset, self.variant)

    @property
    def key(self) -> str:
        """``synthetic/cnn/dice``; replicates after the first add ``/r<k>`` (so a sweep of one replicate keeps the
        keys it had before replicates existed, and resumes)."""
        return f"{self.cell}/{self.arch}/{self.loss}" + (f"/r{self.replicate}" if self.replicate else "")
