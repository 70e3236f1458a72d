"""What every dataset shares: the descriptor (:class:`DatasetInfo`), the item contract, volumes and input checks.

Item contract (``ds[i]``)::

    {"image": float32 tensor (C, H, W),
     "mask":  int64 tensor (H, W), class ids 0..num_classes-1, ignore = 255,
     "case":  str,                       # "<volume>_slice<zzz>" for slices of a volume, the image id otherwise
     **maps}                             # float32 tensors from ``target_maps(mask)``, if one is given

Augmentations are applied jointly to image and mask first; ``target_maps`` then runs on the augmented mask, in the
DataLoader worker, so maps such as distance maps always match the mask the loss sees.
"""

from __future__ import annotations

import copy
import errno
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from ..vocab import IGNORE_INDEX
from . import corruption

#: ``target_maps(mask)``: mask is the augmented int64 (H, W) mask (ignore 255); each returned array becomes a float32
#: tensor under its key in the item (for example ``{"dist": (C, H, W)}`` for the boundary losses).
TargetMaps = Callable[[np.ndarray], Mapping[str, np.ndarray]]

#: An albumentations-style transform: ``transform(image=HWC array, mask=HW uint8) -> {"image": ..., "mask": ...}``.
Transform = Callable[..., dict[str, Any]]

_RESERVED_KEYS = frozenset({"image", "mask", "case"})
#: (dataset class, options as JSON) -> the normalised options (SegmentationDataset.check_options).
_CHECKED: dict[tuple[type, str], dict[str, Any]] = {}


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset; the trainer, the metrics and the report read them from ``DATASETS[name]``.

    Attributes:
        name: registry key.
        num_classes: number of output channels, background included where the dataset has one.
        class_names: ``num_classes`` names in class-id order.
        eval_classes: class ids averaged in summary metrics (Synapse: the 8 organs, background excluded;
            Cityscapes: all 19 train ids).
        primary_metric: ``"dice"`` (mean DSC over ``eval_classes``, per volume) or ``"miou"`` (dataset-level
            confusion-matrix mIoU). Higher is better for both.
        per_volume: evaluation is per 3-D volume (``ds.volumes()``) rather than per 2-D image.
        empty_convention: how :mod:`raysweep.metrics` scores a class that is empty in prediction or ground truth
            (``"transunet"`` or ``"strict"``; see :func:`raysweep.metrics.case_scores`).
        in_channels: image channels C of ``item["image"]``.
        image_size: default (H, W) the network sees (Cityscapes: before the training crop).
        splits: accepted ``split`` values.
        eval_split: the ranking split, used only by confirmation runs (the results a ranking of losses reports).
        select_split: the selection split (validation): tuning trials evaluate on it and the best point of each
            group is chosen on it. Its cases are disjoint from ``eval_split``'s and from ``"train"``'s, so
            hyperparameters are never selected on the cases that rank (no winner's curse).
        needs_root: the dataset is read from files under ``root``.
        ignore_index: mask value excluded from losses and metrics.
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    eval_classes: tuple[int, ...]
    primary_metric: str
    per_volume: bool
    empty_convention: str
    in_channels: int
    image_size: tuple[int, int]
    splits: tuple[str, ...]
    eval_split: str
    select_split: str
    needs_root: bool
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self) -> None:
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes")
        if self.primary_metric not in ("dice", "miou"):
            raise ValueError(f"{self.name}: primary_metric must be 'dice' or 'miou', got {self.primary_metric!r}")
        for role in ("eval_split", "select_split"):
            if getattr(self, role) not in self.splits:
                raise ValueError(f"{self.name}: {role} {getattr(self, role)!r} is not one of the splits {self.splits}")
        # Three roles, three disjoint sets of cases: training, selection (tuning) and ranking (confirmation).
        if self.select_split in (self.eval_split, "train"):
            raise ValueError(f"{self.name}: select_split {self.select_split!r} must differ from eval_split "
                             f"{self.eval_split!r} and from 'train' (selection cases must not rank or train)")


# ---------------------------------------------------------------------------------------------------------------
# Options: each dataset's constructor keywords are checked by value, without reading any data, so a sweep config can
# be validated before anything starts (``SegmentationDataset.check_options``, ``raysweep.data.check_dataset_options``).


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _option_error(dataset: str, name: str, expected: str, value: Any) -> ValueError:
    return ValueError(f"{dataset}: option {name} must be {expected}, got {value!r}")


