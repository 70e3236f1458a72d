"""Everything a trial trains with, built from a resolved config before the training loop exists.

:func:`build` returns a complete :class:`Parts` or raises: the loop never runs on a half-built trial.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch

from .objective import CombinedObjective
from .sampling import SeededItems, seed_everything

__all__ = ["COMPILE_MODES", "Parts", "build", "compile_model", "device_of"]

#: ``train.compile`` -> the ``torch.compile`` mode (``None``: PyTorch's default mode); ``False`` is absent: eager.
COMPILE_MODES: dict[Any, str | None] = {True: None, "reduce-overhead": "reduce-overhead",
                                        "max-autotune": "max-autotune"}


@dataclass
class Parts:
    """The built trial: device and precision, data, model, objective, optimiser, scheduler."""

    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    sync_every: int
    info: Any  # raysweep.data.DatasetInfo of the training split
    train_items: SeededItems
    eval_ds: Any
    steps: int
    steps_per_epoch: int
    objective: CombinedObjective
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    compiled: Any = False  # train.compile as applied: False (eager), True or the torch.compile mode


def device_of(name: str) -> torch.device:
    """``train.device`` as a torch device; a CUDA device without CUDA is a ``ValueError``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r} but CUDA is not available; use 'auto' or 'cpu'")
    return torch.device(name)


def _amp_dtype(amp: str, cuda: bool) -> torch.dtype | None:
    if amp == "off" or (amp == "auto" and not cuda):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if not cuda:
        raise ValueError(f"train.amp={amp!r} needs CUDA; use 'auto' or 'off' on the CPU")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def build(cfg: dict[str, Any]) -> Parts:
    """Build a trial's parts from a config resolved by :func:`~raysweep.trial.schema.resolve_config`.

    Seeds every RNG from ``cfg["seed"]`` first; the model's initialisation depends on the seed alone.

    Raises:
        ValueError: a batch larger than the training set, image sides the model cannot take, a device or precision
            the machine lacks; the builders' own errors (dataset folder, model options, loss hyperparameters).
    """
    from ..data import build_dataset, check_listing, dataset_info
    from ..models import build_model

    t = cfg["train"]
    device = device_of(t["device"])
    cuda = device.type == "cuda"
    amp_dtype = _amp_dtype(t["amp"], cuda)
    if t["threads"] is not None:
        torch.set_num_threads(t["threads"])
    seed_everything(cfg["seed"], deterministic=t["deterministic"], cuda=cuda)

    ds = cfg["dataset"]
    train_options = {**ds["options"], **ds["train_options"]}
    info = dataset_info(ds["name"], root=ds["root"], **train_options)
    train_ds = build_dataset(ds["name"], "train", root=ds["root"], **train_options)
    eval_options = {**ds["options"], **ds["eval_options"]}
    eval_ds = build_dataset(ds["name"], cfg["eval"]["split"], root=ds["root"], **eval_options)
    for split, options in (("train", train_options), (cfg["eval"]["split"], eval_options)):
        if (ds["cases"] or {}).get(split):  # the sweep's listing: a split never shrinks or grows unnoticed
            check_listing(ds["name"], split, ds["cases"][split], root=ds["root"], **options)
    steps_per_epoch = len(train_ds) // t["batch_size"]
    if steps_per_epoch < 1:
        raise ValueError(f"train.batch_size={t['batch_size']} is larger than the training set "
                         f"({len(train_ds)} items of {ds['name']})")

    objective = CombinedObjective([cfg["loss"], *cfg["companions"]], t["steps"], steps_per_epoch,
                                  num_classes=info.num_classes)
    train_ds.target_maps = objective.target_maps  # computed in the workers, after augmentation
    train_items = SeededItems(train_ds)  # before the probe below: it seeds the augmentation of every item read

    m = cfg["model"]
    torch.manual_seed(cfg["seed"])  # the model's initialisation depends on the seed alone
    model = build_model(m["arch"], m["encoder"], info.num_classes, info.in_channels, m["encoder_weights"],
                        aux_channels=objective.aux_channels, return_features="features" in objective.needs,
                        **m["options"])
    check_dims(model, train_ds, m["arch"], ds["name"])
    probe = train_ds[0]["image"]
    if model.dims == 3:
        model.check_input_size(tuple(probe.shape[-3:]))
    else:
        stride = model.output_stride
        if probe.shape[-1] % stride or probe.shape[-2] % stride:
            raise ValueError(f"{model_label(m)} needs image sides divisible by {stride}; the "
                             f"{ds['name']} images are {tuple(probe.shape[-2:])} (set dataset.options.image_size)")
    channels_last = bool(amp_dtype is not None) if t["channels_last"] == "auto" else t["channels_last"]
    model.to(device)
    objective.to(device)
    if channels_last:
        model.to(memory_format=memory_format(model))

    optimizer = _optimizer(cfg["optimizer"], model, objective)
    compile_model(model, t["compile"])
    return Parts(
        device=device, amp_dtype=amp_dtype, channels_last=channels_last,
        sync_every=t["sync_every"] or (25 if cuda else 1),
        info=info, train_items=train_items, eval_ds=eval_ds, steps=t["steps"],
        steps_per_epoch=steps_per_epoch, objective=objective, model=model, optimizer=optimizer,
        scheduler=_scheduler(cfg["scheduler"], cfg["optimizer"]["lr"], t["steps"], optimizer),
        scaler=torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None,
        compiled=t["compile"],
    )


