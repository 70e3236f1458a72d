"""Early stopping inside a group: one ASHA bracket per (dataset, arch, loss) group, behind one Tune scheduler."""

from __future__ import annotations

from typing import Any

from ..config import Group
from .packing import PackReport, is_pack, publish_decision, trial_members

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

    A packed trial (``resources.pack``) is decided member by member, each in its own group's bracket as if it ran
    alone (:class:`~raysweep.sweep.packing.PackReport`); each round's decision goes to the pack through the stop
    channel (``stops``, the actor's name), and the pack is stopped as a whole once no member is left.
    """

    def __init__(self, max_t: int, grace_period: int, reduction_factor: int, metric: str = METRIC,
                 mode: str = "max", stops: str | None = None):
        super().__init__()
        self.asha = {"time_attr": "training_iteration", "metric": metric, "mode": mode, "max_t": max_t,
                     "grace_period": grace_period, "reduction_factor": reduction_factor, "brackets": 1,
                     "stop_last_trials": True}
        self.rungs = asha_rungs(max_t, grace_period, reduction_factor)
        self.groups: dict[str, Any] = {}  # group key -> its AsyncHyperBandScheduler
        self.group_of: dict[str, str] = {}  # trial id (a pack's: member id) -> group key
        self.live: dict[str, dict[int, str]] = {}  # pack trial id -> its members still training: index -> member id
        self.stops = stops  # the PackStops actor's name
        self._channel = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_channel"] = None  # an actor handle is this driver session's
        return state

    def _publish(self, trial_id: str, round_id: str, stopped: list[int]) -> None:
        if self.stops is None:
            return
        if self._channel is None:
            import ray

            self._channel = ray.get_actor(self.stops)
        publish_decision(self._channel, trial_id, round_id, stopped)

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return metric in (None, self.asha["metric"]) and mode in (None, self.asha["mode"])

    def _sub(self, trial_id: str):
        key = self.group_of.get(trial_id)
        return None if key is None else self.groups[key]

    def on_trial_add(self, tune_controller, trial) -> None:
        from ray.tune.schedulers import AsyncHyperBandScheduler

        members = trial_members(trial)
        for trial_id, tags in members:
            key = Group.of(tags).key
            if key not in self.groups:
                self.groups[key] = AsyncHyperBandScheduler(**self.asha)
            self.group_of[trial_id] = key
            self.groups[key].on_trial_add(tune_controller, _Handle(trial_id))
        if is_pack(trial.config):
            self.live[trial.trial_id] = {k: trial_id for k, (trial_id, _) in enumerate(members)}

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if is_pack(trial.config):
            if trial.trial_id not in self.live:  # a pack this scheduler was not told of (a restored experiment)
                self.on_trial_add(tune_controller, trial)
            return self._pack_result(tune_controller, trial, result)
        sub = self._sub(trial.trial_id)
        return self.CONTINUE if sub is None else sub.on_trial_result(tune_controller, _Handle(trial.trial_id), result)

    def _pack_result(self, tune_controller, trial, result: dict) -> str:
        """Each live member's report decided in its own bracket; a member that ended on its own completes there."""
        live = self.live[trial.trial_id]
        stopped = []
        pack = PackReport.of(result) or PackReport({})
        for k, _, report in pack.members(trial.trial_id):
            trial_id = live.get(k)
            if trial_id is None:
                continue
            sub = self._sub(trial_id)
            if report.get("status") == "running":
                if sub.on_trial_result(tune_controller, _Handle(trial_id), report) == self.STOP:
                    stopped.append(k)
                    self._complete(tune_controller, trial_id, report)
                    del live[k]
            else:  # ended on its own: as a trial that ends (completed, diverged, oom) or raises (error)
                if report.get("status") == "error":
                    self._drop(trial_id)
                else:
                    self._complete(tune_controller, trial_id, report)
                del live[k]
        if pack.round is not None:
            self._publish(trial.trial_id, pack.round, stopped)
        return self.CONTINUE if live else self.STOP

    def _complete(self, tune_controller, trial_id: str, result: dict) -> None:
        sub = self._sub(trial_id)
        if sub is not None and trial_id in sub._trial_info:
            sub.on_trial_complete(tune_controller, _Handle(trial_id), result)
            sub._trial_info.pop(trial_id, None)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if trial.trial_id in self.live:
            for trial_id in self.live.pop(trial.trial_id).values():  # what the pack's end cut short
                self._drop(trial_id)
            return
        self._complete(tune_controller, trial.trial_id, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        for trial_id in (self.live.pop(trial.trial_id).values() if trial.trial_id in self.live
                         else [trial.trial_id]):
            self._drop(trial_id)

    def _drop(self, trial_id: str) -> None:
        sub = self._sub(trial_id)
        if sub is not None:
            sub._trial_info.pop(trial_id, None)

    def debug_string(self) -> str:
        return f"Early stopping inside each of {len(self.groups)} groups (ASHA, rungs {self.rungs})"


class _Handle:
    """What Ray's ASHA reads of a trial: its id (a pack member's is ``<pack trial id>-<k>``)."""

    __slots__ = ("trial_id",)

    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id
