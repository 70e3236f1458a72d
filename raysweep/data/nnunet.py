"""``nnunet``: your own data in the nnU-Net v2 raw layout (or the Medical Segmentation Decathlon's).

Layout under ``root`` (nnU-Net v2, ``nnUNet_raw/DatasetXXX_Name``)::

    dataset.json                 {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1},
                                  "numTraining": 40, "file_ending": ".nii.gz"}
    imagesTr/CASE_0000.nii.gz    one file per channel: _0000, _0001, ... (channel_names order)
    labelsTr/CASE.nii.gz         class ids 0..K-1 (nnU-Net's "ignore" label, if declared, becomes 255)
    imagesTs/, labelsTs/         optional; when labelsTs holds labels, these cases are the ranking split
    splits_final.json            optional: nnU-Net's folds [{"train": [...], "val": [...]}, ...] (option ``fold``)

or the older Decathlon ``dataset.json`` (``{"training": [{"image": "./imagesTr/x.nii.gz", "label":
"./labelsTr/x.nii.gz"}], "test": [...], "modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver"}}``),
whose images are single 3-D files or 4-D files with the channels on the last axis (or, as nnU-Net v1 converted
them, ``x_0000.nii.gz`` ... files).

File formats: NIfTI (``.nii.gz``/``.nii``, read with nibabel) for volumes; nnU-Net's 2-D natural-image variant
(``file_ending`` ``.png``, ``.tif`` or ``.tiff``, read with Pillow; an RGB file supplies three channels).

Conventions:

* Volumes are read as (D, H, W) = nibabel's (x, y, z) axes reversed, and ``spacing`` is the header's zooms in the
  same (z, y, x) order, in mm, so HD95 is in millimetres. They are trained as 2-D slices along D, resized to
  ``image_size`` (default 224 x 224, as Synapse), and evaluated per volume in 3-D (``per_volume``). 2-D images are one
  case each, evaluated per image at ``image_size`` (no HD95), primary metric ``dice`` in both cases.
* Intensities are normalised per channel as nnU-Net does: a CT channel (``channel_names`` value "CT", any case) is
  clipped to the 0.5 and 99.5 percentiles of the foreground voxels (label > 0) of the training cases and z-scored
  with their mean and std; any other channel is z-scored per image (mean and std of the whole image,
  ``ZScoreNormalization``). 2-D natural images get the per-image z-score (the same as scaling to [0, 1] first).
  The CT statistics are computed once from the ``train`` split's cases (up to ``FG_SAMPLES_PER_CASE`` foreground
  voxels per case, a seeded draw; all of them when fewer) and cached in memory and in a JSON file under the cache
  folder (option ``stats_cache``, default ``$RAYSWEEP_CACHE/nnunet`` or ``~/.cache/raysweep/nnunet``; the dataset
  root is often read-only or shared). The file records a fingerprint of the cases' file names, sizes and modification
  times: a file that changed makes the cache stale, and it is recomputed.
* Classes come from ``dataset.json``: ids 0..K-1, contiguous, 0 = background (excluded from summaries). Region-based
  labels (an id list, nnU-Net's ``regions_class_order``) are refused.
* ``dims: 3`` (volumes only; default 2, the slices above) trains on 3-D patches at native resolution, as nnU-Net's
  3d_fullres does, and evaluates whole volumes with a sliding window of the patch: the patch size and sampling, the
  augmentation and the epoch length are in :mod:`raysweep.data.nnunet_volumes`, with the code.

Three splits, disjoint by case (``select_split`` ``"val"``, ``eval_split`` ``"test"``):

* ``test`` (ranking: confirmation runs): the labelled ``imagesTs``/``labelsTs`` cases when ``labelsTs`` holds labels;
  otherwise training cases held out (option ``test_cases``: a number, drawn with ``split_seed``, or a list; default
  20% of them, at least 1);
* ``val`` (selection: tuning trials): ``splits_final.json``'s ``val`` of fold ``fold`` when the file exists (the
  held-out test cases, drawn from that fold's ``train`` list, are never in it); otherwise training cases held out
  (option ``val_cases``: a number or a list; default 20% of the training cases, at least 1), drawn after the test
  cases in the same seeded order (:func:`~raysweep.data.base.seeded_order`);
* ``train``: every other training case.

Volumes are read, checked and normalised when the dataset is built (bad input fails then, naming the file) and held
in memory at native resolution (as ``synthetic`` holds its volumes); DataLoader workers share them.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import (
    IGNORE_INDEX,
    DatasetInfo,
    SegmentationDataset,
    TargetMaps,
    Transform,
    Volume,
    cache_dir,
    files_fingerprint,
    first_items,
    option_bool,
    option_int,
    option_path,
    option_size,
    option_transform,
    seeded_order,
)
from . import nnunet_volumes
from .nnunet_files import Description, describe, read_case, read_json
from .transforms import synapse_transform

#: The registry entry: the splits and roles every nnU-Net dataset shares. Classes, channels and evaluation mode come
#: from the files: ``raysweep.data.dataset_info("nnunet", root=...)`` (or ``ds.info`` of a built dataset) has them;
#: here they are empty placeholders (``num_classes`` 0).
INFO = DatasetInfo(
    name="nnunet",
    num_classes=0,
    class_names=(),
    eval_classes=(),
    primary_metric="dice",
    per_volume=True,
    empty_convention="strict",
    in_channels=0,
    image_size=(224, 224),
    splits=("train", "val", "test"),
    eval_split="test",
    select_split="val",
    needs_root=True,
)

#: Foreground voxels drawn per training case for the CT statistics (all of them when a case has fewer).
FG_SAMPLES_PER_CASE = 100_000
#: Share of the training cases held out for ``val`` and for ``test`` (when there is no labelled test set).
DEFAULT_HOLDOUT_FRACTION = 0.2
_STATS_VERSION = 1
# CT statistics already computed in this process, by cache key; a trial builds train and eval datasets.
_CT_STATS_MEMO: dict[str, dict[str, Any]] = {}


def default_cache_dir() -> Path:
    """``$RAYSWEEP_CACHE/nnunet`` or ``~/.cache/raysweep/nnunet``: where the CT statistics are cached."""
    return cache_dir("nnunet")


# ---------------------------------------------------------------------------------------------------------------
# splits


def _holdout(dataset: str, name: str, value: Any) -> int | list[str] | None:
    """``val_cases``/``test_cases``: None (the default share), a count >= 0 or a list of distinct case ids."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0:
        return int(value)
    if (isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v for v in value)
            and len(set(value)) == len(value)):
        return list(value)
    raise ValueError(f"{dataset}: option {name} must be null (the default share), an integer >= 0 or a non-empty "
                     f"list of distinct case ids, got {value!r}")


