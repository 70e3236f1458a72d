"""Datasets: the embedded ``synthetic`` default, ``synapse`` (TransUNet release), ``cityscapes`` (gtFine), and your own
data: ``nnunet`` (the nnU-Net raw / Decathlon layout) and ``folder`` (images/ + masks/).

Usage::

    from raysweep.data import DATASETS, build_dataset
    ds = build_dataset("synthetic", split="train", seed=0)                # generated in memory, no files
    ds = build_dataset("synapse", root="data/Synapse", split="test")
    ds = build_dataset("cityscapes", root="data/cityscapes", split="val")
    item = ds[0]          # {"image": float32 (C, H, W), "mask": int64 (H, W) (255 = ignore), "case": str, **maps}
    DATASETS["synapse"]   # DatasetInfo: num_classes, class_names, eval_classes, primary_metric, per_volume, ...
    dataset_info("nnunet", root="data/Dataset004_Hippocampus")   # classes from the files (nnunet, folder)

Per-volume datasets (``DATASETS[name].per_volume``) also yield whole volumes for 3-D evaluation::

    for vol in ds.volumes():            # Volume(case, image (D, H, W), label (D, H, W) int64, spacing or None)
        x = ds.volume_input(vol)        # float32 (D, C, h, w) at the network size

Each dataset has three disjoint roles of cases: ``"train"``, a selection split ``DATASETS[name].select_split`` (tuning
trials) and a ranking split ``DATASETS[name].eval_split`` (confirmation runs). ``list_cases(name, split, ...)`` lists
a split's case ids, as evaluation reports them, without reading image data.

Robustness studies: every dataset takes ``label_corruption`` (training labels only: boundary erosion/dilation,
dropped small components, class swaps; :mod:`raysweep.data.corruption`), and ``synthetic`` takes ``shift`` (a
test-time shift of the ranking split's images: contrast, bias field, noise, resolution; :mod:`raysweep.data.shift`)::

    ds = build_dataset("synthetic", "train", label_corruption={"kind": "boundary", "pixels": 2})
    ds = build_dataset("synthetic", "test", shift={"contrast": 0.7, "noise": 0.05})

Per-sample maps for the loss (distance maps, boundaries) are plugged in with ``target_maps=``, a function of the
augmented mask (H, W) int64 returning ``{key: array}``; it runs in the DataLoader workers.
"""

from __future__ import annotations

import inspect as _pyinspect  # not `inspect`: that name is the submodule raysweep.data.inspect
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from . import cityscapes, corruption, folder, nnunet, synapse, synthetic
from .base import GENERIC_OPTIONS, IGNORE_INDEX, DatasetInfo, SegmentationDataset, TargetMaps, Volume
from .cityscapes import CityscapesDataset
from .folder import FolderDataset
from .nnunet import NnUNetDataset
from .synapse import SynapseDataset
from .synthetic import SyntheticDataset

_CLASSES: dict[str, type[SegmentationDataset]] = {
    "synthetic": SyntheticDataset,
    "synapse": SynapseDataset,
    "cityscapes": CityscapesDataset,
    "nnunet": NnUNetDataset,
    "folder": FolderDataset,
}

#: name -> :class:`DatasetInfo`; the one source of truth for classes, metrics and evaluation mode. The datasets
#: described by their files (``nnunet``, ``folder``) have their splits and roles here but no classes (``num_classes``
#: 0): :func:`dataset_info` reads those from ``root``, and a built dataset carries them as ``ds.info``.
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
    cls = _check_call(name, split, root, options)
    generic = {key: options.pop(key) for key in list(options) if key in GENERIC_OPTIONS}
    corruption.check_split(name, split, generic.get(corruption.OPTION))
    cls.check_options(generic)  # by value, before any data is read
    if DATASETS[name].needs_root:
        ds = cls(root, split=split, target_maps=target_maps, **options)
    else:
        ds = cls(split=split, target_maps=target_maps, **options)
    if generic.get(corruption.OPTION):
        ds.set_label_corruption(generic[corruption.OPTION])  # swap ids checked against the classes the data has
    return ds


def dataset_info(name: str, *, root: str | Path | None = None, **options: Any) -> DatasetInfo:
    """The :class:`DatasetInfo` a dataset built with these arguments has (``build_dataset(...).info``), reading no
    image data: ``DATASETS[name]`` for the datasets with fixed classes (``synthetic``, ``synapse``, ``cityscapes``);
    for ``nnunet`` and ``folder`` the classes, channels and evaluation mode of the data under ``root`` (from
    ``dataset.json``, the ``classes`` option or ``classes.json``).

    Args:
        name, root, **options: as for :func:`build_dataset` (options that do not change the classes are checked and
            otherwise ignored).

    Raises:
        ValueError / FileNotFoundError: as :func:`build_dataset` raises them for the description files.
    """
    if name not in _CLASSES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(map(repr, _CLASSES))}")
    cls = _CLASSES[name]
    if DATASETS[name].needs_root and root is None:
        raise ValueError(f"{name} is read from files: pass root=PATH (the folder holding the dataset; see "
                         f"raysweep/data/{name}.py for the layout)")
    info = cls.dataset_info(root, **options) if DATASETS[name].needs_root else cls.dataset_info(**options)
    if options.get(corruption.OPTION):  # swap class ids against the classes read from root
        corruption.check(name, corruption.OPTION, options[corruption.OPTION], info.num_classes or None)
    return info


