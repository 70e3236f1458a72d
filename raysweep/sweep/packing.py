"""Trial packing, the sweep's side (``resources.pack`` K): K runs of one cell in one Ray trial.

Everything the sweep knows of packs lives here:

* the envelope: :func:`pack_trials` and :func:`pack_envelope` make one Ray trial of K member envelopes;
* the members' view: :func:`member_id` (``<pack trial id>-<k>``, the results' trial id of member ``k``) and
  :func:`trial_members` (what a Tune trial trains: itself, or its members);
* the typed pack report, :class:`PackReport`: a round of the members' reports, encoded into one Tune report by
  :class:`TunePackSink` and decoded by :meth:`PackReport.of` for the searcher, the scheduler and the results callback;
* the members as trials: :class:`PackSearcher` draws each pack's members from the per-group searcher as its round
  robin would and tells each member's study of it as of a trial alone; :class:`PackScheduler` decides each member in
  its own group's ASHA bracket as if it ran alone (:class:`~raysweep.sweep.searcher.GroupSearcher` and
  :class:`~raysweep.sweep.scheduler.GroupScheduler` know nothing of packs);
* the stop channel: the scheduler's decision for each round reaches the pack through a small named Ray actor
  (:class:`PackStops`), which the pack waits for;
* :class:`TunePackSink`, the pack's side of Ray Tune, handed by the trainable to
  :func:`raysweep.trial.pack.train_pack` (the training itself knows nothing of Tune).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checks import jsonable
from ..trial import checkpoint
from ..trial.overlays import encode_overlays
from ..trial.pack import PackSink
from ..trial.sink import Sink
from .searcher import GroupSearcher

__all__ = ["PackReport", "PackScheduler", "PackSearcher", "PackStops", "TunePackSink", "channel_name", "is_pack",
           "member_id", "open_channel", "pack_envelope", "pack_trials", "trial_members"]

log = logging.getLogger(__name__)

#: The file of a pack checkpoint that holds the final reports of the members that had ended.
PACK_STATE_FILE = "pack.json"


# -- the envelope and the members' view --------------------------------------------------------------------------


def member_id(pack_trial_id: str, k: int) -> str:
    """The results' trial id of member ``k`` of the pack that ran as Tune trial ``pack_trial_id``."""
    return f"{pack_trial_id}-{k}"


def is_pack(envelope: Mapping[str, Any] | None) -> bool:
    """Whether a trial's envelope (its Tune config) is a pack's."""
    return "members" in (envelope or {})


