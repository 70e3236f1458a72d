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
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
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
    check_labels,
    first_items,
    option_bool,
    option_int,
    option_path,
    option_size,
    option_transform,
    require_dir,
    seeded_order,
)
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

LAYOUT = """  <root>/dataset.json            channel_names, labels, numTraining, file_ending (nnU-Net v2)
                                  or training, modality, labels (Medical Segmentation Decathlon)
  <root>/imagesTr/CASE_0000.nii.gz (one file per channel: _0000, _0001, ...; or .png/.tif for 2-D data)
  <root>/labelsTr/CASE.nii.gz
  <root>/imagesTs/, labelsTs/     (optional: labelled test cases rank)
  <root>/splits_final.json        (optional: nnU-Net's folds decide train/val)
(the nnU-Net raw format; see raysweep/data/nnunet.py)"""

#: Foreground voxels drawn per training case for the CT statistics (all of them when a case has fewer).
FG_SAMPLES_PER_CASE = 100_000
#: Share of the training cases held out for ``val`` and for ``test`` (when there is no labelled test set).
DEFAULT_HOLDOUT_FRACTION = 0.2
_IMAGE_ENDINGS_2D = (".png", ".tif", ".tiff")
_STATS_VERSION = 1
_CHANNEL_RE = re.compile(r"^(.+)_(\d{4})$")
# CT statistics already computed in this process, by cache key; a trial builds train and eval datasets.
_CT_STATS_MEMO: dict[str, dict[str, Any]] = {}


def default_cache_dir() -> Path:
    """``$RAYSWEEP_CACHE/nnunet`` or ``~/.cache/raysweep/nnunet``: where the CT statistics are cached."""
    return Path(os.environ.get("RAYSWEEP_CACHE") or Path.home() / ".cache" / "raysweep") / "nnunet"


# ---------------------------------------------------------------------------------------------------------------
# dataset.json and the file listing (no image data)


@dataclass(frozen=True)
class Description:
    """What ``dataset.json`` and the file listing say, before any image is read.

    Attributes:
        root: the dataset folder.
        kind: ``"nnunet"`` (v2 dataset.json) or ``"msd"`` (Decathlon / nnU-Net v1).
        class_names: K names by class id.
        ignore_id: the file label value of nnU-Net's ``"ignore"`` label (mapped to 255), or None.
        channels: the modality name of each input channel, e.g. ``("CT",)`` or ``("T2", "ADC")``.
        file_ending: ``".nii.gz"``, ``".png"`` ...
        two_d: the images are 2-D natural images (``.png``/``.tif``), one case each.
        training: case id -> (image files, label file), sorted by case.
        test: the labelled test cases (``imagesTs``/``labelsTs``) the same way, or None when there are none.
    """

    root: Path
    kind: str
    class_names: tuple[str, ...]
    ignore_id: int | None
    channels: tuple[str, ...]
    file_ending: str
    two_d: bool
    training: dict[str, tuple[tuple[Path, ...], Path]]
    test: dict[str, tuple[tuple[Path, ...], Path]] | None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _json_error(path: Path, what: str) -> ValueError:
    return ValueError(f"{path}: {what}. An nnU-Net v2 dataset.json holds channel_names ({{\"0\": \"CT\"}}), labels "
                      f"({{\"background\": 0, \"organ\": 1}}), numTraining and file_ending (\".nii.gz\"); a Decathlon "
                      f"one holds training, modality and labels ({{\"0\": \"background\", \"1\": \"organ\"}})")


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}.\nExpected layout:\n{LAYOUT}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err}); fix the file") from None


