"""The sweep config: its keys, their defaults and checks, and the validated :class:`SweepConfig`.

A sweep config (``configs/default.yaml`` documents every key)::

    name: default                 # names the Ray experiment folders and the results
    datasets:                     # dataset name -> its section of the trial config
      synthetic: {options: {image_size: 48}}
    architectures: [cnn, transformer]     # raysweep.models.MODELS keys, or {name: {arch, encoder, options}}
    losses: survey                # survey | all (survey + baselines) | [names]
    pairing: none                 # none | ce | dice: a companion term whose weight is tuned with the loss
    tuning: {trials_per_group: 4, seed: 0, scheduler: asha, grace_period: 1, reduction_factor: 2,
             n_startup_trials: auto}   # TPE's random start-up trials per group (auto: a third of the quota, >= 2)
    confirmation: {seeds: 3, evaluations: null, alpha: 0.05, underpowered: error}
                                  # best config of each group retrained with these many seeds (0: skip), evaluated
                                  # on the ranking split this many times, evenly spaced (null: as trial.eval.every);
                                  # a design whose ranking cases can never separate two losses at alpha is refused
                                  # (underpowered: warn runs it anyway)
    resources: {cpus_per_trial: 1, gpus_per_trial: 0.5, max_concurrent: null}   # whole CPUs >= 1; GPUs in [0, 1]
    trial: {...}                  # the base train_trial config every trial starts from (raysweep.trial.schema)

Validation reads no data and starts nothing; it checks names against the registries (datasets, losses, smp
architectures and encoders), dataset options by value, that every trial config the sweep composes passes
``raysweep.trial.resolve_config``, and the design's power (:mod:`raysweep.power`): with the ranking split's cases
(listed, not read) and the cell's losses, some difference must be declarable at ``confirmation.alpha``.

The protocol (``raysweep.search.evaluation_split``): tuning trials evaluate on each dataset's selection split
(``DATASETS[name].select_split``, options from the dataset section's ``select_options``), confirmation runs on its
ranking split (``eval_split``, ``eval_options``); the sweep records both case lists in ``sweep.json``. Every error is a ``ValueError`` (``FileNotFoundError`` for a missing file or data
folder) that names the key and the fix; unknown keys get a "did you mean".

The YAML is read with YAML 1.2 scalars: only ``true`` / ``false`` are booleans (``off``, ``no``, ``yes``, ``on`` stay
strings, so ``amp: off`` means what it says) and ``1e-3`` is a float (PyYAML alone reads it as a string); a key given
twice in one mapping is an error rather than silently the last one. Values must be plain data (strings, numbers,
booleans, null, lists, mappings with string keys; no NaN or inf): the config is stored as JSON with the results and
compared on resume.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..checks import did_you_mean
from .yaml_io import _check_plain, _show

PAIRINGS = ("none", "ce", "dice")
SCHEDULERS = ("asha", "none")
_TOP_KEYS = ("name", "datasets", "architectures", "losses", "pairing", "tuning", "confirmation", "resources", "trial")
_TUNING_KEYS = {"trials_per_group": 4, "seed": 0, "scheduler": "asha", "grace_period": 1, "reduction_factor": 2,
                "n_startup_trials": "auto"}
_CONFIRM_KEYS = {"seeds": 3, "evaluations": None, "alpha": 0.05, "underpowered": "error"}
UNDERPOWERED = ("error", "warn")
_RESOURCE_KEYS = {"cpus_per_trial": 1, "gpus_per_trial": 1.0, "max_concurrent": None}
_DATASET_KEYS = ("name", "root", "options", "train_options", "eval_options", "select_options")
_ARCH_KEYS = ("name", "arch", "encoder", "encoder_weights", "options")
_NAME_RE = re.compile(r"^[\w][\w.-]{0,99}$")
#: Upper bound of counts (trials, seeds, ASHA's periods): past it a value is a typo, not a plan.
_MAX_COUNT = 10**6
#: Seeds stay below 2**31 so that seed + confirmation seeds fits every RNG (numpy takes < 2**32).
_MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class Group:
    """One (dataset, architecture, loss) cell: one Optuna study, one row of the ranking."""

    dataset: str
    arch: str
    loss: str

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.arch}/{self.loss}"


@dataclass
class SweepConfig:
    """A validated sweep config (see the module docstring)."""

    name: str
    datasets: dict[str, dict]
    architectures: dict[str, dict]
    losses: list[str]
    pairing: str
    tuning: dict
    confirmation: dict
    resources: dict
    trial: dict
    source: dict = field(default_factory=dict)
    text: str = ""

    def groups(self) -> list[Group]:
        return [Group(d, a, loss) for d in self.datasets for a in self.architectures for loss in self.losses]

    def to_dict(self) -> dict:
        """The config as plain data (JSON-serialisable); ``validate(cfg.to_dict())`` gives the same config back."""
        return {k: copy.deepcopy(getattr(self, k)) for k in _TOP_KEYS}




def _unknown(keys, allowed, where: str) -> None:
    for key in keys:
        if key not in allowed:
            raise ValueError(f"{where}: unknown key {_show(key)}{did_you_mean(key, allowed)}; valid keys: {', '.join(map(str, allowed))}")


def _mapping(value: Any, where: str, what: str) -> dict:
    """A mapping section (None -> {}); ValueError naming ``where`` otherwise."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a mapping ({what}), got {_show(value)}")
    return dict(value)


