"""``synapse``: multi-organ abdominal CT in the TransUNet release format.

Layout under ``root`` (as released with TransUNet, Chen et al. 2021)::

    train_npz/case0005_slice000.npz     keys "image" (H, W) float in [0, 1], "label" (H, W) class ids 0..8
    test_vol_h5/case0001.npy.h5         datasets "image" (D, H, W) float in [0, 1], "label" (D, H, W) class ids
    lists_Synapse/train.txt             optional: slice names, one per line (e.g. "case0005_slice000")
    lists_Synapse/test_vol.txt          optional: volume names, one per line (e.g. "case0001")

The lists may also sit in ``root/lists/lists_Synapse`` (the TransUNet repository's place) or be given as
``list_dir``. Without lists the standard split is used: 18 training cases (``TRAIN_CASES``) and 12 test cases
(``TEST_CASES``); files of other cases in a folder are skipped with a warning.

Three splits, disjoint by case (``INFO.select_split`` / ``INFO.eval_split``):

* ``train``: the training slices, minus every slice of the held-out cases;
* ``val`` (selection: tuning trials and best-point choice): whole held-out TRAINING cases, never single slices.
  ``val_cases`` says which: a number (default 4 of the 18 standard training cases), drawn reproducibly with
  ``split_seed`` from the sorted training case ids (test cases never), or a list of case ids. It is a dataset option:
  the train and val splits must see the same value (and the same ``split_seed`` and ``list_dir``);
* ``test`` (ranking: confirmation runs only): the test volumes, as in TransUNet.

Items are the 2-D slices, resized to ``image_size`` (224 x 224 by default, as TransUNet; augmented for ``train``
only), and ``volumes()`` yields whole volumes at native resolution for the per-volume 3-D DSC / HD95 of the TransUNet
protocol: the test volumes as stored, the ``val`` cases as their training slices stacked in slice order (the ``.npz``
slices carry no spacing, so their HD95 is in pixels). With a ``train.txt`` list, the training cases are those it
lists and the held-out cases' listed slices move from ``train`` to ``val``. Labels are checked on read: values outside
0..8 raise ValueError naming the file and the values.
"""

from __future__ import annotations

import re
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .base import (
    DatasetInfo,
    SegmentationDataset,
    TargetMaps,
    Transform,
    Volume,
    check_labels,
    first_items,
    option_bool,
    option_holdout,
    option_int,
    option_path,
    option_size,
    option_transform,
    require_dir,
)
from .holdout import HoldOut
from .transforms import synapse_transform

CLASS_NAMES = ("background", "aorta", "gallbladder", "left_kidney", "right_kidney", "liver", "pancreas", "spleen",
               "stomach")
TRAIN_CASES = (5, 6, 7, 9, 10, 21, 23, 24, 26, 27, 28, 30, 31, 33, 34, 37, 39, 40)
TEST_CASES = (1, 2, 3, 4, 8, 22, 25, 29, 32, 35, 36, 38)

#: Training cases held out as the ``val`` split by default (of the 18 standard ones).
DEFAULT_VAL_CASES = 4
_HOLDOUT = HoldOut("synapse", "val_cases", "case", "cases", DEFAULT_VAL_CASES, "[case0005, case0006]")

INFO = DatasetInfo(
    name="synapse",
    num_classes=len(CLASS_NAMES),
    class_names=CLASS_NAMES,
    eval_classes=tuple(range(1, len(CLASS_NAMES))),
    primary_metric="dice",
    per_volume=True,
    empty_convention="transunet",
    in_channels=1,
    image_size=(224, 224),
    splits=("train", "val", "test"),
    eval_split="test",
    select_split="val",
    needs_root=True,
)

LAYOUT = """  <root>/train_npz/caseXXXX_sliceYYY.npz      (keys: image, label)
  <root>/test_vol_h5/caseXXXX.npy.h5          (datasets: image, label; shape (D, H, W))
  <root>/lists_Synapse/train.txt, test_vol.txt (optional; else the standard 18/12 case split)
  (the val split is whole training cases held out from train_npz: option val_cases)
(the TransUNet release of Synapse; see raysweep/data/synapse.py)"""

_SLICE_RE = re.compile(r"^(case\d{4})_slice(\d+)$")
_VOLUME_RE = re.compile(r"^(case\d{4})$")


def _case_name(number: int) -> str:
    return f"case{number:04d}"


