"""The sweep runner: runs (or resumes) the two stages of a sweep into an output folder.

Stage ``tune``: one ``Tuner`` whose searcher (:class:`GroupSearcher`) hands out trials round-robin across one Optuna
study per group, with an equal quota each, the survey's defaults first; :class:`GroupScheduler` stops weak trials early
with one ASHA bracket per group, so a trial only ever competes with trials of its own (dataset, arch, loss) group and
every group gets the same rung schedule. The loss is never a tunable categorical (TPE would starve the losses that
start slowly) and no two Tuners run at once (Ray does not support it), so the cluster stays busy with no barrier
between groups. Tuning trials evaluate on each dataset's *selection* split.

Stage ``confirm``: the best configuration of each group, among its tuning trials that ran their full budget, is
retrained with ``confirmation.seeds`` new, distinct seeds and evaluated on the *ranking* split, which shares no case
with the selection split; the ranking uses only these runs. ``sweep.json``'s ``protocol`` records both case lists,
the rung schedule, the seeds and each cell's power limit.

Every trial lands in Parquet through :class:`ResultsCallback` on the driver (idempotent by trial id). Running the same
command on the same output folder resumes: a stage whose experiment exists is restored (``Tuner.restore``), a finished
stage is skipped. See ``raysweep run --help``.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from .. import results
from ..checks import finite
from ..config import Group, SweepConfig, compose_trial, confirmation_seeds
from ..search import GroupSpace
from .callback import WRITE_FAILURES, ResultsCallback, delete_checkpoints
from .outdir import OutputLock, ResultsWriteError, check_writable, iso_time
from .packing import PackReport, channel_name, is_pack, open_channel, pack_trials
from .records import environment, evaluations, protocol, read_state, sweep_meta, write_state
from .scheduler import METRIC, GroupScheduler
from .searcher import FixedSearcher, GroupSearcher
from .studies import tune_studies
from .tracking import finish_tracking, tracker_for
from .trainable import sweep_trainable, trial_resources

__all__ = ["SweepInterrupted", "SweepRunner", "best_points", "run_sweep", "confirmation_seeds", "environment"]


class SweepInterrupted(KeyboardInterrupt):
    """A stage ended before all its trials did (Ctrl+C, SIGTERM): nothing is marked done, and running the same
    command on the same output folder resumes it."""


class _tune_environment:
    """Tune settings for the sweep's duration only (a library call must not change its caller's environment)."""

    SETTINGS = {
        "RAY_CHDIR_TO_TRIAL_DIR": "0",
        "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
        # raysweep prints its own progress line per trial; Tune's tables and snapshot warnings would drown it.
        "RAY_AIR_NEW_OUTPUT": "0",
        "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    }

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in self.SETTINGS}
        for k, v in self.SETTINGS.items():
            os.environ.setdefault(k, v)

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class SweepRunner:
    """Runs (or resumes) a sweep into ``out_dir``: ``ray/`` (Tune experiments), ``results/`` (Parquet, sweep.json),
    ``overlays/`` and the HTML report."""

    def __init__(self, cfg: SweepConfig, out_dir: str | Path, address: str | None = None, fresh: bool = False,
                 progress: bool = True, storage: str | None = None, data_check: dict[str, Any] | None = None):
        self.cfg = cfg
        self.data_check = data_check  # the pre-run check's record (raysweep.config.check_data) for sweep.json
        self.out = Path(out_dir).expanduser().resolve()
        # Tune's experiment folders: shared storage (s3://, gs://, NFS) on a multi-node cluster; Parquet results are
        # written by the driver and stay under out_dir.
        self.storage = storage or str(self.out / "ray")
        self.address = address
        self.fresh = fresh
        self.progress = progress
        self.results_dir = self.out / "results"
        self.state_path = self.out / "state.json"
        self.prepared: dict[str, dict[str, dict]] = {}  # loss -> dataset -> its preparation's arguments
        self.env: dict[str, Any] = {}

    def _save_state(self, state: dict) -> None:
        write_state(self.state_path, state)

    def protocol(self) -> dict[str, Any]:
        """sweep.json's ``protocol`` for this sweep (:func:`raysweep.sweep.records.protocol`)."""
        return protocol(self.cfg, self.data_check)

    def run(self) -> dict:
        """Run or resume the sweep; returns its state (``state.json``).

        Raises:
            ResultsWriteError: ``out_dir`` is not writable or has too little free space (checked before anything
                starts), or results could not be written mid-sweep (the sweep stops and can be resumed).
            OutputInUse: another ``raysweep run`` is using ``out_dir``.
            ValueError: ``out_dir`` holds a sweep with a different config (and ``fresh`` is not set).
        """
        check_writable(self.out)
        with OutputLock(self.out):
            if self.fresh:
                for sub in ("ray", "results", "overlays", "state.json"):
                    p = self.out / sub
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            state = read_state(self.state_path)
            if state and state.get("config") != self.cfg.to_dict():
                raise ValueError(f"{self.out} holds a sweep with a different config; pass --fresh to start over or "
                                 "choose another --out")
            state.setdefault("config", self.cfg.to_dict())
            state.setdefault("sweep_id", uuid.uuid4().hex[:12])
            state.setdefault("started", time.time())
            self._save_state(state)

            self.env = environment()  # once per run: versions and the git commit are the same for every trial
            with _tune_environment():
                return self._run(state)

    def _run(self, state: dict) -> dict:
        import ray

        if not ray.is_initialized():
            if self.address is None and os.environ.get("RAY_ADDRESS"):
                self.address = os.environ["RAY_ADDRESS"]  # Ray's own way to name a cluster
            if self.address in (None, "local"):
                # address="local": always a private instance. Without it Ray joins whatever cluster `ray start` last
                # recorded in /tmp/ray (run.py passes --address auto for that case).
                ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False,
                         dashboard_host="127.0.0.1")
            else:
                ray.init(address=self.address, log_to_driver=False)
        cluster = ray.cluster_resources()
        resources, slots = trial_resources(self.cfg, cluster)  # before any work: it checks the config's demands
        self.prepared = self._prepare_losses()
        results.write_sweep_meta(self.results_dir, sweep_meta(self.cfg, state, self.env, cluster, slots,
                                                              self.data_check))
        t0 = time.time()
        if not state.get("tune_done"):
            best = self._tune(state, resources, slots)
            state.update(tune_done=True, best=best)
            self._save_state(state)
            self._prune_checkpoints("tune")
        if self.cfg.confirmation.seeds > 0 and not state.get("confirm_done"):
            self._confirm(state, resources, slots)
            state["confirm_done"] = True
            self._save_state(state)
            self._prune_checkpoints("confirm")
        state["ended"] = time.time()
        state["wall_s"] = state.get("wall_s", 0.0) + (time.time() - t0)
        self._save_state(state)
        results.update_sweep_meta(self.results_dir, ended_at=iso_time(state["ended"]), wall_s=state["wall_s"])
        finish_tracking(self.cfg, state["sweep_id"], self.results_dir)  # sweep.json to the MLflow run, if tracked
        return state

    def _prepare_losses(self) -> dict[str, dict[str, dict]]:
        """Run the preparation step of each loss that has one (``LossSpec.prepare``: the InverseForm loss trains its
        InverseNet), once per dataset and output folder, before any trial starts. Returns loss -> dataset -> the
        constructor arguments every trial of that loss and dataset gets."""
        from ..data import build_dataset
        from ..losses import LOSSES, Preparation

        prepared: dict[str, dict[str, dict]] = {}
        for loss in self.cfg.losses:
            prepare = LOSSES[loss].prepare
            if prepare is None:
                continue
            for name, section in self.cfg.datasets.items():
                options = {**section.get("options", {}), **section.get("train_options", {})}
                kwargs = {"root": section["root"]} if section.get("root") else {}
                train_split = functools.partial(build_dataset, name, "train", **kwargs, **options)
                prepared.setdefault(loss, {})[name] = prepare(Preparation(
                    dataset=name, train_split=train_split, out_dir=self.out, seed=self.cfg.tuning.seed,
                    progress=self.progress))
        return prepared

    # ------------------------------------------------------------------ stages

    def _tuner(self, stage: str, trainable, **kwargs):
        from ray import tune

        path = f"{self.storage.rstrip('/')}/{self.cfg.name}-{stage}"
        if tune.Tuner.can_restore(path):
            return tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
        return tune.Tuner(trainable, **kwargs)

    def _run_config(self, stage: str, state: dict, planned: int):
        from ray import tune

        callback = ResultsCallback(self.results_dir, self.out / "overlays", sweep_id=state["sweep_id"], stage=stage,
                                   planned=planned, versions=self.env["versions"], progress=self.progress,
                                   quota=self.cfg.tuning.trials_per_group if stage == "tune"
                                   else self.cfg.confirmation.seeds,
                                   tracker=tracker_for(self.cfg, state["sweep_id"]))  # MLflow, if configured
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

    def _with_threads(self, resources):
        from ray import tune

        return tune.with_resources(sweep_trainable, resources)

    def _tune(self, state: dict, resources: dict, slots: int) -> dict:
        from ray import tune

        evals = evaluations(self.cfg)
        asha = self.cfg.tuning.scheduler == "asha" and evals > 1
        pack = self.cfg.resources.pack
        stops, channel = None, None
        if pack > 1 and asha:  # ASHA decides per member; its decisions reach the packs through this actor
            stops = channel_name(state["sweep_id"])
            channel = open_channel(stops)  # held for the stage: an actor without a handle is collected
        # The studies live in an Optuna storage (raysweep.sweep.studies); a restored stage reopens them through the
        # searcher Tune saved, so the one built here (for its quota only) then gets none.
        restoring = tune.Tuner.can_restore(f"{self.storage.rstrip('/')}/{self.cfg.name}-tune")
        searcher = GroupSearcher(self._threaded_cfg(resources), self.prepared, pack=pack, stops=stops,
                                 storage=None if restoring else tune_studies(self.cfg, self.out))
        scheduler = None
        if asha:
            scheduler = GroupScheduler(max_t=evals, grace_period=min(self.cfg.tuning.grace_period, evals),
                                       reduction_factor=self.cfg.tuning.reduction_factor, stops=stops)
        tuner = self._tuner(
            "tune", self._with_threads(resources),
            tune_config=tune.TuneConfig(metric=METRIC, mode="max", search_alg=searcher, scheduler=scheduler,
                                        num_samples=-1, max_concurrent_trials=slots, reuse_actors=True,
                                        trial_dirname_creator=_dirname),
            run_config=self._run_config("tune", state, searcher.total),
        )
        try:
            grid = tuner.fit()
        finally:
            if channel is not None:
                import ray

                ray.kill(channel)
        self._raise_write_failure("tune")
        self._raise_if_interrupted("tune", searcher.total)
        return best_points(grid, self.cfg)

    def _confirm(self, state: dict, resources: dict, slots: int) -> None:
        from ray import tune

        cfg = self._threaded_cfg(resources)
        envelopes = []
        for g in cfg.groups():
            point = state["best"].get(g.key)
            if point is None:
                print(f"[confirm] {g.key}: no tuning trial ran its full budget; confirming the survey's defaults",
                      flush=True)
                point = GroupSpace(g.loss, cfg.pairing).defaults()
            for seed in confirmation_seeds(cfg, g.replicate):
                envelopes.append(compose_trial(cfg, g, point, seed=seed, stage="confirm",
                                               prepared=self.prepared))
        # resources.pack: K runs of one cell and seed per Ray trial, trained side by side on the same batches.
        packed = pack_trials(envelopes, cfg.resources.pack)
        tuner = self._tuner(
            "confirm", self._with_threads(resources),
            tune_config=tune.TuneConfig(search_alg=FixedSearcher(packed), num_samples=-1,
                                        max_concurrent_trials=slots, reuse_actors=True,
                                        trial_dirname_creator=_dirname),
            run_config=self._run_config("confirm", state, len(envelopes)),
        )
        tuner.fit()
        self._raise_write_failure("confirm")
        self._raise_if_interrupted("confirm", len(envelopes))

    def _raise_write_failure(self, stage: str) -> None:
        failure = WRITE_FAILURES.pop(str(self.results_dir), None)
        if failure is None:
            return
        trial_id, exc = failure
        raise ResultsWriteError(
            exc.errno, f"could not write the results of trial {trial_id} ({exc.strerror or exc}: "
            f"{exc.filename or self.results_dir}). The {stage} stage stopped and saved its state; files already "
            f"written are unchanged. Free disk space or make {self.out} writable, then run the same command again "
            "to resume.")

    def _raise_if_interrupted(self, stage: str, planned: int) -> None:
        """Tune returns normally when interrupted (it saves the experiment for a restore). A stage is done only when
        every planned trial has its row (an errored trial has one too); otherwise nothing may be marked done."""
        ended = len(results.stage_trial_ids(self.results_dir, stage))
        if ended < planned:
            raise SweepInterrupted(f"the {stage} stage was interrupted with {ended} of {planned} trials ended; its "
                                   f"state is saved in {self.out}: run the same command again to resume")

    def _prune_checkpoints(self, stage: str) -> None:
        """Delete every trial checkpoint of a finished stage: its experiment is never restored again."""
        from pyarrow import fs as pafs

        path = f"{self.storage.rstrip('/')}/{self.cfg.name}-{stage}"
        try:
            fs, root = pafs.FileSystem.from_uri(path if "://" in path else Path(path).as_uri())
            trial_dirs = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
        except (OSError, ValueError):
            return
        for info in trial_dirs:
            if info.type == pafs.FileType.Directory:
                delete_checkpoints(fs, info.path)

    def _threaded_cfg(self, resources: dict) -> SweepConfig:
        """The config with each trial's torch threads and device pinned to its resources."""
        import copy
        import dataclasses

        trial = copy.deepcopy(self.cfg.trial)
        train = trial.setdefault("train", {})
        train.setdefault("threads", max(1, int(resources["cpu"])))
        if resources["gpu"] == 0:
            train["device"] = "cpu"  # never touch a GPU the trial did not ask for
        train.setdefault("progress", False)
        return dataclasses.replace(self.cfg, trial=trial)