def _section(raw: Mapping, key: str, defaults: dict, where: str) -> dict:
    value = _mapping(raw.get(key), f"{where}.{key}", ", ".join(defaults))
    _unknown(value, defaults, f"{where}.{key}")
    return {**defaults, **value}


def _names(value: Any, where: str, what: str) -> dict:
    """A list of names or a mapping name -> section, as a mapping; ValueError naming ``where`` otherwise."""
    if isinstance(value, (list, tuple)):
        bad = [v for v in value if not isinstance(v, str) or not v]
        if bad:
            raise ValueError(f"{where}: {_show(bad[0])} is not a {what} name (a list holds names)")
        value = {v: {} for v in value}
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"{where} must name at least one {what} (a list or a mapping), got {_show(value)}")
    return dict(value)


def _int(value, where: str, low: int, high: int = _MAX_COUNT) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{where} must be an integer >= {low} (at most {high}), got {_show(value)}")
    return value


def _choice(value, where: str, choices: tuple) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{where} must be one of {', '.join(choices)}, got {_show(value)}")
    return value




def parse(raw: Mapping[str, Any], where: str = "config") -> SweepConfig:
    """Check every key and value of a sweep config mapping, one by one; :func:`raysweep.config.validate` adds the
    checks of what the config composes (trial configs, power). Reads no data and starts nothing.

    Raises ``ValueError`` naming the key (``FileNotFoundError`` for a data folder that does not exist).
    """
    from ..data import DATASETS, check_dataset_options
    from ..losses import LOSSES
    from ..models import MODELS
    from ..trial.schema import resolve_config

    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: a sweep config is a mapping of keys, got {type(raw).__name__}")
    _check_plain(raw, where)
    raw = json.loads(json.dumps(raw))  # a plain copy (tuples -> lists): what the sweep stores and compares on resume
    _unknown(raw, _TOP_KEYS, where)
    name = raw.get("name", "sweep")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"{where}.name must be 1 to 100 letters, digits, '_', '-' or '.' (it names folders; no "
                         f"slashes or spaces, not starting with '.' or '-'), got {_show(name)}")

    datasets = raw.get("datasets")
    datasets = _names({"synthetic": {}} if datasets is None else datasets, f"{where}.datasets", "dataset")
    ds_out = {}
    for ds, section in datasets.items():
        if ds not in DATASETS:
            raise ValueError(f"{where}.datasets: unknown dataset {_show(ds)}{did_you_mean(ds, DATASETS)}; choose from {', '.join(DATASETS)}")
        at = f"{where}.datasets.{ds}"
        section = _mapping(section, at, ", ".join(_DATASET_KEYS[1:]))
        _unknown(section, _DATASET_KEYS, at)
        if section.get("name", ds) != ds:
            raise ValueError(f"{at}.name must be {ds!r} (the key names the dataset), got {_show(section['name'])}")
        root = section.get("root")
        if root is not None and (not isinstance(root, str) or not root.strip()):
            raise ValueError(f"{at}.root must be a folder path, got {_show(root)}")
        if DATASETS[ds].needs_root:
            if not root:
                raise ValueError(f"{at}.root is required: the folder holding the {ds} data")
            if not Path(root).expanduser().is_dir():
                raise FileNotFoundError(f"{at}.root: {root} is not a folder; download {ds} there or fix the path")
        for key in ("options", "train_options", "eval_options", "select_options"):
            if key not in section:
                continue
            section[key] = _mapping(section[key], f"{at}.{key}", f"{ds} options")
            try:
                check_dataset_options(ds, section[key])
            except ValueError as exc:
                raise ValueError(f"{at}.{key}: {str(exc).removeprefix(ds + ': ')}") from None
        ds_out[ds] = {**section, "name": ds}

    archs = raw.get("architectures")
    archs = _names(["cnn", "transformer"] if archs is None else archs, f"{where}.architectures", "model")
    arch_out = {}
    for arch, section in archs.items():
        at = f"{where}.architectures.{arch}"
        section = _mapping(section, at, ", ".join(_ARCH_KEYS[1:]))
        if arch not in MODELS and "arch" not in section:
            raise ValueError(f"{where}.architectures: unknown model {_show(arch)}; use one of {', '.join(MODELS)} or "
                             "give {arch: <smp architecture>, encoder: <name>}")
        _unknown(section, _ARCH_KEYS, at)
        base = section.get("name", arch if arch in MODELS else next(iter(MODELS)))
        if not isinstance(base, str) or base not in MODELS:
            raise ValueError(f"{at}.name must be one of {', '.join(MODELS)} (the defaults it starts from), got "
                             f"{_show(base)}")
        if "options" in section:
            section["options"] = _mapping(section["options"], f"{at}.options", "smp architecture options")
        _check_model({**MODELS[base], **{k: v for k, v in section.items() if k in ("arch", "encoder") and v}},
                     section, at)
        arch_out[arch] = {**section, "name": base}

    losses = raw.get("losses", "survey")
    if losses in ("survey", "all"):
        losses = [n for n, s in LOSSES.items() if s.in_survey or losses == "all"]
    if isinstance(losses, str):
        losses = [losses]
    if not isinstance(losses, (list, tuple)) or not losses:
        raise ValueError(f"{where}.losses must be 'survey', 'all' or a non-empty list of loss names, got "
                         f"{_show(losses)}")
    for loss in losses:
        if not isinstance(loss, str) or loss not in LOSSES:
            raise ValueError(f"{where}.losses: unknown loss {_show(loss)}{did_you_mean(loss, LOSSES)}; see `raysweep losses`")
    losses = list(dict.fromkeys(losses))

    pairing = _choice(raw.get("pairing", "none"), f"{where}.pairing", PAIRINGS)

    tuning = _section(raw, "tuning", _TUNING_KEYS, where)
    _int(tuning["trials_per_group"], f"{where}.tuning.trials_per_group", 1)
    _int(tuning["seed"], f"{where}.tuning.seed", 0, _MAX_SEED)
    _choice(tuning["scheduler"], f"{where}.tuning.scheduler", SCHEDULERS)
    _int(tuning["grace_period"], f"{where}.tuning.grace_period", 1)
    _int(tuning["reduction_factor"], f"{where}.tuning.reduction_factor", 2)
    if tuning["n_startup_trials"] != "auto":
        _int(tuning["n_startup_trials"], f"{where}.tuning.n_startup_trials", 0)

    confirmation = _section(raw, "confirmation", _CONFIRM_KEYS, where)
    _int(confirmation["seeds"], f"{where}.confirmation.seeds", 0)
    alpha = confirmation["alpha"]
    if not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and 0 < alpha < 1):
        raise ValueError(f"{where}.confirmation.alpha must be a significance level in (0, 1), got {_show(alpha)}")
    _choice(confirmation["underpowered"], f"{where}.confirmation.underpowered", UNDERPOWERED)
    if confirmation["evaluations"] is not None:
        _int(confirmation["evaluations"], f"{where}.confirmation.evaluations", 1)

    resources = _section(raw, "resources", _RESOURCE_KEYS, where)
    cpus = resources["cpus_per_trial"]
    if not (isinstance(cpus, (int, float)) and not isinstance(cpus, bool) and math.isfinite(cpus)
            and cpus == int(cpus) and 1 <= cpus <= _MAX_COUNT):
        raise ValueError(f"{where}.resources.cpus_per_trial must be a whole number of CPUs >= 1 (each trial runs "
                         f"torch with that many threads), got {_show(cpus)}")
    gpus = resources["gpus_per_trial"]
    if not (isinstance(gpus, (int, float)) and not isinstance(gpus, bool) and 0 <= gpus <= 1):  # NaN fails too
        raise ValueError(f"{where}.resources.gpus_per_trial must be a number in [0, 1] (a trial trains on one GPU; a "
                         f"fraction such as 0.5 lets trials share one), got {_show(gpus)}")
    if resources["max_concurrent"] is not None:
        _int(resources["max_concurrent"], f"{where}.resources.max_concurrent", 1)

    trial = _mapping(raw.get("trial"), f"{where}.trial", "the base train_trial config")
    for key in ("dataset", "model", "loss", "companions", "seed", "output_dir"):
        if key in trial or any(k.startswith(key + ".") for k in trial):
            raise ValueError(f"{where}.trial.{key} is set by the sweep; use datasets / architectures / losses / "
                             "pairing instead")
    if "eval.split" in trial or "split" in (trial.get("eval") if isinstance(trial.get("eval"), Mapping) else {}):
        raise ValueError(f"{where}.trial.eval.split is set by the sweep: tuning trials evaluate on each dataset's "
                         "selection split and confirmation runs on its ranking split (never the same cases); use "
                         "datasets.<name>.select_options / eval_options to size them")
    try:
        resolved = resolve_config(trial)
    except ValueError as exc:
        raise ValueError(f"{where}.trial: {exc}") from None
    if resolved["train"]["device"] not in ("auto", "cpu", "cuda"):
        raise ValueError(f"{where}.trial.train.device must be auto, cpu or cuda in a sweep (Ray gives each trial its "
                         f"GPU, which the trial sees as cuda), got {_show(resolved['train']['device'])}")

    return SweepConfig(name=name, datasets=ds_out, architectures=arch_out, losses=losses, pairing=pairing,
                       tuning=tuning, confirmation=confirmation, resources=resources, trial=dict(trial),
                       source=dict(raw))



