"""The project's shared vocabulary: loss families, trial stages and statuses, the ignore label.

A leaf module (it imports nothing from raysweep) so that every layer, the losses included, can read the same words.
"""

from __future__ import annotations

#: The survey's four loss families, in its order.
FAMILIES = ("pixel", "region", "boundary", "combination")

#: Sweep stages: tuning trials (scored on the selection split) and confirmation runs (the only runs that rank).
STAGES = ("tune", "confirm")

#: What a training run reports while and after it runs (``train_trial``'s ``status`` metric).
TRIAL_STATUSES = ("running", "completed", "diverged", "oom")

#: A trial's final status in the results tables: the trial's own, or ``error`` (it raised) or ``stopped``
#: (early-stopped by the scheduler).
STATUSES = ("completed", "diverged", "oom", "error", "stopped")

#: Statuses whose metrics rank: a diverged run ranks with its (poor) metrics, as the survey's protocol would.
RANKED_STATUSES = ("completed", "diverged")

#: Statuses that count as a failure in the report's failure table.
FAILED_STATUSES = ("diverged", "oom", "error")

#: The label excluded from every loss and metric (Cityscapes' convention, used for all datasets).
IGNORE_INDEX = 255


def cell_label(dataset: str, variant: str | None = None) -> str:
    """How a (dataset, variant) is named in group keys, sweep.json's protocol and the report: ``synthetic``, or
    ``synthetic:noise1`` for a variant (a variant of a dataset is a cell of its own)."""
    return f"{dataset}:{variant}" if variant else dataset


def result_status(reported: str | None, steps_done: int, budget: int, errored: bool = False) -> str:
    """A trial's status in the results tables (:data:`STATUSES`) from the last ``status`` it reported.

    Args:
        reported: the trial's last ``status`` metric (:data:`TRIAL_STATUSES`), or None when it reported nothing.
        steps_done, budget: optimiser steps it ran and was allotted; a trial still ``running`` when it ended was
            stopped by the scheduler if it had steps left.
        errored: the trial raised (Tune marked it ERROR).
    """
    if errored:
        return "error"
    if reported is None:
        return "completed"
    if reported == "running":
        return "stopped" if steps_done < budget else "completed"
    return reported


__all__ = ["FAILED_STATUSES", "cell_label", "FAMILIES", "IGNORE_INDEX", "RANKED_STATUSES", "STAGES", "STATUSES", "TRIAL_STATUSES",
           "result_status"]
