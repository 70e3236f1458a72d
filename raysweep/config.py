"""The sweep configuration: YAML in, a validated :class:`SweepConfig` out, before Ray starts.

A sweep config (``configs/default.yaml`` documents every key)::

    name: default                 # names the Ray experiment folders and the results
    datasets:                     # dataset name -> its section of the trial config
      synthetic: {options: {image_size: 48}}
    architectures: [cnn, transformer]     # raysweep.models.MODELS keys, or {name: {arch, encoder, options}}
    losses: survey                # survey | all (survey + baselines) | [names]
    pairing: none                 # none | ce | dice: a companion term whose weight is tuned with the loss
    tuning: {trials_per_group: 4, seed: 0, scheduler: asha, grace_period: 1, reduction_factor: 2}
    confirmation: {seeds: 3}      # best config of each group retrained with these many seeds (0: skip)
    resources: {cpus_per_trial: 1, gpus_per_trial: 0.5, max_concurrent: null}
    trial: {...}                  # the base train_trial config every trial starts from (raysweep.train)

Every error names the key and the fix; unknown keys get a "did you mean".
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

PAIRINGS = ("none", "ce", "dice")
SCHEDULERS = ("asha", "none")
_TOP_KEYS = ("name", "datasets", "architectures", "losses", "pairing", "tuning", "confirmation", "resources", "trial")
_TUNING_KEYS = {"trials_per_group": 4, "seed": 0, "scheduler": "asha", "grace_period": 1, "reduction_factor": 2}
_CONFIRM_KEYS = {"seeds": 3}
_RESOURCE_KEYS = {"cpus_per_trial": 1, "gpus_per_trial": 1.0, "max_concurrent": None}
_DATASET_KEYS = ("root", "options", "train_options", "eval_options")


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
    #: dataset -> InverseNet checkpoint path for the inverseform loss (filled by the sweep before trials start)
    inversenets: dict = field(default_factory=dict)

    def groups(self) -> list[Group]:
        return [Group(d, a, loss) for d in self.datasets for a in self.architectures for loss in self.losses]

    def to_dict(self) -> dict:
        return {k: copy.deepcopy(getattr(self, k)) for k in _TOP_KEYS}


def _unknown(keys, allowed, where: str) -> None:
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), list(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{where}: unknown key {key!r}{hint}; valid keys: {', '.join(map(str, allowed))}")


def _section(raw: Mapping, key: str, defaults: dict, where: str) -> dict:
    value = raw.get(key) or {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}.{key} must be a mapping, got {value!r}")
    _unknown(value, defaults, f"{where}.{key}")
    return {**defaults, **value}


def _int(value, where: str, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{where} must be an integer >= {low}, got {value!r}")
    return value


def _number(value, where: str, low: float, high: float | None = None, low_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (value > low if low_open else value >= low) and (high is None or value <= high)
    if not ok:
        rng = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'}]"
        raise ValueError(f"{where} must be a number in {rng}, got {value!r}")
    return float(value)


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict:
    """Read a YAML file that must hold a mapping; ``FileNotFoundError`` / ``ValueError`` name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: a {what} is a mapping of keys, got {type(raw).__name__}")
    return dict(raw)


def load_config(path: str | Path | None = None, select: Mapping[str, Any] | None = None) -> SweepConfig:
    """Read and validate a sweep config (``configs/default.yaml`` when ``path`` is None).

    ``select`` narrows ``datasets``, ``architectures`` or ``losses`` to the given names (the CLI's subsets); a
    selected dataset or architecture keeps its section from the file, and a name the file lacks gets an empty one.
    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the key for anything invalid.
    """
    path = Path(path) if path is not None else Path(__file__).resolve().parent.parent / "configs" / "default.yaml"
    raw = read_yaml_mapping(path, "sweep config")
    for key, names in (select or {}).items():
        if key == "losses":
            raw["losses"] = list(names)
            continue
        section = raw.get(key) or {}
        if isinstance(section, (list, tuple)):
            section = {n: {} for n in section}
        raw[key] = {n: (section.get(n) if isinstance(section, Mapping) else None) or {} for n in names}
    cfg = validate(raw, where=path.name)
    cfg.text = path.read_text()
    return cfg


