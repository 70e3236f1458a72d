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
    option_int,
    option_names,
    option_size,
    option_transform,
    require_dir,
)
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
    splits=("train", "val"),
    eval_split="val",
    needs_root=True,
)

LAYOUT = """  <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
(leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from cityscapes-dataset.com, unpacked into <root>)"""

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


class CityscapesDataset(SegmentationDataset):
    """Cityscapes fine annotations, 19 classes.

    Args:
        root: dataset root (see the module docstring for the layout).
        split: ``"train"`` or ``"val"``.
        image_size: (H, W) every image and label is resized to (bilinear / nearest); default (512, 1024).
        crop_size: (H, W) of the random training crop, or None for whole resized images; default (512, 512).
        cities: restrict to these cities (folder names), e.g. for quick runs.
        transform: ``"default"`` (:func:`~raysweep.data.transforms.cityscapes_transform`), None, or a callable.
        augment: augment (crop, flip, colour) in the default transform (default: ``split == "train"``).
        seed: seed of the augmentation in the main process (DataLoader workers reseed from torch).
        target_maps: see :class:`~raysweep.data.base.SegmentationDataset`.

    Items: ``image`` float32 (3, H, W), ImageNet-normalised; ``mask`` int64 (H, W) train ids, 255 = ignore;
    ``case`` ``"<city>_<seq>_<frame>"``.
    """

    info = INFO
    option_checks = {
        "image_size": option_size,
        "crop_size": lambda d, n, v: option_size(d, n, v, none=True),
        "cities": option_names,
        "transform": option_transform,
        "augment": option_bool,
        "seed": lambda d, n, v: option_int(d, n, v, none=True),
    }

    def __init__(self, root: str | Path, split: str = "train", image_size: int | tuple[int, int] = (512, 1024),
                 crop_size: int | tuple[int, int] | None = (512, 512), cities: list[str] | None = None,
                 transform: Transform | str | None = "default", augment: bool | None = None, seed: int | None = None,
                 target_maps: TargetMaps | None = None) -> None:
        if split == "test":
            raise ValueError("cityscapes: the 'test' split has no public labels; use split='val' for evaluation")
        opts = self.check_options({"image_size": image_size, "crop_size": crop_size, "cities": cities,
                                   "transform": transform, "augment": augment, "seed": seed})
        size, crop, cities = opts["image_size"], opts["crop_size"], opts["cities"]
        augment = split == "train" if augment is None else augment
        self.eval_transform = cityscapes_transform(size, None, augment=False)
        if transform == "default":
            transform = cityscapes_transform(size, crop, augment=augment)
            transform.set_random_seed(seed)
        super().__init__(split, transform, target_maps)
        self.root = require_dir(Path(root).expanduser(), "Cityscapes root", LAYOUT)
        self.eval_size = size
        image_dir = require_dir(self.root / "leftImg8bit" / split, f"Cityscapes {split} images", LAYOUT)
        label_dir = require_dir(self.root / "gtFine" / split, f"Cityscapes {split} labels", LAYOUT)
        city_dirs = sorted(d for d in image_dir.iterdir() if d.is_dir())
        if cities is not None:
            unknown = sorted(set(cities) - {d.name for d in city_dirs})
            if unknown:
                raise ValueError(f"cityscapes: no cities {unknown} under {image_dir}; "
                                 f"available: {first_items([d.name for d in city_dirs], 20)}")
            city_dirs = [d for d in city_dirs if d.name in cities]
        self.samples: list[tuple[str, Path, Path]] = []
        missing: list[str] = []
        for city in city_dirs:
            for image_path in sorted(city.glob(f"*{_IMAGE_SUFFIX}")):
                stem = image_path.name[: -len(_IMAGE_SUFFIX)]
                label_path = label_dir / city.name / f"{stem}{_LABEL_SUFFIX}"
                if not label_path.is_file():
                    missing.append(str(label_path))
                self.samples.append((stem, image_path, label_path))
        if not self.samples:
            raise FileNotFoundError(f"no *{_IMAGE_SUFFIX} files in {image_dir}/<city>/.\nExpected layout:\n{LAYOUT}")
        if missing:
            raise FileNotFoundError(f"{len(missing)} image(s) in {image_dir} have no label: expected "
                                    f"{first_items(missing, 3)}; unpack gtFine_trainvaltest.zip into {self.root}")

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