def _read_error(path: Path, err: Exception) -> ValueError | FileNotFoundError:
    if isinstance(err, FileNotFoundError):  # listed when the dataset was built, gone since
        return FileNotFoundError(f"{path}: file not found (it was there when the dataset was built); restore it or "
                                 f"rebuild the dataset")
    return ValueError(f"{path}: cannot read the file ({type(err).__name__}: {err}); it is corrupt or truncated -- "
                      f"re-download or re-extract it")


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a training slice: image float32 (H, W), label uint8 (H, W); errors name the file."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as err:
        raise _read_error(path, err) from err
    if magic != b"PK\x03\x04":
        raise ValueError(f"{path}: not an .npz archive (no zip header); a Synapse slice is a .npz with arrays 'image' "
                         f"and 'label' (np.savez) -- re-download or re-extract it")
    try:
        with np.load(path, allow_pickle=False) as data:
            files = sorted(data.files)
            arrays = (data["image"], data["label"]) if {"image", "label"} <= set(files) else None
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise ValueError(f"{path}: holds Python objects (an object array), which are not loaded for safety; save "
                             f"'image' and 'label' as numeric arrays") from err
        raise _read_error(path, err) from err
    except (OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        raise _read_error(path, err) from err
    if arrays is None:
        raise ValueError(f"{path}: missing key(s) {sorted({'image', 'label'} - set(files))} (found {files}); a "
                         f"Synapse slice .npz holds 'image' and 'label'")
    return _check_pair(path, *arrays, ndim=2)


def _check_pair(path: Path | str, image: np.ndarray, label: np.ndarray, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """Image float32 and label uint8 of one slice (``ndim`` 2) or volume (3); ValueError naming ``path``."""
    if image.ndim != ndim or image.shape != label.shape:
        raise ValueError(f"{path}: expected image and label of the same {ndim}-D shape, got image {image.shape} and "
                         f"label {label.shape}")
    if 0 in image.shape:
        raise ValueError(f"{path}: image and label are empty (shape {image.shape})")
    if image.dtype.kind not in "fiu":
        raise ValueError(f"{path}: image has dtype {image.dtype}; expected float intensities in [0, 1]")
    image = image.astype(np.float32, copy=False)
    if not np.isfinite(image).all():
        raise ValueError(f"{path}: image contains NaN or inf values; re-create the file from the source volume")
    return image, check_labels(label, INFO.num_classes, path)


def _check_spacing(path: Path, spacing) -> tuple[float, float, float] | None:
    """The voxel spacing (z, y, x) of a test volume, or None; ValueError naming the file when it is malformed."""
    if spacing is None:
        return None
    try:
        values = np.asarray(spacing, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        values = np.array([])
    if values.size != 3 or not np.isfinite(values).all() or (values <= 0).any():
        raise ValueError(f"{path}: 'spacing' must be three positive numbers (z, y, x) in mm, got {spacing!r}; fix "
                         f"or delete the attribute")
    return tuple(float(v) for v in values)


# -- indexing: file listings and list files only, no image data (shared by the constructor and list_cases) ---------


def _read_list(root: Path, list_dir: Path | None, kind: str, required: bool = True
               ) -> tuple[list[str] | None, Path | None]:
    """Names in ``train.txt`` (``kind`` "train": slices) or ``test_vol.txt`` ("test": volumes) and the file's path,
    or (None, None) if there is no list. A ``list_dir`` without the file is an error when ``required``, else treated
    as no list."""
    list_name = "train.txt" if kind == "train" else "test_vol.txt"
    if list_dir is not None:
        path = Path(list_dir).expanduser() / list_name
        if not path.is_file():
            if not required:
                return None, None
            raise FileNotFoundError(f"Synapse split list not found: {path}; list_dir must hold {list_name}")
    else:
        found = [d / list_name for d in (root / "lists_Synapse", root / "lists" / "lists_Synapse")
                 if (d / list_name).is_file()]
        if not found:
            return None, None
        path = found[0]
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    pattern = _SLICE_RE if kind == "train" else _VOLUME_RE
    bad = [n for n in names if not pattern.match(n)]
    if bad:
        example = "case0005_slice000" if kind == "train" else "case0001"
        raise ValueError(f"{path}: unexpected entries {first_items(bad)}; each line names a "
                         f"{'slice' if kind == 'train' else 'volume'} like {example!r}")
    if not names:
        raise ValueError(f"{path} is empty; list one {'slice' if kind == 'train' else 'volume'} per line")
    return names, path


def _training_slices(root: Path, list_dir: Path | None) -> tuple[list[tuple[str, int, Path]], str]:
    """Every training slice as ``(case, z, path)`` (before any hold-out), and where the listing came from."""
    folder = require_dir(root / "train_npz", "Synapse training folder", LAYOUT)
    names, list_path = _read_list(root, list_dir, "train")
    if names is not None:
        paths = [folder / f"{n}.npz" for n in names]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} slice(s) named in the train list are missing from {folder}: "
                                    f"{first_items(missing)}; re-extract the data or fix the list")
        source = f"the train list {list_path}"
    else:
        paths = sorted(p for p in folder.glob("*.npz") if _SLICE_RE.match(p.stem))
        if not paths:
            raise FileNotFoundError(f"no caseXXXX_sliceYYY.npz files in {folder}.\nExpected layout:\n{LAYOUT}")
        keep = {_case_name(c) for c in TRAIN_CASES}
        skipped = sorted({_SLICE_RE.match(p.stem)[1] for p in paths} - keep)
        if skipped:
            warnings.warn(f"{folder}: skipping cases {first_items(skipped)}, which are not in the standard "
                          f"training split (add lists_Synapse/train.txt to use them)", stacklevel=4)
        paths = [p for p in paths if _SLICE_RE.match(p.stem)[1] in keep]
        if not paths:
            raise FileNotFoundError(f"{folder} holds no slices of the standard training cases "
                                    f"({', '.join(map(_case_name, TRAIN_CASES))})")
        source = str(folder)
    out = []
    for p in paths:
        m = _SLICE_RE.match(p.stem)
        out.append((m[1], int(m[2]), p))
    return out, source


def _test_volumes(root: Path, list_dir: Path | None) -> dict[str, Path]:
    """The test (ranking) volumes: case id -> ``.npy.h5`` path, from the test list or the standard test cases."""
    folder = require_dir(root / "test_vol_h5", "Synapse test folder", LAYOUT)
    names, _ = _read_list(root, list_dir, "test")
    if names is not None:
        files = {n: folder / f"{n}.npy.h5" for n in names}
        missing = [p.name for p in files.values() if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} volume(s) named in the test list are missing from {folder}: "
                                    f"{first_items(missing)}; re-extract the data or fix the list")
        return files
    files = {p.name[: -len(".npy.h5")]: p for p in sorted(folder.glob("*.npy.h5"))}
    files = {k: v for k, v in files.items() if _VOLUME_RE.match(k)}
    if not files:
        raise FileNotFoundError(f"no caseXXXX.npy.h5 files in {folder}.\nExpected layout:\n{LAYOUT}")
    keep = {_case_name(c) for c in TEST_CASES}
    skipped = sorted(set(files) - keep)
    if skipped:
        warnings.warn(f"{folder}: skipping cases {first_items(skipped)}, which are not in the standard test "
                      f"split (add lists_Synapse/test_vol.txt to use them)", stacklevel=4)
    files = {k: v for k, v in files.items() if k in keep}
    if not files:
        raise FileNotFoundError(f"{folder} holds none of the standard test cases "
                                f"({', '.join(map(_case_name, TEST_CASES))})")
    return files