def _classes(path: Path, labels: Any, kind: str) -> tuple[tuple[str, ...], int | None]:
    """Class names by id and the ignore id, from dataset.json's ``labels``; ValueError naming the file otherwise."""
    if not isinstance(labels, Mapping) or not labels:
        raise _json_error(path, f"'labels' must be a non-empty mapping, got {labels!r}")
    if kind == "nnunet":
        regions = [name for name, v in labels.items() if isinstance(v, (list, tuple))]
        if regions:
            raise ValueError(f"{path}: region-based labels are not supported ({', '.join(map(repr, regions))} map to "
                             f"lists of ids, nnU-Net's region training); give each class one id")
        pairs = list(labels.items())
    else:  # Decathlon: {"0": "background", ...}
        pairs = []
        for key, name in labels.items():
            if not (isinstance(key, str) and key.strip().lstrip("-").isdigit()):
                raise _json_error(path, f"'labels' key {key!r} is not an integer id (Decathlon labels map ids to "
                                        "names)")
            pairs.append((name, int(key)))
    bad = [(n, v) for n, v in pairs if not isinstance(n, str) or isinstance(v, bool) or not isinstance(v, int)]
    if bad:
        raise _json_error(path, f"'labels' must map class names to integer ids, got {bad[:3]}")
    ignore = [v for n, v in pairs if n == "ignore"]
    ignore_id = ignore[0] if ignore else None
    by_id: dict[int, str] = {}
    for name, v in pairs:
        if name == "ignore":
            continue
        if v in by_id:
            raise ValueError(f"{path}: labels {by_id[v]!r} and {name!r} share id {v}; give each class its own id")
        by_id[v] = name
    ids = sorted(by_id)
    if ids != list(range(len(ids))):
        raise ValueError(f"{path}: label ids must be 0..K-1 without gaps (0 = background), got {ids}; renumber the "
                         f"labels in dataset.json and in the label files")
    if ignore_id is not None and ignore_id != len(ids):
        raise ValueError(f"{path}: the 'ignore' label must have the highest id ({len(ids)}), as nnU-Net requires, got "
                         f"{ignore_id}")
    if len(ids) < 2:
        raise ValueError(f"{path}: 'labels' declares {len(ids)} class; a segmentation needs background and at least "
                         f"one class")
    return tuple(by_id[i] for i in ids), ignore_id


def _channels(path: Path, mapping: Any, key: str) -> tuple[str, ...]:
    if not isinstance(mapping, Mapping) or not mapping:
        raise _json_error(path, f"{key!r} must be a non-empty mapping like {{\"0\": \"CT\"}}, got {mapping!r}")
    keys = sorted(mapping, key=lambda k: int(k) if str(k).isdigit() else -1)
    if [str(k) for k in keys] != [str(i) for i in range(len(keys))]:
        raise _json_error(path, f"{key!r} keys must be \"0\", \"1\", ... in order, got {sorted(map(str, mapping))}")
    names = [mapping[k] for k in keys]
    if not all(isinstance(n, str) and n for n in names):
        raise _json_error(path, f"{key!r} values must be modality names such as \"CT\" or \"T2\", got {names}")
    return tuple(names)


def _channel_files(folder: Path, ending: str) -> dict[str, dict[int, Path]]:
    """``CASE_XXXX<ending>`` files of a folder: case -> {channel index: path}."""
    out: dict[str, dict[int, Path]] = {}
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.endswith(ending) and not p.name.startswith("."):
                m = _CHANNEL_RE.match(p.name[: -len(ending)])
                if m:
                    out.setdefault(m[1], {})[int(m[2])] = p
    return out


def _pair_cases(image_dir: Path, label_dir: Path, ending: str, n_channels: int, two_d: bool
                ) -> dict[str, tuple[tuple[Path, ...], Path]]:
    """Match ``label_dir/CASE<ending>`` with ``image_dir/CASE_XXXX<ending>``; errors name the missing file."""
    labels = {p.name[: -len(ending)]: p for p in label_dir.iterdir()
              if p.name.endswith(ending) and not p.name.startswith(".")} if label_dir.is_dir() else {}
    images = _channel_files(image_dir, ending)
    orphans = sorted(set(images) - set(labels))
    if orphans:
        raise FileNotFoundError(f"{len(orphans)} case(s) in {image_dir} have no label in {label_dir}: expected "
                                f"{first_items([str(label_dir / (c + ending)) for c in orphans], 3)}; add the labels "
                                f"or remove the images")
    out = {}
    for case in sorted(labels):
        found = images.get(case, {})
        # An RGB 2-D image supplies three channels from one file, so 2-D cases may have fewer files than channels.
        wanted = range(max(found) + 1 if two_d and found else n_channels)
        missing = [image_dir / f"{case}_{c:04d}{ending}" for c in wanted if c not in found]
        if missing:
            raise FileNotFoundError(f"{missing[0]}: image not found for the label {labels[case]} "
                                    f"({len(missing)} channel file(s) missing); every case needs {n_channels} channel "
                                    f"file(s) CASE_0000{ending} ... (dataset.json channel_names)")
        extra = sorted(set(found) - set(wanted))
        if extra:
            raise ValueError(f"{found[extra[0]]}: channel {extra[0]} but dataset.json declares {n_channels} "
                             f"channel(s); add it to channel_names or remove the file")
        out[case] = (tuple(found[c] for c in wanted), labels[case])
    return out


