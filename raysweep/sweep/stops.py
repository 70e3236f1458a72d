"""How the tuning stage's early-stopping decisions reach packed trials.

Alone, a trial that ASHA stops is ended by Tune. A pack (:mod:`raysweep.trial.pack`) is one Tune trial for K
members, and ASHA decides per member: :class:`~raysweep.sweep.scheduler.GroupScheduler` records each round's
decision in a small Ray actor, :class:`PackStops`, named after the sweep, and the pack, after each report, waits
until its round is decided and ends the members stopped. A member so stops at the same report as it would alone.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PackStops", "channel_name", "open_channel"]


def channel_name(sweep_id: str) -> str:
    """The actor's name for a sweep (one per driver session; a resumed sweep opens it again)."""
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
