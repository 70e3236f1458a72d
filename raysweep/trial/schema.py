"""The trial config: its defaults, its validation (:func:`resolve_config`) and the weight schedules.

The sweep config and ``raysweep train`` read this module; it imports no training code.

Config schema
-------------
A (nested) dict; every key has a default, so ``train_trial({})`` trains the CPU-sized default (synthetic data,
64 x 64 slices, U-Net/ResNet-34, Dice+CE, 40 steps) in well under a minute. Unknown keys raise ``ValueError`` naming
the key. The listing below is generated from :class:`TrialConfig`, the pydantic model whose JSON Schema
``raysweep schema --trial`` prints (``docs/schema/trial-config.schema.json``). Dotted keys are accepted at any
level (``{"train.steps": 5}`` == ``{"train": {"steps": 5}}``), which is what ``raysweep train --set`` and flat search
spaces produce. ``resolve_config(config)`` returns the full, validated
config::

{keys}
Weight schedules
----------------
The objective at step ``s`` (0-based, ``s < steps``) is ``sum_i w_i(s) * term_i(logits, mask, **extra)`` over the
loss and its companions, ``w_i(s) = schedule(weight_i, s)``:

* ``{kind: constant}``: ``weight``.
* ``{kind: linear, to: W, begin: 0.0, end: 1.0}``: ``weight`` until ``s / steps == begin``, then linearly to ``W``
  at ``s / steps == end``, then ``W``.
* ``{kind: steal, delta: D, every: null, floor: null, ceiling: null}``: ``weight + D * (s // every)`` clipped to
  ``[floor, ceiling]``; ``every`` defaults to one epoch (``len(train set) // batch_size`` steps). Kervadec et al.'s
  rebalancing (their ``StealWeight``: from the weights (1, 0.01), each epoch the region weight loses 0.01 down to a
  floor of 0.1 and the boundary weight gains 0.01 with no cap, 1.22 at epoch 121) -- which the ``boundary`` loss
  applies exactly to its own region term -- pairs any two terms, e.g.::

      loss: {name: hausdorff, weight: 0.01, schedule: {kind: steal, delta: 0.01}}
      companions: [{name: generalized_dice, weight: 1.0, schedule: {kind: steal, delta: -0.01, floor: 0.1}}]

A term whose weight is 0 at a step is not computed at that step.

Every term also gets what its ``LossSpec.needs`` asks for, generically: per-sample target maps from
``loss.target_maps(num_classes)`` (computed in the DataLoader workers after augmentation), decoder ``features`` and
``aux_logits`` (an auxiliary head of ``loss.aux_channels`` channels) from the model; and ``loss.set_epoch(epoch)`` at
the start of every epoch, which losses with their own schedule follow (``boundary`` moves weight from its region term
to its boundary term, Kervadec's rebalancing, by itself).
"""

from __future__ import annotations

import copy
import os
import textwrap
from typing import Annotated, Any, Literal, Mapping, Optional, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, ValidationError, field_validator,
                      model_validator)

from ..checks import Bad, Must, config_error, did_you_mean

__all__ = ["DEFAULTS", "SCHEDULE_KINDS", "TrialConfig", "choice", "registry_names", "resolve_config",
           "schedule_weight"]


def choice(*values: Any) -> Any:
    """A field type taking exactly one of ``values`` (``1`` is not ``True``; a JSON Schema ``enum``)."""

    def check(value: Any) -> Any:
        if not any(value is c or (value == c and type(value) is type(c)) for c in values):
            raise ValueError
        return value

    return Annotated[Any, PlainValidator(check, json_schema_input_type=Literal[values]),
                     Must("one of " + ", ".join(map(repr, values)))]


def registry_names(kind: str) -> list[str]:
    """The names a registry knows (``datasets``, ``losses``, ``models``), imported when asked."""
    if kind == "datasets":
        from ..data import DATASETS as names
    elif kind == "losses":
        from ..losses import LOSSES as names
    else:
        from ..models import MODELS as names
    return list(names)


def _enum_of(kind: str):
    return lambda schema: schema.update(enum=registry_names(kind))