def validate(raw: Mapping[str, Any], where: str = "config") -> SweepConfig:
    """Validate a sweep config mapping; see :func:`load_config`."""
    from .data import DATASETS
    from .losses import LOSSES
    from .models import MODELS
    from .train import resolve_config

    _unknown(raw, _TOP_KEYS, where)
    name = raw.get("name", "sweep")
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ "):
        raise ValueError(f"{where}.name must be a non-empty string without slashes or spaces, got {name!r}")

    datasets = raw.get("datasets") or {"synthetic": {}}
    if isinstance(datasets, (list, tuple)):
        datasets = {d: {} for d in datasets}
    if not isinstance(datasets, Mapping) or not datasets:
        raise ValueError(f"{where}.datasets must name at least one dataset (a list or a mapping)")
    ds_out = {}
    for ds, section in datasets.items():
        if ds not in DATASETS:
            raise ValueError(f"{where}.datasets: unknown dataset {ds!r}; choose from {', '.join(DATASETS)}")
        section = dict(section or {})
        _unknown(section, _DATASET_KEYS, f"{where}.datasets.{ds}")
        if DATASETS[ds].needs_root:
            root = section.get("root")
            if not root:
                raise ValueError(f"{where}.datasets.{ds}.root is required: the folder holding the {ds} data")
            if not Path(root).expanduser().is_dir():
                raise FileNotFoundError(f"{where}.datasets.{ds}.root: {root} is not a folder; download {ds} there "
                                        "or fix the path")
        ds_out[ds] = {"name": ds, **section}

    archs = raw.get("architectures") or ["cnn", "transformer"]
    if isinstance(archs, (list, tuple)):
        archs = {a: {} for a in archs}
    if not isinstance(archs, Mapping) or not archs:
        raise ValueError(f"{where}.architectures must name at least one model (a list or a mapping)")
    arch_out = {}
    for arch, section in archs.items():
        section = dict(section or {})
        if arch not in MODELS and "arch" not in section:
            raise ValueError(f"{where}.architectures: unknown model {arch!r}; use one of {', '.join(MODELS)} or give "
                             "{arch: <smp architecture>, encoder: <name>}")
        _unknown(section, ("arch", "encoder", "encoder_weights", "options"), f"{where}.architectures.{arch}")
        arch_out[arch] = {"name": arch if arch in MODELS else next(iter(MODELS)), **section}

    losses = raw.get("losses", "survey")
    if losses in ("survey", "all"):
        losses = [n for n, s in LOSSES.items() if s.in_survey or losses == "all"]
    if isinstance(losses, str):
        losses = [losses]
    if not isinstance(losses, (list, tuple)) or not losses:
        raise ValueError(f"{where}.losses must be 'survey', 'all' or a list of loss names")
    for loss in losses:
        if loss not in LOSSES:
            close = difflib.get_close_matches(str(loss), list(LOSSES), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{where}.losses: unknown loss {loss!r}{hint}; see `raysweep losses`")
    losses = list(dict.fromkeys(losses))

    pairing = raw.get("pairing", "none")
    if pairing not in PAIRINGS:
        raise ValueError(f"{where}.pairing must be one of {', '.join(PAIRINGS)}, got {pairing!r}")

    tuning = _section(raw, "tuning", _TUNING_KEYS, where)
    _int(tuning["trials_per_group"], f"{where}.tuning.trials_per_group", 1)
    _int(tuning["seed"], f"{where}.tuning.seed", 0)
    if tuning["scheduler"] not in SCHEDULERS:
        raise ValueError(f"{where}.tuning.scheduler must be one of {', '.join(SCHEDULERS)}")
    _int(tuning["grace_period"], f"{where}.tuning.grace_period", 1)
    _int(tuning["reduction_factor"], f"{where}.tuning.reduction_factor", 2)

    confirmation = _section(raw, "confirmation", _CONFIRM_KEYS, where)
    _int(confirmation["seeds"], f"{where}.confirmation.seeds", 0)

    resources = _section(raw, "resources", _RESOURCE_KEYS, where)
    _number(resources["cpus_per_trial"], f"{where}.resources.cpus_per_trial", 0, low_open=True)
    _number(resources["gpus_per_trial"], f"{where}.resources.gpus_per_trial", 0, 64)
    if resources["max_concurrent"] is not None:
        _int(resources["max_concurrent"], f"{where}.resources.max_concurrent", 1)

    trial = raw.get("trial") or {}
    if not isinstance(trial, Mapping):
        raise ValueError(f"{where}.trial must be a mapping (the base train_trial config)")
    for key in ("dataset", "model", "loss", "companions", "seed", "output_dir"):
        if key in trial:
            raise ValueError(f"{where}.trial.{key} is set by the sweep; use datasets / architectures / losses / "
                             "pairing instead")
    try:
        resolve_config(trial)
    except ValueError as exc:
        raise ValueError(f"{where}.trial: {exc}") from None

    return SweepConfig(name=name, datasets=ds_out, architectures=arch_out, losses=losses, pairing=pairing,
                       tuning=tuning, confirmation=confirmation, resources=resources, trial=dict(trial),
                       source=dict(raw))
