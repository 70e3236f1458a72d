"""What a sweep config composes: each trial's config and tags, the protocol's case lists, power and quotas.

:func:`compose_trial` is the one place a trial config is built from the sweep config, a group and a sampled point;
the trial's *tags* (what a results row needs: stage, group, seed, the point, whether it is the group's defaults,
the budget, the loss's title and family) are set here too, so nothing downstream re-derives them.
"""

from __future__ import annotations

import copy
import json
import math
import zlib
from typing import Any, Mapping

from ..losses import LOSSES
from ..power import power_limit
from ..search import COMPANION_DEFAULT, COMPANION_KEY, GroupSpace, companion_for
from ..trial.schema import resolve_config
from ..vocab import cell_label
from .model import Group, SweepConfig

__all__ = ["check_composed", "check_data", "compose_trial", "confirmation_seeds", "dataset_section", "evaluation_split",
           "n_startup_trials", "power_limits", "protocol_cases", "tune_quota", "tuning_seed"]


def tune_quota(cfg: SweepConfig, group: Group) -> int:
    """Tuning trials of a group: ``tuning.trials_per_group``, or 1 (its defaults) when it has nothing to tune."""
    return 1 if GroupSpace(group.loss, cfg.pairing).is_empty() else cfg.tuning.trials_per_group


def tuning_seed(cfg: SweepConfig, replicate: int = 0) -> int:
    """The training seed of a replicate's tuning trials: ``tuning.seed + replicate * (confirmation.seeds + 1)``, so
    that each replicate owns a block of seeds (its tuning seed, then its confirmation seeds) that no other replicate
    uses; replicate 0's block is the seeds of a sweep from before replicates."""
    return cfg.tuning.seed + replicate * (cfg.confirmation.seeds + 1)


def sampler_seed(cfg: SweepConfig, group: Group) -> int:
    """The seed of a group's Optuna sampler (its proposals after the fixed start-up points): from ``tuning.seed`` and
    the group's key (dataset, variant, arch, loss, replicate), not from its position among the config's groups. So a
    group proposes the same points in the whole sweep and in a part of it (``raysweep run --arch``, then ``raysweep
    merge``), and a sweep with more replicates repeats the first ones' proposals. (CRC-32 of the key: stable across
    processes, unlike ``hash``.)"""
    return (cfg.tuning.seed * 1_000_003 + zlib.crc32(group.key.encode())) % 2**32


def confirmation_seeds(cfg: SweepConfig, replicate: int = 0) -> list[int]:
    """The training seeds of a replicate's confirmation runs: the ``confirmation.seeds`` seeds after its tuning
    seed (:func:`tuning_seed`), distinct from every other run's of the sweep."""
    return [tuning_seed(cfg, replicate) + 1 + k for k in range(cfg.confirmation.seeds)]


def dataset_section(cfg: SweepConfig, dataset: str, variant: str = "") -> dict[str, Any]:
    """A dataset's trial-config section as one variant sees it: the variant's option sections merged over the
    dataset's (``variants``, ``axis`` and ``level`` are not trial keys and are left out)."""
    section = copy.deepcopy(cfg.datasets[dataset])
    overrides = (section.pop("variants", None) or {}).get(variant, {}) if variant else {}
    for key in ("options", "train_options", "eval_options", "select_options"):
        if overrides.get(key):
            section[key] = {**section.get(key, {}), **copy.deepcopy(overrides[key])}
    return section


def evaluation_split(cfg: SweepConfig, dataset: str, stage: str, variant: str = "") -> tuple[str, dict[str, Any]]:
    """The split a trial of ``stage`` evaluates on, and that split's dataset options.

    Tuning trials (and so the choice of each group's best configuration) see only the *selection* split
    (``DATASETS[name].select_split``, with the dataset section's ``select_options``); confirmation runs, the only
    runs that rank, see only the *ranking* split (``eval_split``, with ``eval_options``). The two share no case.
    """
    from ..data import DATASETS

    info, section = DATASETS[dataset], dataset_section(cfg, dataset, variant)
    if stage == "tune":
        return info.select_split, dict(section.get("select_options") or {})
    return info.eval_split, dict(section.get("eval_options") or {})