def _draw(dataset: str, name: str, pool: list[str], value: int | list[str] | None, order: list[str],
          where: str, total: int) -> list[str]:
    """The held-out cases: ``value`` as named (each must be in ``pool``) or the first that many of ``order`` in
    ``pool`` (default: ``DEFAULT_HOLDOUT_FRACTION`` of ``total`` training cases, at least 1)."""
    if isinstance(value, list):
        bad = [c for c in value if c not in pool]
        if bad:
            verb = "is" if len(bad) == 1 else "are"
            raise ValueError(f"{dataset}: option {name} names {first_items(bad)}, which {verb}"
                             f" not among the cases it can hold out ({where}): {first_items(sorted(pool), 10)}")
        chosen = value
    else:
        count = max(1, round(DEFAULT_HOLDOUT_FRACTION * total)) if value is None else value
        chosen = [c for c in order if c in set(pool)][:count]
    if len(chosen) >= len(pool):
        raise ValueError(f"{dataset}: option {name} holds out {len(chosen)} of the {len(pool)} cases {where}, leaving "
                         f"none to train on; hold out fewer (0 for none)")
    return sorted(chosen)


def compute_splits(desc: Description, fold: int = 0, split_seed: int = 0, val_cases: Any = None,
                   test_cases: Any = None) -> dict[str, list[str]]:
    """The three disjoint case lists ``{"train", "val", "test"}`` (each sorted) from the listing, the options and
    ``splits_final.json``; see the module docstring. Reads no image data."""
    name = "nnunet"
    training = sorted(desc.training)
    order = seeded_order(training, split_seed)
    if desc.test is not None and test_cases is not None:
        raise ValueError(f"{name}: option test_cases is set, but the ranking split is the labelled test set in "
                         f"{desc.root / 'labelsTs'}; remove test_cases (or move labelsTs away to rank on held-out "
                         f"training cases)")
    splits_path = desc.root / "splits_final.json"
    if splits_path.is_file():
        if val_cases is not None:
            raise ValueError(f"{name}: option val_cases is set, but {splits_path} decides the val split; remove "
                             f"val_cases (or the file)")
        folds = read_json(splits_path, "splits_final.json")
        if not (isinstance(folds, list) and folds and all(isinstance(f, Mapping) and isinstance(f.get("train"), list)
                                                         and isinstance(f.get("val"), list) for f in folds)):
            raise ValueError(f"{splits_path}: expected a list of folds [{{\"train\": [...], \"val\": [...]}}, ...] "
                             f"(nnU-Net's format); fix or delete the file")
        if fold >= len(folds):
            raise ValueError(f"{name}: option fold is {fold}, but {splits_path} has {len(folds)} fold(s) (0.."
                             f"{len(folds) - 1})")
        train_pool, val = list(folds[fold]["train"]), list(folds[fold]["val"])
        unknown = sorted(set(train_pool + val) - set(training))
        if unknown:
            raise ValueError(f"{splits_path}: fold {fold} names case(s) {first_items(unknown)} that are not in "
                             f"{desc.root / 'labelsTr'}; regenerate the file or restore the cases")
        overlap = sorted(set(train_pool) & set(val))
        if overlap:
            raise ValueError(f"{splits_path}: fold {fold} lists {first_items(overlap)} in both train and val")
        if not val:
            raise ValueError(f"{splits_path}: fold {fold} has an empty val list; the selection split needs cases")
        test = sorted(desc.test) if desc.test is not None else _draw(
            name, "test_cases", train_pool, test_cases, order, f"in fold {fold}'s train list of {splits_path.name}",
            len(training))
        train = sorted(set(train_pool) - set(test)) if desc.test is None else sorted(train_pool)
        return {"train": train, "val": sorted(val), "test": test}
    if desc.test is not None:
        test = sorted(desc.test)
        rest = training
    else:
        test = _draw(name, "test_cases", training, test_cases, order, "in labelsTr", len(training))
        rest = [c for c in training if c not in set(test)]
    if isinstance(val_cases, list) and set(val_cases) & set(test):
        raise ValueError(f"{name}: option val_cases names {first_items(sorted(set(val_cases) & set(test)))}, held out "
                         f"for the test (ranking) split; choose others or set test_cases")
    if val_cases == 0:
        raise ValueError(f"{name}: option val_cases is 0, but the val split (selection) needs cases; hold out at "
                         f"least 1")
    val = _draw(name, "val_cases", rest, val_cases, order, "left after the test cases", len(training))
    return {"train": sorted(set(rest) - set(val)), "val": val, "test": test}


