"""One training trial: ``train_trial(config)`` trains one (dataset, model, loss) configuration and evaluates it.

It is a plain function that works both ways:

* as a Ray Tune function trainable (``Tuner(train_trial, param_space=...)``): every evaluation is reported with
  ``ray.tune.report(metrics, checkpoint=...)``, and a trial restarted by Tune resumes from
  ``ray.tune.get_checkpoint()``;
* called directly (tests, ``raysweep train``): it shows a tqdm progress bar and returns the final metrics dict; with
  ``output_dir`` set it also writes checkpoints, overlays and ``result.json`` there.

The trial knows nothing of searchers or schedulers: a sweep only chooses the config.

Reproducibility: the same config and seed give identical metrics on the CPU with the same number of torch threads
(Tune workers run with ``OMP_NUM_THREADS`` = their CPUs; set ``train.threads`` to pin it), whatever
``train.num_workers`` is and whether the trial was interrupted and resumed: each step's batch and each item's
augmentation are functions of (seed, step) alone, and checkpoints carry the model, optimiser, scheduler, grad scaler,
loss parameters, RNG states and the step.

The config schema is in :mod:`raysweep.trial.schema`; the parts a trial is built from in :mod:`.build`; where its
reports go in :mod:`.sink`.

Reports
-------
Every report (one per evaluation; ``training_iteration`` counts them) is a flat dict:

* ``status``: ``running`` | ``completed`` | ``diverged`` | ``oom``; ``step`` (optimiser steps done), ``epoch``,
  ``resumed_from_step`` (the step this run restarted from a checkpoint at; 0 for a fresh start), ``primary_metric``
  (the name) and the primary metric itself under its name (``dice`` or ``miou``, higher is better);
* ``dice``, ``iou``, ``hd95``, ``miou`` (summaries as in :class:`raysweep.metrics.Evaluator`), per class as
  ``dice/<class>``, ``iou/<class>``, ``hd95/<class>``, ``miou/<class>``; ``n_cases``; ``cases`` when
  ``eval.report_cases``: JSON text of the per-case, per-class rows ``[{case, class_id, class_name, dice, iou, hd95}]``
  (NaN as null), the paired scores the statistics need;
* ``loss`` and ``loss/<term>`` (means since the previous report), ``weight/<term>`` (current), ``lr``;
* ``time/data_ms``, ``time/forward_ms``, ``time/loss_ms``, ``time/backward_ms``, ``time/optimizer_ms``, ``time/step_ms``
  (means per step since the previous report; CUDA phases from CUDA events), ``steps_per_s`` (training steps only,
  evaluation excluded), ``time/eval_s``, ``peak_memory_mb`` (CUDA: peak allocated; CPU: peak process RSS).

A non-finite loss (or primary metric) ends the trial with ``status: diverged``, ``diverged_step`` (1-based step) and
the primary metric set to 0.0, the worst value, so searchers learn to avoid the region; out-of-memory ends it with
``status: oom`` and a NaN primary metric (a resource failure, not a property of the config). Neither raises.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from typing import Any

import torch

from ..checks import jsonable
from ..vocab import TRIAL_STATUSES
from . import checkpoint
from .build import Parts, build, memory_format, model_label
from .evaluate import evaluate
from .overlays import slug
from .sampling import make_loader
from .schema import resolve_config
from .sink import Sink, sink_for
from .timing import StepTimer, peak_memory_mb

__all__ = ["DIVERGED_SCORE", "STATUSES", "DeviceBatch", "Trial", "device_batch", "free_memory", "is_oom",
           "report_failure", "train_trial"]

STATUSES = TRIAL_STATUSES
#: The primary metric reported for a diverged trial: the worst value of Dice and mIoU.
DIVERGED_SCORE = 0.0


#: One training batch on the trial's device: ``(image, mask, mask on the host, target maps)``.
DeviceBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]


def device_batch(parts: Parts, batch: Mapping[str, Any]) -> DeviceBatch:
    """A loader batch moved to ``parts.device`` (channels-last images where the trial trains so); ``batch`` is not
    changed, so the members of a pack can share one."""
    image = batch["image"].to(parts.device, non_blocking=True)
    if parts.channels_last:
        image = image.contiguous(memory_format=memory_format(parts.model))
    mask_host = batch["mask"]
    maps = {k: v.to(parts.device, non_blocking=True) for k, v in batch.items() if k not in ("image", "mask", "case")}
    return image, mask_host.to(parts.device, non_blocking=True), mask_host, maps


class _Stop(Exception):
    """Ends the training loop early with a status (diverged)."""

    def __init__(self, status: str, step: int) -> None:
        super().__init__(status)
        self.status, self.step = status, step


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory error (torch's, Python's, or a RuntimeError saying so)."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def train_trial(config: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """Train and evaluate one configuration (schema in :mod:`raysweep.trial.schema`, report keys above).

    Args:
        config: the trial config; missing keys take their defaults.

    Returns:
        called directly: the final report (a flat dict of metrics; ``status`` says how it ended).
        inside Ray Tune: None (everything goes through ``ray.tune.report``).

    Raises:
        ValueError / FileNotFoundError: a bad config (before any training), or a checkpoint that does not match it.
            A non-finite loss or an out-of-memory error does not raise: it ends the trial with status ``diverged``
            or ``oom``.
    """
    from ..data import DATASETS

    cfg = resolve_config(config)
    sink = sink_for(cfg)
    try:
        parts = build(cfg)
    except Exception as exc:  # noqa: BLE001 - only OOM is swallowed, everything else re-raised
        if not is_oom(exc):
            raise
        free_memory(None)
        primary = DATASETS[cfg["dataset"]["name"]].primary_metric
        return sink.returns(report_failure(sink, primary, "oom", 0, 1, None, f"{type(exc).__name__}: {exc}", 1))
    trial = Trial(cfg, parts, sink)
    try:
        return sink.returns(trial.run())
    finally:
        trial.close()


class Trial:
    """The training loop of one built trial: ``run()`` trains, evaluates every ``eval.every`` steps and reports."""

    def __init__(self, cfg: dict[str, Any], parts: Parts, sink: Sink,
                 clock: checkpoint.CheckpointClock | None = None) -> None:
        self.cfg, self.parts, self.sink = cfg, parts, sink
        self.step, self.reports = 0, 0
        found = sink.restore()
        if found is not None:
            self.step, self.reports = checkpoint.load_state(cfg, parts, *found)
        self.resumed_from = self.step  # > 0: restarted from a checkpoint (a lost node, a resumed sweep)
        # A pack passes one clock for all its members, so that they checkpoint at the same reports.
        self.clock = clock or checkpoint.CheckpointClock(cfg["checkpoint"])
        self.timer = StepTimer(parts.device.type == "cuda")
        self.loader_iter: Iterator[dict[str, Any]] | None = None
        self.last: dict[str, Any] = {}
        # Per-report interval: pending loss values not yet checked on the host, their sums, the interval's start.
        self._pending: list[torch.Tensor] = []
        self._sums: list[float] | None = None
        self._count = 0
        self._t_interval = time.perf_counter()
        self._epoch: int | None = None
        show = cfg["train"]["progress"]
        self.bar = None
        if show is True or (show == "auto" and sink.shows_progress):
            from tqdm.auto import tqdm

            name = f"{cfg['loss']['name']} {model_label(cfg['model'])}"
            self.bar = tqdm(total=parts.steps, initial=self.step, desc=name, unit="step", dynamic_ncols=True)

    # -- the loop ----------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Train to the end of the budget on this trial's own batches; the final report."""
        return self.guarded(self._run)

    def _run(self) -> dict[str, Any]:
        p = self.parts
        if self.step >= p.steps:  # resumed from the final checkpoint: evaluate and report again
            return self.report("completed")
        self.loader_iter = iter(self.loader(self.step))
        self.start()
        while True:
            self.timer.begin()
            ended = self.step_on(device_batch(p, next(self.loader_iter)))
            if ended is not None:
                return ended

    def loader(self, start: int) -> torch.utils.data.DataLoader:
        """The training batches of steps ``start ..`` (a function of the seed and the step alone)."""
        p, t = self.parts, self.cfg["train"]
        return make_loader(p.train_items, batch_size=t["batch_size"], seed=self.cfg["seed"], start=start,
                           steps=p.steps, num_workers=t["num_workers"], pin_memory=p.device.type == "cuda")

    def start(self) -> None:
        """Start the first timing interval (after building, restoring and starting the loader)."""
        self.timer.reset()
        self._t_interval = time.perf_counter()

    def step_on(self, batch: DeviceBatch) -> dict[str, Any] | None:
        """One training step on ``batch``, then the loss check and the report when due. Returns the final report
        once the trial has ended (budget done, or diverged), else None. ``timer.begin`` must have been called."""
        p = self.parts
        every = self.cfg["eval"]["every"] or p.steps
        self._train_step(batch)
        if len(self._pending) >= p.sync_every or self.step % every == 0 or self.step == p.steps:
            self._check_losses()
        if self.step % every == 0 or self.step == p.steps:
            result = self.report("completed" if self.step == p.steps else "running")
            if result.get("status") in ("completed", "diverged"):
                return result
        return None

    def guarded(self, fn: Callable[[], dict[str, Any] | None]) -> dict[str, Any] | None:
        """``fn()`` with the trial's failure handling: a non-finite loss ends the trial as ``diverged`` and an
        out-of-memory error as ``oom`` (both returned as its final report); any other exception propagates."""
        try:
            return fn()
        except _Stop as stop:
            return self.fail(stop.status, stop.step)
        except Exception as exc:  # noqa: BLE001 - only OOM is swallowed, everything else re-raised
            if not is_oom(exc):
                raise
            self.loader_iter, self._pending = None, []
            free_memory(self.parts.optimizer)
            return self.fail("oom", self.step + 1, error=f"{type(exc).__name__}: {exc}")

    def _train_step(self, batch: DeviceBatch) -> None:
        p, t = self.parts, self.timer
        epoch = self.step // p.steps_per_epoch
        if epoch != self._epoch:  # also right after a resume
            p.objective.set_epoch(epoch)
            self._epoch = epoch
        image, mask, mask_host, maps = batch
        t.mark("data")
        autocast = torch.autocast(p.device.type, dtype=p.amp_dtype) if p.amp_dtype is not None else nullcontext()
        with autocast:
            outputs = p.model(image)
            t.mark("forward")
            try:
                # Input checks (one host sync per term) on this run's first step and every sync_every steps;
                # between them none, and the host copy of the mask picks the losses' fast path.
                validate = self.step == self.resumed_from or self.step % p.sync_every == 0
                with p.objective.input_checks(validate, mask_host):
                    total, values = p.objective(outputs, mask, maps, self.step)
            except ValueError:
                # The losses refuse non-finite logits; a model that produces them has diverged.
                if bool(torch.isfinite(outputs["logits"]).all()):
                    raise
                self._check_losses()  # an earlier pending loss may have been the first non-finite one
                raise _Stop("diverged", self.step + 1) from None
        t.mark("loss")
        if p.scaler is not None:
            p.scaler.scale(total).backward()
        else:
            total.backward()
        t.mark("backward")
        clip = self.cfg["optimizer"]["grad_clip"]
        if p.scaler is not None:
            if clip is not None:
                p.scaler.unscale_(p.optimizer)
                torch.nn.utils.clip_grad_norm_(p.model.parameters(), clip)
            p.scaler.step(p.optimizer)
            p.scaler.update()
        else:
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(p.model.parameters(), clip)
            p.optimizer.step()
        p.scheduler.step()
        p.optimizer.zero_grad(set_to_none=True)
        t.mark("optimizer")
        self._pending.append(torch.cat([total.detach().float().reshape(1), values]))
        self.step += 1
        if self.bar is not None:
            self.bar.update(1)

    def _check_losses(self) -> None:
        """Bring the pending loss values to the host (one sync) and stop at the first non-finite one."""
        if not self._pending:
            return
        values = torch.stack(self._pending).cpu()
        first = self.step - len(self._pending) + 1  # 1-based step of the first pending value
        self._pending = []
        finite = torch.isfinite(values[:, 0])
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0, 0])
            raise _Stop("diverged", first + bad)
        sums = values.double().sum(0).tolist()
        self._sums = sums if self._sums is None else [a + b for a, b in zip(self._sums, sums)]
        self._count += values.shape[0]
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{values[-1, 0].item():.4f}", refresh=False)

    # -- reports -----------------------------------------------------------------------------------------------

    def report(self, status: str) -> dict[str, Any]:
        """Evaluate now and send the report (``status``: ``running`` or ``completed``), with a checkpoint when due;
        the report (``diverged`` where the primary metric is not finite)."""
        p = self.parts
        if p.device.type == "cuda":
            torch.cuda.synchronize(p.device)  # the interval ends when its GPU work does
        train_s = time.perf_counter() - self._t_interval
        timing = self.timer.means_ms()
        steps_done = self.timer.steps
        t0 = time.perf_counter()
        final = status == "completed"
        render = self.sink.keeps_overlays or (final and self.sink.final_overlays)
        n_overlays = self.cfg["eval"]["overlays"] if render else 0
        summary, rows, overlays = evaluate(p, self.cfg["eval"], self.cfg["train"]["num_workers"], n_overlays,
                                           final=status == "completed")
        eval_s = time.perf_counter() - t0

        primary = p.info.primary_metric
        metrics: dict[str, Any] = {"status": status, "step": self.step, "epoch": self.step / p.steps_per_epoch,
                                   "primary_metric": primary, "resumed_from_step": self.resumed_from}
        for key in ("dice", "iou", "hd95", "miou", "n_cases"):
            metrics[key] = summary[key]
        # One key for searchers and schedulers, whatever the dataset's primary metric (dice or miou).
        metrics["score"] = metrics.get(primary)
        for metric, per_class in summary["per_class"].items():
            for cls, value in per_class.items():
                metrics[f"{metric}/{slug(cls)}"] = value
        if self._sums is not None and self._count:
            metrics["loss"] = self._sums[0] / self._count
            for name, s in zip(p.objective.names, self._sums[1:]):
                metrics[f"loss/{name}"] = s / self._count
        for name, w in zip(p.objective.names, p.objective.weights(min(self.step, p.steps - 1))):
            metrics[f"weight/{name}"] = w
        metrics["lr"] = p.optimizer.param_groups[0]["lr"]
        metrics.update(timing)
        metrics["time/step_ms"] = 1000.0 * train_s / steps_done if steps_done else float("nan")
        metrics["steps_per_s"] = steps_done / train_s if steps_done and train_s > 0 else float("nan")
        metrics["time/eval_s"] = eval_s
        metrics["peak_memory_mb"] = peak_memory_mb(p.device)
        if self.cfg["eval"]["report_cases"]:
            # JSON text rather than a list: Tune's loggers take any string and would choke on a list of dicts.
            metrics["cases"] = json.dumps(jsonable(rows))
        if not math.isfinite(metrics[primary]):
            metrics.update(status="diverged", diverged_step=self.step, **{primary: DIVERGED_SCORE})
            status = "diverged"
        self.reports += 1
        if self.sink.counts_reports:
            metrics["training_iteration"] = self.reports

        due = status != "diverged" and self.clock.due(status, self.reports)
        state = (lambda: checkpoint.state_dict(self.cfg, p, self.step, self.reports)) if due else None
        self.sink.report(metrics, overlays, state)
        if due:
            self.clock.written()
        self.last = metrics
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.4f}",
                                 **{primary: f"{metrics[primary]:.4f}"}, refresh=True)
        # The next interval's timing starts after the evaluation and the checkpoint.
        self.timer.reset()
        self._sums, self._count = None, 0
        self._t_interval = time.perf_counter()
        return metrics

    def fail(self, status: str, step: int, error: str | None = None) -> dict[str, Any]:
        """End the trial as ``status`` (``diverged``, ``oom``) at 1-based ``step``; its final report."""
        self.reports += 1
        # Steps run after the first non-finite loss (before the pending values reached the host) do not count.
        done = min(self.step, step)
        self.last = report_failure(self.sink, self.parts.info.primary_metric, status, done, step,
                             self.parts.device, error, self.reports)
        return self.last

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.loader_iter = None  # shuts the DataLoader workers down


def report_failure(sink: Sink, primary: str, status: str, steps_done: int, step: int, device: torch.device | None,
             error: str | None, reports: int) -> dict[str, Any]:
    """The final report of a trial that diverged or ran out of memory (1-based ``step`` where it happened)."""
    worst = DIVERGED_SCORE if status == "diverged" else float("nan")
    metrics: dict[str, Any] = {"status": status, "step": steps_done, "primary_metric": primary, primary: worst,
                               "score": worst, f"{status}_step": step}
    if error:
        metrics["error"] = error[:500]
    if device is not None:
        metrics["peak_memory_mb"] = peak_memory_mb(device)
    if sink.counts_reports:
        metrics["training_iteration"] = reports
    sink.fail(metrics)
    return metrics


def free_memory(optimizer: torch.optim.Optimizer | None) -> None:
    """Release what an out-of-memory step left behind, so that the final report can still be sent."""
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
