"""``cityscapes``: urban scenes, fine annotations, the 19 standard train classes.

Layout under ``root`` (the official ``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip`` unpacked)::

    leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png     RGB, 8 bit
    gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png      8-bit label ids 0..33

Label ids are mapped to the 19 train ids with the table of ``cityscapesScripts`` (``labels.py``) through a 256-entry
lookup table; the 15 ids without a train id become 255 (ignore), and a value above 33 is an error naming the file and
the values.
Images are resized to ``image_size`` (default 512 x 1024, half resolution, aspect kept); training takes random
``crop_size`` crops (default 512 x 512). Evaluation is at ``image_size`` -- report it with the results
(``ds.eval_size``). Only ``train`` and ``val`` have public labels.

Three splits, disjoint by city (``INFO.select_split`` / ``INFO.eval_split``):

* ``train``: the official training images, minus the held-out cities;
* ``holdout`` (selection: tuning trials and best-point choice): whole held-out TRAINING cities, not augmented.
  ``holdout_cities`` says which: a number (default 3 of the 18 official training cities), drawn reproducibly with
  ``split_seed`` from the sorted training city folders, or a list of city names;
* ``val`` (ranking: confirmation runs only): the official val split, untouched.

``cities`` restricts every split to the named cities (folder names of ``train`` or ``val``; each split keeps the
ones it has, so one list can name cities of both). It restricts the hold-out pool too: the held-out cities are the
first ``holdout_cities`` of the seeded order of all training cities that ``cities`` keeps, so a ``train`` split built
with a narrower ``cities`` than its ``holdout`` split still never trains on a held-out city. ``holdout_cities`` and
``split_seed`` are dataset options: the train and holdout splits must see the same values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import (
    IGNORE_INDEX,
    DatasetInfo,
    SegmentationDataset,
    TargetMaps,
    Transform,
    first_items,
    option_bool,
    option_holdout,
    option_int,
    option_names,
    option_size,
    option_transform,
    require_dir,
)
from .holdout import HoldOut
from .transforms import cityscapes_transform

CLASS_NAMES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic_light", "traffic_sign", "vegetation",
               "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")

#: labelId -> trainId for the ids that have one (cityscapesScripts ``labels.py``); all other ids map to 255.
LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
                  27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
NUM_LABEL_IDS = 34  # label ids 0..33 ("unlabeled" .. "bicycle"); "license plate" (-1) never appears in the PNGs

#: The lookup table: ``LUT[label_ids]`` gives train ids (uint8, 255 = ignore) for a whole array at once.
LUT = np.full(256, IGNORE_INDEX, dtype=np.uint8)
LUT[list(LABEL_TO_TRAIN)] = list(LABEL_TO_TRAIN.values())

#: Training cities held out as the ``holdout`` split by default (of the 18 official training cities).
DEFAULT_HOLDOUT_CITIES = 3
_HOLDOUT = HoldOut("cityscapes", "holdout_cities", "city", "cities", DEFAULT_HOLDOUT_CITIES, "[aachen, bochum]")

INFO = DatasetInfo(
    name="cityscapes",
    num_classes=len(CLASS_NAMES),
    class_names=CLASS_NAMES,
    eval_classes=tuple(range(len(CLASS_NAMES))),
    primary_metric="miou",
    per_volume=False,
    empty_convention="strict",
    in_channels=3,
    image_size=(512, 1024),
    splits=("train", "val", "holdout"),
    eval_split="val",
    select_split="holdout",
    needs_root=True,
)

LAYOUT = """  <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
(leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from cityscapes-dataset.com, unpacked into <root>;
the holdout split is whole training cities held out from <split> = train: option holdout_cities)"""

_IMAGE_SUFFIX = "_leftImg8bit.png"
_LABEL_SUFFIX = "_gtFine_labelIds.png"


def map_label_ids(label_ids: np.ndarray, source: str | Path = "labelIds") -> np.ndarray:
    """Map Cityscapes label ids (H, W) uint8 to train ids (H, W) uint8 (255 = ignore) with :data:`LUT`.

    Raises ValueError naming ``source`` and the values if any id is above 33.
    """
    if label_ids.max(initial=0) >= NUM_LABEL_IDS:
        bad = np.unique(label_ids[label_ids >= NUM_LABEL_IDS])
        raise ValueError(f"{source}: label ids {bad[:10].tolist()} are outside 0..{NUM_LABEL_IDS - 1}; expected a "
                         f"*_gtFine_labelIds.png (not *_color.png, *_instanceIds.png or *_labelTrainIds.png)")
    return LUT[label_ids]


def _read_png(path: Path, label: bool) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()  # decode now, so truncation is reported here and names the file
            if label:
                if im.mode not in ("L", "P"):
                    raise ValueError(f"{path}: label PNG has mode {im.mode!r}; expected an 8-bit single-channel "
                                     f"labelIds image (is it a *_color.png?)")
                return np.asarray(im, dtype=np.uint8)
            if im.mode not in ("RGB", "RGBA", "L", "P"):
                raise ValueError(f"{path}: image has mode {im.mode!r}; expected an 8-bit RGB *_leftImg8bit.png "
                                 f"(16-bit leftImg16bit images are not supported)")
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: file not found (it was there when the dataset was built); restore it or "
                                f"rebuild the dataset") from err
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise ValueError(f"{path}: cannot decode the PNG ({type(err).__name__}: {err}); it is corrupt or truncated "
                         f"-- re-extract it from the archive") from err


def _city_names(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir()) if folder.is_dir() else []


def _held_out(train_cities: list[str], pool: list[str], cities: list[str] | None, holdout_cities: int | list[str],
              split_seed: int, image_dir: Path, root: Path) -> list[str]:
    """The held-out training cities (sorted): ``holdout_cities`` as named, or the first that many of the
    ``split_seed`` order of all training cities that the ``pool`` (training cities ``cities`` keeps) holds."""
    val_cities = set(_city_names(root / "leftImg8bit" / "val")) if isinstance(holdout_cities, list) else set()

    def refuse(city: str) -> str | None:
        if city in train_cities:
            return None
        return ("is a val city (the ranking split)" if city in val_cities
                else f"is not a training city under {image_dir}")

    where = ("that option cities keeps " if cities is not None else "") + f"under {image_dir}"
    return _HOLDOUT.draw(holdout_cities, pool, split_seed, where=where, refuse=refuse, order=train_cities,
                         narrowed_by="cities" if cities is not None else None)


def _samples(root: Path, split: str, cities: list[str] | None, holdout_cities: int | list[str], split_seed: int
             ) -> tuple[list[tuple[str, Path, Path]], list[str] | None]:
    """The split's ``(image id, image path, label path)`` in item order (cities sorted, then files sorted) and the
    held-out cities (None for ``val``), from folder listings only."""
    if split == "holdout" and holdout_cities == 0:
        raise _HOLDOUT.empty("holdout")
    folder = "val" if split == "val" else "train"
    image_dir = require_dir(root / "leftImg8bit" / folder, f"Cityscapes {folder} images", LAYOUT)
    label_dir = require_dir(root / "gtFine" / folder, f"Cityscapes {folder} labels", LAYOUT)
    names = _city_names(image_dir)
    kept = names
    if cities is not None:
        other = "train" if folder == "val" else "val"
        other_names = _city_names(root / "leftImg8bit" / other)
        unknown = sorted(set(cities) - set(names) - set(other_names))
        if unknown:
            raise ValueError(f"cityscapes: option cities: no cities {unknown} under {root / 'leftImg8bit'}/train or "
                             f"/val; available: {first_items(names + other_names, 20)}")
        kept = [n for n in names if n in cities]
        if not kept:
            raise ValueError(f"cityscapes: option cities keeps no {folder} city (it names only {other} cities: "
                             f"{first_items(sorted(cities))}); add {folder} cities to it (available: "
                             f"{first_items(names, 20)}) or set cities for the {other} split only")
    held = None
    if split != "val":
        held = _held_out(names, kept, cities, holdout_cities, split_seed, image_dir, root)
        kept = held if split == "holdout" else [n for n in kept if n not in held]
    samples: list[tuple[str, Path, Path]] = []
    missing: list[str] = []
    for city in kept:
        for image_path in sorted((image_dir / city).glob(f"*{_IMAGE_SUFFIX}")):
            stem = image_path.name[: -len(_IMAGE_SUFFIX)]
            label_path = label_dir / city / f"{stem}{_LABEL_SUFFIX}"
            if not label_path.is_file():
                missing.append(str(label_path))
            samples.append((stem, image_path, label_path))
    if not samples:
        raise FileNotFoundError(f"no *{_IMAGE_SUFFIX} files in {image_dir}/<city>/"
                                f"{f' for cities {first_items(kept)}' if kept != names else ''}.\n"
                                f"Expected layout:\n{LAYOUT}")
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) in {image_dir} have no label: expected "
                                f"{first_items(missing, 3)}; unpack gtFine_trainvaltest.zip into {root}")
    return samples, held


class CityscapesDataset(SegmentationDataset):
    """Cityscapes fine annotations, 19 classes.

    Args:
        root: dataset root (see the module docstring for the layout).
        split: ``"train"``, ``"holdout"`` (whole training cities held out for selection: tuning trials) or ``"val"``
            (the official val split, the ranking split: confirmation runs).
        image_size: (H, W) every image and label is resized to (bilinear / nearest); default (512, 1024).
        crop_size: (H, W) of the random training crop, or None for whole resized images; default (512, 512).
        cities: restrict to these cities (folder names of train or val; each split keeps its own), e.g. for quick
            runs; also restricts the pool the held-out cities come from.
        holdout_cities: training cities held out as the ``holdout`` split and removed from ``train``: how many
            (default 3, drawn with ``split_seed``; 0 holds out nothing) or a list of city names. A dataset option:
            give the train and holdout splits the same value.
        split_seed: seed of the draw of ``holdout_cities`` (default 0): ``numpy.random.default_rng(split_seed)``
            shuffles the sorted training city folders and the first ``holdout_cities`` that ``cities`` keeps are
            held out.
        transform: ``"default"`` (:func:`~raysweep.data.transforms.cityscapes_transform`), None, or a callable.
        augment: augment (crop, flip, colour) in the default transform (default: ``split == "train"``).
        seed: seed of the augmentation in the main process (DataLoader workers reseed from torch).
        target_maps: see :class:`~raysweep.data.base.SegmentationDataset`.

    Items: ``image`` float32 (3, H, W), ImageNet-normalised; ``mask`` int64 (H, W) train ids, 255 = ignore;
    ``case`` ``"<city>_<seq>_<frame>"``. ``held_out``: the held-out city names (sorted) for the train and holdout
    splits (what ``train`` excluded), None for val.
    """

    info = INFO
    option_checks = {
        "image_size": option_size,
        "crop_size": lambda d, n, v: option_size(d, n, v, none=True),
        "cities": option_names,
        "holdout_cities": option_holdout,
        "split_seed": option_int,
        "transform": option_transform,
        "augment": option_bool,
        "seed": lambda d, n, v: option_int(d, n, v, none=True),
    }

    def __init__(self, root: str | Path, split: str = "train", image_size: int | tuple[int, int] = (512, 1024),
                 crop_size: int | tuple[int, int] | None = (512, 512), cities: list[str] | None = None,
                 holdout_cities: int | list[str] = DEFAULT_HOLDOUT_CITIES, split_seed: int = 0,
                 transform: Transform | str | None = "default", augment: bool | None = None, seed: int | None = None,
                 target_maps: TargetMaps | None = None) -> None:
        if split == "test":
            raise ValueError("cityscapes: the 'test' split has no public labels; use split='val' for evaluation")
        opts = self.check_options({"image_size": image_size, "crop_size": crop_size, "cities": cities,
                                   "holdout_cities": holdout_cities, "split_seed": split_seed,
                                   "transform": transform, "augment": augment, "seed": seed})
        size, crop = opts["image_size"], opts["crop_size"]
        augment = split == "train" if augment is None else augment
        self.eval_transform = cityscapes_transform(size, None, augment=False)
        if transform == "default":
            transform = cityscapes_transform(size, crop, augment=augment)
            transform.set_random_seed(seed)
        super().__init__(split, transform, target_maps)
        self.root = require_dir(Path(root).expanduser(), "Cityscapes root", LAYOUT)
        self.eval_size = size
        self.samples, self.held_out = _samples(self.root, split, opts["cities"], opts["holdout_cities"],
                                               opts["split_seed"])

    @classmethod
    def list_cases(cls, split: str = "val", root: str | Path | None = None, **options) -> list[str]:
        """Image ids ``<city>_<seq>_<frame>`` of ``split`` in item order (what evaluation reports as cases), from
        folder listings only; options are checked as the constructor checks them."""
        if split not in cls.info.splits:
            raise ValueError(f"cityscapes: unknown split {split!r}; choose one of "
                             f"{', '.join(map(repr, cls.info.splits))} (the test split has no public labels)")
        opts = cls.check_options(options)
        if root is None:
            raise ValueError("cityscapes is read from files: pass root=PATH (the folder holding the dataset)")
        root = require_dir(Path(root).expanduser(), "Cityscapes root", LAYOUT)
        samples, _ = _samples(root, split, opts.get("cities"), opts.get("holdout_cities", DEFAULT_HOLDOUT_CITIES),
                              opts.get("split_seed", 0))
        return [stem for stem, _, _ in samples]

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def cases(self) -> list[str]:
        """Image ids ``<city>_<seq>_<frame>``, in item order."""
        return [s[0] for s in self.samples]

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        stem, image_path, label_path = self.samples[index]
        image = _read_png(image_path, label=False)
        label_ids = _read_png(label_path, label=True)
        if image.shape[:2] != label_ids.shape:
            raise ValueError(f"{label_path}: label size {label_ids.shape} differs from its image "
                             f"{image_path.name} {image.shape[:2]}")
        return image, map_label_ids(label_ids, label_path), stem