# ---------------------------------------------------------------------------------------------------------------
# normalisation


def is_ct(modality: str) -> bool:
    return modality.strip().lower() == "ct"


def zscore(x: np.ndarray) -> np.ndarray:
    """nnU-Net's ZScoreNormalization (no mask): ``(x - mean) / max(std, 1e-8)`` over the whole array, float32."""
    x = x.astype(np.float32, copy=False)
    return ((x - x.mean()) / max(float(x.std()), 1e-8)).astype(np.float32)


def ct_normalise(x: np.ndarray, stats: Mapping[str, float]) -> np.ndarray:
    """nnU-Net's CTNormalization: clip to ``[lower, upper]`` then ``(x - mean) / max(std, 1e-8)``, float32."""
    x = np.clip(x.astype(np.float32, copy=False), stats["lower"], stats["upper"])
    return ((x - stats["mean"]) / max(stats["std"], 1e-8)).astype(np.float32)


def _fingerprint(desc: Description, cases: list[str]) -> str:
    paths = [p for case in cases for p in (*desc.training[case][0], desc.training[case][1])]
    return files_fingerprint(paths, desc.root, _STATS_VERSION)


def ct_statistics(desc: Description, cases: list[str], cache_dir: Path | None = None) -> dict[int, dict[str, float]]:
    """Foreground intensity statistics of each CT channel over ``cases`` (training cases): ``{channel: {"lower",
    "upper", "mean", "std"}}`` (0.5 / 99.5 percentiles, mean and std of the foreground voxels, label > 0).

    Cached in memory and in ``<cache_dir>/ct-<key>.json`` (key: the root and the case list), which records a
    fingerprint of the files (names, sizes, modification times); a fingerprint that no longer matches marks the file
    stale and the statistics are recomputed and rewritten. Empty when no channel is CT.
    """
    ct = [c for c, m in enumerate(desc.channels) if is_ct(m)]
    if not ct:
        return {}
    key = hashlib.sha256(json.dumps([str(desc.root.resolve()), sorted(cases)]).encode()).hexdigest()[:24]
    fingerprint = _fingerprint(desc, cases)
    memo = _CT_STATS_MEMO.get(key)
    if memo is not None and memo["fingerprint"] == fingerprint:
        return memo["stats"]
    path = (cache_dir if cache_dir is not None else default_cache_dir()) / f"ct-{key}.json"
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("fingerprint") == fingerprint:
            stats = {int(c): {k: float(v) for k, v in s.items()} for c, s in stored["channels"].items()}
            _CT_STATS_MEMO[key] = {"fingerprint": fingerprint, "stats": stats}
            return stats
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        pass  # no cache, stale or unreadable: recompute
    samples: dict[int, list[np.ndarray]] = {c: [] for c in ct}
    rng = np.random.default_rng(1234)
    for case in cases:
        image, label, _ = read_case(desc, case, desc.training[case])
        fg = (label > 0) & (label != IGNORE_INDEX)
        for c in ct:
            values = image[..., c][fg]
            if values.size > FG_SAMPLES_PER_CASE:
                values = rng.choice(values, FG_SAMPLES_PER_CASE, replace=False)
            samples[c].append(values.astype(np.float64))
    stats = {}
    for c in ct:
        values = np.concatenate(samples[c])
        if values.size == 0:
            raise ValueError(f"{desc.root}: the training cases have no foreground voxels, so the CT normalisation of "
                             f"channel {c} has no statistics; check the labels in labelsTr")
        lower, upper = np.percentile(values, [0.5, 99.5])
        stats[c] = {"lower": float(lower), "upper": float(upper), "mean": float(values.mean()),
                    "std": float(values.std())}
    _CT_STATS_MEMO[key] = {"fingerprint": fingerprint, "stats": stats}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"root": str(desc.root.resolve()), "cases": sorted(cases),
                                   "fingerprint": fingerprint, "channels": stats}, indent=1), encoding="utf-8")
        tmp.replace(path)  # atomic: concurrent trials never read half a file
    except OSError as err:
        warnings.warn(f"nnunet: could not cache the CT statistics in {path} ({err}); they are recomputed per "
                      f"process (set the option stats_cache to a writable folder)", stacklevel=3)
    return stats


