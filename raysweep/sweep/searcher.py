"""The searchers: the tuning stage's per-group Optuna studies, and the confirmation stage's fixed list of runs.

Both hand Tune the same envelope, ``{"trial": <train_trial config>, "tags": {...}}``
(:func:`raysweep.config.compose_trial`), so every later step reads a trial's config and tags the same way.
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Mapping

from ..checks import finite
from ..config import Group, SweepConfig, compose_trial, n_startup_trials, tune_quota, tuning_seed
from ..search import GroupSpace
from .packing import PackReport, member_id, pack_envelope
from .scheduler import METRIC
from .studies import StudyRecorder, settle_unknown_trials

__all__ = ["FixedSearcher", "GroupSearcher"]


def _searcher_base():
    from ray.tune.search import Searcher

    return Searcher


class GroupSearcher(_searcher_base()):
    """Multiplexes one Optuna study per group behind a single Tune searcher, with an equal quota per group.

    Suggestions go round-robin over the groups that still have quota; results and completions are routed to the study
    that proposed the trial. A group whose loss has nothing to tune gets a single trial (its defaults). Returns
    ``Searcher.FINISHED`` once every quota is issued. Pickled whole by Tune (module-level classes only).

    With ``pack`` K > 1 each Tune trial is a pack (:mod:`raysweep.sweep.packing`): K suggestions of the same cell,
    drawn as the round robin would draw them, member ``k`` known to its study as ``<trial id>-<k>``. Each member is
    told to its study as it would be alone: its reports as they arrive, its end when it ends (on its own, or when it
    is no longer among the pack's ``live`` members: early-stopped), the rest when the pack ends. ``stops`` names the
    Ray actor through which the scheduler's per-member decisions reach the packs (the stop channel).
    """

    storage: Any = None  # (class defaults: a searcher pickled before stored studies existed has neither)
    stored = False

    def __init__(self, cfg: SweepConfig, prepared: Mapping[str, Any] | None = None, metric: str = METRIC,
                 mode: str = "max", pack: int = 1, stops: str | None = None, storage: Any = None):
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        super().__init__(metric=metric, mode=mode)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.cfg = cfg
        self.prepared = dict(prepared or {})  # loss -> dataset -> its preparation's arguments (compose_trial)
        self.groups = cfg.groups()
        self.quota: dict[str, int] = {}
        self.subs: dict[str, Any] = {}
        self.spaces: dict[str, GroupSpace] = {}
        self.budget = cfg.resolved_trial["train"]["steps"]
        self.n_startup = n_startup_trials(cfg)
        # Trials of each group told to its study as COMPLETE or PRUNED: what TPE counts against n_startup_trials.
        self.finished: dict[str, int] = {g.key: 0 for g in self.groups}
        self.n_fixed: dict[str, int] = {}  # per group: the points given before the sampler's own (defaults, branches)
        seed = cfg.tuning.seed
        self.storage = storage  # an Optuna storage (raysweep.sweep.studies), or None: in-memory studies
        self.stored = storage is not None
        for i, g in enumerate(self.groups):
            space = GroupSpace(g.loss, cfg.pairing)
            self.spaces[g.key] = space
            self.quota[g.key] = tune_quota(cfg, g)
            if space.is_empty():
                if self.stored:  # nothing to sample, but its trial is recorded in its study all the same
                    self.subs[g.key] = StudyRecorder(storage, g.key)
                continue
            # The survey's defaults first, then every categorical branch (stratified start-up), then TPE. No more
            # than the quota: a queued point never asked would stay in the stored study as a waiting trial.
            starts = [space.defaults(), *space.branch_points(rotate=g.replicate)][:self.quota[g.key]]
            self.n_fixed[g.key] = len(starts)
            self.subs[g.key] = OptunaSearch(
                space=space, metric=metric, mode=mode, points_to_evaluate=starts, storage=storage,
                sampler=optuna.samplers.TPESampler(seed=seed * 10007 + i, n_startup_trials=self.n_startup),
                # one study per group (raysweep.sweep.studies): named by the group key in a stored study
                study_name=g.key if self.stored else f"{cfg.name}-{g.key}",
            )
        self.issued = {g.key: 0 for g in self.groups}
        self.owner: dict[str, Group] = {}
        self.cursor = 0
        self.pack, self.stops = int(pack), stops
        self.packs: dict[str, list[str]] = {}  # pack trial id -> its members' ids
        self.member_last: dict[str, dict] = {}  # member id -> its last report
        self.done: set[str] = set()  # members already told to their study that they ended

    @property
    def total(self) -> int:
        """Tuning trials planned, all groups together."""
        return sum(self.quota.values())

    def suggest(self, trial_id: str):
        if self.pack <= 1:
            envelope = self._suggest_one(trial_id)
        else:
            members: list[dict[str, Any]] = []
            for k in range(self.pack):
                cell = None if not members else members[0]["tags"]
                one = self._suggest_one(member_id(trial_id, k), cell)
                if one is None:
                    break
                members.append(one)
            envelope = None
            if members:
                self.packs[trial_id] = [member_id(trial_id, k) for k in range(len(members))]
                envelope = pack_envelope(members, self.stops)
        if envelope is not None:
            return envelope
        return self.FINISHED if all(self.issued[k] >= q for k, q in self.quota.items()) else None

    def _suggest_one(self, trial_id: str, cell: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """The next group's suggestion in the round robin (within ``cell``'s dataset, variant and architecture when
        given), or None when no group can propose one now."""
        n = len(self.groups)
        for k in range(n):
            g = self.groups[(self.cursor + k) % n]
            if self.issued[g.key] >= self.quota[g.key]:
                continue
            if cell is not None and (g.dataset, g.variant, g.arch, g.replicate) != (
                    cell["dataset"], cell["variant"], cell["arch"], cell.get("replicate", 0)):
                continue  # a pack's members share cell and seed, so replicate
            self.cursor = (self.cursor + k + 1) % n
            sub = self.subs.get(g.key)
            if g.key not in self.n_fixed:
                point, proposal = {}, "fixed"
                if sub is not None:
                    sub.suggest(trial_id)
            else:
                point = sub.suggest(trial_id)
                if not isinstance(point, dict):  # the study has nothing to propose now
                    continue
                # The first point is the survey's defaults, then the categorical branches (points_to_evaluate);
                # after them, TPE samples at random until n_startup trials of the group have finished (Optuna's own
                # rule, counted here).
                proposal = ("default" if self.issued[g.key] == 0 else
                            "branch" if self.issued[g.key] < self.n_fixed[g.key] else
                            "random" if self.finished[g.key] < self.n_startup else "model")
            self.issued[g.key] += 1
            self.owner[trial_id] = g
            ot_trial = getattr(sub, "_ot_trials", {}).get(trial_id) if self.stored else None
            if ot_trial is not None:  # the study's trial names its Tune trial (the trials table's trial_id)
                ot_trial.set_user_attr("trial_id", trial_id)
            return compose_trial(self.cfg, g, point, seed=tuning_seed(self.cfg, g.replicate), stage="tune",
                                 proposal=proposal, prepared=self.prepared)
        return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.packs:
            self._pack_result(trial_id, PackReport.of(result))
            return
        self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self.packs:
            self._pack_result(trial_id, PackReport.of(result), final=True)
            for mid in self.packs.pop(trial_id):  # members the pack's end cut short: as their trial's end
                if mid not in self.done:
                    last = self.member_last.get(mid)
                    self._complete(mid, last, error=error or last is None)
                self.member_last.pop(mid, None)
                self.done.discard(mid)
            return
        self._complete(trial_id, result, error)

    def _pack_result(self, trial_id: str, pack: PackReport | None, final: bool = False) -> None:
        """Route a pack's report to its members' studies: running members' reports as results; members that ended
        on their own, or that are no longer live (early-stopped), as completed."""
        if pack is None:
            return
        for _, mid, report in pack.members(trial_id):
            if mid in self.done:
                continue
            self.member_last[mid] = report
            if report.get("status") == "running":
                if not final:
                    self._report(mid, report)
            else:
                self._complete(mid, report, error=report.get("status") == "error")
                self.done.add(mid)
        live = pack.live
        if live is not None:
            for k, mid in enumerate(self.packs[trial_id]):
                if k not in live and mid not in self.done and mid in self.member_last:
                    self._complete(mid, self.member_last[mid], error=False)
                    self.done.add(mid)

    def _report(self, trial_id: str, result: Mapping[str, Any]) -> None:
        """One evaluation to the trial's study as an intermediate value, once (a trial restarted from a checkpoint
        reports its later evaluations again)."""
        sub, reported = self._sub(trial_id), self.__dict__.setdefault("reported", {})
        step = int(result.get("training_iteration") or 0)
        if sub is not None and METRIC in result and step > reported.get(trial_id, 0) \
                and not self._told_before_restore(sub, trial_id):
            sub.on_trial_result(trial_id, result)
            reported[trial_id] = step

    def _complete(self, trial_id: str, result: dict | None, error: bool) -> None:
        sub = self._sub(trial_id)
        if sub is None:
            return
        if self._told_before_restore(sub, trial_id):
            # The study already holds this trial's end (told after the snapshot the sweep resumed from, which Tune
            # then re-ran): telling it again would raise; its first end stands.
            sub._ot_trials.pop(trial_id, None)
            self.__dict__.setdefault("reported", {}).pop(trial_id, None)
            self.finished[self.owner[trial_id].key] += 1
            return
        if result is not None and not finite(result.get(METRIC)):
            error = True  # Optuna cannot store NaN; an OOM trial says nothing about its config
        if not error and result is not None:
            # Tune hands a trial's last evaluation to on_trial_complete only: it is an intermediate value too (the
            # study's curve ends where the trial did; TPE ranks an early-stopped trial by its last one).
            self._report(trial_id, result)
        self.__dict__.setdefault("reported", {}).pop(trial_id, None)
        if not error and result is not None and int(result.get("step") or 0) < self.budget \
                and result.get("status") == "running":
            # Stopped early by the group's ASHA: PRUNED, not COMPLETE, so TPE ranks it by its intermediate values
            # (reported at every evaluation) instead of mistaking a partial-budget score for a final one.
            result = None
        sub.on_trial_complete(trial_id, result=result, error=error)
        if not error:
            self.finished[self.owner[trial_id].key] += 1

    def _told_before_restore(self, sub, trial_id: str) -> bool:
        """Whether the stored study has already finished this trial: the storage is written as trials end, the
        searcher's state only at Tune's snapshots, so a trial that ended between the last snapshot and a kill is
        finished in the study yet re-run by the resumed stage."""
        if trial_id not in self.__dict__.get("restored", ()):  # only a trial of the snapshot can be ahead of it
            return False
        ot_trial = getattr(sub, "_ot_trials", {}).get(trial_id) if self.stored else None
        return ot_trial is not None and self.storage.get_trial(ot_trial._trial_id).state.is_finished()

    def _sub(self, trial_id: str):
        g = self.owner.get(trial_id)
        return None if g is None else self.subs.get(g.key)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
        self.restored = set(self.owner)  # the trials this snapshot had asked (the storage may be ahead for them)
        for sub in self.subs.values() if self.stored else ():
            # Trials asked after the snapshot this state comes from: unknown to the restored experiment.
            settle_unknown_trials(self.storage, sub._ot_study, (t.number for t in sub._ot_trials.values()))


class FixedSearcher(_searcher_base()):
    """Hands out a fixed list of trial envelopes in order (the confirmation runs), then ``FINISHED``.

    A searcher rather than a ``grid_search`` so that both stages give Tune the same envelope; its state (how many
    were issued) is saved with the experiment, so a restored stage issues only the runs it had not started.
    """

    def __init__(self, envelopes: list[dict[str, Any]]):
        super().__init__(metric=METRIC, mode="max")
        self.envelopes = list(envelopes)
        self.issued = 0

    @property
    def total(self) -> int:
        return len(self.envelopes)

    def suggest(self, trial_id: str):
        if self.issued >= len(self.envelopes):
            return self.FINISHED
        self.issued += 1
        return self.envelopes[self.issued - 1]

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:
        # Plain data, so JSON: restoring the stage unpickles nothing of ours.
        with open(checkpoint_path, "w") as f:
            json.dump({"envelopes": self.envelopes, "issued": self.issued}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            state = json.load(f)
        self.envelopes, self.issued = state["envelopes"], state["issued"]
