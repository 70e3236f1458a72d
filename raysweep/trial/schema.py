"""The trial config: its defaults, its validation (:func:`resolve_config`) and the weight schedules.

The sweep config and ``raysweep train`` read this module; it imports no training code.

Config schema
-------------
A (nested) dict; every key has a default, so ``train_trial({})`` trains the CPU-sized default (synthetic data,
64 x 64 slices, U-Net/ResNet-34, Dice+CE, 40 steps) in well under a minute. Unknown keys raise ``ValueError`` naming
the key. Dotted keys are accepted at any level (``{"train.steps": 5}`` == ``{"train": {"steps": 5}}``), which is
what ``raysweep train --set`` and flat search spaces produce. ``resolve_config(config)`` returns the full, validated
config::

    seed: 0                    # python, numpy and torch RNGs, model init, data order and augmentation (the data
                               # themselves come from dataset.options.seed, so repeats with new seeds see the same data)
    dataset:
      name: synthetic          # a key of raysweep.data.DATASETS
      root: null               # folder of a file-based dataset (synapse, cityscapes)
      options: {}              # build_dataset options for every split (image_size, depth, ...)
      train_options: {}        # ... for the training split only (label_noise, ...)
      eval_options: {}         # ... for the evaluation split only (num_volumes, ...)
    model:
      name: cnn                # a key of raysweep.models.MODELS: cnn (Unet/resnet34) | transformer (Segformer/mit_b0)
      arch: null               # override MODELS[name]["arch"]: any smp architecture
      encoder: null            # override MODELS[name]["encoder"]: any smp encoder or "tu-<timm name>"
      encoder_weights: null    # null | "imagenet" | path to a local encoder state dict
      options: {}              # smp architecture options (decoder_channels, ...)
    loss:
      name: dice_ce            # a key of raysweep.losses.LOSSES
      params: {}               # its hyperparameters (build_loss keywords)
      weight: 1.0              # its weight in the objective (at step 0 for scheduled weights)
      schedule: {kind: constant}   # see "Weight schedules"
    companions: []             # extra terms: [{name, params: {}, weight: 1.0, schedule: {kind: constant}}, ...]
    optimizer:
      name: adamw              # adamw | sgd
      lr: 0.01                 # peak learning rate (one-cycle max_lr; poly/constant base lr)
      weight_decay: null       # null -> 0.01 for adamw (PyTorch's default), 1e-4 for sgd (TransUNet)
      momentum: 0.9            # sgd only
      grad_clip: null          # max global gradient norm, or null for none
      fused: auto              # auto (on: PyTorch's fused kernel, CPU and CUDA) | true | false (one kernel per tensor)
    scheduler:
      name: onecycle           # onecycle | poly | constant
      pct_start: 0.3           # onecycle: fraction of steps warming up
      power: 0.9               # poly: lr = lr0 * (1 - step / steps) ** power
    train:
      steps: 40                # optimiser steps in the whole trial
      batch_size: 4
      num_workers: 0           # DataLoader worker processes
      device: auto             # auto (cuda if available) | cpu | cuda | cuda:N
      amp: auto                # auto (CUDA: bf16 if supported else fp16 + GradScaler; CPU: off) | bf16 | fp16 | off
      channels_last: auto      # auto (on with CUDA + AMP) | true | false
      deterministic: false     # CUDA: deterministic kernels, no cuDNN autotuning (CPU runs are reproducible anyway,
                               # for the same thread count: set train.threads to compare runs across processes)
      sync_every: null         # steps between host syncs for the non-finite check (null: 1 on CPU, 25 on CUDA)
      threads: null            # torch.set_num_threads(threads) for this process; null: leave as is
      progress: auto           # tqdm bar: auto (on when called directly, off in Tune) | true | false
    eval:
      every: 20                # steps between evaluations (each one is a report); null: only at the end
      split: null              # null -> DATASETS[name].eval_split
      max_cases: null          # evaluate the first N cases (volumes or images) only
      batch_size: 16           # slices / images per forward pass
      hd95: null               # null -> on for per-volume datasets; final -> the same, at the last evaluation only
      overlays: 3              # prediction overlay PNGs of the first N evaluation cases
      report_cases: true       # include per-case, per-class rows ("cases") in the reports
    checkpoint:
      every: 1                 # evaluations between checkpoints (0: not by count)
      every_s: null            # also checkpoint at a report when this many seconds passed since the last one
      at_end: true             # checkpoint the final report (a restored trial then re-reports instead of retraining)
      keep: 2                  # direct calls: checkpoints kept in output_dir
      resume: null             # direct calls: a checkpoint directory to resume from
    output_dir: null           # direct calls: where checkpoints, overlays and result.json go (null: nothing written)

Weight schedules
----------------
The objective at step ``s`` (0-based, ``s < steps``) is ``sum_i w_i(s) * term_i(logits, mask, **extra)`` over the
loss and its companions, ``w_i(s) = schedule(weight_i, s)``:

* ``{kind: constant}``: ``weight``.
* ``{kind: linear, to: W, begin: 0.0, end: 1.0}``: ``weight`` until ``s / steps == begin``, then linearly to ``W``
  at ``s / steps == end``, then ``W``.
* ``{kind: steal, delta: D, every: null, floor: null, ceiling: null}``: ``weight + D * (s // every)`` clipped to
  ``[floor, ceiling]``; ``every`` defaults to one epoch (``len(train set) // batch_size`` steps). Kervadec et al.'s
  rebalancing ("StealWeight": 0.01 per epoch moves from the region term to the boundary term, region weight floored
  at 0.1) -- which the ``boundary`` loss already applies to its own region term -- pairs any two terms, e.g.::

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
import math
from typing import Any, Mapping

from ..checks import did_you_mean

__all__ = ["DEFAULTS", "SCHEDULE_KINDS", "resolve_config", "schedule_weight"]

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "dataset": {"name": "synthetic", "root": None, "options": {}, "train_options": {}, "eval_options": {}},
    "model": {"name": "cnn", "arch": None, "encoder": None, "encoder_weights": None, "options": {}},
    "loss": {"name": "dice_ce", "params": {}, "weight": 1.0, "schedule": {"kind": "constant"}},
    "companions": [],
    "optimizer": {"name": "adamw", "lr": 1e-2, "weight_decay": None, "momentum": 0.9, "grad_clip": None,
                  "fused": "auto"},
    "scheduler": {"name": "onecycle", "pct_start": 0.3, "power": 0.9},
    "train": {"steps": 40, "batch_size": 4, "num_workers": 0, "device": "auto", "amp": "auto",
              "channels_last": "auto", "deterministic": False, "sync_every": None, "threads": None,
              "progress": "auto"},
    "eval": {"every": 20, "split": None, "max_cases": None, "batch_size": 16, "hd95": None, "overlays": 3,
             "report_cases": True},
    "checkpoint": {"every": 1, "every_s": None, "at_end": True, "keep": 2, "resume": None},
    "output_dir": None,
}

#: Sections whose values are passed on to another builder, which validates them (not checked key by key here).
_OPEN = {("dataset", "options"), ("dataset", "train_options"), ("dataset", "eval_options"), ("model", "options"),
         ("loss", "params")}
_TERM_KEYS = {"name": None, "params": {}, "weight": 1.0, "schedule": {"kind": "constant"}}

#: schedule kind -> {key: default}; ``...`` marks a required key.
SCHEDULE_KINDS: dict[str, dict[str, Any]] = {
    "constant": {},
    "linear": {"to": ..., "begin": 0.0, "end": 1.0},
    "steal": {"delta": ..., "every": None, "floor": None, "ceiling": None},
}


def resolve_config(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Fill in defaults and validate a trial config (schema in the module docstring).

    Returns a new nested dict with every key present; ``optimizer.weight_decay`` and ``eval.split`` resolved, and
    ``model.arch`` / ``model.encoder`` filled from ``MODELS[model.name]``. Loss, dataset and model names are checked
    against their registries; their options are checked when the objects are built.

    Raises:
        ValueError: an unknown key (named with its dotted path), a value of the wrong type or range, or an unknown
            loss, dataset, model, optimizer, scheduler or schedule kind.
    """
    from ..data import DATASETS
    from ..losses import LOSSES
    from ..models import MODELS

    cfg = copy.deepcopy(DEFAULTS)
    _merge(cfg, _expand_dotted(dict(config or {}), ""), "")

    if not _is_int(cfg["seed"]) or cfg["seed"] < 0:
        raise ValueError(f"seed must be a non-negative integer, got {cfg['seed']!r}")
    ds = cfg["dataset"]
    if ds["name"] not in DATASETS:
        raise ValueError(f"dataset.name: unknown dataset {ds['name']!r}; choose one of {', '.join(DATASETS)}")
    info = DATASETS[ds["name"]]

    m = cfg["model"]
    if m["name"] not in MODELS:
        raise ValueError(f"model.name: unknown model {m['name']!r}; choose one of {', '.join(MODELS)} (or set "
                         "model.arch and model.encoder to any smp architecture and encoder)")
    m["arch"] = m["arch"] or MODELS[m["name"]]["arch"]
    m["encoder"] = m["encoder"] or MODELS[m["name"]]["encoder"]

    cfg["loss"] = _check_term(cfg["loss"], "loss", LOSSES)
    if not isinstance(cfg["companions"], (list, tuple)):
        raise ValueError(f"companions must be a list of {{name, params, weight, schedule}}, got {cfg['companions']!r}")
    cfg["companions"] = [_check_term(_expand_dotted(dict(t), ""), f"companions[{i}]", LOSSES)
                         if isinstance(t, Mapping) else _bad_term(i, t) for i, t in enumerate(cfg["companions"])]

    o = cfg["optimizer"]
    _choice("optimizer.name", o["name"], ("adamw", "sgd"))
    _positive("optimizer.lr", o["lr"])
    if o["weight_decay"] is None:
        o["weight_decay"] = 0.01 if o["name"] == "adamw" else 1e-4
    _non_negative("optimizer.weight_decay", o["weight_decay"])
    _non_negative("optimizer.momentum", o["momentum"])
    if o["grad_clip"] is not None:
        _positive("optimizer.grad_clip", o["grad_clip"])
    _choice("optimizer.fused", o["fused"], ("auto", True, False))
    s = cfg["scheduler"]
    _choice("scheduler.name", s["name"], ("onecycle", "poly", "constant"))
    if not (isinstance(s["pct_start"], (int, float)) and 0 < s["pct_start"] < 1):
        raise ValueError(f"scheduler.pct_start must be in (0, 1), got {s['pct_start']!r}")
    _positive("scheduler.power", s["power"])

    t = cfg["train"]
    for key in ("steps", "batch_size"):
        _positive_int(f"train.{key}", t[key])
    if not _is_int(t["num_workers"]) or t["num_workers"] < 0:
        raise ValueError(f"train.num_workers must be a non-negative integer, got {t['num_workers']!r}")
    if not (t["device"] in ("auto", "cpu", "cuda") or (isinstance(t["device"], str)
                                                     and t["device"].startswith("cuda:"))):
        raise ValueError(f"train.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {t['device']!r}")
    _choice("train.amp", t["amp"], ("auto", "bf16", "fp16", "off"))
    _choice("train.channels_last", t["channels_last"], ("auto", True, False))
    _choice("train.deterministic", t["deterministic"], (True, False))
    _choice("train.progress", t["progress"], ("auto", True, False))
    if t["sync_every"] is not None:
        _positive_int("train.sync_every", t["sync_every"])
    if t["threads"] is not None:
        _positive_int("train.threads", t["threads"])

    e = cfg["eval"]
    if e["every"] is not None:
        _positive_int("eval.every", e["every"])
    e["split"] = e["split"] or info.eval_split
    if e["split"] not in info.splits:
        raise ValueError(f"eval.split: {ds['name']} has no split {e['split']!r}; choose one of {info.splits}")
    if e["max_cases"] is not None:
        _positive_int("eval.max_cases", e["max_cases"])
    _positive_int("eval.batch_size", e["batch_size"])
    _choice("eval.hd95", e["hd95"], (None, True, False, "final"))
    if not _is_int(e["overlays"]) or e["overlays"] < 0:
        raise ValueError(f"eval.overlays must be a non-negative integer, got {e['overlays']!r}")
    _choice("eval.report_cases", e["report_cases"], (True, False))

    c = cfg["checkpoint"]
    if not _is_int(c["every"]) or c["every"] < 0:
        raise ValueError(f"checkpoint.every must be a non-negative integer (0 = never), got {c['every']!r}")
    if c["every_s"] is not None and not (_is_number(c["every_s"]) and c["every_s"] > 0):
        raise ValueError(f"checkpoint.every_s must be a positive number of seconds or null, got {c['every_s']!r}")
    _choice("checkpoint.at_end", c["at_end"], (True, False))
    _positive_int("checkpoint.keep", c["keep"])
    return cfg


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