def _path(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _schedule(value: Any) -> Any:
    return {"kind": value} if isinstance(value, str) else value


def _name_in(kind: str, noun: str, hint: str):
    def check(cls, value: str) -> str:
        names = registry_names(kind)
        if value not in names:
            raise Bad(f": unknown {noun} {value!r}{did_you_mean(value, names)}; "
                      + hint.format(", ".join(names), len(names)))
        return value
    return field_validator("name")(classmethod(check))


_DOTTED = {"patternProperties": {"^[^.]+\\.": {"description": "a dotted key: 'a.b: 1' is 'a: {b: 1}'"}}}
Options = dict[str, Any]
PositiveInt = Annotated[int, Field(ge=1)]
Count = Annotated[int, Field(ge=0)]
Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Number = Annotated[float, Field(allow_inf_nan=False)]
Path = Annotated[Optional[str], BeforeValidator(_path)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_DOTTED)


class Dataset(Section):
    """The dataset the trial trains and evaluates on."""

    name: str = Field("synthetic", description="a key of raysweep.data.DATASETS",
                      json_schema_extra=_enum_of("datasets"))
    root: Path = Field(None, description="folder of a file-based dataset (synapse, cityscapes, nnunet, folder)")
    options: Options = Field({}, description="build_dataset options for every split (image_size, depth, ...)")
    train_options: Options = Field({}, description="... for the training split only (label_noise, ...)")
    eval_options: Options = Field({}, description="... for the evaluation split only (num_volumes, ...)")
    cases: Optional[dict[str, str]] = Field(None, description="split -> the listing the sweep started with "
                                            "('<count>:<digest>', raysweep.data.listing_digest); a trial whose "
                                            "split lists other cases ends as error. null: not checked")
    _name = _name_in("datasets", "dataset", "choose one of {}")


class Model(Section):
    """The network (segmentation_models_pytorch in 2-D, MONAI in 3-D)."""

    name: str = Field("cnn", description="a key of raysweep.models.MODELS: cnn (Unet/resnet34) | transformer "
                      "(Segformer/mit_b0)", json_schema_extra=_enum_of("models"))
    arch: Optional[str] = Field(None, description='override MODELS[name]["arch"]: any smp architecture, or a 3-D '
                                "network: monai.UNet | monai.DynUNet | monai.SwinUNETR")
    encoder: Optional[str] = Field(None, description='override MODELS[name]["encoder"]: any smp encoder or '
                                   '"tu-<timm name>" (none for the 3-D networks)')
    encoder_weights: Optional[str] = Field(None, description='null | "imagenet" | path to a local encoder state dict')
    options: Options = Field({}, description="architecture options (smp: decoder_channels, ...; MONAI: the "
                             "network's constructor arguments)")
    _name = _name_in("models", "model", "choose one of {} (or set model.arch and model.encoder to any smp "
                     "architecture and encoder)")


class Constant(Section):
    """``weight`` at every step."""

    kind: Literal["constant"] = Field("constant", description="the schedule")


class Linear(Section):
    """``weight`` until ``begin`` (a fraction of the steps), then linearly to ``to`` at ``end``, then ``to``."""

    kind: Literal["linear"] = Field("linear", description="the schedule")
    to: Weight = Field(description="the weight at end")
    begin: Number = Field(0.0, description="fraction of the steps where the ramp begins")
    end: Number = Field(1.0, description="fraction of the steps where the ramp ends")

    @model_validator(mode="after")
    def _order(self):
        if not 0.0 <= self.begin < self.end <= 1.0:
            raise Bad(f": need 0 <= begin < end <= 1 (fractions of the steps), got begin={self.begin!r}, "
                      f"end={self.end!r}")
        return self


class Steal(Section):
    """``weight + delta * (step // every)`` clipped to ``[floor, ceiling]`` (Kervadec et al.'s rebalancing)."""

    kind: Literal["steal"] = Field("steal", description="the schedule")
    delta: Number = Field(description="weight added every `every` steps (negative: removed)")
    every: Optional[PositiveInt] = Field(None, description="steps between changes (null: one epoch)")
    floor: Optional[Weight] = Field(None, description="lowest weight (null: 0)")
    ceiling: Optional[Weight] = Field(None, description="highest weight (null: none)")


Schedule = Annotated[Union[Constant, Linear, Steal], Field(discriminator="kind"), BeforeValidator(_schedule),
                     Must("a mapping with a 'kind' (constant, linear, steal)")]


class Term(Section):
    """One term of the objective: a registered loss, its hyperparameters, its weight and weight schedule."""

    name: str = Field("dice_ce", description="a key of raysweep.losses.LOSSES", json_schema_extra=_enum_of("losses"))
    params: Options = Field({}, description="its hyperparameters (build_loss keywords)")
    weight: Weight = Field(1.0, description="its weight in the objective (at step 0 for scheduled weights)")
    schedule: Schedule = Field(Constant(), description='see "Weight schedules"')
    _name = _name_in("losses", "loss", "see `raysweep losses` for the {1} registered losses")


class Companion(Term):
    """An extra term of the objective."""

    name: str = Field(description="a key of raysweep.losses.LOSSES", json_schema_extra=_enum_of("losses"))


class Optimizer(Section):
    """The optimiser."""

    name: choice("adamw", "sgd") = Field("adamw", description="adamw | sgd")
    lr: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        1e-2, description="peak learning rate (one-cycle max_lr; poly/constant base lr)")
    weight_decay: Optional[Weight] = Field(None, description="null -> 0.01 for adamw (PyTorch's default), 1e-4 for "
                                           "sgd (TransUNet)")
    momentum: Weight = Field(0.9, description="sgd only")
    grad_clip: Optional[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(
        None, description="max global gradient norm, or null for none")
    fused: choice("auto", True, False) = Field("auto", description="auto (on: PyTorch's fused kernel, CPU and CUDA) "
                                               "| true | false (one kernel per tensor)")


class Scheduler(Section):
    """The learning-rate schedule."""

    name: choice("onecycle", "poly", "constant") = Field("onecycle", description="onecycle | poly | constant")
    pct_start: Annotated[float, Field(gt=0, lt=1)] = Field(0.3, description="onecycle: fraction of steps warming up")
    power: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        0.9, description="poly: lr = lr0 * (1 - step / steps) ** power")