def compose_trial(cfg: SweepConfig, group: Group, point: Mapping[str, Any], seed: int, stage: str,
                  proposal: str | None = None,
                  prepared: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None) -> dict[str, Any]:
    """One trial of the sweep: ``{"trial": <train_trial config>, "tags": {...}}`` (both stages, one envelope).

    Args:
        point: the sampled hyperparameters by their own names, and ``companion_weight`` when the pairing adds one.
        stage: ``tune`` (evaluates on the selection split) or ``confirm`` (the ranking split).
        proposal: tune trials: who proposed ``point`` (``default``, ``random``, ``model`` or ``fixed``).
        prepared: loss -> dataset -> the constructor arguments its preparation step returned (``LossSpec.prepare``;
            the InverseForm loss's ``inversenet`` path), passed to every trial of that loss and dataset.
    """
    trial = copy.deepcopy(cfg.trial)
    point = dict(point)
    params = {k: v for k, v in point.items() if k != COMPANION_KEY}
    trial["seed"] = seed
    section = dataset_section(cfg, group.dataset, group.variant)
    section.pop("select_options", None)  # not a trial key: it becomes eval_options of the tune stage
    split, section["eval_options"] = evaluation_split(cfg, group.dataset, stage, group.variant)
    trial["dataset"] = section
    trial.setdefault("eval", {})["split"] = split
    from ..data import DATASETS

    if DATASETS[group.dataset].needs_root:  # files can change under a running sweep; generated data cannot
        section["cases"] = {s: _listing(group.dataset, section.get("root"), s, {**section.get("options", {}), **o})
                            for s, o in (("train", section.get("train_options", {})), (split, section["eval_options"]))}
    budget = cfg.resolved_trial["train"]["steps"]
    if stage == "confirm" and cfg.confirmation.evaluations:
        # Confirmation runs evaluate on the (larger) ranking split, so less often; the evaluations are evenly spaced
        # and end at the budget, so the one at 80% of the steps gives the report's last-20% convergence gain.
        trial["eval"]["every"] = max(1, math.ceil(budget / cfg.confirmation.evaluations))
    trial["model"] = copy.deepcopy(cfg.architectures[group.arch])
    for key, value in ((prepared or {}).get(group.loss) or {}).get(group.dataset, {}).items():
        params.setdefault(key, value)
    trial["loss"] = {"name": group.loss, "params": params}
    companion = companion_for(cfg.pairing, group.loss)
    trial["companions"] = ([{"name": companion, "weight": float(point.get(COMPANION_KEY, COMPANION_DEFAULT))}]
                           if companion else [])
    spec = LOSSES[group.loss]
    tags = {"sweep": cfg.name, "stage": stage, "dataset": group.dataset, "variant": group.variant,
            "arch": group.arch, "loss": group.loss, "replicate": group.replicate,
            "seed": seed, "params": point, "is_default": point == GroupSpace(group.loss, cfg.pairing).defaults(),
            "proposal": proposal if stage == "tune" else None, "budget_steps": budget, "pairing": cfg.pairing,
            "title": spec.title, "family": spec.family, "in_survey": spec.in_survey}
    return {"trial": trial, "tags": tags}


_LISTINGS: dict[str, str] = {}


def _listing(name: str, root: Any, split: str, options: Mapping[str, Any]) -> str:
    """The split's :func:`~raysweep.data.listing_digest` as this process first listed it (once per sweep run: the
    driver composes every trial, so every trial carries the listing the sweep started with)."""
    from ..data import list_cases, listing_digest

    key = json.dumps([name, str(root), split, options], sort_keys=True, default=str)
    if key not in _LISTINGS:
        _LISTINGS[key] = listing_digest(list_cases(name, split, root=root, **options))
    return _LISTINGS[key]


def check_composed(cfg: SweepConfig, where: str) -> None:
    """What only the composed config shows: every cell's networks, data and losses share their dimension (2-D or
    3-D), every trial config it makes is valid, and the design has power."""
    _check_dims(cfg, where)
    _check_trial_configs(cfg, where)
    _check_power(cfg, where)