def run_sweep(config: str | Path | SweepConfig | None = None, out: str | Path | None = None, *,
              address: str | None = None, fresh: bool = False, storage: str | None = None,
              progress: bool = True, check_data: bool = True) -> Path:
    """Run (or resume) a sweep; return its results folder (``<out>/results``, read it with ``read_results``).

    Args:
        config: a :class:`~raysweep.config.SweepConfig`, a YAML path, or None for ``configs/default.yaml``.
        out: the output folder (default ``results/<config name>``); running again on it resumes.
        address: a Ray cluster address (None: a private local instance, or ``RAY_ADDRESS``).
        fresh: discard what ``out`` holds and start over.
        storage: where Tune keeps its experiments (shared storage on a multi-node cluster).
        progress: print a line per finished trial.
        check_data: the data check first (:func:`raysweep.config.check_data`); False skips it (sweep.json says so).

    Raises:
        ValueError / FileNotFoundError: a bad config, data folder or data file (before Ray starts); see
        :meth:`SweepRunner.run` for the output folder's errors.
    """
    from ..config import check_data as run_check, load_config

    cfg = config if isinstance(config, SweepConfig) else load_config(config)
    out = Path(out) if out is not None else Path("results") / cfg.name
    record = run_check(cfg, progress=progress) if check_data else {"status": "skipped", "by": "check_data=False"}
    SweepRunner(cfg, out, address=address, fresh=fresh, progress=progress, storage=storage, data_check=record).run()
    return out / "results"


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