def _msd_cases(path: Path, root: Path, entries: Any, key: str, label_dir: Path | None
               ) -> dict[str, tuple[tuple[Path, ...], Path]]:
    """Decathlon entries (``{"image", "label"}`` dicts, or image paths for ``test``) as case -> (images, label)."""
    if not isinstance(entries, list):
        raise _json_error(path, f"{key!r} must be a list, got {type(entries).__name__}")
    out = {}
    for entry in entries:
        image_rel = entry.get("image") if isinstance(entry, Mapping) else entry
        if not isinstance(image_rel, str):
            raise _json_error(path, f"{key!r} entries must give an 'image' path, got {entry!r}")
        image = root / image_rel
        name = image.name
        ending = ".nii.gz" if name.endswith(".nii.gz") else image.suffix
        case = name[: -len(ending)]
        if isinstance(entry, Mapping):
            if not isinstance(entry.get("label"), str):
                raise _json_error(path, f"{key!r} entry {entry!r} has no 'label' path")
            label = root / entry["label"]
        else:
            label = (label_dir or root / "labelsTs") / name
        if image.is_file():
            files: tuple[Path, ...] = (image,)
        else:  # nnU-Net v1 converted the 4-D Decathlon files to CASE_0000.nii.gz ...
            chans = _channel_files(image.parent, ending).get(case, {})
            if not chans:
                raise FileNotFoundError(f"{image}: listed in {path} ({key}) but missing on disk; restore it or remove "
                                        f"the entry")
            files = tuple(chans[c] for c in sorted(chans))
        if not label.is_file():
            if key == "test":
                return {}  # unlabelled test set
            raise FileNotFoundError(f"{label}: listed in {path} ({key}) but missing on disk; restore it or remove "
                                    f"the entry")
        out[case] = (files, label)
    return dict(sorted(out.items()))


def describe(root: str | Path) -> Description:
    """Read ``dataset.json`` and list the case files under ``root``; reads no image data.

    Raises:
        FileNotFoundError: ``root``, ``dataset.json``, ``imagesTr``/``labelsTr`` or a listed file is missing.
        ValueError: ``dataset.json`` lacks a key or declares unusable labels (region-based, ids with gaps), or the
            files do not match it (``numTraining``, channel files); each message names the file and the fix.
    """
    root = require_dir(Path(root).expanduser(), "nnU-Net dataset root", LAYOUT)
    path = root / "dataset.json"
    meta = _read_json(path, "dataset.json")
    if not isinstance(meta, Mapping):
        raise _json_error(path, "the file must hold a JSON object")
    kind = "msd" if "training" in meta else "nnunet"
    if kind == "nnunet":
        missing = [k for k in ("channel_names", "labels", "numTraining", "file_ending") if k not in meta]
        if "channel_names" in missing and "modality" in meta:
            missing.remove("channel_names")
        if missing:
            raise _json_error(path, f"missing key(s) {', '.join(map(repr, missing))}")
    else:
        missing = [k for k in ("modality", "labels") if k not in meta]
        if missing:
            raise _json_error(path, f"missing key(s) {', '.join(map(repr, missing))} (a Decathlon dataset.json)")
    if "regions_class_order" in meta:
        raise ValueError(f"{path}: region-based labels are not supported (regions_class_order is set); give each "
                         f"class one id and remove regions_class_order")
    class_names, ignore_id = _classes(path, meta["labels"], kind)
    channels = _channels(path, meta.get("channel_names", meta.get("modality")),
                         "channel_names" if "channel_names" in meta else "modality")
    ending = meta.get("file_ending", ".nii.gz")
    if not isinstance(ending, str) or ending not in (".nii.gz", ".nii", *_IMAGE_ENDINGS_2D):
        raise _json_error(path, f"file_ending {ending!r} is not supported; use \".nii.gz\", \".nii\", \".png\", "
                                f"\".tif\" or \".tiff\"")
    two_d = ending in _IMAGE_ENDINGS_2D
    if kind == "nnunet":
        training = _pair_cases(require_dir(root / "imagesTr", "nnU-Net imagesTr folder", LAYOUT),
                               require_dir(root / "labelsTr", "nnU-Net labelsTr folder", LAYOUT), ending,
                               len(channels), two_d)
        n = meta["numTraining"]
        if isinstance(n, bool) or not isinstance(n, int) or n != len(training):
            raise ValueError(f"{path}: numTraining is {n!r} but {root / 'labelsTr'} holds {len(training)} label "
                             f"file(s) with matching images; fix numTraining or restore the missing cases")
        test = None
        if (root / "labelsTs").is_dir() and any(p.name.endswith(ending) for p in (root / "labelsTs").iterdir()):
            test = _pair_cases(require_dir(root / "imagesTs", "nnU-Net imagesTs folder", LAYOUT), root / "labelsTs",
                               ending, len(channels), two_d)
    else:
        training = _msd_cases(path, root, meta["training"], "training", None)
        test = None
        if (root / "labelsTs").is_dir() and meta.get("test"):
            test = _msd_cases(path, root, meta["test"], "test", root / "labelsTs") or None
    if not training:
        raise FileNotFoundError(f"no training cases in {root / 'labelsTr'}.\nExpected layout:\n{LAYOUT}")
    return Description(root, kind, class_names, ignore_id, channels, ending, two_d, training, test)


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
            raise ValueError(f"{dataset}: option {name} names {first_items(bad)}, which {'is' if len(bad) == 1 else 'are'}"
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
        folds = _read_json(splits_path, "splits_final.json")
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
            name, "test_cases", train_pool, test_cases, order, f"in fold {fold}'s train list of {splits_path.name}", len(training))
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
# reading