def _check_model(names: dict, section: dict, where: str) -> None:
    """The architecture, encoder, option names and a local weights path of one ``architectures`` entry, without
    building the model (smp's names are read; nothing is downloaded)."""
    from .. import models

    for key in ("arch", "encoder"):
        if key in section and section[key] is not None and (not isinstance(section[key], str) or not section[key]):
            raise ValueError(f"{where}.{key} must be a name, got {_show(section[key])}")
    weights = section.get("encoder_weights")
    if weights is not None and (not isinstance(weights, str) or not weights):
        raise ValueError(f"{where}.encoder_weights must be null, a weight name such as 'imagenet' or a file path, "
                         f"got {_show(weights)}")
    arch, encoder = names["arch"], names["encoder"]
    if arch.lower() not in models.architectures():
        raise ValueError(f"{where}.arch: unknown smp architecture {arch!r}{did_you_mean(arch.lower(), models.architectures())}; choose one of "
                         f"{', '.join(models.architectures())} (case-insensitive)")
    options = section.get("options") or {}
    for key, check in (("encoder", lambda: models._check_encoder(encoder)),
                       ("options", lambda: models._check_arch_options(arch.lower(), encoder, options)),
                       ("encoder_weights", lambda: models._local_weights_path(weights))):
        try:
            check()
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{where}.{key}: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"{where}.{key}: {exc}") from None