def n_startup_trials(cfg: SweepConfig) -> int:
    """TPE's random start-up trials per group: ``tuning.n_startup_trials``, or for ``auto`` a third of the group's
    quota and at least 2 (Optuna's default of 10 would leave a small quota random throughout)."""
    n = cfg.tuning.n_startup_trials
    return max(2, cfg.tuning.trials_per_group // 3) if n == "auto" else n


def protocol_cases(cfg: SweepConfig) -> dict[str, dict[str, dict[str, Any]]]:
    """The cases that select (tuning) and the cases that rank (confirmation), per dataset (and variant: keyed
    ``synthetic:noise1``), as the trials will see them (``eval.max_cases`` applied):
    ``{"selection": {dataset: {"split", "cases"}}, "ranking": {...}}``.

    Lists file names only; reads no image. Raises ValueError if a dataset's two lists share a case.
    """
    from ..data import list_cases

    max_cases = cfg.resolved_trial["eval"]["max_cases"]
    out: dict[str, dict[str, dict[str, Any]]] = {"selection": {}, "ranking": {}}
    for name, variant in cfg.cells():
        label, section = cell_label(name, variant), dataset_section(cfg, name, variant)
        for role, stage in (("selection", "tune"), ("ranking", "confirm")):
            split, options = evaluation_split(cfg, name, stage, variant)
            cases = list_cases(name, split, root=section.get("root"), **{**section.get("options", {}), **options})
            out[role][label] = {"split": split, "cases": cases[:max_cases] if max_cases else cases}
        shared = set(out["selection"][label]["cases"]) & set(out["ranking"][label]["cases"])
        if shared:
            raise ValueError(f"datasets.{name}: the selection and ranking splits share {len(shared)} case(s), e.g. "
                             f"{sorted(shared)[0]!r}; hyperparameters must not be selected on the cases that rank")
    return out


def check_data(cfg: SweepConfig, progress: bool = False, workers: int | None = None) -> dict[str, Any]:
    """The full data check of a sweep (:mod:`raysweep.data.check`), before anything starts: every case of every split
    of each ``nnunet``/``folder`` dataset of each cell (variants' options merged, per-split options applied) decoded
    once, in parallel, cached by file fingerprint. Runs whatever the design (also with ``confirmation.seeds: 0`` or
    one loss, where validation reads no listing).

    Returns what ``sweep.json``'s protocol records (:func:`raysweep.data.check.summary`).

    Raises:
        raysweep.data.check.DataCheckError (a ValueError): every broken file, one line each (the first 20 and a
            count), with the fix.
    """
    from ..data.check import check_sections, raise_for_errors, summary

    sections = {cell_label(name, variant): (name, dataset_section(cfg, name, variant)) for name, variant in cfg.cells()}
    reports = check_sections(sections, workers=workers, progress=progress)
    raise_for_errors(reports)
    return summary(reports)


def power_limits(cfg: SweepConfig, cases: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``{"<dataset>/<arch>": raysweep.power.PowerLimit}`` (``<dataset>`` with its variant, ``synthetic:noise1``):
    each cell's ranking cases against its losses, with the replicates of the whole study (a sweep that adds replicates
    to an earlier one, ``tuning.first_replicate``, is ranked joined with it)."""
    cases = cases or protocol_cases(cfg)
    alpha = cfg.confirmation.alpha
    return {f"{cell_label(d, v)}/{a}": power_limit(len(cases["ranking"][cell_label(d, v)]["cases"]), len(cfg.losses),
                                                   alpha, cfg.replicate_ids().stop)
            for d, v in cfg.cells() for a in cfg.architectures}


def _check_power(cfg: SweepConfig, where: str) -> None:
    """Refuse (or, with ``confirmation.underpowered: warn``, warn about) a design that can never declare a
    difference between two losses: the ranking would name a winner that no test could ever support."""
    if cfg.confirmation.seeds == 0 or len(cfg.losses) < 2:
        return
    if cfg.replicate_ids().stop == 2:
        import warnings

        # The replicate-aware test estimates each loss's replicate variance from its replicates: with two, one
        # degree of freedom each, so Holm's threshold needs a t of hundreds (raysweep.report.paired).
        warnings.warn(f"{where}: tuning.replicates is 2: each loss's replicate spread then has one degree of "
                      "freedom, and the ranking's test can claim only differences hundreds of times that spread. "
                      "Use 3 or more replicates (or 1, and the report states that tuning variance is not in the "
                      "test).", stacklevel=3)
    try:
        limits = power_limits(cfg)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{where}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    for cell, limit in limits.items():
        if limit.declarable:
            continue
        dataset = cell.split("/")[0].split(":")[0]
        message = (f"{where}: the design cannot separate any two losses in cell {cell}. {limit.sentence()} Raise "
                   f"the ranking cases to at least {limit.cases_needed} (datasets.{dataset}.eval_options: e.g. "
                   "num_volumes of synthetic, or more test cases on disk; trial.eval.max_cases must not cut them), "
                   "rank fewer losses, or set confirmation.underpowered: warn to run it anyway (the report then "
                   "states that no difference can be declared).")
        if cfg.confirmation.underpowered == "error":
            raise ValueError(message)
        import warnings

        warnings.warn(message, stacklevel=3)



def cell_dims(cfg: SweepConfig, dataset: str, variant: str = "") -> int:
    """2 or 3: the dimension of a cell's training items (a dataset's ``options.dims``, 2 when it has none)."""
    section = dataset_section(cfg, dataset, variant)
    return int({**section.get("options", {}), **section.get("train_options", {})}.get("dims", 2))


def _check_dims(cfg: SweepConfig, where: str) -> None:
    """A 3-D network trains on 3-D items and a 2-D one on 2-D items, and a 3-D cell has no 2-D-only loss."""
    from ..losses import LOSSES
    from ..models import MODELS, is_volume_arch

    for ds, variant in cfg.cells():
        dims = cell_dims(cfg, ds, variant)
        at = f"datasets.{ds}" + (f".variants.{variant}" if variant else "")
        for key, entry in cfg.architectures.items():
            arch = entry.get("arch") or MODELS.get(entry.get("name", key), {}).get("arch", "")
            arch_dims = 3 if is_volume_arch(arch) else 2
            if arch_dims != dims:
                fix = ("give the dataset options.dims: 3 (nnunet trains on 3-D patches then)" if arch_dims == 3 else
                       "use a 3-D network (arch: monai.UNet, monai.DynUNet or monai.SwinUNETR)")
                raise ValueError(f"{where}: architectures.{key} ({arch}) is a {arch_dims}-D network but {at} gives "
                                 f"{dims}-D items; {fix}, or split the sweep in two")
        flat = [n for n in cfg.losses if 3 not in LOSSES[n].dims] if dims == 3 else []
        if flat:
            reasons = "; ".join(f"{n}: {LOSSES[n].dims_note}" for n in flat)
            raise ValueError(f"{where}: {at} trains in 3-D, but {', '.join(flat)} take 2-D input only ({reasons}). "
                             "List the losses without them (losses: [...]), or train that dataset in 2-D")


def _check_trial_configs(cfg: SweepConfig, where: str) -> None:
    """Each cell's trial config, as the sweep composes it for each architecture, passes ``resolve_config``."""
    loss = cfg.losses[0]
    for ds, variant in cfg.cells():
        for arch in cfg.architectures:
            group = Group(ds, arch, loss, variant)
            for stage in ("tune", "confirm"):  # the stages evaluate on different splits
                config = compose_trial(cfg, group, GroupSpace(loss, cfg.pairing).defaults(), seed=0, stage=stage)
                try:
                    resolve_config(config["trial"])
                except ValueError as exc:
                    at = f"datasets.{ds}" + (f".variants.{variant}" if variant else "")
                    raise ValueError(f"{where}: the {stage} trials of {at} x architectures.{arch} would be "
                                     f"invalid: {exc}") from None
