"""Search spaces: a loss's ``LossSpec.space`` and its companion weight, as an Optuna define-by-run function.

Kept in an importable module (not the driver script) because Ray pickles the searchers, define-by-run functions
included, into the experiment folder; a function defined in ``__main__`` cannot be restored from another entry point
(shared/reference/ray_optuna.md, 1.6).

A sampled point is a flat dict ``{"loss/<hp>": value, "companion/weight": value}``; :func:`trial_config` turns a group,
such a point and a seed into the full ``train_trial`` config.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from .config import Group, SweepConfig
from .losses import LOSSES, Categorical, Float, Int

#: The companion term of each pairing policy and the range of its weight (log-uniform).
COMPANIONS = {"ce": "ce", "dice": "dice"}
COMPANION_WEIGHT = Float(0.1, 10.0, log=True)
COMPANION_DEFAULT = 1.0


def companion_for(pairing: str, loss: str) -> str | None:
    """The companion loss a pairing policy adds to ``loss``, or None."""
    name = COMPANIONS.get(pairing)
    return None if name is None or name in LOSSES[loss].contains else name


class GroupSpace:
    """Define-by-run search space of one group: the loss's hyperparameters and, per the pairing, a companion weight.

    Called by Optuna with a trial; only ``suggest_*`` calls, no computation (Ray warns past 1 s).
    """

    def __init__(self, loss: str, pairing: str):
        self.loss = loss
        self.companion = companion_for(pairing, loss)

    def __call__(self, trial) -> None:
        for key, dim in LOSSES[self.loss].space.items():
            name = f"loss/{key}"
            if isinstance(dim, Float):
                trial.suggest_float(name, dim.low, dim.high, log=dim.log)
            elif isinstance(dim, Int):
                trial.suggest_int(name, dim.low, dim.high, log=dim.log)
            else:
                trial.suggest_categorical(name, list(dim.choices))
        if self.companion:
            d = COMPANION_WEIGHT
            trial.suggest_float("companion/weight", d.low, d.high, log=d.log)

    def defaults(self) -> dict[str, Any]:
        """The survey's defaults as a point of this space (always evaluated first)."""
        spec = LOSSES[self.loss]
        point = {f"loss/{k}": spec.defaults[k] for k in spec.space}
        if self.companion:
            point["companion/weight"] = COMPANION_DEFAULT
        return point

    def is_empty(self) -> bool:
        return not LOSSES[self.loss].space and not self.companion


def tune_quota(cfg: SweepConfig, group: Group) -> int:
    """Tuning trials of a group: ``tuning.trials_per_group``, or 1 (its defaults) when it has nothing to tune."""
    return 1 if GroupSpace(group.loss, cfg.pairing).is_empty() else cfg.tuning["trials_per_group"]


def evaluation_split(cfg: SweepConfig, dataset: str, stage: str) -> tuple[str, dict[str, Any]]:
    """The split a trial of ``stage`` evaluates on, and that split's dataset options.

    Tuning trials (and so the choice of each group's best configuration) see only the *selection* split
    (``DATASETS[name].select_split``, with the dataset section's ``select_options``); confirmation runs, the only
    runs that rank, see only the *ranking* split (``eval_split``, with ``eval_options``). The two share no case.
    """
    from .data import DATASETS

    info, section = DATASETS[dataset], cfg.datasets[dataset]
    if stage == "tune":
        return info.select_split, dict(section.get("select_options") or {})
    return info.eval_split, dict(section.get("eval_options") or {})


def trial_config(cfg: SweepConfig, group: Group, point: dict[str, Any], seed: int, stage: str,
                 proposal: str | None = None) -> dict[str, Any]:
    """The full ``train_trial`` config of one trial (plus the ``sweep`` tags the results callback reads).

    ``stage`` decides the evaluation split (:func:`evaluation_split`); ``proposal`` (tune trials) records who
    proposed ``point``: ``default``, ``random``, ``model`` or ``fixed``.
    """
    trial = copy.deepcopy(cfg.trial)
    params = {k.split("/", 1)[1]: v for k, v in point.items() if k.startswith("loss/")}
    trial["seed"] = seed
    section = copy.deepcopy(cfg.datasets[group.dataset])
    section.pop("select_options", None)  # not a trial key: it becomes eval_options of the tune stage
    split, section["eval_options"] = evaluation_split(cfg, group.dataset, stage)
    trial["dataset"] = section
    trial.setdefault("eval", {})["split"] = split
    if stage == "confirm" and cfg.confirmation.get("evaluations"):
        # Confirmation runs evaluate on the (larger) ranking split, so less often; the evaluations are evenly spaced
        # and end at the budget, so the one at 80% of the steps gives the report's last-20% convergence gain.
        from .trial.schema import resolve_config

        steps = resolve_config(cfg.trial)["train"]["steps"]
        trial["eval"]["every"] = max(1, math.ceil(steps / cfg.confirmation["evaluations"]))
    trial["model"] = copy.deepcopy(cfg.architectures[group.arch])
    if group.loss == "inverseform" and cfg.inversenets.get(group.dataset):
        params.setdefault("inversenet", cfg.inversenets[group.dataset])
    trial["loss"] = {"name": group.loss, "params": params}
    companion = companion_for(cfg.pairing, group.loss)
    trial["companions"] = ([{"name": companion, "weight": float(point.get("companion/weight", COMPANION_DEFAULT))}]
                           if companion else [])
    return {"train": trial, "sweep": {"name": cfg.name, "stage": stage, "dataset": group.dataset, "arch": group.arch,
                                      "loss": group.loss, "point": dict(point), "seed": seed, "proposal": proposal}}


def space_dims(loss: str, pairing: str) -> dict[str, Any]:
    """The dimensions of a group's space by name (for the report's sensitivity plots)."""
    dims = {f"loss/{k}": d for k, d in LOSSES[loss].space.items()}
    if companion_for(pairing, loss):
        dims["companion/weight"] = COMPANION_WEIGHT
    return dims


__all__ = ["Categorical", "GroupSpace", "companion_for", "evaluation_split", "space_dims", "trial_config",
           "tune_quota"]
