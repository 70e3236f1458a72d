"""Search spaces: a loss's ``LossSpec.space`` and its companion weight, as an Optuna define-by-run function.

Kept in an importable module (not the driver script) because Ray pickles the searchers, define-by-run functions
included, into the experiment folder; a function defined in ``__main__`` cannot be restored from another entry point
(Tune then restarts the experiment afresh in the same folder instead of resuming it).

A sampled point is a flat dict keyed by the hyperparameters' own names (``{"alpha": 0.3}``), plus
``companion_weight`` when the pairing adds a companion term. The name stays the same from the search space to the
Parquet ``params`` column and the report. Depends on the loss registry only.
"""

from __future__ import annotations

from typing import Any

from .losses import LOSSES, Categorical, Float, Int

#: The companion term of each pairing policy and the range of its weight (log-uniform).
COMPANIONS = {"ce": "ce", "dice": "dice"}
COMPANION_KEY = "companion_weight"
COMPANION_WEIGHT = Float(0.1, 10.0, log=True)
COMPANION_DEFAULT = 1.0


def companion_for(pairing: str, loss: str) -> str | None:
    """The companion loss a pairing policy adds to ``loss``, or None (none, or the loss contains it already)."""
    name = COMPANIONS.get(pairing)
    return None if name is None or name in LOSSES[loss].contains else name


class GroupSpace:
    """Define-by-run search space of one group: the loss's hyperparameters and, per the pairing, a companion weight.

    Called by Optuna with a trial; only ``suggest_*`` calls, no computation (Ray warns past 1 s).
    """

    def __init__(self, loss: str, pairing: str):
        self.loss = loss
        self.companion = companion_for(pairing, loss)
        if COMPANION_KEY in LOSSES[loss].space:
            raise ValueError(f"loss {loss!r} has a hyperparameter named {COMPANION_KEY!r}, the companion's name")

    def dims(self) -> dict[str, Float | Int | Categorical]:
        """The space's dimensions by name (the loss's, then ``companion_weight``)."""
        dims = dict(LOSSES[self.loss].space)
        if self.companion:
            dims[COMPANION_KEY] = COMPANION_WEIGHT
        return dims

    def __call__(self, trial) -> None:
        for name, dim in self.dims().items():
            if isinstance(dim, Float):
                trial.suggest_float(name, dim.low, dim.high, log=dim.log)
            elif isinstance(dim, Int):
                trial.suggest_int(name, dim.low, dim.high, log=dim.log)
            else:
                trial.suggest_categorical(name, list(dim.choices))

    def defaults(self) -> dict[str, Any]:
        """The survey's defaults as a point of this space (always evaluated first)."""
        spec = LOSSES[self.loss]
        point = {k: spec.defaults[k] for k in spec.space}
        if self.companion:
            point[COMPANION_KEY] = COMPANION_DEFAULT
        return point

    def branch_points(self, rotate: int = 0) -> list[dict[str, Any]]:
        """The stratified start-up: for every categorical dimension, each choice the defaults do not take, as the
        defaults with that one choice changed, so that every branch of the space is tried before TPE exploits
        (whether a branch is ever tried no longer depends on one random draw). ``rotate`` turns the list (a
        replicate's index): with a quota smaller than the branches, the replicates start from different ones."""
        base = self.defaults()
        points = [{**base, name: choice} for name, dim in self.dims().items() if isinstance(dim, Categorical)
                  for choice in dim.choices if choice != base[name]]
        if not points:
            return []
        k = rotate % len(points)
        return points[k:] + points[:k]

    def is_empty(self) -> bool:
        return not self.dims()

    def to_dict(self) -> dict[str, dict]:
        """The space as plain data (sweep.json's ``spaces``): ``{name: Float/Int/Categorical.to_dict()}``."""
        return {name: dim.to_dict() for name, dim in self.dims().items()}


__all__ = ["COMPANIONS", "COMPANION_DEFAULT", "COMPANION_KEY", "COMPANION_WEIGHT", "GroupSpace", "companion_for"]