def option_int(dataset: str, name: str, value: Any, low: int = 0, none: bool = False,
               high: int | None = None) -> int | None:
    """``value`` as an int ``>= low`` (and ``<= high`` when given; or None when ``none``); ValueError naming the
    dataset and option otherwise."""
    if value is None and none:
        return None
    if not _is_int(value) or value < low:
        raise _option_error(dataset, name, f"an integer >= {low}{' or null' if none else ''}", value)
    if high is not None and value > high:
        raise _option_error(dataset, name, f"at most {high}", value)
    return int(value)


def option_size(dataset: str, name: str, value: Any, low: int = 1, none: bool = False) -> tuple[int, int] | None:
    """An int or an ``[H, W]`` pair of ints ``>= low`` as ``(H, W)`` (or None when ``none``)."""
    if value is None and none:
        return None
    pair = (value, value) if _is_int(value) else tuple(value) if isinstance(value, (list, tuple)) else ()
    if len(pair) != 2 or not all(_is_int(v) and v >= low for v in pair):
        raise _option_error(dataset, name, f"an integer or an [H, W] pair of integers >= {low}"
                            f"{' or null' if none else ''}", value)
    return int(pair[0]), int(pair[1])


def option_probability(dataset: str, name: str, value: Any) -> float:
    """A number in [0, 1] as float."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if not ok or not 0.0 <= float(value) <= 1.0:  # NaN fails the comparison
        raise _option_error(dataset, name, "a probability in [0, 1]", value)
    return float(value)


def option_bool(dataset: str, name: str, value: Any, none: bool = True) -> bool | None:
    """True, False (or None when ``none``)."""
    if value is None and none:
        return None
    if not isinstance(value, (bool, np.bool_)):
        raise _option_error(dataset, name, f"true or false{' or null' if none else ''}", value)
    return bool(value)


def option_transform(dataset: str, name: str, value: Any) -> Any:
    """``"default"``, None (no transform) or a callable."""
    if value is None or (isinstance(value, str) and value == "default") or callable(value):
        return value
    raise _option_error(dataset, name, "'default', null (no transform) or a callable", value)


def option_path(dataset: str, name: str, value: Any) -> Path | None:
    """None or a path (str or os.PathLike) as a Path, ``~`` expanded."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise _option_error(dataset, name, "a folder path or null", value)
    return Path(value).expanduser()