def _merge(base: dict[str, Any], update: Mapping[str, Any], where: str) -> None:
    """Merge ``update`` into ``base`` in place, refusing keys that ``base`` does not have (except open sections)."""
    for key, value in update.items():
        path = f"{where}.{key}" if where else key
        if key not in base:
            hint = did_you_mean((where + "." if where else "") + key, [(where + "." if where else "") + k for k in base])
            raise ValueError(f"unknown config key {path!r}{hint}; valid keys here: {', '.join(base)}")
        section = tuple(path.split("."))
        if isinstance(base[key], dict) and section not in _OPEN and key not in ("schedule",):
            if not isinstance(value, Mapping):
                raise ValueError(f"config key {path!r} must be a mapping, got {value!r}")
            _merge(base[key], value, path)
        elif section in _OPEN:
            if not isinstance(value, Mapping):
                raise ValueError(f"config key {path!r} must be a mapping of options, got {value!r}")
            base[key] = {**base[key], **copy.deepcopy(dict(value))}
        else:
            base[key] = copy.deepcopy(value)


def _check_term(term: Mapping[str, Any], where: str, losses: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(term) - set(_TERM_KEYS))
    if unknown:
        raise ValueError(f"unknown config key {where}.{unknown[0]!r}; a loss term has {', '.join(_TERM_KEYS)}")
    out = {**copy.deepcopy(_TERM_KEYS), **copy.deepcopy(dict(term))}
    if out["name"] not in losses:
        raise ValueError(f"{where}.name: unknown loss {out['name']!r}; see `raysweep losses` for the "
                         f"{len(losses)} registered losses")
    if not isinstance(out["params"], Mapping):
        raise ValueError(f"{where}.params must be a mapping of hyperparameters, got {out['params']!r}")
    _non_negative(f"{where}.weight", out["weight"])
    out["schedule"] = _check_schedule(out["schedule"], f"{where}.schedule")
    return out