def normalise(image: np.ndarray, channels: tuple[str, ...], ct_stats: Mapping[int, Mapping[str, float]]
              ) -> np.ndarray:
    """Normalise image float32 (D, H, W, C) per channel: CT channels with ``ct_stats``, others per-image z-score."""
    out = np.empty(image.shape, np.float32)
    for c, modality in enumerate(channels):
        out[..., c] = ct_normalise(image[..., c], ct_stats[c]) if is_ct(modality) else zscore(image[..., c])
    return out


# ---------------------------------------------------------------------------------------------------------------
# the dataset


def make_info(desc: Description, image_size: tuple[int, int] = (224, 224)) -> DatasetInfo:
    """The :class:`DatasetInfo` of a described dataset: its classes and channels, per volume unless 2-D."""
    k = desc.num_classes
    return DatasetInfo(name="nnunet", num_classes=k, class_names=desc.class_names, eval_classes=tuple(range(1, k)),
                       primary_metric="dice", per_volume=not desc.two_d, empty_convention="strict",
                       in_channels=len(desc.channels), image_size=image_size, splits=INFO.splits,
                       eval_split=INFO.eval_split, select_split=INFO.select_split, needs_root=True)


class NnUNetDataset(SegmentationDataset):
    """A dataset in the nnU-Net raw (or Decathlon) layout; see the module docstring.

    Args:
        root: the dataset folder (holding ``dataset.json``).
        split: ``"train"``, ``"val"`` (selection: tuning trials) or ``"test"`` (ranking: confirmation runs).
        image_size: (H, W) slices/images are resized to (cubic image, nearest mask); default null: (224, 224).
            2-D only (``dims: 3`` refuses it: patches are at native resolution).
        fold: the fold of ``splits_final.json`` (when the file exists); default 0.
        split_seed: seed of the held-out draws (default 0): ``numpy.random.default_rng(split_seed)`` shuffles the
            sorted training case ids; test cases (if held out) are the first of that order, val cases the next.
        val_cases: without ``splits_final.json``: how many training cases to hold out for ``val`` (default null:
            20%, at least 1) or a list of case ids.
        test_cases: without a labelled ``labelsTs``: how many training cases to hold out for ``test`` (default
            null: 20%, at least 1) or a list of case ids.
        stats_cache: folder of the CT statistics cache (default ``$RAYSWEEP_CACHE/nnunet``).
        transform: ``"default"`` (2-D: :func:`~raysweep.data.transforms.synapse_transform`, TransUNet's rotations
            and flips, then the resize; 3-D: the patch draw and its augmentation), None (2-D: no transform at all,
            native size; 3-D: patches without augmentation), or a callable (2-D only).
        augment: augment in the default transform (default: ``split == "train"``).
        seed: seed of the augmentation (3-D: and of the patch draws) in the main process; DataLoader workers reseed
            from torch, and the trainer seeds each item (:class:`~raysweep.trial.sampling.SeededItems`).
        dims: 2 (default: 2-D slices) or 3 (3-D patches; volumes only). patch_size (d, h, w), patches_per_epoch
            and oversample_foreground: ``dims: 3`` only, default null each; see :mod:`raysweep.data.nnunet_volumes`.
        target_maps: see :class:`~raysweep.data.base.SegmentationDataset`; with ``dims: 3`` also given the item's
            voxel spacing when it takes a ``spacing`` keyword (:func:`~raysweep.data.nnunet_volumes.map_keywords`).

    Items (``dims: 2``): ``image`` float32 (C, H, W), normalised (module docstring); ``mask`` int64 (H, W), 255 =
    ignore; ``case`` ``"<case>_slice<zzz>"`` for volumes, ``"<case>"`` for 2-D images. Items (``dims: 3``):
    ``train``: a patch (:func:`~raysweep.data.nnunet_volumes.patch_item`); ``val``/``test``: whole volumes
    (:func:`~raysweep.data.nnunet_volumes.whole_volume_item`). Both: plus the target maps.

    ``info``: this dataset's :class:`DatasetInfo` (classes from ``dataset.json``). ``volumes()`` (3-D data) yields
    each case as a normalised :class:`Volume` (:func:`~raysweep.data.nnunet_volumes.as_volume`). ``dims``: 2 or 3;
    ``patch_size``, ``patches_per_epoch``, ``locations``: :class:`~raysweep.data.nnunet_volumes.PatchPlan` (None or
    empty with ``dims: 2``).
    """

    info = INFO
    option_checks = {
        "image_size": lambda d, n, v: option_size(d, n, v, none=True),
        "fold": option_int,
        "split_seed": option_int,
        "val_cases": _holdout,
        "test_cases": _holdout,
        "stats_cache": option_path,
        "transform": option_transform,
        "augment": option_bool,
        "seed": lambda d, n, v: option_int(d, n, v, none=True),
        **nnunet_volumes.DIMS_OPTION_CHECKS,
    }

    @classmethod
    def _check_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options one by one, then together (:func:`~raysweep.data.nnunet_volumes.check_dims_options`)."""
        out = super()._check_options(options)
        nnunet_volumes.check_dims_options(out, options)
        return out

    def __init__(self, root: str | Path, split: str = "train", image_size: int | tuple[int, int] | None = None,
                 fold: int = 0, split_seed: int = 0, val_cases: int | list[str] | None = None,
                 test_cases: int | list[str] | None = None, stats_cache: str | Path | None = None,
                 transform: Transform | str | None = "default", augment: bool | None = None,
                 seed: int | None = None, dims: int = 2, patch_size: tuple[int, int, int] | None = None,
                 patches_per_epoch: int | None = None, oversample_foreground: float | None = None,
                 target_maps: TargetMaps | None = None) -> None:
        opts = self.check_options({"image_size": image_size, "fold": fold, "split_seed": split_seed,
                                   "val_cases": val_cases, "test_cases": test_cases, "stats_cache": stats_cache,
                                   "transform": transform, "augment": augment, "seed": seed, "dims": dims,
                                   "patch_size": patch_size, "patches_per_epoch": patches_per_epoch,
                                   "oversample_foreground": oversample_foreground})
        size = opts["image_size"] or INFO.image_size
        augment = split == "train" if augment is None else augment
        self.dims: int = opts["dims"]
        if self.dims == 2:
            self.eval_transform = synapse_transform(size, augment=False)
            if transform == "default":
                transform = synapse_transform(size, augment=augment)
                transform.set_random_seed(seed)
        super().__init__(split, transform if self.dims == 2 else None, target_maps)
        self.desc = nnunet_volumes.check_dims(describe(root), self.dims)
        self.root = self.desc.root
        self.image_size = size
        self.info = make_info(self.desc, size)
        self.splits = compute_splits(self.desc, opts["fold"], opts["split_seed"], opts["val_cases"],
                                     opts["test_cases"])
        self.cases = self.splits[split]
        if not self.cases:
            raise ValueError(f"nnunet: the {split} split of {self.root} is empty; adjust val_cases/test_cases or "
                             f"splits_final.json")
        files = self.desc.test if split == "test" and self.desc.test is not None else self.desc.training
        stats = ct_statistics(self.desc, self.splits["train"], opts["stats_cache"])
        self.ct_stats = stats
        self._volumes: list[nnunet_volumes.LoadedCase] = []
        for case in self.cases:
            image, label, spacing = read_case(self.desc, case, files[case])
            self._volumes.append((case, normalise(image, self.desc.channels, stats), label, spacing))
        self.patch_size: tuple[int, int, int] | None = None
        self.patches_per_epoch: int | None = None
        self.locations: list[dict[int, np.ndarray]] = []
        if self.dims == 2:
            self.slices = [(v, z) for v, (_, _, label, _) in enumerate(self._volumes) for z in range(label.shape[0])]
        else:
            self.patch_size, self.patches_per_epoch, self.locations, self.transform = nnunet_volumes.plan_patches(
                self.desc, split, self._volumes, self.splits["train"], self.info.num_classes, opts,
                augment=augment and transform == "default", seed=seed)

    def set_label_corruption(self, value: Any) -> None:
        """See :meth:`SegmentationDataset.set_label_corruption`; refused with ``dims: 3`` (it corrupts 2-D masks)."""
        if self.dims == 3 and value:
            raise nnunet_volumes.label_corruption_error()
        super().set_label_corruption(value)

    @classmethod
    def list_cases(cls, split: str = "test", root: str | Path | None = None, **options) -> list[str]:
        """Case ids of ``split`` in evaluation order (sorted), from ``dataset.json``, the file listing and
        ``splits_final.json`` only; options are checked as the constructor checks them."""
        if split not in cls.info.splits:
            raise ValueError(f"nnunet: unknown split {split!r}; choose one of {', '.join(map(repr, cls.info.splits))}")
        opts = cls.check_options(options)
        if root is None:
            raise ValueError("nnunet is read from files: pass root=PATH (the folder holding dataset.json)")
        desc = nnunet_volumes.check_dims(describe(root), opts.get("dims", 2))
        return compute_splits(desc, opts.get("fold", 0), opts.get("split_seed", 0), opts.get("val_cases"),
                              opts.get("test_cases"))[split]

    @classmethod
    def dataset_info(cls, root: str | Path | None = None, **options) -> DatasetInfo:
        """This root's :class:`DatasetInfo` (classes and channels from ``dataset.json``), reading no image data."""
        opts = cls.check_options(options)
        if root is None:
            raise ValueError("nnunet is read from files: pass root=PATH (the folder holding dataset.json)")
        desc = nnunet_volumes.check_dims(describe(root), opts.get("dims", 2))
        return make_info(desc, opts.get("image_size") or INFO.image_size)

    def __len__(self) -> int:
        if self.dims == 2:
            return len(self.slices)
        return self.patches_per_epoch if self.split == "train" else len(self._volumes)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        v, z = self.slices[index]
        case, image, label, _ = self._volumes[v]
        name = case if self.desc.two_d else f"{case}_slice{z:03d}"
        return image[z].copy(), label[z].copy(), name

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.dims == 2:
            return super().__getitem__(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.info.name} {self.split}: index {index} out of range for {len(self)} items")
        self._seed_worker()
        v = (int(index) % len(self)) % len(self._volumes)
        if self.split == "train":
            item, spacing = nnunet_volumes.patch_item(self._volumes[v], self.transform, self.locations[v])
        else:
            item, spacing = nnunet_volumes.whole_volume_item(self._volumes[v])
        if self.target_maps is not None:
            self._attach_maps(item, **nnunet_volumes.map_keywords(self.target_maps, spacing))
        return item

    def volumes(self) -> Iterator[Volume]:
        """Yield each case of the split as a :class:`Volume` (3-D data only; see the class docstring)."""
        if self.desc.two_d:
            return super().volumes()
        return (nnunet_volumes.as_volume(entry) for entry in self._volumes)

    def volume_input(self, volume: Volume) -> torch.Tensor:
        """Network input for a volume. ``dims: 2``: each slice through ``eval_transform``, float32 (D, C, h, w).
        ``dims: 3``: the whole volume, float32 (1, C, D, H, W) (:func:`~raysweep.data.nnunet_volumes.volume_tensor`)."""
        if self.dims == 3:
            return nnunet_volumes.volume_tensor(volume)
        image = volume.image[..., None] if volume.image.ndim == 3 else volume.image.transpose(0, 2, 3, 1)
        slices = []
        for s in image:
            img = np.ascontiguousarray(s, dtype=np.float32)
            if self.eval_transform is not None:
                img = self.eval_transform(image=img)["image"]
            slices.append(img if img.ndim == 3 else img[:, :, None])
        return torch.from_numpy(np.ascontiguousarray(np.stack(slices).transpose(0, 3, 1, 2), dtype=np.float32))
