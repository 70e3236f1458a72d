"""The sweep's two stages, each one Ray Tune experiment: ``tune`` (per-group studies, early stopping inside a group)
and ``confirm`` (each group's best point retrained on the ranking split).

:class:`Stages` holds what both stages need from the run (config, folders, the run's state, each trial's
resources); :meth:`Stages.tune` returns the best point of each group, :meth:`Stages.confirm` retrains them. A stage
whose experiment exists on storage is restored (``Tuner.restore``) rather than started, and a stage is done only
when every planned trial has its row (:meth:`Stages.raise_if_interrupted`).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

from .. import results
from ..checks import finite
from ..config import Group, SweepConfig, compose_trial, confirmation_seeds
from ..search import GroupSpace
from .callback import WRITE_FAILURES, ResultsCallback, delete_checkpoints
from .outdir import ResultsWriteError
from .packing import PackReport, PackScheduler, PackSearcher, channel_name, is_pack, open_channel, pack_trials
from .records import evaluations
from .scheduler import METRIC, GroupScheduler
from .searcher import FixedSearcher, GroupSearcher
from .studies import tune_studies
from .tracking import tracker_for
from .trainable import sweep_trainable

__all__ = ["SweepInterrupted", "Stages", "best_points", "threaded_config"]


class SweepInterrupted(KeyboardInterrupt):
    """A stage ended before all its trials did (Ctrl+C, SIGTERM): nothing is marked done, and running the same
    command on the same output folder resumes it."""


@dataclasses.dataclass
class Stages:
    """The stages of one run of a sweep.

    Attributes:
        cfg: the sweep config; out: its output folder; storage: where Tune keeps its experiments.
        state: ``state.json`` (the sweep id, the best points once tuned); env: :func:`raysweep.sweep.environment`.
        resources: each trial's ``{"cpu", "gpu"}``; slots: trials at once; prepared: the losses' preparations.
        trainable: what Ray runs for each trial (:func:`raysweep.sweep.trainable.sweep_trainable`).
    """

    cfg: SweepConfig
    out: Path
    storage: str
    state: dict
    env: dict[str, Any]
    resources: dict[str, float]
    slots: int
    prepared: dict[str, dict[str, dict]]
    progress: bool = True
    trainable: Any = sweep_trainable

    @property
    def results_dir(self) -> Path:
        return self.out / "results"

    def tune(self) -> dict[str, dict]:
        """Run (or resume) the tuning stage; the best full-budget point of each group (:func:`best_points`)."""
        from ray import tune

        evals = evaluations(self.cfg)
        asha = self.cfg.tuning.scheduler == "asha" and evals > 1
        pack = self.cfg.resources.pack
        stops, channel = None, None
        if pack > 1 and asha:  # ASHA decides per member; its decisions reach the packs through this actor
            stops = channel_name(self.state["sweep_id"])
            channel = open_channel(stops)  # held for the stage: an actor without a handle is collected
        # The studies live in an Optuna storage (raysweep.sweep.studies); a restored stage reopens them through the
        # searcher Tune saved, so the one built here (for its quota only) then gets none.
        restoring = tune.Tuner.can_restore(self._path("tune"))
        searcher = GroupSearcher(threaded_config(self.cfg, self.resources), self.prepared,
                                 storage=None if restoring else tune_studies(self.cfg, self.out))
        scheduler = None
        if asha:
            scheduler = GroupScheduler(max_t=evals, grace_period=min(self.cfg.tuning.grace_period, evals),
                                       reduction_factor=self.cfg.tuning.reduction_factor)
        if pack > 1:  # resources.pack: K members of one cell per Tune trial, each told of as a trial alone
            searcher = PackSearcher(searcher, pack, stops)
            scheduler = PackScheduler(scheduler, stops) if scheduler is not None else None
        tuner = self._tuner(
            "tune",
            tune_config=tune.TuneConfig(metric=METRIC, mode="max", search_alg=searcher, scheduler=scheduler,
                                        num_samples=-1, max_concurrent_trials=self.slots, reuse_actors=True,
                                        trial_dirname_creator=_dirname),
            run_config=self._run_config("tune", searcher.total),
        )
        try:
            grid = tuner.fit()
        finally:
            if channel is not None:
                import ray

                ray.kill(channel)
        self.raise_write_failure("tune")
        self.raise_if_interrupted("tune", searcher.total)
        return best_points(grid, self.cfg)

    def confirm(self) -> None:
        """Run (or resume) the confirmation stage: each group's best point (its defaults where no tuning trial ran
        its full budget) retrained with the replicate's confirmation seeds, on the ranking split."""
        from ray import tune

        cfg = threaded_config(self.cfg, self.resources)
        envelopes = []
        for g in cfg.groups():
            point = self.state["best"].get(g.key)
            if point is None:
                print(f"[confirm] {g.key}: no tuning trial ran its full budget; confirming the survey's defaults",
                      flush=True)
                point = GroupSpace(g.loss, cfg.pairing).defaults()
            for seed in confirmation_seeds(cfg, g.replicate):
                envelopes.append(compose_trial(cfg, g, point, seed=seed, stage="confirm", prepared=self.prepared))
        # resources.pack: K runs of one cell and seed per Ray trial, trained side by side on the same batches.
        packed = pack_trials(envelopes, cfg.resources.pack)
        tuner = self._tuner(
            "confirm",
            tune_config=tune.TuneConfig(search_alg=FixedSearcher(packed), num_samples=-1,
                                        max_concurrent_trials=self.slots, reuse_actors=True,
                                        trial_dirname_creator=_dirname),
            run_config=self._run_config("confirm", len(envelopes)),
        )
        tuner.fit()
        self.raise_write_failure("confirm")
        self.raise_if_interrupted("confirm", len(envelopes))

    def _path(self, stage: str) -> str:
        return f"{self.storage.rstrip('/')}/{self.cfg.name}-{stage}"

    def _tuner(self, stage: str, **kwargs):
        from ray import tune

        trainable = tune.with_resources(self.trainable, self.resources)
        if tune.Tuner.can_restore(self._path(stage)):
            return tune.Tuner.restore(self._path(stage), trainable=trainable, resume_unfinished=True,
                                      resume_errored=True)
        return tune.Tuner(trainable, **kwargs)

    def _run_config(self, stage: str, planned: int):
        from ray import tune

        sweep_id = self.state["sweep_id"]
        callback = ResultsCallback(self.results_dir, self.out / "overlays", sweep_id=sweep_id, stage=stage,
                                   planned=planned, versions=self.env["versions"], progress=self.progress,
                                   quota=self.cfg.tuning.trials_per_group if stage == "tune"
                                   else self.cfg.confirmation.seeds,
                                   tracker=tracker_for(self.cfg, sweep_id))  # MLflow, if configured
        return tune.RunConfig(
            name=f"{self.cfg.name}-{stage}",
            storage_path=self.storage,
            callbacks=[callback],
            verbose=0,
            # A lost node or a crashed worker: the trial restarts from its last checkpoint, up to twice.
            failure_config=tune.FailureConfig(max_failures=2),
            # Every checkpoint is kept by Tune; the callback deletes those no restore can need (it knows when the
            # experiment snapshot moved past them, Tune's num_to_keep does not).
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        )

    def raise_write_failure(self, stage: str) -> None:
        """The results callback could not write a trial (disk full, read-only): a clear error, the stage saved."""
        failure = WRITE_FAILURES.pop(str(self.results_dir), None)
        if failure is None:
            return
        trial_id, exc = failure
        raise ResultsWriteError(
            exc.errno, f"could not write the results of trial {trial_id} ({exc.strerror or exc}: "
            f"{exc.filename or self.results_dir}). The {stage} stage stopped and saved its state; files already "
            f"written are unchanged. Free disk space or make {self.out} writable, then run the same command again "
            "to resume.")

    def raise_if_interrupted(self, stage: str, planned: int) -> None:
        """Tune returns normally when interrupted (it saves the experiment for a restore). A stage is done only when
        every planned trial has its row (an errored trial has one too); otherwise nothing may be marked done."""
        ended = len(results.stage_trial_ids(self.results_dir, stage))
        if ended < planned:
            raise SweepInterrupted(f"the {stage} stage was interrupted with {ended} of {planned} trials ended; its "
                                   f"state is saved in {self.out}: run the same command again to resume")

    def prune_checkpoints(self, stage: str) -> None:
        """Delete every trial checkpoint of a finished stage: its experiment is never restored again."""
        from pyarrow import fs as pafs

        path = self._path(stage)
        try:
            fs, root = pafs.FileSystem.from_uri(path if "://" in path else Path(path).as_uri())
            trial_dirs = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
        except (OSError, ValueError):
            return
        for info in trial_dirs:
            if info.type == pafs.FileType.Directory:
                delete_checkpoints(fs, info.path)