def _bad_term(i: int, value: Any):
    raise ValueError(f"companions[{i}] must be a mapping {{name, params, weight, schedule}}, got {value!r}")


def _check_schedule(schedule: Any, where: str) -> dict[str, Any]:
    if isinstance(schedule, str):
        schedule = {"kind": schedule}
    if not isinstance(schedule, Mapping) or "kind" not in schedule:
        raise ValueError(f"{where} must be a mapping with a 'kind' ({', '.join(SCHEDULE_KINDS)}), got {schedule!r}")
    kind = schedule["kind"]
    if kind not in SCHEDULE_KINDS:
        raise ValueError(f"{where}.kind: unknown schedule {kind!r}; choose one of {', '.join(SCHEDULE_KINDS)}")
    spec = SCHEDULE_KINDS[kind]
    unknown = sorted(set(schedule) - set(spec) - {"kind"})
    if unknown:
        raise ValueError(f"unknown config key {where}.{unknown[0]!r}; a {kind!r} schedule takes "
                         f"{', '.join(spec) or 'no options'}")
    out = {"kind": kind}
    for key, default in spec.items():
        if key not in schedule and default is ...:
            raise ValueError(f"{where}: a {kind!r} schedule needs {key!r}")
        out[key] = schedule.get(key, default)
    if kind == "linear":
        _non_negative(f"{where}.to", out["to"])
        if not (0.0 <= out["begin"] < out["end"] <= 1.0):
            raise ValueError(f"{where}: need 0 <= begin < end <= 1 (fractions of the steps), got "
                             f"begin={out['begin']!r}, end={out['end']!r}")
    elif kind == "steal":
        if not _is_number(out["delta"]):
            raise ValueError(f"{where}.delta must be a number, got {out['delta']!r}")
        if out["every"] is not None:
            _positive_int(f"{where}.every", out["every"])
        for key in ("floor", "ceiling"):
            if out[key] is not None:
                _non_negative(f"{where}.{key}", out[key])
    return out


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


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _positive_int(name: str, x: Any) -> None:
    if not _is_int(x) or x < 1:
        raise ValueError(f"{name} must be a positive integer, got {x!r}")


def _positive(name: str, x: Any) -> None:
    if not _is_number(x) or x <= 0:
        raise ValueError(f"{name} must be a positive number, got {x!r}")


def _non_negative(name: str, x: Any) -> None:
    if not _is_number(x) or x < 0:
        raise ValueError(f"{name} must be a non-negative number, got {x!r}")


def _choice(name: str, x: Any, choices: tuple) -> None:
    if not any(x is c or (x == c and type(x) is type(c)) for c in choices):
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {x!r}")