class Train(Section):
    """The training loop."""

    steps: PositiveInt = Field(40, description="optimiser steps in the whole trial")
    batch_size: PositiveInt = Field(4, description="training images per step")
    num_workers: Count = Field(0, description="DataLoader worker processes")
    device: Annotated[str, Must("'auto', 'cpu', 'cuda' or 'cuda:N'")] = Field(
        "auto", description="auto (cuda if available) | cpu | cuda | cuda:N", pattern=r"^(auto|cpu|cuda|cuda:.*)$")
    amp: choice("auto", "bf16", "fp16", "off") = Field(
        "auto", description="auto (CUDA: bf16 if supported else fp16 + GradScaler; CPU: off) | bf16 | fp16 | off")
    channels_last: choice("auto", True, False) = Field("auto", description="auto (on with CUDA + AMP) | true | false")
    deterministic: bool = Field(False, description="CUDA: deterministic kernels, no cuDNN autotuning (CPU runs are "
                                "reproducible anyway, for the same thread count: set train.threads to compare runs "
                                "across processes)")
    sync_every: Optional[PositiveInt] = Field(None, description="steps between host syncs for the non-finite check "
                                              "(null: 1 on CPU, 25 on CUDA)")
    threads: Optional[PositiveInt] = Field(None, description="torch.set_num_threads(threads) for this process; "
                                           "null: leave as is")
    compile: choice(False, True, "reduce-overhead", "max-autotune") = Field(
        False, description="torch.compile the model in place: false (eager) | true (default mode) | reduce-overhead "
        "(CUDA graphs; static shapes) | max-autotune. State dict and checkpoints are unchanged; the first steps "
        "compile (seconds to minutes). GPU measurements decide a CUDA default; false for now")
    progress: choice("auto", True, False) = Field("auto", description="tqdm bar: auto (on when called directly, off "
                                                  "in Tune) | true | false")