def _read_error(path: Path, err: Exception) -> ValueError | FileNotFoundError:
    if isinstance(err, FileNotFoundError):
        return FileNotFoundError(f"{path}: file not found (listed when the dataset was built); restore it")
    return ValueError(f"{path}: cannot read the file ({type(err).__name__}: {err}); it is corrupt or truncated -- "
                      f"re-export or re-copy it")


def _load_nifti(path: Path):
    import nibabel as nib

    try:
        return nib.load(str(path))
    except Exception as err:  # nibabel raises ImageFileError, OSError, EOFError, zlib.error ... for bad files
        raise _read_error(path, err) from err


def _nifti_array(img, path: Path, label: bool) -> np.ndarray:
    """Voxel data with the spatial axes reversed to (z, y, x) (channels, if any, last); errors name the file."""
    try:
        data = np.asanyarray(img.dataobj) if label else img.get_fdata(dtype=np.float32)
    except Exception as err:
        raise _read_error(path, err) from err
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim == 4 and not label:
        return np.ascontiguousarray(data.transpose(2, 1, 0, 3))
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3-D {'label' if label else 'image'} volume"
                         f"{'' if label else ' (or 4-D with channels last)'}, got shape {data.shape}")
    return np.ascontiguousarray(data.transpose(2, 1, 0))