def _split_slices(root: Path, split: str, list_dir: Path | None, val_cases: int | list[str], split_seed: int
                  ) -> tuple[list[tuple[str, int, Path]], list[str]]:
    """Slices ``(case, z, path)`` of the ``train`` or ``val`` split, and the held-out (validation) cases."""
    if split == "val" and val_cases == 0:
        raise _HOLDOUT.empty("val")
    slices, source = _training_slices(root, list_dir)
    test_list, _ = _read_list(root, list_dir, "test", required=False)
    test_cases = set(test_list) if test_list is not None else {_case_name(c) for c in TEST_CASES}
    training = sorted({case for case, _, _ in slices})
    # A test case in a train list is trained on, as listed, but never held out: it is the ranking split's.
    eligible = [c for c in training if c not in test_cases]
    held = _HOLDOUT.draw(val_cases, eligible, split_seed, where=f"in {source}", trained=training,
                         refuse=lambda c: "is a test case (the ranking split)" if c in test_cases else
                         None if c in training else f"is not a training case in {source}")
    held_set = set(held)
    return [s for s in slices if (s[0] in held_set) == (split == "val")], held


class SynapseDataset(SegmentationDataset):
    """Synapse slices (train, val or test split) from the TransUNet release.

    Args:
        root: dataset root (see the module docstring for the layout).
        split: ``"train"``, ``"val"`` (whole training cases held out for selection: tuning trials) or ``"test"``
            (the ranking split: confirmation runs).
        image_size: (H, W) the slices are resized to (cubic image, nearest mask); default (224, 224).
        list_dir: folder with ``train.txt`` / ``test_vol.txt``; default: searched under ``root``; the standard case
            split when none is found.
        val_cases: training cases held out as the ``val`` split and removed from ``train``: how many (default 4 of
            the 18 standard training cases, drawn with ``split_seed``; 0 holds out nothing) or a list of case ids
            (``["case0005", "case0021"]``). A dataset option: give the train and val splits the same value.
        split_seed: seed of the draw of ``val_cases`` (default 0): ``numpy.random.default_rng(split_seed)`` shuffles
            the sorted training case ids (test cases excluded) and the first ``val_cases`` are held out.
        transform: ``"default"`` (:func:`~raysweep.data.transforms.synapse_transform`), None, or a callable.
        augment: augment in the default transform (default: ``split == "train"``).
        seed: seed of the augmentation in the main process (DataLoader workers reseed from torch).
        target_maps: see :class:`~raysweep.data.base.SegmentationDataset`.

    Items: ``image`` float32 (1, H, W) in [0, 1], ``mask`` int64 (H, W), ``case`` ``"caseXXXX_sliceYYY"``.
    ``held_out``: the validation case ids (sorted) for the train and val splits (what ``train`` excluded), None for
    test.
    """

    info = INFO
    option_checks = {
        "image_size": option_size,
        "list_dir": option_path,
        "val_cases": lambda d, n, v: option_holdout(d, n, v, _VOLUME_RE, "[case0005, case0021]"),
        "split_seed": option_int,
        "transform": option_transform,
        "augment": option_bool,
        "seed": lambda d, n, v: option_int(d, n, v, none=True),
    }

    def __init__(self, root: str | Path, split: str = "train", image_size: int | tuple[int, int] = (224, 224),
                 list_dir: str | Path | None = None, val_cases: int | list[str] = DEFAULT_VAL_CASES,
                 split_seed: int = 0, transform: Transform | str | None = "default", augment: bool | None = None,
                 seed: int | None = None, target_maps: TargetMaps | None = None) -> None:
        opts = self.check_options({"image_size": image_size, "list_dir": list_dir, "val_cases": val_cases,
                                   "split_seed": split_seed, "transform": transform, "augment": augment,
                                   "seed": seed})
        size, list_dir = opts["image_size"], opts["list_dir"]
        augment = split == "train" if augment is None else augment
        self.eval_transform = synapse_transform(size, augment=False)
        if transform == "default":
            transform = synapse_transform(size, augment=augment)
            transform.set_random_seed(seed)
        super().__init__(split, transform, target_maps)
        self.root = require_dir(Path(root).expanduser(), "Synapse root", LAYOUT)
        self.image_size = size
        self.held_out: list[str] | None = None
        if split == "test":
            self._volume_files = _test_volumes(self.root, list_dir)
            self.slices = [(case, z) for case, path in self._volume_files.items() for z in range(self._depth(path))]
        else:
            self.slices, self.held_out = _split_slices(self.root, split, list_dir, opts["val_cases"],
                                                       opts["split_seed"])
            self._volume_files: dict[str, Path] = {}

    @classmethod
    def list_cases(cls, split: str = "test", root: str | Path | None = None, **options) -> list[str]:
        """Volume case ids of ``split`` in the order ``volumes()`` yields them (sorted), from the file listing and the
        list files only; options are checked as the constructor checks them."""
        if split not in cls.info.splits:
            raise ValueError(f"synapse: unknown split {split!r}; choose one of {', '.join(map(repr, cls.info.splits))}")
        opts = cls.check_options(options)
        if root is None:
            raise ValueError("synapse is read from files: pass root=PATH (the folder holding the dataset)")
        root = require_dir(Path(root).expanduser(), "Synapse root", LAYOUT)
        if split == "test":
            return sorted(_test_volumes(root, opts.get("list_dir")))
        slices, _ = _split_slices(root, split, opts.get("list_dir"), opts.get("val_cases", DEFAULT_VAL_CASES),
                                  opts.get("split_seed", 0))
        return sorted({case for case, _, _ in slices})

    @staticmethod
    def _open(path: Path):
        import h5py

        try:
            return h5py.File(path, "r")
        except OSError as err:
            raise _read_error(path, err) from err

    def _datasets(self, f, path: Path):
        import h5py

        missing = {"image", "label"} - set(f.keys())
        if missing:
            raise ValueError(f"{path}: missing dataset(s) {sorted(missing)} (found {sorted(f.keys())}); a Synapse "
                             f"test volume holds 'image' and 'label' of shape (D, H, W)")
        image, label = f["image"], f["label"]
        for key, obj in (("image", image), ("label", label)):
            if not isinstance(obj, h5py.Dataset):
                raise ValueError(f"{path}: {key!r} is a {type(obj).__name__}, not a dataset; a Synapse test volume "
                                 f"holds 'image' and 'label' arrays of shape (D, H, W)")
        if image.ndim != 3 or image.shape != label.shape:
            raise ValueError(f"{path}: expected image and label of the same (D, H, W) shape, got image {image.shape} "
                             f"and label {label.shape}")
        return image, label

    def _depth(self, path: Path) -> int:
        with self._open(path) as f:
            return self._datasets(f, path)[0].shape[0]

    # -- access -----------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.slices)

    @property
    def cases(self) -> list[str]:
        """Case ids in this split, sorted."""
        if self.split == "test":
            return sorted(self._volume_files)
        return sorted({s[0] for s in self.slices})

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        if self.split != "test":  # train and val: training slices
            case, z, path = self.slices[index]
            image, label = _read_npz(path)
        else:
            case, z = self.slices[index]
            path = self._volume_files[case]
            try:
                with self._open(path) as f:
                    image_ds, label_ds = self._datasets(f, path)
                    image, label = image_ds[z], label_ds[z]
            except (OSError, KeyError, RuntimeError) as err:  # truncated data blocks surface on read
                raise _read_error(path, err) from err
            image, label = _check_pair(f"{path} (slice {z})", image, label, ndim=2)
        return image[:, :, None], label, f"{case}_slice{z:03d}"

    def volumes(self) -> Iterator[Volume]:
        """Yield the split's volumes at native resolution, sorted by case.

        ``test``: read from ``test_vol_h5`` (spacing from a ``spacing`` attribute or dataset if the file has one,
        else None, i.e. metrics in voxels as TransUNet reports them). ``train`` and ``val``: the case's training
        slices stacked in slice order; the training ``.npz`` files carry no spacing, so ``spacing`` is None and HD95
        is in pixels (voxels), like the test volumes without a ``spacing``.
        """
        if self.split == "test":
            for case, path in sorted(self._volume_files.items()):
                try:
                    with self._open(path) as f:
                        image_ds, label_ds = self._datasets(f, path)
                        image, label = image_ds[()], label_ds[()]
                        spacing = f.attrs.get("spacing", f["spacing"][()] if "spacing" in f else None)
                except (OSError, KeyError, RuntimeError) as err:
                    raise _read_error(path, err) from err
                image, label = _check_pair(path, image, label, ndim=3)
                yield Volume(case, image, label.astype(np.int64), _check_spacing(path, spacing))
        else:
            by_case: dict[str, list[tuple[int, Path]]] = {}
            for case, z, path in self.slices:
                by_case.setdefault(case, []).append((z, path))
            for case in sorted(by_case):
                files = [path for _, path in sorted(by_case[case])]
                pairs = [_read_npz(path) for path in files]
                shapes = {p[0].shape for p in pairs}
                if len(shapes) > 1:
                    odd = [f.name for f, p in zip(files, pairs) if p[0].shape != pairs[0][0].shape]
                    raise ValueError(f"{case}: its slices differ in size ({first_items(sorted(shapes))}), e.g. "
                                     f"{files[0].name} {pairs[0][0].shape} vs {first_items(odd, 3)}; the slices of "
                                     f"a volume must share one (H, W)")
                image = np.stack([p[0] for p in pairs])
                label = np.stack([p[1] for p in pairs]).astype(np.int64)
                yield Volume(case, image, label, None)
