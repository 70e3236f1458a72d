"""The loss registry: one :class:`LossSpec` per loss, the single source of truth for the catalogue.

The docs' catalogue table, ``raysweep losses``, the sweep's search spaces and the report's family view are all
generated from :data:`LOSSES`. A loss module registers its class with :func:`register`; the spec's ``defaults`` are
read from the class's ``__init__`` signature so that the documented default and the code's default cannot drift apart.

Search spaces are plain data (:class:`Float`, :class:`Int`, :class:`Categorical`) so that this layer stays free of
Optuna and Ray; the sweep translates them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from ..checks import did_you_mean, jsonable
from ..vocab import FAMILIES

#: The companion terms a loss can declare it already contains (``LossSpec.contains``): the sweep's pairing policy
#: never adds a term the loss has already.
COMPANION_TERMS = ("ce", "dice")

#: Extra keyword inputs a loss may take besides ``(logits, target)``. Each is produced by the data pipeline or the
#: model and passed through by the trainer; a loss declares the ones it uses in ``LossSpec.needs``.
EXTRA_INPUTS = MappingProxyType(
    {
        "dist_map": "per-class signed distance map of the target, float32 (B, C, H, W)",
        "boundary": "per-class boundary mask of the target, float32 (B, C, H, W)",
        "rw_map": "region-wise map, float32 (B, C, H, W)",
        "features": "decoder features, float (B, D, h, w)",
        "aux_logits": "auxiliary head output, float (B, K, H, W)",
    }
)


@dataclass(frozen=True)
class Preparation:
    """What a loss's preparation step (``LossSpec.prepare``) gets: one dataset of a sweep.

    Attributes:
        dataset: the dataset's name in the sweep config.
        train_split: builds the dataset's training split (called only when the step has work to do): items with
            ``mask`` (H, W) int64, and ``info.num_classes``.
        out_dir: the sweep's output folder; the step keeps what it makes there (a resumed sweep finds it again).
        seed: the sweep's ``tuning.seed``.
        progress: whether to show a progress bar.
    """

    dataset: str
    train_split: Callable[[], Any]
    out_dir: Path
    seed: int
    progress: bool = True


@dataclass(frozen=True)
class Float:
    """A real-valued search dimension ``low <= x <= high``, sampled log-uniformly when ``log``."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self):
        if not self.low < self.high or (self.log and self.low <= 0):
            raise ValueError(f"bad Float range [{self.low}, {self.high}] (log={self.log})")

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def describe(self) -> str:
        return f"[{self.low:g}, {self.high:g}]" + (" log" if self.log else "")

    def to_dict(self) -> dict:
        return {"type": "float", "low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class Int:
    """An integer search dimension ``low <= x <= high``."""

    low: int
    high: int
    log: bool = False

    def __post_init__(self):
        if not self.low < self.high or (self.log and self.low <= 0):
            raise ValueError(f"bad Int range [{self.low}, {self.high}] (log={self.log})")

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high

    def describe(self) -> str:
        return f"{{{self.low}..{self.high}}}" + (" log" if self.log else "")

    def to_dict(self) -> dict:
        return {"type": "int", "low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class Categorical:
    """A choice among a few values (str, bool, int or float)."""

    choices: tuple

    def __post_init__(self):
        if len(self.choices) < 2:
            raise ValueError(f"a Categorical needs at least two choices, got {self.choices!r}")

    def contains(self, value: Any) -> bool:
        return any(value == c and type(value) is type(c) for c in self.choices)

    def describe(self) -> str:
        return "{" + ", ".join(map(str, self.choices)) + "}"

    def to_dict(self) -> dict:
        return {"type": "categorical", "choices": list(self.choices)}


Dimension = Float | Int | Categorical


@dataclass(frozen=True)
class LossSpec:
    """Everything raysweep knows about one loss.

    Attributes:
        name: registry key, e.g. ``"tversky"``.
        family: the survey's family: ``'pixel' | 'region' | 'boundary' | 'combination'``.
        title: human-readable name.
        reference: the original paper (authors, venue, year).
        defaults: every hyperparameter of the constructor with its default (``ignore_index`` excluded).
        space: search space per tunable hyperparameter; a subset of ``defaults``, each default lies inside.
        needs: extra keyword inputs the loss uses (keys of :data:`EXTRA_INPUTS`).
        contains: the companion terms (:data:`COMPANION_TERMS`) the loss already has, so that a pairing policy never
            adds the same term twice (``dice_ce`` contains both).
        in_survey: whether the loss is one of the survey's 25 (``False`` for the two baselines).
        cls: the ``torch.nn.Module`` class.
        summary: one line on what the loss does.
        prepare: a step a sweep runs once per dataset before any trial, for a loss that needs something made from
            the data first (the InverseForm loss: its InverseNet), or None. Called as
            ``prepare(Preparation(...))`` (:class:`Preparation`), it returns the extra constructor arguments every
            trial of that dataset passes (``{"inversenet": "<path>"}``).
        dims: the spatial dimensions the loss takes: ``(2, 3)`` (2-D ``(B, C, H, W)`` and 3-D ``(B, C, D, H, W)``
            input) or ``(2,)`` for a loss that is 2-D by construction.
        dims_note: how the loss is defined in 3-D (its authors' 3-D form, or the extension raysweep uses and its
            source), or, for a 2-D-only loss, why it refuses 3-D input; the error a 3-D call raises quotes it.
    """

    name: str
    family: str
    title: str
    reference: str
    defaults: Mapping[str, Any]
    space: Mapping[str, Dimension]
    needs: frozenset
    in_survey: bool
    cls: type
    contains: frozenset = frozenset()
    summary: str = ""
    has_parameters: bool = field(default=False)
    prepare: Callable[[Preparation], dict[str, Any]] | None = None
    dims: tuple[int, ...] = (2, 3)
    dims_note: str = ""

    def to_dict(self) -> dict:
        """A JSON-serialisable view (used by ``raysweep losses --json``)."""
        return {
            "name": self.name,
            "family": self.family,
            "title": self.title,
            "reference": self.reference,
            "summary": self.summary,
            "defaults": {k: jsonable(v) for k, v in self.defaults.items()},
            "space": {k: d.to_dict() for k, d in self.space.items()},
            "needs": sorted(self.needs),
            "contains": sorted(self.contains),
            "in_survey": self.in_survey,
            "learnable_parameters": self.has_parameters,
            "dims": list(self.dims),
            "dims_note": self.dims_note,
        }



LOSSES: dict[str, LossSpec] = {}


def register(
    name: str,
    *,
    family: str,
    title: str,
    reference: str,
    space: Mapping[str, Dimension] | None = None,
    needs: frozenset | set = frozenset(),
    contains: frozenset | set = frozenset(),
    in_survey: bool = True,
    has_parameters: bool = False,
    prepare: Callable[[Preparation], dict[str, Any]] | None = None,
    dims: tuple[int, ...] = (2, 3),
    dims_note: str = "",
):
    """Class decorator that adds a loss to :data:`LOSSES` after checking the spec is coherent."""

    def decorate(cls):
        if name in LOSSES:
            raise ValueError(f"loss {name!r} registered twice")
        if family not in FAMILIES:
            raise ValueError(f"loss {name!r}: family {family!r} not in {FAMILIES}")
        if set(contains) - set(COMPANION_TERMS):
            raise ValueError(f"loss {name!r}: contains {sorted(contains)}: only {COMPANION_TERMS} are companion terms")
        unknown = set(needs) - set(EXTRA_INPUTS)
        if unknown:
            raise ValueError(f"loss {name!r}: unknown extra inputs {sorted(unknown)}")
        if not dims or set(dims) - {2, 3} or 2 not in dims:
            raise ValueError(f"loss {name!r}: dims {dims!r} must be (2,) or (2, 3)")
        if 3 not in dims and not dims_note:
            raise ValueError(f"loss {name!r}: a 2-D-only loss must say why in dims_note")
        defaults = _constructor_defaults(cls)
        space_ = dict(space or {})
        for key, dim in space_.items():
            if key not in defaults:
                raise ValueError(f"loss {name!r}: search dimension {key!r} is not a constructor argument")
            if not dim.contains(defaults[key]):
                raise ValueError(f"loss {name!r}: default {key}={defaults[key]!r} outside its space {dim.describe()}")
        doc = inspect.getdoc(cls) or ""
        LOSSES[name] = LossSpec(
            name=name,
            family=family,
            title=title,
            reference=reference,
            defaults=MappingProxyType(defaults),
            space=MappingProxyType(space_),
            needs=frozenset(needs),
            contains=frozenset(contains),
            in_survey=in_survey,
            cls=cls,
            summary=doc.splitlines()[0] if doc else "",
            has_parameters=has_parameters,
            prepare=prepare,
            dims=tuple(sorted(dims)),
            dims_note=dims_note,
        )
        cls.spec_name = name
        return cls

    return decorate


def _constructor_defaults(cls) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    out = {}
    for p in list(params.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name == "ignore_index":
            continue
        if p.default is p.empty:
            raise TypeError(f"{cls.__name__}.__init__: argument {p.name!r} needs a default")
        out[p.name] = p.default
    return out


def build_loss(name: str, **hyperparameters):
    """Instantiate a registered loss by name.

    Args:
        name: a key of :data:`LOSSES`.
        **hyperparameters: constructor arguments; any of ``LOSSES[name].defaults`` plus ``ignore_index``.

    Returns:
        a ``torch.nn.Module`` called as ``loss(logits, target, **extra) -> 0-dim tensor``.

    Raises:
        ValueError: unknown loss name, unknown hyperparameter, or a value outside the loss's valid domain.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}{did_you_mean(name, LOSSES)}; known losses: {', '.join(sorted(LOSSES))}")
    spec = LOSSES[name]
    allowed = set(spec.defaults) | {"ignore_index"}
    unknown = sorted(set(hyperparameters) - allowed)
    if unknown:
        raise ValueError(
            f"loss {name!r} has no hyperparameter(s) {', '.join(unknown)}; "
            f"valid ones: {', '.join(sorted(allowed))}"
        )
    return spec.cls(**hyperparameters)
