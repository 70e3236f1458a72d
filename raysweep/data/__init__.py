"""Datasets: the embedded ``synthetic`` default, ``synapse`` (TransUNet release) and ``cityscapes`` (gtFine).

Usage::

    from raysweep.data import DATASETS, build_dataset
    ds = build_dataset("synthetic", split="train", seed=0)                # generated in memory, no files
    ds = build_dataset("synapse", root="data/Synapse", split="test")
    ds = build_dataset("cityscapes", root="data/cityscapes", split="val")
    item = ds[0]          # {"image": float32 (C, H, W), "mask": int64 (H, W) (255 = ignore), "case": str, **maps}
    DATASETS["synapse"]   # DatasetInfo: num_classes, class_names, eval_classes, primary_metric, per_volume, ...

Per-volume datasets (``DATASETS[name].per_volume``) also yield whole volumes for 3-D evaluation::

    for vol in ds.volumes():            # Volume(case, image (D, H, W), label (D, H, W) int64, spacing or None)
        x = ds.volume_input(vol)        # float32 (D, C, h, w) at the network size

Per-sample maps for the loss (distance maps, boundaries) are plugged in with ``target_maps=``, a function of the
augmented mask (H, W) int64 returning ``{key: array}``; it runs in the DataLoader workers.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from . import cityscapes, synapse, synthetic
from .base import IGNORE_INDEX, DatasetInfo, SegmentationDataset, TargetMaps, Volume
from .cityscapes import CityscapesDataset
from .synapse import SynapseDataset
from .synthetic import SyntheticDataset

_CLASSES: dict[str, type[SegmentationDataset]] = {
    "synthetic": SyntheticDataset,
    "synapse": SynapseDataset,
    "cityscapes": CityscapesDataset,
}

#: name -> :class:`DatasetInfo`; the one source of truth for classes, metrics and evaluation mode.
DATASETS = MappingProxyType({name: cls.info for name, cls in _CLASSES.items()})


def build_dataset(name: str, split: str = "train", *, root: str | Path | None = None,
                  target_maps: TargetMaps | None = None, **options: Any) -> SegmentationDataset:
    """Build a dataset by name.

    Args:
        name: a key of :data:`DATASETS`.
        split: one of ``DATASETS[name].splits``.
        root: dataset folder (required by the file-based datasets, ignored by ``synthetic``).
        target_maps: ``mask (H, W) int64 -> {key: array}``, added to each item as float32 tensors.
        **options: the dataset's own options (``seed``, ``image_size``, ``transform``, ``augment`` ...; see
            :class:`SyntheticDataset`, :class:`SynapseDataset`, :class:`CityscapesDataset`).

    Raises:
        ValueError: unknown name, split or option, or a missing ``root``.
        FileNotFoundError: ``root`` or the expected layout under it does not exist.
    """
    if name not in _CLASSES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(map(repr, _CLASSES))}")
    cls, info = _CLASSES[name], DATASETS[name]
    if split not in info.splits:
        raise ValueError(f"{name}: unknown split {split!r}; choose one of {', '.join(map(repr, info.splits))}"
                         + (" (the test split has no public labels)" if name == "cityscapes" else ""))
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "root", "split",
                                                                                    "target_maps")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}")
    if info.needs_root:
        if root is None:
            raise ValueError(f"{name} is read from files: pass root=PATH (the folder holding the dataset; see "
                             f"raysweep/data/{name}.py for the layout)")
        return cls(root, split=split, target_maps=target_maps, **options)
    return cls(split=split, target_maps=target_maps, **options)


def check_dataset_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Check a dataset's options by value, reading no data (what a sweep config's validation calls).

    Returns the options normalised (sizes as ``(H, W)`` tuples, paths as ``Path``). Raises ValueError naming the
    dataset and the option for an unknown dataset or option, or a bad value; the constructors run the same checks.
    """
    if name not in _CLASSES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(map(repr, _CLASSES))}")
    return _CLASSES[name].check_options(options)


__all__ = [
    "DATASETS",
    "IGNORE_INDEX",
    "CityscapesDataset",
    "DatasetInfo",
    "SegmentationDataset",
    "SynapseDataset",
    "SyntheticDataset",
    "TargetMaps",
    "Volume",
    "build_dataset",
    "check_dataset_options",
    "cityscapes",
    "synapse",
    "synthetic",
]