def threaded_config(cfg: SweepConfig, resources: dict[str, float]) -> SweepConfig:
    """The config with each trial's torch threads and device pinned to its resources."""
    trial = copy.deepcopy(cfg.trial)
    train = trial.setdefault("train", {})
    train.setdefault("threads", max(1, int(resources["cpu"])))
    if resources["gpu"] == 0:
        train["device"] = "cpu"  # never touch a GPU the trial did not ask for
    train.setdefault("progress", False)
    return dataclasses.replace(cfg, trial=trial)


def _dirname(trial) -> str:
    tags = trial.config["tags"]
    return f"{tags['loss']}-{tags['arch']}-{trial.trial_id}"


def best_points(grid, cfg: SweepConfig) -> dict[str, dict]:
    """Best sampled point per group: the highest final selection score among the group's tuning trials that
    completed their full budget (early-stopped, diverged and failed trials are never chosen: their scores are not
    comparable). A group without such a trial is absent (the confirmation stage then uses its defaults)."""
    steps = cfg.resolved_trial["train"]["steps"]
    best: dict[str, tuple[float, dict]] = {}
    for result in grid:
        config = result.config or {}
        metrics = result.metrics or {}
        if is_pack(config):  # a pack: its members' last reports (every member that ran its budget is there)
            reports = (PackReport.of(metrics) or PackReport({})).reports
            runs = [(m.get("tags"), reports.get(k, {})) for k, m in enumerate(config["members"])]
        else:
            runs = [(config.get("tags"), metrics)]
        for tags, metrics in runs:
            score = metrics.get(METRIC)
            if not tags or not finite(score) or metrics.get("status") != "completed" or \
                    int(metrics.get("step") or 0) < steps:
                continue
            key = Group.of(tags).key
            if key not in best or float(score) > best[key][0]:
                best[key] = (float(score), tags["params"])
    return {k: v[1] for k, v in best.items()}
