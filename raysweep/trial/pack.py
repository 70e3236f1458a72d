"""Trial packing: ``train_pack(configs)`` trains K configurations of one cell on the same batches in one process.

On a GPU a segmentation step at the survey's sizes is launch-bound: one trial leaves most of the card idle, and K
trials in K processes each pay for their own data pipeline and distance maps. A pack runs one pipeline (the union
of its members' target maps, computed once per item) and feeds each batch to K models in turn, so the card gets K
models' kernels back to back.

Members may differ in their loss, its hyperparameters and companions, the optimiser and the LR schedule; everything
that shapes the batches or the evaluation (seed, dataset, model, ``train``, ``eval``, ``checkpoint`` settings) must
agree, or :func:`train_pack` refuses the pack before building anything.

Each member is exactly the trial it would be alone with the same seed:

* its model is built and initialised as alone (each member is built from its own config, seeds first);
* the batches are the same, since each step's batch is a function of (seed, step) alone;
* each member keeps its own global RNG state (Python, NumPy, torch, CUDA), swapped in around its own work, so the
  dropout and drop-path draws are the ones it would have made alone;
* it writes its own reports, curves and checkpoints (its own ``output_dir`` when called directly); a member that
  diverges, runs out of memory or raises ends alone with that status (``diverged``, ``oom``, ``error``) and the
  others carry on.

A shared :class:`~raysweep.trial.checkpoint.RoundClock` makes all members checkpoint at the same reports, so a
killed pack resumes every member from one step: inside Ray Tune from the pack's checkpoint (``member_<k>/`` per
member, and ``pack.json`` with the final reports of members that had ended), when called directly from each
member's ``checkpoint.resume``.

Where the reports go is the pack's :class:`PackSink`, chosen once by the caller: called directly, each member's own
folder (:class:`LocalPackSink`); in a sweep, Ray Tune, where a pack is one Tune trial whose every round of reports
goes out as one report and the scheduler may stop members early (:mod:`raysweep.sweep.packing`). The training here
is the same either way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Iterator

from . import checkpoint
from .build import build, model_label
from .loop import Trial, device_batch, free_memory, is_oom, report_failure
from .objective import merge_target_maps
from .schema import resolve_config
from .sink import LocalSink, Sink, in_tune

__all__ = ["MEMBER_FREE", "LocalPackSink", "PackSink", "check_pack", "train_pack"]

#: Config sections the members of a pack may set freely (everything else must agree).
MEMBER_FREE = ("loss", "companions", "optimizer", "scheduler", "output_dir")
#: Keys of the shared sections that may still differ per member.
_MEMBER_FREE_KEYS = {"train": ("progress",), "checkpoint": ("resume",)}


class PackSink:
    """The interface of a pack's reports: a sink per member, what a resumed pack knows of its members, and the end of
    each round (the step at which every live member has trained and reported when due)."""

    #: whether the pack's tqdm bar shows under ``train.progress: auto``
    shows_progress: bool = False

    def member_sink(self, k: int, cfg: Mapping[str, Any]) -> Sink:
        """Member ``k``'s sink (``cfg``: its resolved trial config)."""
        raise NotImplementedError

    def ended_before(self, k: int) -> dict[str, Any] | None:
        """Member ``k``'s final report if it had ended before the state this pack resumes from, else None."""
        return None

    def stopped_before(self, k: int) -> bool:
        """Whether member ``k`` was stopped early before that state (the sweep already has its reports)."""
        return False

    def end_round(self, finals: Mapping[int, dict[str, Any]], live: list[int]) -> list[int]:
        """The round's reports are complete (``finals``: the final reports of the members that have ended, ``live``:
        the members still training). Returns the live members to stop here (early stopping), else []."""
        return []

    def returns(self, finals: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """What ``train_pack`` returns: the members' final reports, in order (None where they went elsewhere)."""
        return finals


class LocalPackSink(PackSink):
    """Each member reports to its own :class:`LocalSink` (its ``output_dir`` and ``checkpoint.resume``)."""

    shows_progress = True

    def member_sink(self, k: int, cfg: Mapping[str, Any]) -> Sink:
        return LocalSink.for_config(cfg)


def check_pack(configs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The members' resolved configs, after checking that they can share batches.

    Raises:
        ValueError: an empty pack, or members that differ outside :data:`MEMBER_FREE` (the message names the keys).
    """
    if not configs:
        raise ValueError("train_pack needs at least one trial config")
    cfgs = [resolve_config(c) for c in configs]
    first = _shared(cfgs[0])
    for k, cfg in enumerate(cfgs[1:], start=1):
        differ = checkpoint.diff_keys(first, _shared(cfg))
        if differ:
            raise ValueError(f"pack member {k} differs from member 0 in {', '.join(differ[:8])}: the members of a "
                             f"pack share their batches and evaluation, so only {', '.join(MEMBER_FREE)} may "
                             "differ; put the others in another pack")
    return cfgs


def _shared(cfg: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for section, value in cfg.items():
        if section in MEMBER_FREE:
            continue
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in _MEMBER_FREE_KEYS.get(section, ())}
        out[section] = json.loads(json.dumps(value, default=str))
    return out


def train_pack(configs: Sequence[Mapping[str, Any]], sink: PackSink | None = None) -> list[dict[str, Any]] | None:
    """Train the configurations ``configs`` (schema in :mod:`raysweep.trial.schema`) as one pack.

    Args:
        sink: where the members report (:class:`PackSink`); by default each to its own ``output_dir``
            (:class:`LocalPackSink`). Inside Ray Tune the caller passes Tune's,
            :class:`raysweep.sweep.packing.TunePackSink`, through which the scheduler may also stop members early.

    Returns:
        what the sink returns: by default each member's final report, in order (``status``: ``completed``,
        ``diverged``, ``oom`` or ``error``, the last with ``error`` naming the exception); None inside Ray Tune.

    Raises:
        ValueError: members that cannot share batches (see :func:`check_pack`), resumed members at different steps,
            or a call inside a Ray Tune trial without a sink (its reports would reach no one). A member's own bad
            config does not raise: that member ends with status ``error``.
    """
    cfgs = check_pack(configs)
    if sink is None:
        if in_tune():
            raise ValueError("train_pack inside a Ray Tune trial needs the Tune sink: "
                             "train_pack(configs, sink=raysweep.sweep.packing.TunePackSink(len(configs)))")
        sink = LocalPackSink()
    pack = _Pack(cfgs, sink)
    try:
        return pack.run()
    finally:
        pack.close()


class _Member:
    """One member: its trial (None once ended), its RNG states, its final report."""

    def __init__(self, k: int, cfg: dict[str, Any]) -> None:
        self.k, self.cfg = k, cfg
        self.trial: Trial | None = None
        self.rng: dict[str, Any] | None = None
        self.final: dict[str, Any] | None = None

    @contextmanager
    def own_rng(self) -> Iterator[None]:
        """The member's RNG states in place for the block, saved back after it."""
        if self.rng is not None:
            checkpoint.set_rng_state(self.rng)
        try:
            yield
        finally:
            self.rng = checkpoint.rng_state()

    def end(self, report: dict[str, Any] | None) -> None:
        self.final = report
        if self.trial is not None:
            self.trial.close()
            self.trial = None


class _Pack:
    def __init__(self, cfgs: list[dict[str, Any]], sink: PackSink) -> None:
        self.cfgs, self.sink = cfgs, sink
        self.members = [_Member(k, cfg) for k, cfg in enumerate(cfgs)]
        self.clock = checkpoint.RoundClock(cfgs[0]["checkpoint"])
        self.bar = None

    def _build(self, m: _Member) -> None:
        """Build member ``m`` as its own trial would be built (seeds first), or end it with its failure."""
        ended = self.sink.ended_before(m.k)
        if ended is not None:  # ended before the checkpoint this pack resumed from
            m.final = ended
            return
        if self.sink.stopped_before(m.k):  # early-stopped after it: the driver has its reports
            return
        cfg = {**m.cfg, "train": {**m.cfg["train"], "progress": False}}
        sink = self.sink.member_sink(m.k, m.cfg)
        try:
            parts = build(cfg)
            m.trial = Trial(cfg, parts, sink, clock=self.clock)
        except Exception as exc:  # noqa: BLE001 - a member's failure ends that member alone
            m.trial = None
            free_memory(None)
            m.final = self._end_failed(m, sink, exc, steps_done=0)
            return
        m.rng = checkpoint.rng_state()

    def _end_failed(self, m: _Member, sink: Sink, exc: BaseException, steps_done: int) -> dict[str, Any]:
        from ..data import DATASETS

        primary = DATASETS[m.cfg["dataset"]["name"]].primary_metric
        status = "oom" if is_oom(exc) else "error"
        reports = (m.trial.reports + 1) if m.trial is not None else 1
        return report_failure(sink, primary, status, steps_done, steps_done + 1, None,
                              f"{type(exc).__name__}: {exc}", reports)

    def run(self) -> list[dict[str, Any]] | None:
        for m in self.members:
            self._build(m)
        live = [m for m in self.members if m.trial is not None]
        steps = {m.trial.step for m in live}
        if len(steps) > 1:
            raise ValueError(f"the pack's members resume from different steps {sorted(steps)}: resume each member "
                             "from the checkpoints of one report (a pack writes them together)")
        if live:
            self._train(live)
        self._flush()
        return self.sink.returns([m.final or {} for m in self.members])

    def _train(self, live: list[_Member]) -> None:
        first = live[0].trial
        parts, steps, start = first.parts, first.parts.steps, first.step
        if start >= steps:  # resumed from the final checkpoint: evaluate and report again
            for m in live:
                self._act(m, lambda t: t.report("completed"))
            return
        # One pipeline for the pack: the first member's batches with every member's target maps.
        parts.train_items.dataset.target_maps = merge_target_maps([m.trial.parts.objective for m in live])
        for m in live[1:]:
            m.trial.parts.train_items = parts.train_items  # the others' copies of the training split are not read
        loader = iter(first.loader(start))
        self._progress(live, start, steps)
        for m in live:
            m.trial.start()
        while live:
            t0 = time.perf_counter()
            batch = device_batch(parts, next(loader))
            waited = time.perf_counter() - t0
            for m in live:
                self._act(m, lambda t: (t.timer.begin(waited), t.step_on(batch))[1])
            for k in self._flush():  # members the scheduler stopped at this round's reports
                self.members[k].end(self.members[k].trial.last)
            live = [m for m in live if m.trial is not None]
            if self.bar is not None:
                self.bar.update(1)
                self.bar.set_postfix(members=len(live), refresh=False)

    def _act(self, m: _Member, fn: Callable[[Trial], dict[str, Any] | None]) -> None:
        """``fn(trial)`` with the member's RNG states and failure handling; ends the member when it has ended."""
        trial = m.trial
        with m.own_rng():
            try:
                ended = trial.guarded(lambda: fn(trial))
            except Exception as exc:  # noqa: BLE001 - a member that raises ends alone; the pack carries on
                ended = self._end_failed(m, trial.sink, exc, steps_done=trial.step)
        if ended is not None:
            m.end(ended)

    def _flush(self) -> list[int]:
        """End the round of reports; the live members the sink stops at them."""
        live = [m.k for m in self.members if m.trial is not None]
        stopped = self.sink.end_round({m.k: m.final for m in self.members if m.final is not None}, live=live)
        return [k for k in stopped if k in live]

    def _progress(self, live: list[_Member], start: int, steps: int) -> None:
        show = self.cfgs[0]["train"]["progress"]
        if show is True or (show == "auto" and self.sink.shows_progress):
            from tqdm.auto import tqdm

            m = self.cfgs[0]["model"]
            self.bar = tqdm(total=steps, initial=start, desc=f"pack of {len(live)} {model_label(m)}",
                            unit="step", dynamic_ncols=True)

    def close(self) -> None:
        for m in self.members:
            if m.trial is not None:
                m.trial.close()
        if self.bar is not None:
            self.bar.close()