class Eval(Section):
    """Evaluation during and at the end of training."""

    every: Optional[PositiveInt] = Field(20, description="steps between evaluations (each one is a report); null: "
                                         "only at the end")
    split: Optional[str] = Field(None, description="null -> DATASETS[name].eval_split")
    max_cases: Optional[PositiveInt] = Field(None, description="evaluate the first N cases (volumes or images) only")
    batch_size: PositiveInt = Field(16, description="slices / images per forward pass")
    hd95: choice(None, True, False, "final") = Field(None, description="null -> on for per-volume datasets; final "
                                                     "-> the same, at the last evaluation only")
    overlays: Count = Field(3, description="prediction overlay PNGs of the first N evaluation cases")
    report_cases: bool = Field(True, description='include per-case, per-class rows ("cases") in the reports')


class Checkpoint(Section):
    """When to checkpoint, and (direct calls) where from to resume."""

    every: Count = Field(1, description="evaluations between checkpoints (0: not by count)")
    every_s: Optional[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(
        None, description="also checkpoint at a report when this many seconds passed since the last one")
    at_end: bool = Field(True, description="checkpoint the final report (a restored trial then re-reports instead "
                         "of retraining)")
    keep: PositiveInt = Field(2, description="direct calls: checkpoints kept in output_dir")
    resume: Path = Field(None, description="direct calls: a checkpoint directory to resume from")


class TrialConfig(Section):
    """The config of one training run (``raysweep train``, one trial of a sweep); every key has a default."""

    model_config = ConfigDict(title="raysweep trial config")

    seed: Count = Field(0, description="python, numpy and torch RNGs, model init, data order and augmentation (the "
                        "data themselves come from dataset.options.seed, so repeats with new seeds see the same data)")
    dataset: Dataset = Field(Dataset(), description="the dataset")
    model: Model = Field(Model(), description="the network")
    loss: Term = Field(Term(), description="the loss: the objective's first term")
    companions: Annotated[list[Companion], Must("a list of {name, params, weight, schedule}")] = Field(
        [], description="extra terms: [{name, params: {}, weight: 1.0, schedule: {kind: constant}}, ...]")
    optimizer: Optimizer = Field(Optimizer(), description="the optimiser")
    scheduler: Scheduler = Field(Scheduler(), description="the learning-rate schedule")
    train: Train = Field(Train(), description="the training loop")
    eval: Eval = Field(Eval(), description="evaluation")
    checkpoint: Checkpoint = Field(Checkpoint(), description="checkpoints")
    output_dir: Path = Field(None, description="direct calls: where checkpoints, overlays and result.json go (null: "
                             "nothing written)")

    @model_validator(mode="after")
    def _resolve(self):
        """``model.arch`` / ``encoder`` from MODELS, ``optimizer.weight_decay`` by optimiser, ``eval.split``."""
        from ..data import DATASETS
        from ..models import MODELS, is_volume_arch

        m, o, e = self.model, self.optimizer, self.eval
        m.arch = m.arch or MODELS[m.name]["arch"]
        # MONAI's 3-D networks have no encoder to name (build_model refuses one)
        m.encoder = m.encoder or (None if is_volume_arch(m.arch) else MODELS[m.name]["encoder"])
        if o.weight_decay is None:
            o.weight_decay = 0.01 if o.name == "adamw" else 1e-4
        info = DATASETS[self.dataset.name]
        e.split = e.split or info.eval_split
        if e.split not in info.splits:
            raise Bad(f": {self.dataset.name} has no split {e.split!r}; choose one of {info.splits}", "eval.split")
        warmup = self.scheduler.pct_start * self.train.steps
        if self.scheduler.name == "onecycle" and abs(warmup - 1) < 1e-9:
            # torch's OneCycleLR divides by zero on its first step when the warm-up is exactly one step long
            raise Bad(f" x train.steps = {self.scheduler.pct_start:g} x {self.train.steps} is a warm-up of exactly one "
                      f"step, which OneCycleLR cannot schedule; change scheduler.pct_start or train.steps",
                      "scheduler.pct_start")
        return self


#: Every key's default (``model.arch``, ``optimizer.weight_decay``, ``eval.split`` still unresolved).
DEFAULTS: dict[str, Any] = TrialConfig.model_construct().model_dump()

#: schedule kind -> {key: default}; ``...`` marks a required key.
SCHEDULE_KINDS: dict[str, dict[str, Any]] = {
    m.model_fields["kind"].default: {k: ... if f.is_required() else f.default
                                     for k, f in m.model_fields.items() if k != "kind"}
    for m in (Constant, Linear, Steal)}


def resolve_config(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Fill in defaults and validate a trial config (:class:`TrialConfig`; keys in the module docstring).

    Returns a new nested dict with every key present; ``optimizer.weight_decay`` and ``eval.split`` resolved, and
    ``model.arch`` / ``model.encoder`` filled from ``MODELS[model.name]``. Loss, dataset and model names are checked
    against their registries; their options are checked when the objects are built.

    Raises:
        ValueError: an unknown key (named with its dotted path, with a "did you mean"), a value of the wrong type or
            range, or an unknown loss, dataset, model, optimizer, scheduler or schedule kind.
    """
    raw = _expand_dotted(copy.deepcopy(dict(config or {})), "")
    if isinstance(raw.get("companions"), (list, tuple)):
        raw["companions"] = [_expand_dotted(dict(t), "") if isinstance(t, Mapping) else t for t in raw["companions"]]
    try:
        return TrialConfig.model_validate(raw).model_dump()
    except ValidationError as exc:
        raise config_error(exc.errors(), TrialConfig, dotted=True) from None


def _expand_dotted(d: dict[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if not isinstance(key, str):
            raise ValueError(f"config keys must be strings, got {key!r}{' in ' + where if where else ''}")
        head, _, rest = key.partition(".")
        if rest:
            value = {rest: value}
        if isinstance(value, Mapping) and isinstance(out.get(head), Mapping):
            _deep_update(out[head], _expand_dotted(dict(value), head))
        else:
            out[head] = _expand_dotted(dict(value), head) if isinstance(value, Mapping) else value
    return out


def _deep_update(base: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value


def schedule_weight(weight: float, schedule: Mapping[str, Any], step: int, steps: int, steps_per_epoch: int
                    ) -> float:
    """A term's weight at 0-based ``step`` of ``steps`` (see "Weight schedules" in the module docstring)."""
    kind = schedule["kind"]
    if kind == "constant":
        return float(weight)
    if kind == "linear":
        p = step / steps
        begin, end = schedule["begin"], schedule["end"]
        f = 0.0 if p <= begin else 1.0 if p >= end else (p - begin) / (end - begin)
        return float(weight + (schedule["to"] - weight) * f)
    if kind == "steal":
        every = schedule["every"] or steps_per_epoch
        w = weight + schedule["delta"] * (step // every)
        if schedule["floor"] is not None:
            w = max(w, schedule["floor"])
        if schedule["ceiling"] is not None:
            w = min(w, schedule["ceiling"])
        return float(max(w, 0.0))
    raise ValueError(f"unknown schedule kind {kind!r}")


def _yaml(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    return {None: "null", True: "true", False: "false"}[value] if value is None or isinstance(value, bool) else str(
        value)


def _document(model: type[BaseModel], defaults: Mapping[str, Any], indent: int = 4) -> str:
    """The YAML-like listing of a model's keys, defaults and descriptions (the module docstring's)."""
    lines, pad = [], " " * indent
    for key, field in model.model_fields.items():
        if isinstance(defaults[key], dict) and hasattr(field.annotation, "model_fields"):
            lines += [f"{pad}{key}:", _document(field.annotation, defaults[key], indent + 2)]
        else:
            lines += textwrap.wrap(f"{pad}{key}: {_yaml(defaults[key])}".ljust(30) + " # " + field.description, 118,
                                   subsequent_indent=" " * 31 + "# ")
    return "\n".join(lines)


__doc__ = __doc__.replace("{keys}", _document(TrialConfig, DEFAULTS))
