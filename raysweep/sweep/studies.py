"""The tuning stage's Optuna studies in a real Optuna storage, so optuna-dashboard and Optuna's own plots read them.

One study per group (and replicate), named by the group key (``synthetic/cnn/dice``, ``synthetic/cnn/dice/r1``),
with the group's tags as the study's user attributes and each trial's evaluations as its intermediate values (step =
the evaluation's index, ``training_iteration``). The storage is the journal file ``<out>/optuna.journal`` (safe for
concurrent writers) or the database URL of ``tuning.storage``. Only the driver writes to it (the searcher runs there).

A study belongs to one output folder (user attribute ``out``): a tuning stage that starts over in that folder
replaces its studies; a study of the same name from another folder is refused rather than mixed in. A restored stage
keeps its studies (the searcher's state, saved with the experiment, names their trials) and only settles the trials
asked after the last experiment snapshot (:func:`settle_unknown_trials`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..config import Group, SweepConfig
from .scheduler import METRIC

__all__ = ["JOURNAL", "StudyRecorder", "current_trials", "open_storage", "prepare_studies", "settle_unknown_trials",
           "study_attrs", "tune_studies"]

#: The default storage's file name in the output folder.
JOURNAL = "optuna.journal"


def open_storage(url: str | None, out: str | Path):
    """The Optuna storage of a sweep: ``JournalStorage`` on ``<out>/optuna.journal`` when ``url`` is None, else the
    database at ``url`` (``RDBStorage``: sqlite, postgresql, mysql). Both pickle (Tune saves the searcher)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if url is None:
        path = Path(out).expanduser().resolve() / JOURNAL
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    return optuna.storages.RDBStorage(url)


def tune_studies(cfg: SweepConfig, out: str | Path):
    """The storage of a tuning stage that starts from its beginning, its studies created (:func:`prepare_studies`)."""
    storage = open_storage(cfg.tuning.storage, out)
    prepare_studies(storage, cfg, out)
    return storage


def study_attrs(cfg: SweepConfig, group: Group, out: str | Path) -> dict[str, Any]:
    """A group's study user attributes: its tags (dataset, variant, arch, loss, family, stage, replicate), the
    sweep's name and the output folder it belongs to."""
    from ..losses import LOSSES

    return {"dataset": group.dataset, "variant": group.variant, "arch": group.arch, "loss": group.loss,
            "family": LOSSES[group.loss].family, "stage": "tune", "replicate": group.replicate, "sweep": cfg.name,
            "metric": METRIC, "out": str(Path(out).expanduser().resolve())}


def prepare_studies(storage, cfg: SweepConfig, out: str | Path) -> None:
    """Create every group's study afresh in ``storage`` for a tuning stage that starts from its beginning.

    A study this output folder made before (an attempt whose experiment was never saved, or ``--fresh``) is deleted:
    its trials are not the new stage's, and their Parquet rows are dropped too. Raises ``ValueError`` when a study of
    the same name belongs to another output folder.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # as the searcher does: no line per study created
    existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    for g in cfg.groups():
        attrs = study_attrs(cfg, g, out)
        old = existing.get(g.key)
        if old is not None and old.user_attrs.get("out") != attrs["out"]:
            raise ValueError(f"tuning.storage already holds a study {g.key!r} of another sweep (output folder "
                             f"{old.user_attrs.get('out')}); give this sweep its own database, or delete that study "
                             f"(optuna delete-study --study-name {g.key!r} --storage ...)")
        if old is not None:
            optuna.delete_study(study_name=g.key, storage=storage)
        study = optuna.create_study(storage=storage, study_name=g.key, direction="maximize")
        for k, v in attrs.items():
            study.set_user_attr(k, v)
        with warnings.catch_warnings():  # experimental in Optuna; it only names the objective in plots
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([METRIC])


def settle_unknown_trials(storage, study, known: Iterable[int]) -> int:
    """After a restore: settle the trials of ``study`` that the restored searcher never asked (``known``: the trial
    numbers it holds): those asked after the last experiment snapshot, whose Tune trials the restored experiment does
    not know (their Parquet rows are dropped and their points asked again). Returns how many were settled.

    * a running or waiting one is marked FAIL with the user attribute ``superseded``;
    * a finished one cannot be changed in an Optuna storage: its number joins the study's user attribute
      ``superseded_trials`` (TPE still learns from its score: a real run of that point);
    * every fixed point among them (the defaults, a categorical branch) is queued again, in order, so each is still
      tried within the quota.
    """
    from optuna.trial import TrialState

    known = set(known)
    unknown = [t for t in study.get_trials(deepcopy=False) if t.number not in known]
    unknown = [t for t in unknown if "superseded" not in t.user_attrs]  # settled by an earlier restore
    done_before = set(study.user_attrs.get("superseded_trials", []))
    unknown = [t for t in unknown if t.number not in done_before]
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in unknown:
        if t.state.is_finished():
            continue
        tid = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        if t.state == TrialState.RUNNING:
            storage.set_trial_user_attr(tid, "superseded", "asked after the last snapshot of a driver that stopped; "
                                        "its Tune trial was rerun")
        storage.set_trial_state_values(tid, TrialState.FAIL)
    finished = [t.number for t in unknown if t.state.is_finished()]
    if finished:
        study.set_user_attr("superseded_trials", sorted(done_before | set(finished)))
    for t in unknown:
        if "fixed_params" in t.system_attrs:
            study.enqueue_trial(t.system_attrs["fixed_params"])
    return len(unknown)


def current_trials(study) -> list:
    """The study's trials that stand for rows of the ``trials`` table: all of them but those a restore superseded
    (:func:`settle_unknown_trials`: marked ``superseded``, or listed in the study's ``superseded_trials``)."""
    listed = set(study.user_attrs.get("superseded_trials", []))
    return [t for t in study.get_trials(deepcopy=False) if "superseded" not in t.user_attrs and t.number not in listed]


class StudyRecorder:
    """The study of a group with nothing to tune (its one trial runs the defaults): records that trial as the
    Optuna searchers record theirs (ask, a report per evaluation, tell), so every group has its study.

    The interface is the part of Ray's ``OptunaSearch`` that :class:`~raysweep.sweep.searcher.GroupSearcher` uses.
    """

    def __init__(self, storage, name: str):
        import optuna

        self._ot_study = optuna.load_study(study_name=name, storage=storage)
        self._ot_trials: dict[str, Any] = {}

    def suggest(self, trial_id: str) -> dict:
        self._ot_trials[trial_id] = self._ot_study.ask()
        return {}

    def on_trial_result(self, trial_id: str, result: Mapping[str, Any]) -> None:
        trial = self._ot_trials.get(trial_id)
        if trial is not None:
            trial.report(float(result[METRIC]), int(result["training_iteration"]))

    def on_trial_complete(self, trial_id: str, result: Mapping[str, Any] | None = None, error: bool = False) -> None:
        from optuna.trial import TrialState

        trial = self._ot_trials.get(trial_id)
        if trial is None:
            return
        value = None if not result or error else result.get(METRIC)
        state = TrialState.COMPLETE if value is not None else TrialState.FAIL if error else TrialState.PRUNED
        try:
            self._ot_study.tell(trial, value, state=state)
        except (RuntimeError, ValueError) as exc:  # told twice (a restored stage), or a value Optuna refuses
            warnings.warn(f"study {self._ot_study.study_name}: trial {trial_id} not recorded ({exc})", stacklevel=2)