def option_names(dataset: str, name: str, value: Any) -> list[str] | None:
    """None or a non-empty list of strings (a bare string is refused: it is a common slip for a one-item list)."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v for v in value):
        raise _option_error(dataset, name, "a non-empty list of names (e.g. [aachen, bochum]) or null", value)
    return list(value)


def option_holdout(dataset: str, name: str, value: Any, pattern: re.Pattern[str] | None = None,
                   example: str = "[aachen, bochum]") -> int | list[str]:
    """How much of the training data to hold out for selection: an int ``>= 0`` (how many, drawn with the dataset's
    ``split_seed``; see :func:`seeded_order`) or a non-empty list of distinct names (each matching ``pattern``)."""
    if _is_int(value) and value >= 0:
        return int(value)
    ok = (isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v for v in value)
          and len(set(value)) == len(value) and (pattern is None or all(pattern.match(v) for v in value)))
    if not ok:
        raise _option_error(dataset, name, f"an integer >= 0 or a non-empty list of distinct names (e.g. {example})",
                            value)
    return list(value)


def seeded_order(names: Sequence[str], seed: int) -> list[str]:
    """``names`` sorted, then shuffled by ``numpy.random.default_rng(seed)``: the order held-out cases are drawn in.

    Holding out ``k`` items takes the first ``k`` of this order that the pool keeps (a dataset may restrict the pool,
    e.g. Cityscapes' ``cities``), so the choice is reproducible from the seed and a file listing alone. An item
    trained on under a narrow pool is never held out under a wider one (more items before it can only push it further
    down the order), so a training split built with a narrower pool than its held-out split still never overlaps it.
    """
    ordered = sorted(names)
    return [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]


#: Options every dataset accepts, beside its own ``option_checks``: ``label_corruption`` (training labels only; see
#: :mod:`raysweep.data.corruption`). ``build_dataset`` takes them off before calling the constructor.
GENERIC_OPTIONS: Mapping[str, Callable[[str, str, Any], Any]] = {corruption.OPTION: corruption.check}


class Volume(NamedTuple):
    """One 3-D case for per-volume evaluation, at native resolution.

    Attributes:
        case: volume id, e.g. ``"case0008"``.
        image: float32 (D, H, W) raw intensities (not resized; use ``ds.volume_input(vol)`` for network input).
        label: int64 (D, H, W) class ids.
        spacing: voxel spacing (z, y, x) in mm, or None when the files carry none (metrics are then in voxels,
            which is what TransUNet's evaluation reports).
    """

    case: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float] | None


class SegmentationDataset(Dataset):
    """Base class: subclasses implement ``__len__`` and ``_load``; this class applies the transform and the maps.

    Args:
        split: one of ``info.splits``.
        transform: albumentations-style callable applied jointly to image (H, W, C) and mask (H, W) uint8, or None
            for no transform at all (arrays go straight to tensors at native size).
        target_maps: optional ``mask (H, W) int64 -> {key: array}``, run on the augmented mask; outputs are added to
            the item as float32 tensors.
    """

    info: DatasetInfo
    #: the deterministic (evaluation) transform, used by :meth:`volume_input`; set by subclasses.
    eval_transform: Transform | None = None
    #: option name -> ``check(dataset, name, value) -> normalised value`` for every constructor keyword except
    #: ``root``, ``split`` and ``target_maps``; see :meth:`check_options`.
    option_checks: Mapping[str, Callable[[str, str, Any], Any]] = {}

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """Check constructor options by value without reading any data; return them normalised.

        Raises ValueError naming the dataset and the option for an unknown option or a bad value (wrong type, out of
        range). The constructors call it too, so a config that passes it fails later only on the data themselves.
        Each value is checked once per process: the config's validation, the case listing, the dataset's info and
        its constructor all ask about the same options, and get the first answer again.
        """
        try:
            key = (cls, json.dumps(options, sort_keys=True, default=repr))
        except TypeError:  # keys JSON cannot sort (a palette keyed by tuples): checked every time
            return cls._check_options(options)
        if key not in _CHECKED:
            _CHECKED[key] = cls._check_options(options)
        return copy.deepcopy(_CHECKED[key])

    @classmethod
    def _check_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        name = cls.info.name
        checks = {**cls.option_checks, **GENERIC_OPTIONS}
        unknown = sorted(set(options) - set(checks), key=str)
        if unknown:
            raise ValueError(f"{name}: unknown option(s) {', '.join(map(str, unknown))}; accepted: "
                             f"{', '.join(checks)}")
        out = {key: checks[key](name, key, value) for key, value in options.items()}
        if corruption.OPTION in options and cls.info.num_classes:  # class ids of swap pairs, when the classes are fixed
            corruption.check(name, corruption.OPTION, options[corruption.OPTION], cls.info.num_classes)
        return out

    @classmethod
    def list_cases(cls, split: str, root: str | Path | None = None, **options: Any) -> list[str]:
        """Case ids that evaluating ``split`` reports, in evaluation order, from file listings only (no image data);
        see :func:`raysweep.data.list_cases`."""
        raise NotImplementedError  # pragma: no cover - abstract

    @classmethod
    def dataset_info(cls, root: str | Path | None = None, **options: Any) -> DatasetInfo:
        """The :class:`DatasetInfo` of this dataset under ``root`` with ``options``: ``cls.info`` for the datasets
        whose classes are fixed; the file-described ones (``nnunet``, ``folder``) read their classes from ``root``
        (no image data); see :func:`raysweep.data.dataset_info`."""
        cls.check_options(options)
        return cls.info

    def __init__(self, split: str, transform: Transform | None, target_maps: TargetMaps | None) -> None:
        if split not in self.info.splits:
            raise ValueError(
                f"{self.info.name}: unknown split {split!r}; choose one of {', '.join(map(repr, self.info.splits))}"
            )
        self.split = split
        self.transform = transform
        self.target_maps = target_maps
        self._seeded_pid: int | None = None
        #: parsed ``label_corruption`` specs applied to each training item's mask (empty: none); set with
        #: :meth:`set_label_corruption` (``build_dataset(..., label_corruption=...)`` does).
        self.label_corruption: tuple[corruption.Corruption, ...] = ()

    def set_label_corruption(self, value: Any) -> None:
        """Corrupt this dataset's training masks with ``value`` (the ``label_corruption`` option; see
        :mod:`raysweep.data.corruption`): applied to every item's mask after ``_load``, before the transform,
        seeded by ``(spec seed, item index)``. None or ``[]`` turns it off.

        Raises:
            ValueError: a bad spec (naming the key), ``swap`` class ids outside ``0..num_classes-1``, or a split other
                than ``"train"`` (selection and ranking labels stay clean).
        """
        corruption.check_split(self.info.name, self.split, value)
        self.label_corruption = corruption.parse(value, self.info.name, self.info.num_classes or None)

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """Return image (H, W, C) float32 or uint8, mask (H, W) uint8 with ignore 255, and the case id."""
        raise NotImplementedError  # pragma: no cover - abstract

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.info.name} {self.split}: index {index} out of range for {len(self)} items")
        self._seed_worker()
        index = int(index) % len(self)
        image, mask, case = self._load(index)
        if self.label_corruption:  # training labels only (set_label_corruption checks the split), before augmenting
            mask = corruption.apply(self.label_corruption, mask, index)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        if image.ndim == 2:  # cv2 drops a trailing singleton channel on some paths
            image = image[:, :, None]
        item: dict[str, Any] = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)),
            "mask": torch.from_numpy(np.asarray(mask, dtype=np.int64)),
            "case": case,
        }
        if self.target_maps is not None:
            self._attach_maps(item)
        return item

    def _attach_maps(self, item: dict[str, Any], **context: Any) -> None:
        """Add ``target_maps(item["mask"] as a read-only int64 array, **context)`` to ``item`` as float32 tensors."""
        mask_view = item["mask"].numpy()
        mask_view.flags.writeable = False  # a map function must not edit the mask it is given
        maps = self.target_maps(mask_view, **context)
        for key, value in maps.items():
            if key in _RESERVED_KEYS:
                raise ValueError(f"target_maps returned reserved key {key!r}; use another name")
            item[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))

    def _seed_worker(self) -> None:
        # albumentations' Compose keeps its own RNG, which forked DataLoader workers would all inherit in the same
        # state (identical augmentations in every worker). Reseed it once per worker from torch's per-worker seed,
        # which derives from the loader's generator, so runs stay reproducible from the torch seed.
        pid = os.getpid()
        if pid == self._seeded_pid:
            return
        self._seeded_pid = pid
        worker = get_worker_info()
        if worker is not None and hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(worker.seed % 2**32)

    def volumes(self) -> Iterator[Volume]:
        """Yield the split's 3-D volumes (per-volume datasets only); see :class:`Volume`."""
        raise TypeError(f"{self.info.name} is evaluated per image, not per volume; it has no volumes()")

    def volume_input(self, volume: Volume) -> torch.Tensor:
        """Network input for a volume: each slice through ``eval_transform``, float32 tensor (D, C, h, w).

        Per-volume evaluation (TransUNet's ``test_single_volume``)::

            x = ds.volume_input(vol)                                  # (D, C, h, w)
            logits = model(x)                                         # (D, K, h, w), in chunks if large
            logits = F.interpolate(logits, size=vol.label.shape[-2:], mode="bilinear")
            evaluator.add(vol.case, logits.argmax(1).numpy(), vol.label, spacing=vol.spacing)

        (TransUNet resizes the argmax with nearest neighbour instead; both give the prediction at native size.)
        """
        slices = []
        for s in volume.image:
            img = np.ascontiguousarray(s[:, :, None], dtype=np.float32)
            if self.eval_transform is not None:
                img = self.eval_transform(image=img)["image"]
            slices.append(img if img.ndim == 3 else img[:, :, None])
        return torch.from_numpy(np.ascontiguousarray(np.stack(slices).transpose(0, 3, 1, 2), dtype=np.float32))


def check_labels(label: np.ndarray, num_classes: int, source: str | Path, allow_ignore: bool = False) -> np.ndarray:
    """Validate an integer-valued label array and return it as uint8 (same shape).

    Raises ValueError naming ``source`` and the offending values when values are not integers in
    ``0..num_classes-1`` (or 255 when ``allow_ignore``).
    """
    arr = np.asarray(label)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
            bad = np.unique(arr[~np.isfinite(arr) | (arr != np.round(arr))])[:10]
            raise ValueError(f"{source}: label contains non-integer values {bad.tolist()}; labels must be class ids")
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"{source}: label has dtype {arr.dtype}; expected integer class ids")
    lo, hi = (arr.min(), arr.max()) if arr.size else (0, 0)
    if lo < 0 or hi >= num_classes:
        values = np.unique(arr)
        bad = values[(values < 0) | (values >= num_classes)]
        if allow_ignore:
            bad = bad[bad != IGNORE_INDEX]
        if bad.size:
            shown = [int(v) if float(v).is_integer() else float(v) for v in bad[:10]]
            raise ValueError(
                f"{source}: label values {shown} are outside the class range 0..{num_classes - 1}"
                f"{' (and 255 = ignore)' if allow_ignore else ''}; is this the right dataset or label file?"
            )
    return arr.astype(np.uint8)


