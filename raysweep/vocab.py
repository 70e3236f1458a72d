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


def result_status(trial_status: str | None, *, errored: bool = False, stopped: bool = False) -> str:
    """The results-table status of a trial from what it last reported.

    Args:
        trial_status: the last ``status`` metric the trial reported (one of :data:`TRIAL_STATUSES`), or None.
        errored: the trial raised (Tune marked it ERROR).
        stopped: the scheduler stopped it before its budget.
    """
    if errored:
        return "error"
    if trial_status in ("diverged", "oom", "completed"):
        return trial_status
    return "stopped" if stopped else "error"


__all__ = ["FAILED_STATUSES", "FAMILIES", "IGNORE_INDEX", "RANKED_STATUSES", "STAGES", "STATUSES", "TRIAL_STATUSES",
           "result_status"]
