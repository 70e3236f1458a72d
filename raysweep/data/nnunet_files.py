"""Reading the nnU-Net raw layout (or the Decathlon's): ``dataset.json``, the case files, NIfTI volumes and 2-D
images. :func:`describe` reads the layout without any image; :func:`read_case` reads one case, checked.

The dataset built on it, its splits and normalisation are in :mod:`raysweep.data.nnunet`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .base import IGNORE_INDEX, check_labels, first_items, path_problem, require_dir

_IMAGE_ENDINGS_2D = (".png", ".tif", ".tiff")
_CHANNEL_RE = re.compile(r"^(.+)_(\d{4})$")

LAYOUT = """  <root>/dataset.json            channel_names, labels, numTraining, file_ending (nnU-Net v2)
                                  or training, modality, labels (Medical Segmentation Decathlon)
  <root>/imagesTr/CASE_0000.nii.gz (one file per channel: _0000, _0001, ...; or .png/.tif for 2-D data)
  <root>/labelsTr/CASE.nii.gz
  <root>/imagesTs/, labelsTs/     (optional: labelled test cases rank)
  <root>/splits_final.json        (optional: nnU-Net's folds decide train/val)
(the nnU-Net raw format; see raysweep/data/nnunet.py)"""

__all__ = ["LAYOUT", "Description", "case_shape", "describe", "read_case", "read_json"]


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


def read_json(path: Path, what: str) -> Any:
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
    out, unlabelled = {}, []
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
                unlabelled.append(label)
                continue
            raise FileNotFoundError(f"{label}: listed in {path} ({key}) but missing on disk; restore it or remove "
                                    f"the entry")
        out[case] = (files, label)
    if unlabelled and out:
        # Some test images have labels and some not: ranking on the labelled ones would silently drop the others.
        raise FileNotFoundError(f"{unlabelled[0]}: the label of a {key} image listed in {path} is missing, while "
                                f"{len(out)} other {key} image(s) have theirs ({len(unlabelled)} missing: "
                                f"{first_items([p.name for p in unlabelled], 3)}); restore the labels or remove "
                                f"those entries")
    return dict(sorted(out.items()))  # empty when no test image has a label: an unlabelled test set


def _check_ending(path: Path, label_dir: Path, ending: str) -> None:
    """ValueError naming ``file_ending`` when ``label_dir`` holds files but none end with it."""
    names = [p.name for p in label_dir.iterdir() if not p.name.startswith(".")]
    found = sorted({".nii.gz" if n.endswith(".nii.gz") else Path(n).suffix for n in names} - {""})
    if names and found:
        raise ValueError(f"{path}: file_ending is {ending!r}, but no file in {label_dir} ends with it (its files end "
                         f"with {', '.join(map(repr, found))}, e.g. {sorted(names)[0]}); set file_ending to "
                         f"{found[0]!r} or rename the files")


def describe(root: str | Path) -> Description:
    """Read ``dataset.json`` and list the case files under ``root``; reads no image data.

    Raises:
        FileNotFoundError: ``root``, ``dataset.json``, ``imagesTr``/``labelsTr`` or a listed file is missing.
        ValueError: ``dataset.json`` lacks a key or declares unusable labels (region-based, ids with gaps), or the
            files do not match it (``numTraining``, channel files); each message names the file and the fix.
    """
    root = require_dir(Path(root).expanduser(), "nnU-Net dataset root", LAYOUT)
    path = root / "dataset.json"
    meta = read_json(path, "dataset.json")
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
        if not training:
            _check_ending(path, root / "labelsTr", ending)
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
# reading one case


def _read_error(path: Path, err: Exception) -> ValueError | FileNotFoundError:
    # The file system's own cause first (a directory, a link loop, 0 bytes): "corrupt" would send the user re-exporting
    # a file that is not the problem.
    found = path_problem(path)
    if found is not None:
        return found
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


def case_shape(files: tuple[tuple[Path, ...], Path]) -> tuple[int, int, int]:
    """A volume's shape (D, H, W) from its NIfTI label file's header alone (no voxel data), as :func:`read_case`
    would return it; ValueError / FileNotFoundError naming an unreadable file. Volumes only (not ``desc.two_d``)."""
    shape = _load_nifti(files[1]).shape
    xyz = tuple(shape[:3]) if len(shape) >= 3 else (*shape, 1)
    return int(xyz[2]), int(xyz[1]), int(xyz[0])


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
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise path_problem(path, "image") or ValueError(
            f"{path}: cannot decode the image ({type(err).__name__}: {err}); it is corrupt or truncated -- re-export "
            f"it") from err
    return arr if arr.ndim == 3 else arr[:, :, None]


def _stored_zooms(img, path: Path) -> tuple[float, ...]:
    """The voxel sizes (x, y, z ...) as the file stores them in pixdim. nibabel's loader replaces a zero pixdim by
    1 mm (with a logged warning), which would silently put HD95 in wrong units, so the header is read again
    without that fix (348 bytes)."""
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(str(path)) as f:
            raw = type(img.header).from_fileobj(f, check=False)
    except Exception as err:  # noqa: BLE001 - nibabel read this header a moment ago; a failure here is the file's
        raise _read_error(path, err) from err
    ndim = int(raw["dim"][0])
    return tuple(float(z) for z in raw["pixdim"][1:1 + max(1, min(ndim, 3))])


def _check_finite(values: np.ndarray, path: Path) -> None:
    """ValueError naming ``path`` (the file these values came from, so the right channel file) when any is NaN/inf."""
    finite = np.isfinite(values)
    if not finite.all():
        bad = values[~finite]
        raise ValueError(f"{path}: image holds {int(np.isnan(bad).sum())} NaN and {int(np.isinf(bad).sum())} "
                         f"infinite value(s) among {values.size}; fix the file (e.g. replace them with the "
                         f"background intensity)")


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
        for p, c in zip(images, chans):
            _check_finite(c, p)
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
                # One line: a trial's error summary keeps the last line of the traceback, and it must name the file.
                raise ValueError(f"{p}: affine (voxel-to-world matrix) {np.round(img.affine, 4).tolist()} differs "
                                 f"from its label {label_path.name}'s {np.round(label_img.affine, 4).tolist()}; the "
                                 f"label must be in the image's space: resample it, or copy the image header to it "
                                 f"if only the header is wrong")
            arr = _nifti_array(img, p, label=False)
            _check_finite(arr, p)
            chans.append(arr if arr.ndim == 4 else arr[..., None])
        image = np.concatenate(chans, axis=3)
        zooms = _stored_zooms(label_img, label_path)
        spacing = tuple(float(z) for z in (tuple(zooms[:3]) + (1.0,) * (3 - len(zooms)))[:3][::-1])
        if not all(np.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"{label_path}: voxel spacing {spacing} (from the header's pixdim) is not positive; fix "
                             f"the header")
    if image.shape[-1] != len(desc.channels):
        raise ValueError(f"{images[0]}: {image.shape[-1]} channel(s) for case {case!r}, but dataset.json declares "
                         f"{len(desc.channels)} ({', '.join(desc.channels)}); fix channel_names or the files")
    values = np.asarray(label)
    if desc.ignore_id is not None:
        values = np.where(values == desc.ignore_id, IGNORE_INDEX, values)
    try:
        label = check_labels(values, desc.num_classes, label_path, allow_ignore=desc.ignore_id is not None)
    except ValueError as err:
        raise ValueError(f"{err} (dataset.json declares {desc.num_classes} classes: "
                         f"{', '.join(desc.class_names)})") from None
    return image.astype(np.float32, copy=False), label, spacing
