"""The sweep config: YAML in, a validated :class:`SweepConfig` out, before Ray starts; and what it composes.

* :mod:`.yaml_io`: reading YAML files (YAML 1.2 scalars, duplicate keys refused, plain data only);
* :mod:`.model`: the keys, their defaults and checks (:func:`~.model.parse`), :class:`SweepConfig`, :class:`Group`;
* :mod:`.compose`: each trial's config and tags (:func:`compose_trial`), the protocol's case lists, power, quotas.

:func:`validate` = the key-by-key checks, then the checks of what the config composes (every trial config it makes
passes :func:`raysweep.trial.resolve_config`; the design has the power to separate losses).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .compose import (check_composed, check_data, compose_trial, confirmation_seeds, evaluation_split, n_startup_trials,
                      power_limits, protocol_cases, sampler_seed, tune_quota, tuning_seed)
from .model import PAIRINGS, SCHEDULERS, UNDERPOWERED, Group, SweepConfig, parse
from .yaml_io import parse_yaml, read_yaml_mapping


def validate(raw: Mapping[str, Any], where: str = "config") -> SweepConfig:
    """Validate a sweep config mapping (see :func:`load_config`). Reads no data and starts nothing.

    Raises ``ValueError`` naming the key (``FileNotFoundError`` for a data folder that does not exist).
    """
    cfg = parse(raw, where)
    check_composed(cfg, where)
    return cfg


def load_config(path: str | Path | None = None, select: Mapping[str, Any] | None = None) -> SweepConfig:
    """Read and validate a sweep config (``configs/default.yaml`` when ``path`` is None).

    ``select`` narrows ``datasets``, ``architectures`` or ``losses`` to the given names (the CLI's subsets); a
    selected dataset or architecture keeps its section from the file, and a name the file lacks gets an empty one.
    ``select["replicates"]``, a ``range``, runs those replicates (``tuning.first_replicate`` and ``replicates``):
    ``range(10, 12)`` adds replicates 10 and 11 to a sweep of 10 (``raysweep merge`` joins the two).
    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the key for anything invalid.
    """
    path = Path(path) if path is not None else Path(__file__).resolve().parents[2] / "configs" / "default.yaml"
    raw = read_yaml_mapping(path, "sweep config")
    for key, names in (select or {}).items():
        if key == "replicates":
            tuning = raw["tuning"] = dict(raw.get("tuning") or {})
            tuning["first_replicate"], tuning["replicates"] = names.start, len(names)
            continue
        if key == "losses":
            raw["losses"] = list(names)
            continue
        section = raw.get(key) or {}
        if isinstance(section, (list, tuple)):
            section = {n: {} for n in section if isinstance(n, str)}
        raw[key] = {n: (section.get(n) if isinstance(section, Mapping) else None) or {} for n in names}
    cfg = validate(raw, where=path.name)
    cfg.text = path.read_bytes().decode("utf-8-sig")
    return cfg


__all__ = ["PAIRINGS", "SCHEDULERS", "UNDERPOWERED", "Group", "SweepConfig", "check_data", "compose_trial",
           "confirmation_seeds",
           "tuning_seed", "sampler_seed", "evaluation_split",
           "load_config", "n_startup_trials", "parse", "parse_yaml", "power_limits",
           "protocol_cases", "read_yaml_mapping", "tune_quota", "validate"]