def model_label(m: dict[str, Any]) -> str:
    """``arch/encoder`` of a resolved ``model`` section, or ``arch`` alone for a network without an encoder."""
    return f"{m['arch']}/{m['encoder']}" if m.get("encoder") else str(m["arch"])


def memory_format(model: torch.nn.Module) -> torch.memory_format:
    """The channels-last layout of the model's inputs: ``channels_last`` in 2-D, ``channels_last_3d`` in 3-D."""
    return torch.channels_last_3d if getattr(model, "dims", 2) == 3 else torch.channels_last


def check_dims(model: torch.nn.Module, train_ds: Any, arch: str, dataset: str) -> None:
    """A 3-D network trains on 3-D patches and a 2-D one on 2-D images: a mismatch is a ``ValueError`` naming both."""
    data_dims = getattr(train_ds, "dims", 2)
    if model.dims != data_dims:
        fix = ("set the dataset's options.dims: 3 (nnunet) or choose a 2-D arch" if model.dims == 3
               else "choose a 3-D arch (monai.UNet, monai.DynUNet, monai.SwinUNETR) or the dataset's dims: 2")
        raise ValueError(f"model {arch} is {model.dims}-D but dataset {dataset} gives {data_dims}-D items; {fix}")


def compile_model(model: torch.nn.Module, setting: Any) -> torch.nn.Module:
    """Apply ``train.compile`` to ``model`` in place (``nn.Module.compile``) and return it.

    In place, the module keeps its class, parameters and state-dict keys (no ``_orig_mod.`` prefix), so the optimiser
    built before, checkpoints, evaluation and resuming with another ``train.compile`` all work unchanged. Compilation
    happens at the first forward of each mode (training, then evaluation) and shape; torch recompiles for a new batch
    shape (the last, smaller evaluation batch) and falls back to eager past its recompile limit.

    Args:
        setting: ``False`` (eager, nothing done), ``True`` (default mode), ``"reduce-overhead"`` (CUDA graphs where
            shapes are static; on the CPU the same as the default mode) or ``"max-autotune"``.

    Raises:
        ValueError: a setting outside those; torch without ``torch.compile`` (< 2.2).
    """
    if setting is False:
        return model
    if setting not in COMPILE_MODES:
        raise ValueError(f"train.compile must be false, true, 'reduce-overhead' or 'max-autotune', got {setting!r}")
    if not hasattr(model, "compile") or not hasattr(torch, "compile"):
        raise ValueError(f"train.compile={setting!r} needs torch >= 2.2 (nn.Module.compile); this is torch "
                         f"{torch.__version__}: set train.compile: false")
    mode = COMPILE_MODES[setting]
    model.compile(**({"mode": mode} if mode else {}))
    return model


def _optimizer(o: dict[str, Any], model: torch.nn.Module, objective: torch.nn.Module) -> torch.optim.Optimizer:
    groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    loss_params = [p for p in objective.parameters() if p.requires_grad]
    if loss_params:
        # Learnable loss parameters (T-loss's nu) are optimised too, without weight decay pulling them to 0.
        groups.append({"params": loss_params, "weight_decay": 0.0})
    # The fused kernel updates every tensor in one call: on the CPU it cuts the AdamW step of a Segformer/MiT-B0
    # (189 tensors) from 24 to 6.5 ms, a quarter of the whole training step (benchmarks/train.py).
    fused = {} if o["fused"] is False else {"fused": True}
    if o["name"] == "adamw":
        return torch.optim.AdamW(groups, lr=o["lr"], weight_decay=o["weight_decay"], **fused)
    return torch.optim.SGD(groups, lr=o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"], **fused)


def _scheduler(s: dict[str, Any], lr: float, steps: int, optimizer: torch.optim.Optimizer
               ) -> torch.optim.lr_scheduler.LRScheduler:
    if s["name"] == "onecycle":
        # PyTorch's defaults otherwise: cosine, start lr / 25, final lr / 25e4, momentum cycled 0.85-0.95.
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=s["pct_start"])
    if s["name"] == "poly":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(_poly, steps=steps, power=s["power"]))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _constant)


def _poly(step: int, steps: int, power: float) -> float:
    return max(1.0 - step / steps, 0.0) ** power


def _constant(step: int) -> float:
    return 1.0