def _read_image_2d(path: Path, label: bool) -> np.ndarray:
    """A 2-D image as float32 (H, W, C) or a label as (H, W); errors name the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if label:
                if im.mode not in ("L", "P", "I", "I;16", "1"):
                    raise ValueError(f"{path}: label image has mode {im.mode!r}; expected single-channel class ids "
                                     f"(8- or 16-bit grey), not colours")
                return np.asarray(im).astype(np.int64)
            if im.mode in ("RGBA", "P", "LA"):
                im = im.convert("RGB")
            arr = np.asarray(im).astype(np.float32)
    except FileNotFoundError as err:
        raise _read_error(path, err) from err
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise ValueError(f"{path}: cannot decode the image ({type(err).__name__}: {err}); it is corrupt or truncated "
                         f"-- re-export it") from err
    return arr if arr.ndim == 3 else arr[:, :, None]


def read_case(desc: Description, case: str, files: tuple[tuple[Path, ...], Path]
              ) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float] | None]:
    """One case as stored, checked: image float32 (D, H, W, C) raw intensities, label uint8 (D, H, W) (class ids,
    255 = nnU-Net's ignore label) and the spacing (z, y, x) in mm (None for 2-D images).

    Raises ValueError naming the file for an unreadable file, image and label shapes or affines that differ, a wrong
    channel count, or label values outside the declared classes.
    """
    images, label_path = files
    if desc.two_d:
        chans = [_read_image_2d(p, label=False) for p in images]
        label = _read_image_2d(label_path, label=True)
        for p, c in zip(images, chans):
            if c.shape[:2] != label.shape:
                raise ValueError(f"{label_path}: label size {label.shape} differs from its image {p.name} "
                                 f"{c.shape[:2]}; they must match pixel for pixel")
        image = np.concatenate(chans, axis=2)[None]
        label = label[None]
        spacing = None
    else:
        label_img = _load_nifti(label_path)
        label = _nifti_array(label_img, label_path, label=True)
        chans = []
        for p in images:
            img = _load_nifti(p)
            if img.shape[:3] != label_img.shape[:3]:
                raise ValueError(f"{p}: image shape {img.shape[:3]} differs from its label {label_path.name} "
                                 f"{label_img.shape[:3]}; image and label must cover the same voxel grid (resample "
                                 f"the label onto the image)")
            if not np.allclose(img.affine, label_img.affine, rtol=1e-4, atol=1e-3):
                raise ValueError(f"{p}: affine (voxel-to-world matrix) differs from its label {label_path.name}:\n"
                                 f"{np.round(img.affine, 4)}\nvs\n{np.round(label_img.affine, 4)}\n"
                                 f"the label must be in the image's space; resample it, or copy the image header to "
                                 f"it if only the header is wrong")
            arr = _nifti_array(img, p, label=False)
            chans.append(arr if arr.ndim == 4 else arr[..., None])
        image = np.concatenate(chans, axis=3)
        zooms = label_img.header.get_zooms()
        spacing = tuple(float(z) for z in (tuple(zooms[:3]) + (1.0,) * (3 - len(zooms)))[:3][::-1])
        if not all(np.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"{label_path}: voxel spacing {spacing} (from the header's pixdim) is not positive; fix "
                             f"the header")
    if image.shape[-1] != len(desc.channels):
        raise ValueError(f"{images[0]}: {image.shape[-1]} channel(s) for case {case!r}, but dataset.json declares "
                         f"{len(desc.channels)} ({', '.join(desc.channels)}); fix channel_names or the files")
    if not np.isfinite(image).all():
        raise ValueError(f"{images[0]}: image contains NaN or inf values; fix the file")
    values = np.asarray(label)
    if desc.ignore_id is not None:
        values = np.where(values == desc.ignore_id, IGNORE_INDEX, values)
    try:
        label = check_labels(values, desc.num_classes, label_path, allow_ignore=desc.ignore_id is not None)
    except ValueError as err:
        raise ValueError(f"{err} (dataset.json declares {desc.num_classes} classes: "
                         f"{', '.join(desc.class_names)})") from None
    return image.astype(np.float32, copy=False), label, spacing


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
    entries = []
    for case in cases:
        images, label = desc.training[case]
        for p in (*images, label):
            st = p.stat()
            entries.append((str(p.relative_to(desc.root)), st.st_size, st.st_mtime_ns))
    return hashlib.sha256(json.dumps([_STATS_VERSION, entries]).encode()).hexdigest()


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
        image_size: (H, W) slices/images are resized to (cubic image, nearest mask); default (224, 224).
        fold: the fold of ``splits_final.json`` (when the file exists); default 0.
        split_seed: seed of the held-out draws (default 0): ``numpy.random.default_rng(split_seed)`` shuffles the
            sorted training case ids; test cases (if held out) are the first of that order, val cases the next.
        val_cases: without ``splits_final.json``: how many training cases to hold out for ``val`` (default null:
            20%, at least 1) or a list of case ids.
        test_cases: without a labelled ``labelsTs``: how many training cases to hold out for ``test`` (default
            null: 20%, at least 1) or a list of case ids.
        stats_cache: folder of the CT statistics cache (default ``$RAYSWEEP_CACHE/nnunet``).
        transform: ``"default"`` (:func:`~raysweep.data.transforms.synapse_transform`: TransUNet's rotations and
            flips, then the resize), None, or a callable.
        augment: augment in the default transform (default: ``split == "train"``).
        seed: seed of the augmentation in the main process (DataLoader workers reseed from torch).
        target_maps: see :class:`~raysweep.data.base.SegmentationDataset`.

    Items: ``image`` float32 (C, H, W), normalised (module docstring); ``mask`` int64 (H, W), 255 = ignore;
    ``case`` ``"<case>_slice<zzz>"`` for volumes, ``"<case>"`` for 2-D images. ``info``: this dataset's
    :class:`DatasetInfo` (classes from ``dataset.json``). ``volumes()`` (3-D data) yields
    ``Volume(case, image, label, spacing)`` with the image normalised, (D, H, W) for one channel and (D, C, H, W)
    for several, the label int64 (D, H, W) and the spacing (z, y, x) in mm.
    """

    info = INFO
    option_checks = {
        "image_size": option_size,
        "fold": option_int,
        "split_seed": option_int,
        "val_cases": _holdout,
        "test_cases": _holdout,
        "stats_cache": option_path,
        "transform": option_transform,
        "augment": option_bool,
        "seed": lambda d, n, v: option_int(d, n, v, none=True),
    }

    def __init__(self, root: str | Path, split: str = "train", image_size: int | tuple[int, int] = (224, 224),
                 fold: int = 0, split_seed: int = 0, val_cases: int | list[str] | None = None,
                 test_cases: int | list[str] | None = None, stats_cache: str | Path | None = None,
                 transform: Transform | str | None = "default", augment: bool | None = None,
                 seed: int | None = None, target_maps: TargetMaps | None = None) -> None:
        opts = self.check_options({"image_size": image_size, "fold": fold, "split_seed": split_seed,
                                   "val_cases": val_cases, "test_cases": test_cases, "stats_cache": stats_cache,
                                   "transform": transform, "augment": augment, "seed": seed})
        size = opts["image_size"]
        augment = split == "train" if augment is None else augment
        self.eval_transform = synapse_transform(size, augment=False)
        if transform == "default":
            transform = synapse_transform(size, augment=augment)
            transform.set_random_seed(seed)
        super().__init__(split, transform, target_maps)
        self.desc = describe(root)
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
        self._volumes: list[tuple[str, np.ndarray, np.ndarray, tuple[float, float, float] | None]] = []
        for case in self.cases:
            image, label, spacing = read_case(self.desc, case, files[case])
            self._volumes.append((case, normalise(image, self.desc.channels, stats), label, spacing))
        self.slices = [(v, z) for v, (_, _, label, _) in enumerate(self._volumes) for z in range(label.shape[0])]

    @classmethod
    def list_cases(cls, split: str = "test", root: str | Path | None = None, **options) -> list[str]:
        """Case ids of ``split`` in evaluation order (sorted), from ``dataset.json``, the file listing and
        ``splits_final.json`` only; options are checked as the constructor checks them."""
        if split not in cls.info.splits:
            raise ValueError(f"nnunet: unknown split {split!r}; choose one of {', '.join(map(repr, cls.info.splits))}")
        opts = cls.check_options(options)
        if root is None:
            raise ValueError("nnunet is read from files: pass root=PATH (the folder holding dataset.json)")
        desc = describe(root)
        return compute_splits(desc, opts.get("fold", 0), opts.get("split_seed", 0), opts.get("val_cases"),
                              opts.get("test_cases"))[split]

    @classmethod
    def dataset_info(cls, root: str | Path | None = None, **options) -> DatasetInfo:
        """This root's :class:`DatasetInfo` (classes and channels from ``dataset.json``), reading no image data."""
        opts = cls.check_options(options)
        if root is None:
            raise ValueError("nnunet is read from files: pass root=PATH (the folder holding dataset.json)")
        return make_info(describe(root), opts.get("image_size", (224, 224)))

    def __len__(self) -> int:
        return len(self.slices)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        v, z = self.slices[index]
        case, image, label, _ = self._volumes[v]
        name = case if self.desc.two_d else f"{case}_slice{z:03d}"
        return image[z].copy(), label[z].copy(), name

    def volumes(self) -> Iterator[Volume]:
        """Yield each case of the split as a :class:`Volume` (3-D data only; see the class docstring)."""
        if self.desc.two_d:
            return super().volumes()
        return self._iter_volumes()

    def _iter_volumes(self) -> Iterator[Volume]:
        for case, image, label, spacing in self._volumes:
            image = image[..., 0] if image.shape[-1] == 1 else image.transpose(0, 3, 1, 2)
            yield Volume(case, image.copy(), label.astype(np.int64), spacing)

    def volume_input(self, volume: Volume) -> torch.Tensor:
        """Network input for a volume: each slice through ``eval_transform``, float32 (D, C, h, w)."""
        image = volume.image[..., None] if volume.image.ndim == 3 else volume.image.transpose(0, 2, 3, 1)
        slices = []
        for s in image:
            img = np.ascontiguousarray(s, dtype=np.float32)
            if self.eval_transform is not None:
                img = self.eval_transform(image=img)["image"]
            slices.append(img if img.ndim == 3 else img[:, :, None])
        return torch.from_numpy(np.ascontiguousarray(np.stack(slices).transpose(0, 3, 1, 2), dtype=np.float32))