def pack_trials(envelopes: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """``envelopes`` packed ``k`` at a time: members share their (dataset, variant, arch, stage, seed), in the order
    given (:func:`pack_envelope`). With ``k`` 1 the envelopes are returned unchanged."""
    if k <= 1:
        return list(envelopes)
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for env in envelopes:
        t = env["tags"]
        cells.setdefault((t["dataset"], t["variant"], t["arch"], t["stage"], t["seed"]), []).append(env)
    return [pack_envelope(members[i:i + k]) for members in cells.values() for i in range(0, len(members), k)]


def pack_envelope(members: list[dict[str, Any]], stops: str | None = None) -> dict[str, Any]:
    """One Ray trial for ``members`` (envelopes of one cell and seed): ``{"members": [...], "tags": {...}}`` with
    the members' shared tags and ``loss: "pack"``, and ``stops`` (the stop channel's name, tuning stage) where
    given."""
    t = members[0]["tags"]
    shared = {key: t[key] for key in ("sweep", "stage", "dataset", "variant", "arch", "seed", "budget_steps")}
    # Members of one pack share their seed, so their replicate too (each replicate owns its seeds).
    shared["replicate"] = t.get("replicate", 0)
    envelope = {"members": list(members), "tags": {**shared, "loss": "pack",
                                                   "losses": [m["tags"]["loss"] for m in members]}}
    if stops is not None:
        envelope["stops"] = stops
    return envelope


def trial_members(trial: Any) -> list[tuple[str, dict[str, Any]]]:
    """``(trial id, tags)`` of what a Tune trial (anything with ``trial_id`` and a ``config`` envelope) trains:
    itself, or each member of a pack."""
    envelope = trial.config or {}
    if not is_pack(envelope):
        return [(trial.trial_id, envelope.get("tags") or {})]
    return [(member_id(trial.trial_id, k), m["tags"]) for k, m in enumerate(envelope["members"])]


# -- the pack report ----------------------------------------------------------------------------------------------


@dataclass
class PackReport:
    """One round of a pack's reports, as one Tune report carries it.

    ``reports``: member index -> that member's report (a ``train_trial`` report: ``status``, ``step``, ``score``,
    ...); ``live``: the members still training after the round; ``round``: an id the stop channel's decision names.
    In the Tune report: ``pack`` (JSON, ``[{"member": k, ...report}]``), ``live``, ``round``, and the pack's own
    ``status`` (``running`` while a member trains) and ``step`` (the furthest member's).
    """

    reports: dict[int, dict[str, Any]]
    live: list[int] | None = None
    round: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # the rest of the Tune report (time_total_s, hostname, ...)

    def encode(self) -> dict[str, Any]:
        rows = [{"member": k, **r} for k, r in sorted(self.reports.items())]
        return {"status": "running" if self.live else "completed",
                "step": max(int(r.get("step") or 0) for r in rows), "live": self.live, "round": self.round,
                "pack": json.dumps(jsonable(rows))}

    @classmethod
    def of(cls, result: Mapping[str, Any] | None) -> PackReport | None:
        """The pack report a Tune result carries, or None for a trial alone."""
        if not result or "pack" not in result:
            return None
        reports = {int(r["member"]): {k: v for k, v in r.items() if k != "member"} for r in json.loads(result["pack"])}
        extra = {k: v for k, v in result.items() if k not in ("pack", "live", "round")}
        return cls(reports, result.get("live"), result.get("round"), extra)

    def members(self, pack_trial_id: str) -> list[tuple[int, str, dict[str, Any]]]:
        """``(k, member id, report)`` per member that reported in this round, in member order."""
        return [(k, member_id(pack_trial_id, k), r) for k, r in sorted(self.reports.items())]


# -- the stop channel ---------------------------------------------------------------------------------------------


def channel_name(sweep_id: str) -> str:
    """The stop channel's actor name for a sweep (one per driver session; a resumed sweep opens it again)."""
    return f"raysweep-pack-stops-{sweep_id}"


class PackStops:
    """The decisions so far: which pack rounds are decided, and the members stopped in each pack."""

    def __init__(self) -> None:
        self.decided: set[tuple[str, str]] = set()
        self.stopped: dict[str, set[int]] = {}

    def decide(self, trial_id: str, round_id: str, stopped: list[int]) -> None:
        self.decided.add((trial_id, round_id))
        self.stopped.setdefault(trial_id, set()).update(stopped)

    def get(self, trial_id: str, round_id: str) -> tuple[bool, list[int]]:
        """Whether the round is decided, and every member of the pack stopped so far."""
        return (trial_id, round_id) in self.decided, sorted(self.stopped.get(trial_id, ()))


def open_channel(name: str) -> Any:
    """The named :class:`PackStops` actor (created if absent; it lives as long as the driver). Needs ``ray.init``."""
    import ray

    return ray.remote(num_cpus=0)(PackStops).options(name=name, get_if_exists=True).remote()


# -- the members as trials: searcher and scheduler ---------------------------------------------------------------


def _searcher_base():
    from ray.tune.search import Searcher

    return Searcher


def _scheduler_base():
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler


class PackSearcher(_searcher_base()):
    """The tuning stage's searcher with ``resources.pack`` K > 1: each Tune trial is a pack of up to K suggestions of
    ``inner`` (:class:`~raysweep.sweep.searcher.GroupSearcher`) from one cell, drawn as its round robin would draw
    them; member ``k`` is known to its study as ``<trial id>-<k>`` and told of as the trial it would be alone: its
    reports as they arrive, its end when it ends (on its own, or when it is no longer among the pack's ``live``
    members: early-stopped), the rest when the pack ends. ``stops`` names the stop channel (with early stopping)."""

    def __init__(self, inner: GroupSearcher, k: int, stops: str | None = None):
        super().__init__(metric=inner.metric, mode=inner.mode)
        self.inner, self.k, self.stops = inner, int(k), stops
        self.packs: dict[str, list[str]] = {}  # pack trial id -> its members' ids
        self.member_last: dict[str, dict] = {}  # member id -> its last report
        self.done: set[str] = set()  # members already told to their study that they ended

    @property
    def total(self) -> int:
        """Tuning trials planned (members, not packs), all groups together."""
        return self.inner.total

    def suggest(self, trial_id: str):
        members: list[dict[str, Any]] = []
        for k in range(self.k):
            one = self.inner.suggest_in(member_id(trial_id, k), members[0]["tags"] if members else None)
            if one is None:
                break
            members.append(one)
        if not members:
            return self.FINISHED if self.inner.all_issued() else None
        self.packs[trial_id] = [member_id(trial_id, k) for k in range(len(members))]
        return pack_envelope(members, self.stops)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._route(trial_id, PackReport.of(result))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self._route(trial_id, PackReport.of(result), final=True)
        for mid in self.packs.pop(trial_id, []):  # members the pack's end cut short: as their trial's end
            if mid not in self.done:
                last = self.member_last.get(mid)
                self.inner.complete(mid, last, error=error or last is None)
            self.member_last.pop(mid, None)
            self.done.discard(mid)

    def _route(self, trial_id: str, pack: PackReport | None, final: bool = False) -> None:
        """A pack's report to its members' studies: running members' reports as results; members that ended on
        their own, or that are no longer live (early-stopped), as completed."""
        if pack is None or trial_id not in self.packs:
            return
        for _, mid, report in pack.members(trial_id):
            if mid in self.done:
                continue
            self.member_last[mid] = report
            if report.get("status") == "running":
                if not final:
                    self.inner.report(mid, report)
            else:
                self.inner.complete(mid, report, error=report.get("status") == "error")
                self.done.add(mid)
        if pack.live is not None:
            for k, mid in enumerate(self.packs[trial_id]):
                if k not in pack.live and mid not in self.done and mid in self.member_last:
                    self.inner.complete(mid, self.member_last[mid], error=False)
                    self.done.add(mid)

    # Tune snapshots: the whole state pickled, the per-group searcher with it, as that searcher saves its own.
    save = GroupSearcher.save
    restore = GroupSearcher.restore

    def restored_from_snapshot(self) -> None:
        self.inner.restored_from_snapshot()


class PackScheduler(_scheduler_base()):
    """The tuning stage's early stopping with packs: each member of a pack is decided in its own group's bracket of
    ``inner`` (:class:`~raysweep.sweep.scheduler.GroupScheduler`) as if it ran alone; each round's decision goes to
    the pack through the stop channel ``stops``, and the pack is stopped as a whole once no member is left."""

    def __init__(self, inner: Any, stops: str | None = None):
        super().__init__()
        self.inner, self.stops = inner, stops
        self.live: dict[str, dict[int, str]] = {}  # pack trial id -> its members still training: index -> member id
        self._channel = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_channel"] = None  # an actor handle is this driver session's
        return state

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return self.inner.set_search_properties(metric, mode, **spec)

    def on_trial_add(self, tune_controller, trial) -> None:
        if not is_pack(trial.config):
            return self.inner.on_trial_add(tune_controller, trial)
        members = trial_members(trial)
        for trial_id, tags in members:
            self.inner.add(tune_controller, trial_id, tags)
        self.live[trial.trial_id] = {k: trial_id for k, (trial_id, _) in enumerate(members)}

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if not is_pack(trial.config):
            return self.inner.on_trial_result(tune_controller, trial, result)
        if trial.trial_id not in self.live:  # a pack this scheduler was not told of (a restored experiment)
            self.on_trial_add(tune_controller, trial)
        live, stopped = self.live[trial.trial_id], []
        pack = PackReport.of(result) or PackReport({})
        for k, _, report in pack.members(trial.trial_id):
            trial_id = live.get(k)
            if trial_id is None:
                continue
            if report.get("status") == "running":
                if self.inner.decide(tune_controller, trial_id, report) == self.STOP:
                    stopped.append(k)
                    self.inner.complete(tune_controller, trial_id, report)
                    del live[k]
            else:  # ended on its own: as a trial that ends (completed, diverged, oom) or raises (error)
                if report.get("status") == "error":
                    self.inner.drop(trial_id)
                else:
                    self.inner.complete(tune_controller, trial_id, report)
                del live[k]
        if pack.round is not None and self.stops is not None:
            if self._channel is None:
                import ray

                self._channel = ray.get_actor(self.stops)
            self._channel.decide.remote(trial.trial_id, pack.round, stopped)
        return self.CONTINUE if live else self.STOP

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if not is_pack(trial.config):
            return self.inner.on_trial_complete(tune_controller, trial, result)
        for trial_id in self.live.pop(trial.trial_id, {}).values():  # what the pack's end cut short
            self.inner.drop(trial_id)

    def on_trial_remove(self, tune_controller, trial) -> None:
        if not is_pack(trial.config):
            return self.inner.on_trial_remove(tune_controller, trial)
        for trial_id in self.live.pop(trial.trial_id, {}).values():
            self.inner.drop(trial_id)

    def debug_string(self) -> str:
        return self.inner.debug_string() + ", member by member in packs"


# -- the pack's side of Ray Tune ----------------------------------------------------------------------------------


class TunePackSink(PackSink):
    """A pack inside a Tune trial: each round of the members' reports goes out as one Tune report
    (:class:`PackReport`), with one checkpoint holding every member that was due (``member_<k>/``) and the ended
    members' final reports (``pack.json``); with a stop channel (``stops``, the tuning stage), each round then waits
    for the scheduler's decision and the members it stopped end there."""

    #: How long a pack waits for the driver to decide a round before it carries on (a driver under heavy load).
    DECISION_TIMEOUT_S = 300.0

    def __init__(self, n: int, stops: str | None = None) -> None:
        import ray.tune

        self.tune, self.n = ray.tune, n
        self.round: dict[int, dict[str, Any]] = {}
        self.states: dict[int, dict[str, Any]] = {}
        self.restored: dict[int, tuple[dict[str, Any], str]] = {}
        self.ended: dict[int, dict[str, Any]] = {}
        found = self.tune.get_checkpoint()
        if found is not None:
            with found.as_directory() as d:
                d = Path(d)
                saved = json.loads((d / PACK_STATE_FILE).read_text()) if (d / PACK_STATE_FILE).exists() else {}
                self.ended = {int(k): v for k, v in saved.get("ended", {}).items()}
                for k in range(n):
                    sub = d / f"member_{k}"
                    if (sub / checkpoint.CHECKPOINT_FILE).exists():
                        self.restored[k] = (checkpoint.read_dir(sub), f"{found.path}/member_{k}")
        self.resend = set(self.ended)
        self.trial_id = self.tune.get_context().get_trial_id()
        self.channel, self.stopped = None, set()
        if stops is not None:
            import ray

            self.channel = ray.get_actor(stops)
            self.stopped = set(ray.get(self.channel.get.remote(self.trial_id, ""))[1])

    def ended_before(self, k: int) -> dict[str, Any] | None:
        return self.ended.get(k)

    def stopped_before(self, k: int) -> bool:
        return k in self.stopped

    def member_sink(self, k: int, cfg: Mapping[str, Any]) -> Sink:
        return _MemberSink(self, k)

    def end_round(self, finals: Mapping[int, dict[str, Any]], live: list[int]) -> list[int]:
        for k in self.resend:  # ended before the checkpoint this pack resumed from: the driver hears of them again
            self.round.setdefault(k, self.ended[k])
        self.resend = set()
        self.ended.update(finals)
        if not self.round:
            return []
        report = PackReport(self.round, live=live, round=uuid.uuid4().hex)
        metrics = report.encode()
        states, self.round, self.states = self.states, {}, {}
        if not states:
            self.tune.report(metrics)
        else:
            with tempfile.TemporaryDirectory(prefix="raysweep-pack-") as d:
                for k, state in states.items():
                    checkpoint.write_dir(Path(d) / f"member_{k}", state)
                (Path(d) / PACK_STATE_FILE).write_text(json.dumps(jsonable({"ended": self.ended})))
                self.tune.report(metrics, checkpoint=self.tune.Checkpoint.from_directory(d))
        stopped = self._decision(report.round, live) if live else []
        return [k for k in stopped if k in live]

    def _decision(self, round_id: str, live: list[int]) -> list[int]:
        if self.channel is None:
            return []
        import ray

        deadline = time.perf_counter() + self.DECISION_TIMEOUT_S
        wait = 0.002
        while True:
            decided, stopped = ray.get(self.channel.get.remote(self.trial_id, round_id))
            if decided:
                return stopped
            if time.perf_counter() > deadline:
                log.warning("pack %s: no early-stopping decision for this round after %.0f s (the driver is busy or "
                            "gone); its members %s train on, past the rung where ASHA may have stopped them",
                            self.trial_id, self.DECISION_TIMEOUT_S,
                            ", ".join(member_id(self.trial_id, k) for k in live))
                return stopped
            time.sleep(wait)
            wait = min(wait * 2, 0.1)

    def returns(self, finals: list[dict[str, Any]]) -> None:
        return None


class _MemberSink(Sink):
    """A member's sink inside a Tune pack: its reports and checkpoint states go to the pack's next round."""

    final_overlays = True
    counts_reports = True  # the pack's own training_iteration counts rounds

    def __init__(self, pack: TunePackSink, k: int) -> None:
        self.pack, self.k = pack, k

    def restore(self) -> tuple[dict[str, Any], str] | None:
        return self.pack.restored.get(self.k)

    def report(self, metrics: dict[str, Any], overlays, state: Callable[[], dict] | None) -> None:
        if overlays:
            metrics["overlays"] = encode_overlays(overlays)
        self.pack.round[self.k] = metrics
        if state is not None:
            self.pack.states[self.k] = state()

    def fail(self, metrics: dict[str, Any]) -> None:
        self.pack.round[self.k] = metrics

    def returns(self, metrics: dict[str, Any]) -> None:
        return None
