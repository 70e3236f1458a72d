"""Early stopping inside a group: one ASHA bracket per (dataset, arch, loss) group, behind one Tune scheduler."""

from __future__ import annotations

from typing import Any

from ..config import Group

__all__ = ["METRIC", "GroupScheduler", "asha_rungs"]

#: The report key searchers and schedulers read: the dataset's primary metric, whatever its name.
METRIC = "score"


def _asha_base():
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler


def asha_rungs(max_t: int, grace_period: int, reduction_factor: int) -> list[int]:
    """The milestones (in reports) at which ASHA may stop a trial, ascending: ``grace_period * rf**k`` below
    ``max_t`` (Ray's ``_Bracket`` with one bracket; a trial reaching ``max_t`` has run its full budget)."""
    rungs, r = [], grace_period
    while r < max_t:
        rungs.append(r)
        r *= reduction_factor
    return rungs


class GroupScheduler(_asha_base()):
    """Early stopping inside each group: one ASHA bracket per (dataset, arch, loss) group behind one Tune scheduler.

    A single ASHA over the whole tuning Tuner would stop a trial whose score at a rung is low *relative to other
    losses' trials*, so slow-starting losses would be cut and tuned less. Here a trial competes only with earlier
    trials of its own group at the same rung; every group has the same rung schedule (``grace_period``,
    ``reduction_factor``, ``max_t``) and the same quota (the searcher's), and the first trial of a group to reach a
    rung always passes it, so every group has at least one full-budget trial unless its trials fail.

    Packed trials (``resources.pack``) are decided by :class:`raysweep.sweep.packing.PackScheduler` member by member,
    through :meth:`add`, :meth:`decide`, :meth:`complete` and :meth:`drop`: each member in its own group's bracket,
    as the trial it would be alone.
    """

    def __init__(self, max_t: int, grace_period: int, reduction_factor: int, metric: str = METRIC,
                 mode: str = "max"):
        super().__init__()
        self.asha = {"time_attr": "training_iteration", "metric": metric, "mode": mode, "max_t": max_t,
                     "grace_period": grace_period, "reduction_factor": reduction_factor, "brackets": 1,
                     "stop_last_trials": True}
        self.rungs = asha_rungs(max_t, grace_period, reduction_factor)
        self.groups: dict[str, Any] = {}  # group key -> its AsyncHyperBandScheduler
        self.group_of: dict[str, str] = {}  # trial id (a pack member's id) -> group key

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return metric in (None, self.asha["metric"]) and mode in (None, self.asha["mode"])

    # -- one trial (alone, or a member of a pack) ----------------------------------------------------------------

    def add(self, tune_controller, trial_id: str, tags: dict) -> None:
        """A trial of the group its ``tags`` name joins that group's bracket."""
        from ray.tune.schedulers import AsyncHyperBandScheduler

        key = Group.of(tags).key
        if key not in self.groups:
            self.groups[key] = AsyncHyperBandScheduler(**self.asha)
        self.group_of[trial_id] = key
        self.groups[key].on_trial_add(tune_controller, _Handle(trial_id))

    def decide(self, tune_controller, trial_id: str, result: dict) -> str:
        """ASHA's decision (``CONTINUE`` or ``STOP``) for the trial's report, in its group's bracket."""
        sub = self._sub(trial_id)
        return self.CONTINUE if sub is None else sub.on_trial_result(tune_controller, _Handle(trial_id), result)

    def complete(self, tune_controller, trial_id: str, result: dict) -> None:
        """The trial ended (its budget done, or stopped): its last result counts in its bracket, once."""
        sub = self._sub(trial_id)
        if sub is not None and trial_id in sub._trial_info:
            sub.on_trial_complete(tune_controller, _Handle(trial_id), result)
            sub._trial_info.pop(trial_id, None)

    def drop(self, trial_id: str) -> None:
        """The trial ended without a result that counts (an error, or cut short by its pack's end)."""
        sub = self._sub(trial_id)
        if sub is not None:
            sub._trial_info.pop(trial_id, None)

    def _sub(self, trial_id: str):
        key = self.group_of.get(trial_id)
        return None if key is None else self.groups[key]

    # -- Tune's interface ---------------------------------------------------------------------------------------

    def on_trial_add(self, tune_controller, trial) -> None:
        self.add(tune_controller, trial.trial_id, (trial.config or {}).get("tags") or {})

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return self.decide(tune_controller, trial.trial_id, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self.complete(tune_controller, trial.trial_id, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self.drop(trial.trial_id)

    def debug_string(self) -> str:
        return f"Early stopping inside each of {len(self.groups)} groups (ASHA, rungs {self.rungs})"


class _Handle:
    """What Ray's ASHA reads of a trial: its id (a pack member's is ``<pack trial id>-<k>``)."""

    __slots__ = ("trial_id",)

    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id
