"""The sweep runner: runs (or resumes) a sweep into an output folder: the folder's lock and ``state.json``, Ray's
start-up, the losses' preparation steps and ``sweep.json`` (:mod:`.records`), then the two stages (:mod:`.stages`).

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
from ..config import SweepConfig
from .outdir import OutputLock, check_writable, iso_time
from .records import environment, protocol, read_state, sweep_meta, write_state
from .stages import Stages
from .tracking import finish_tracking
from .trainable import sweep_trainable, trial_resources

__all__ = ["SweepRunner", "run_sweep"]


def _add_wall_time(state: dict, t0: float) -> float:
    """Add the time since ``t0`` to ``state["wall_s"]`` (summed over the sessions of a resumed sweep); return now.
    Called as each stage ends, so only a stage stopped part-way loses the time it ran before the stop."""
    now = time.time()
    state["wall_s"] = state.get("wall_s", 0.0) + (now - t0)
    return now


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

    #: What Ray runs for each trial (a test may inject faults through another).
    trainable = staticmethod(sweep_trainable)

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
        stages = Stages(self.cfg, self.out, self.storage, state, self.env, resources, slots, self.prepared,
                        progress=self.progress, trainable=self.trainable)
        t0 = time.time()
        if not state.get("tune_done"):
            state.update(tune_done=True, best=stages.tune())
            t0 = _add_wall_time(state, t0)  # on record with the stage: a driver stopped in confirmation keeps it
            self._save_state(state)
            stages.prune_checkpoints("tune")
        if self.cfg.confirmation.seeds > 0 and not state.get("confirm_done"):
            stages.confirm()
            state["confirm_done"] = True
            t0 = _add_wall_time(state, t0)
            self._save_state(state)
            stages.prune_checkpoints("confirm")
        state["ended"] = time.time()
        _add_wall_time(state, t0)
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