def list_cases(name: str, split: str, *, root: str | Path | None = None, **options: Any) -> list[str]:
    """The case ids that evaluating ``split`` reports, in evaluation order, without reading any image data.

    Cheap enough to run before any trial starts: it lists folders and reads the list files only (``synthetic``:
    computed from ``num_volumes``). The ids are exactly the ``case`` keys evaluation scores
    (``raysweep.metrics.Evaluator.add(case, ...)``): for per-volume datasets (``synthetic``, ``synapse``) the volume
    ids ``Volume.case`` that ``ds.volumes()`` yields (``"case0008"``), for ``cityscapes`` the image ids
    ``item["case"]`` of the items in order (``"frankfurt_000000_000294"``). Use it to record which cases select
    (``DATASETS[name].select_split``) and which rank (``.eval_split``), and to count the ranking cases.

    Args:
        name, split, root, **options: as for :func:`build_dataset` (``target_maps`` aside); options that do not
            change which cases a split holds (``image_size``, ``transform`` ...) are checked and otherwise ignored.

    Returns:
        list of str, one per case.

    Raises:
        ValueError / FileNotFoundError: as :func:`build_dataset` raises them for the same arguments (unknown name,
            split or option, a bad option value, a missing ``root`` or layout, hold-out options that do not fit).
    """
    cls = _check_call(name, split, root, options)
    corruption.check_split(name, split, options.get(corruption.OPTION))
    return cls.list_cases(split, root=root, **options)


def listing_digest(cases: list[str]) -> str:
    """``"<count>:<sha256 of the ids, 16 hex>"``: a split's case listing in a few bytes, for a trial config to carry
    the listing the sweep checked (:func:`check_listing`). Order-sensitive, as evaluation order is."""
    import hashlib

    return f"{len(cases)}:{hashlib.sha256(chr(10).join(cases).encode()).hexdigest()[:16]}"


def check_listing(name: str, split: str, expected: str, *, root: str | Path | None = None, **options: Any) -> None:
    """Raise ValueError when ``split`` no longer lists the cases it listed when the sweep started (``expected``, a
    :func:`listing_digest`): files added to or removed from the dataset during the sweep would otherwise change what
    a trial trains or is ranked on without a word. The message names the split, both counts and the folder."""
    cases = list_cases(name, split, root=root, **options)
    if listing_digest(cases) == expected:
        return
    before = expected.partition(":")[0]
    raise ValueError(f"{name}: the {split} split lists {len(cases)} case(s) now, {before} (or other names) when the "
                     f"sweep checked the data before it started: files were added to or removed from "
                     f"{root or 'the dataset'} during the sweep; restore them, or start the sweep again (--fresh) to "
                     f"rank on the data as it is now")


def _check_call(name: str, split: str, root: str | Path | None, options: Mapping[str, Any]
                ) -> type[SegmentationDataset]:
    """The dataset class, after the checks :func:`build_dataset` and :func:`list_cases` share (name, split, option
    names, ``root``); ValueError otherwise."""
    if name not in _CLASSES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(map(repr, _CLASSES))}")
    cls, info = _CLASSES[name], DATASETS[name]
    if split not in info.splits:
        raise ValueError(f"{name}: unknown split {split!r}; choose one of {', '.join(map(repr, info.splits))}"
                         + (" (the test split has no public labels)" if name == "cityscapes" else ""))
    accepted = [p for p in _pyinspect.signature(cls.__init__).parameters if p not in ("self", "root", "split",
                                                                                    "target_maps")]
    accepted += list(GENERIC_OPTIONS)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}")
    if info.needs_root and root is None:
        raise ValueError(f"{name} is read from files: pass root=PATH (the folder holding the dataset; see "
                         f"raysweep/data/{name}.py for the layout)")
    return cls


def check_dataset_options(name: str, options: Mapping[str, Any], split: str | None = None) -> dict[str, Any]:
    """Check a dataset's options by value, reading no data (what a sweep config's validation calls).

    Returns the options normalised (sizes as ``(H, W)`` tuples, paths as ``Path``, ``label_corruption`` as a list of
    specs with defaults filled in). Raises ValueError naming the dataset and the option for an unknown dataset or
    option, or a bad value; the constructors run the same checks. With ``split``, also the options that only one split
    takes: ``label_corruption`` (``"train"`` only) and ``synthetic``'s ``shift`` (the ranking split ``"test"``
    only); without it those are checked by value alone (``build_dataset`` refuses them for another split).
    ``label_corruption``'s ``swap`` class ids are checked against ``DATASETS[name].num_classes`` where the classes are
    fixed (not ``nnunet`` / ``folder``, whose classes :func:`dataset_info` and :func:`build_dataset` check them
    against).
    """
    if name not in _CLASSES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(map(repr, _CLASSES))}")
    out = _CLASSES[name].check_options(options)
    if split is not None:
        if split not in DATASETS[name].splits:
            raise ValueError(f"{name}: unknown split {split!r}; choose one of "
                             f"{', '.join(map(repr, DATASETS[name].splits))}")
        corruption.check_split(name, split, options.get(corruption.OPTION))
        if name == "synthetic":
            synthetic.check_shift_split(split, options.get("shift"))
    return out


__all__ = [
    "DATASETS",
    "IGNORE_INDEX",
    "CityscapesDataset",
    "DatasetInfo",
    "FolderDataset",
    "NnUNetDataset",
    "SegmentationDataset",
    "SynapseDataset",
    "SyntheticDataset",
    "TargetMaps",
    "Volume",
    "build_dataset",
    "check_dataset_options",
    "check_listing",
    "cityscapes",
    "corruption",
    "dataset_info",
    "folder",
    "list_cases",
    "listing_digest",
    "nnunet",
    "synapse",
    "synthetic",
]