def require_dir(path: Path, what: str, layout: str) -> Path:
    """Return ``path`` if it is a directory, else raise FileNotFoundError naming it and the expected layout."""
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path} does not exist or is not a directory.\n"
                                f"Expected layout:\n{layout}")
    return path


def first_items(items: Sequence[Any], n: int = 5) -> str:
    """Short listing for error messages: the first ``n`` items and how many more."""
    shown = ", ".join(str(x) for x in items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


# ---------------------------------------------------------------------------------------------------------------
# Files: why one cannot be read, its fingerprint, where caches live.


def cache_dir(kind: str) -> Path:
    """``$RAYSWEEP_CACHE/<kind>`` or ``~/.cache/raysweep/<kind>``: where derived data (CT statistics, data-check
    results) is cached; dataset roots are often read-only or shared, so nothing is written beside the data."""
    return Path(os.environ.get("RAYSWEEP_CACHE") or Path.home() / ".cache" / "raysweep") / kind


def path_problem(path: Path, what: str = "file") -> ValueError | FileNotFoundError | None:
    """Why ``path`` cannot be read as a ``what`` file, from the file system alone, or None when it is a readable,
    non-empty regular file (its *content* may still be bad).

    Names the cause a user can act on: missing, a directory, a symbolic link loop, a broken symbolic link, no read
    permission, an empty (0-byte) file; each message starts with the path and ends with the fix.
    """
    path = Path(path)
    a = "an" if what[:1] in "aeiou" else "a"
    try:
        st = path.stat()
    except OSError as err:
        if err.errno == errno.ELOOP:
            return ValueError(f"{path}: is a symbolic link loop (it resolves back to itself), not {a} {what}; point "
                              f"the link at the real file or replace it with the file")
        if isinstance(err, FileNotFoundError) or err.errno == errno.ENOENT:
            if path.is_symlink():
                return FileNotFoundError(f"{path}: is a broken symbolic link (to {os.readlink(path)}); restore its "
                                         f"target or replace the link with the file")
            return FileNotFoundError(f"{path}: file not found; restore it (or remove its case)")
        return ValueError(f"{path}: cannot be read ({err.strerror or err}); fix it or replace it with the file")
    if path.is_dir():
        return ValueError(f"{path}: is a directory, not {a} {what}; replace it with the {what} (or remove it and "
                          f"its case)")
    if not os.access(path, os.R_OK):
        return ValueError(f"{path}: cannot be read (permission denied); fix its permissions")
    if st.st_size == 0:
        return ValueError(f"{path}: is empty (0 bytes), not {a} {what}; re-export or re-copy it")
    return None


def files_fingerprint(paths: Sequence[Path], root: Path, salt: Any = None) -> str:
    """A fingerprint of ``paths`` from the file system alone: sha256 of ``salt`` and each file's name (relative to
    ``root`` where it is under it), size and modification time (ns). A file replaced, truncated or touched gets a new
    fingerprint; reading no content, it costs one ``stat`` per file. ``salt`` (JSON-able) separates what the caller
    derives from the files (a code version, the classes they are checked against).

    Raises ValueError / FileNotFoundError naming a file that cannot be stat'ed (:func:`path_problem`).
    """
    entries = []
    for p in paths:
        try:
            st = p.stat()
        except OSError as err:
            raise path_problem(p) or ValueError(f"{p}: cannot be read ({err})") from None
        try:
            name = str(p.relative_to(root))
        except ValueError:
            name = str(p)
        entries.append((name, st.st_size, st.st_mtime_ns))
    return hashlib.sha256(json.dumps([salt, entries]).encode()).hexdigest()
