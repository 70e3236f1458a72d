"""The searchers: the tuning stage's per-group Optuna studies, and the confirmation stage's fixed list of runs.

Both hand Tune the same envelope, ``{"trial": <train_trial config>, "tags": {...}}``
(:func:`raysweep.config.compose_trial`), so every later step reads a trial's config and tags the same way.
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Mapping

from ..checks import finite
from ..config import Group, SweepConfig, compose_trial, n_startup_trials, sampler_seed, tune_quota, tuning_seed
from ..search import GroupSpace
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

    Packed trials (``resources.pack``) are drawn from it by :class:`raysweep.sweep.packing.PackSearcher`, through
    :meth:`suggest_in` (a suggestion within one cell), :meth:`report` and :meth:`complete`: each member is told to
    its study as the trial it would be alone.
    """

    storage: Any = None  # (class defaults: a searcher pickled before stored studies existed has neither)
    stored = False

    def __init__(self, cfg: SweepConfig, prepared: Mapping[str, Any] | None = None, metric: str = METRIC,
                 mode: str = "max", storage: Any = None):
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
        self.storage = storage  # an Optuna storage (raysweep.sweep.studies), or None: in-memory studies
        self.stored = storage is not None
        for g in self.groups:
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
                # seeded by the group's key, not its place in the list: a part of the sweep proposes as the whole
                sampler=optuna.samplers.TPESampler(seed=sampler_seed(cfg, g), n_startup_trials=self.n_startup),
                # one study per group (raysweep.sweep.studies): named by the group key in a stored study
                study_name=g.key if self.stored else f"{cfg.name}-{g.key}",
            )
        self.issued = {g.key: 0 for g in self.groups}
        self.owner: dict[str, Group] = {}
        self.cursor = 0

    @property
    def total(self) -> int:
        """Tuning trials planned, all groups together."""
        return sum(self.quota.values())

    def suggest(self, trial_id: str):
        envelope = self.suggest_in(trial_id)
        if envelope is not None:
            return envelope
        return self.FINISHED if self.all_issued() else None

    def all_issued(self) -> bool:
        """Whether every group's quota has been handed out."""
        return all(self.issued[k] >= q for k, q in self.quota.items())

    def suggest_in(self, trial_id: str, cell: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
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
        self.report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.complete(trial_id, result, error)

    def report(self, trial_id: str, result: Mapping[str, Any]) -> None:
        """One evaluation to the trial's study as an intermediate value, once (a trial restarted from a checkpoint
        reports its later evaluations again)."""
        sub, reported = self._sub(trial_id), self.__dict__.setdefault("reported", {})
        step = int(result.get("training_iteration") or 0)
        if sub is not None and METRIC in result and step > reported.get(trial_id, 0) \
                and not self._told_before_restore(sub, trial_id):
            sub.on_trial_result(trial_id, result)
            reported[trial_id] = step

    def complete(self, trial_id: str, result: dict | None, error: bool) -> None:
        """The trial's end to its study: COMPLETE, PRUNED (stopped early by ASHA) or FAIL (``error``, a result
        that is not finite), once."""
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
            self.report(trial_id, result)
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
        self.restored_from_snapshot()

    def restored_from_snapshot(self) -> None:
        """After the state of an experiment snapshot is loaded: the stored studies made to agree with it."""
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
