"""``folder``: your own 2-D data as a folder of images and masks.

Layout under ``root``::

    images/NAME.png        (or .tif, .tiff, .jpg, .jpeg; grey or RGB, read with Pillow and used as RGB)
    masks/NAME.png         class ids 0..K-1 (255 = ignore) as 8/16-bit grey, or RGB colours with option palette
    classes.json           optional: ["background", "road", ...] (names in id order) or {"background": 0, ...}
    splits.json            optional: {"train": [NAME, ...], "val": [...], "test": [...]} (file stems)

Images and masks are matched by file stem; an image without a mask (or the reverse) is an error naming it.

Classes: option ``classes`` (names in id order), else ``classes.json``, else the names of option ``palette`` in its
order. ``palette: {"background": [0, 0, 0], "road": [128, 64, 128]}`` maps mask colours to the classes of those
names (a name ``"ignore"`` maps its colour to 255); a colour not in the palette is an error naming the file and the
colour. Summaries average over every class except class 0 when it is named ``background`` (any case).

Three splits, disjoint by image (``select_split`` ``"val"``, ``eval_split`` ``"test"``): ``splits.json`` when it
exists, otherwise a seeded split: ``numpy.random.default_rng(split_seed)`` shuffles the sorted stems, the first
``test_fraction`` (default 0.15, at least 1 image) are ``test`` (ranking), the next ``val_fraction`` (default 0.15,
at least 1) ``val`` (selection), the rest ``train``.

Images are resized to ``image_size`` (default 256 x 256; bilinear image, nearest mask), augmented for ``train``
(flip, colour jitter) and ImageNet-normalised for pretrained encoders (the Cityscapes pipeline,
:func:`~raysweep.data.transforms.cityscapes_transform`, without the crop). Evaluation is per image at ``image_size``,
primary metric ``dice``. Masks are read and checked when the dataset is built (values, colours, sizes) and kept in
memory; images are read per item.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .base import (
    IGNORE_INDEX,
    DatasetInfo,
    SegmentationDataset,
    TargetMaps,
    Transform,
    check_labels,
    first_items,
    option_bool,
    option_int,
    option_names,
    option_probability,
    option_size,
    option_transform,
    path_problem,
    require_dir,
    seeded_order,
)
from .transforms import cityscapes_transform

#: The registry entry: splits and roles; the classes come from the options or ``classes.json`` (see
#: ``raysweep.data.dataset_info("folder", root=..., classes=[...])`` or ``ds.info``), placeholders here.
INFO = DatasetInfo(
    name="folder",
    num_classes=0,
    class_names=(),
    eval_classes=(),
    primary_metric="dice",
    per_volume=False,
    empty_convention="strict",
    in_channels=3,
    image_size=(256, 256),
    splits=("train", "val", "test"),
    eval_split="test",
    select_split="val",
    needs_root=True,
)

LAYOUT = """  <root>/images/NAME.png|.tif|.jpg   images (grey or RGB)
  <root>/masks/NAME.png              class ids (or colours with option palette), same size as the image
  <root>/classes.json                (optional: class names in id order; or option classes)
  <root>/splits.json                 (optional: {"train": [...], "val": [...], "test": [...]} file stems)
(see raysweep/data/folder.py)"""

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
DEFAULT_FRACTIONS = {"val": 0.15, "test": 0.15}


def _check_palette(dataset: str, name: str, value: Any) -> dict[str, tuple[int, int, int]] | None:
    if value is None:
        return None
    ok = isinstance(value, Mapping) and value and all(
        isinstance(k, str) and k and isinstance(v, (list, tuple)) and len(v) == 3
        and all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) and 0 <= x <= 255 for x in v)
        for k, v in value.items())
    if not ok:
        raise ValueError(f"{dataset}: option {name} must map class names to [r, g, b] colours (0..255), e.g. "
                         f"{{background: [0, 0, 0], road: [128, 64, 128]}}, got {value!r}")
    colours = [tuple(int(x) for x in v) for v in value.values()]
    if len(set(colours)) != len(colours):
        dup = next(c for c in colours if colours.count(c) > 1)
        raise ValueError(f"{dataset}: option {name} gives the colour {list(dup)} to two classes; each colour names one "
                         f"class")
    return {k: tuple(int(x) for x in v) for k, v in value.items()}


def _check_classes(dataset: str, name: str, value: Any) -> list[str] | None:
    names = option_names(dataset, name, value)
    if names is not None and len(set(names)) != len(names):
        raise ValueError(f"{dataset}: option {name} repeats a name: {names}; class names must be distinct")
    return names


def _fraction(dataset: str, name: str, value: Any) -> float:
    value = option_probability(dataset, name, value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{dataset}: option {name} must be between 0 and 1 (exclusive), got {value}")
    return value


def class_names(root: Path, classes: list[str] | None, palette: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The class names in id order: option ``classes``, else ``root/classes.json``, else the palette's names."""
    source = "folder: option classes" if classes is not None else str(root / "classes.json")
    if classes is None and (root / "classes.json").is_file():
        path = root / "classes.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not valid JSON ({err}); fix the file") from None
        if isinstance(data, Mapping):
            if not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in data.items()):
                raise ValueError(f"{path}: expected {{\"name\": id, ...}} or [\"name\", ...], got {json_shape(data)}"
                                 f"; fix the file")
            if sorted(data.values()) != list(range(len(data))):
                raise ValueError(f"{path}: class ids must be 0..K-1 without gaps, got {sorted(data.values())}")
            data = [n for n, _ in sorted(data.items(), key=lambda kv: kv[1])]
        if not (isinstance(data, list) and data and all(isinstance(n, str) and n for n in data)
                and len(set(data)) == len(data)):
            raise ValueError(f"{path}: expected a list of distinct class names in id order, e.g. [\"background\", "
                             f"\"road\"], got {json_shape(data)}; fix the file")
        classes = data
    if classes is None and palette is not None:
        classes = [n for n in palette if n != "ignore"]
        source = "folder: option palette"
    if classes is None:
        raise ValueError(f"folder: the classes of {root} are not named; set the option classes: [background, ...] "
                         f"(names in id order) or write {root / 'classes.json'}")
    if len(classes) < 2:
        raise ValueError(f"{source}: {len(classes)} class ({classes}); a segmentation needs at least two classes "
                         f"(background and the others, in id order); fix it")
    if palette is not None:
        unknown = [n for n in palette if n not in classes and n != "ignore"]
        if unknown:
            raise ValueError(f"folder: option palette names {unknown}, which are not classes ({', '.join(classes)}); "
                             f"fix the palette or the class list")
    return tuple(classes)


def make_info(names: tuple[str, ...], image_size: tuple[int, int]) -> DatasetInfo:
    """The :class:`DatasetInfo` for these classes: per image, dice, background (class 0 so named) not averaged."""
    first = 1 if names[0].lower() == "background" else 0
    return DatasetInfo(name="folder", num_classes=len(names), class_names=names,
                       eval_classes=tuple(range(first, len(names))), primary_metric="dice", per_volume=False,
                       empty_convention="strict", in_channels=3, image_size=image_size, splits=INFO.splits,
                       eval_split=INFO.eval_split, select_split=INFO.select_split, needs_root=True)


def list_pairs(root: Path) -> dict[str, tuple[Path, Path]]:
    """stem -> (image, mask), sorted by stem, from folder listings only."""
    image_dir = require_dir(root / "images", "folder dataset images", LAYOUT)
    mask_dir = require_dir(root / "masks", "folder dataset masks", LAYOUT)
    images: dict[str, Path] = {}
    for p in sorted(image_dir.iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."):
            if p.stem in images:
                raise ValueError(f"{p}: two images share the stem {p.stem!r} ({images[p.stem].name}); rename one")
            images[p.stem] = p
    masks = {p.stem: p for p in sorted(mask_dir.iterdir()) if p.suffix.lower() == ".png"
             and not p.name.startswith(".")}
    if not images:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {image_dir}.\nExpected layout:\n{LAYOUT}")
    no_mask = sorted(set(images) - set(masks))
    if no_mask:
        raise FileNotFoundError(f"{len(no_mask)} image(s) have no mask: expected "
                                f"{first_items([str(mask_dir / (s + '.png')) for s in no_mask], 3)}; add the masks or "
                                f"remove the images")
    no_image = sorted(set(masks) - set(images))
    if no_image:
        shown = first_items([masks[s].name for s in no_image], 3)
        raise FileNotFoundError(f"{len(no_image)} mask(s) have no image: {shown}"
                                f" in {mask_dir} has no NAME.png/.tif/.jpg in {image_dir}; add the images or remove "
                                f"the masks")
    return {s: (images[s], masks[s]) for s in sorted(images)}


def compute_splits(root: Path, stems: list[str], split_seed: int = 0, val_fraction: float = 0.15,
                   test_fraction: float = 0.15) -> dict[str, list[str]]:
    """``{"train", "val", "test"}`` stem lists (sorted, disjoint): ``splits.json`` or the seeded split."""
    path = root / "splits.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not valid JSON ({err}); fix the file") from None
        if not (isinstance(data, Mapping) and set(data) == {"train", "val", "test"}
                and all(isinstance(v, list) and v and all(isinstance(s, str) for s in v) for v in data.values())):
            raise ValueError(f"{path}: expected {{\"train\": [...], \"val\": [...], \"test\": [...]}} with non-empty "
                             f"lists of file stems, got {json_shape(data)}; fix the file or delete it (a seeded "
                             f"split is drawn without it)")
        unknown = sorted(set().union(*map(set, data.values())) - set(stems))
        if unknown:
            verb = "is" if len(unknown) == 1 else "are"
            raise FileNotFoundError(f"{path}: lists {first_items(unknown)}, which {verb}"
                                    f" not in {root / 'images'}; restore the files or fix the list")
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            shared = sorted(set(data[a]) & set(data[b]))
            if shared:
                raise ValueError(f"{path}: {first_items(shared)} {'is' if len(shared) == 1 else 'are'} in both {a} "
                                 f"and {b}; the splits must be disjoint")
        return {k: sorted(set(data[k])) for k in ("train", "val", "test")}
    n = len(stems)
    n_test, n_val = max(1, round(test_fraction * n)), max(1, round(val_fraction * n))
    if n_test + n_val >= n:
        raise ValueError(f"folder: {n} image(s) in {root / 'images'} are too few for a test ({n_test}), a val "
                         f"({n_val}) "
                         f"and a train split; add images or write {path}")
    order = seeded_order(stems, split_seed)
    return {"test": sorted(order[:n_test]), "val": sorted(order[n_test:n_test + n_val]),
            "train": sorted(order[n_test + n_val:])}


def json_shape(data: Any) -> str:
    """What a JSON value is, in a few words and without its content: ``a list of 40 strings``, ``an object with keys
    ['test', 'train']`` ..., for messages about a file of the wrong shape (its content may be long)."""
    kinds = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number",
             type(None): "null"}
    if isinstance(data, Mapping):
        keys = sorted(map(str, data))
        shown = first_items([repr(k) for k in keys], 6)
        parts = [f"{k!r}: {json_shape(data[k])}" for k in data if k in ("train", "val", "test")]
        return f"an object with keys [{shown}]" + (f" ({'; '.join(parts)})" if parts else "")
    if isinstance(data, list):
        inner = sorted({kinds.get(type(v), type(v).__name__) for v in data})
        return f"a list of {len(data)} {' / '.join(k + 's' for k in inner) or 'items'}" if data else "an empty list"
    return f"a {kinds.get(type(data), type(data).__name__)}"


def _open_error(path: Path, err: Exception) -> ValueError | FileNotFoundError:
    # The file system's own cause first (a directory, a link loop, 0 bytes), then the decoder's.
    found = path_problem(path, "image")
    if found is not None:
        return found
    return ValueError(f"{path}: cannot decode the image ({type(err).__name__}: {err}); it is corrupt or truncated -- "
                      f"re-export it")


def read_image(path: Path) -> np.ndarray:
    """An image as uint8 RGB (H, W, 3) (16-bit grey scaled to 8 bit); errors name the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I", "F"):
                arr = np.asarray(im, dtype=np.float32)
                lo, hi = float(arr.min()), float(arr.max())
                arr = ((arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)).astype(np.uint8)
                return np.repeat(arr[:, :, None], 3, axis=2)
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise _open_error(path, err) from err


def read_mask(path: Path, num_classes: int, palette: Mapping[str, tuple[int, int, int]] | None,
              class_ids: Mapping[str, int]) -> np.ndarray:
    """A mask as uint8 class ids (H, W), 255 = ignore; colours through ``palette``; errors name the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if palette is not None:
                rgb = np.asarray(im.convert("RGB")).astype(np.int64)
                code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
                colours, inverse = np.unique(code, return_inverse=True)
                known = {(r << 16) | (g << 8) | b: (IGNORE_INDEX if n == "ignore" else class_ids[n])
                         for n, (r, g, b) in palette.items()}
                unknown = [int(c) for c in colours if int(c) not in known]
                if unknown:
                    shown = [[c >> 16, (c >> 8) & 255, c & 255] for c in unknown[:5]]
                    raise ValueError(f"{path}: colour(s) {shown} are not in the palette ({', '.join(palette)}); add "
                                     f"them to the option palette or fix the mask")
                return np.asarray([known[int(c)] for c in colours], np.uint8)[inverse.reshape(code.shape)]
            if im.mode not in ("L", "P", "I", "I;16", "1"):
                raise ValueError(f"{path}: mask has mode {im.mode!r} (colours?); masks hold class ids as grey "
                                 f"values -- or set the option palette to map colours to classes")
            values = np.asarray(im).astype(np.int64)
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise _open_error(path, err) from err
    return check_labels(values, num_classes, path, allow_ignore=True)


def read_pair(image_path: Path, mask_path: Path, names: tuple[str, ...],
              palette: Mapping[str, tuple[int, int, int]] | None) -> tuple[np.ndarray, np.ndarray]:
    """One image and its mask, both decoded in full and checked: image uint8 RGB (H, W, 3), mask uint8 class ids
    (H, W) (255 = ignore) through ``palette`` when given; ValueError / FileNotFoundError naming the file otherwise
    (unreadable or corrupt file, colours or values outside the classes, a mask of another size)."""
    image = read_image(image_path)
    mask = read_mask(mask_path, len(names), palette, {n: i for i, n in enumerate(names)})
    if image.shape[:2] != mask.shape:
        raise ValueError(f"{mask_path}: mask size {mask.shape} differs from its image {image_path.name} "
                         f"{image.shape[:2]}; they must match pixel for pixel")
    return image, mask


class FolderDataset(SegmentationDataset):
    """Images and masks in two folders; see the module docstring.

    Args:
        root: the folder holding ``images/`` and ``masks/``.
        split: ``"train"``, ``"val"`` (selection: tuning trials) or ``"test"`` (ranking: confirmation runs).
        classes: class names in id order (default: ``classes.json``, else the palette's names).
        palette: ``{class name: [r, g, b]}`` for colour masks (default: masks hold class ids).
        image_size: (H, W) images and masks are resized to; default (256, 256).
        split_seed, val_fraction, test_fraction: the seeded split without ``splits.json`` (defaults 0, 0.15, 0.15).
        transform: ``"default"`` (resize, train-time flip and colour jitter, ImageNet normalisation), None, or a
            callable.
        augment: augment in the default transform (default: ``split == "train"``).
        seed: seed of the augmentation in the main process (DataLoader workers reseed from torch).
        target_maps: see :class:`~raysweep.data.base.SegmentationDataset`.

    Items: ``image`` float32 (3, H, W), ImageNet-normalised; ``mask`` int64 (H, W), 255 = ignore; ``case`` the file
    stem. ``info``: this dataset's :class:`DatasetInfo` (its classes).
    """

    info = INFO
    option_checks = {
        "classes": _check_classes,
        "palette": _check_palette,
        "image_size": option_size,
        "split_seed": option_int,
        "val_fraction": _fraction,
        "test_fraction": _fraction,
        "transform": option_transform,
        "augment": option_bool,
        "seed": lambda d, n, v: option_int(d, n, v, none=True),
    }

    def __init__(self, root: str | Path, split: str = "train", classes: list[str] | None = None,
                 palette: Mapping[str, Any] | None = None, image_size: int | tuple[int, int] = (256, 256),
                 split_seed: int = 0, val_fraction: float = DEFAULT_FRACTIONS["val"],
                 test_fraction: float = DEFAULT_FRACTIONS["test"], transform: Transform | str | None = "default",
                 augment: bool | None = None, seed: int | None = None, target_maps: TargetMaps | None = None) -> None:
        opts = self.check_options({"classes": classes, "palette": palette, "image_size": image_size,
                                   "split_seed": split_seed, "val_fraction": val_fraction,
                                   "test_fraction": test_fraction, "transform": transform, "augment": augment,
                                   "seed": seed})
        size = opts["image_size"]
        augment = split == "train" if augment is None else augment
        self.eval_transform = cityscapes_transform(size, None, augment=False)
        if transform == "default":
            transform = cityscapes_transform(size, None, augment=augment)
            transform.set_random_seed(seed)
        super().__init__(split, transform, target_maps)
        self.root = Path(root).expanduser()
        self.palette = opts["palette"]
        names = class_names(require_dir(self.root, "folder dataset root", LAYOUT), opts["classes"], self.palette)
        self.info = make_info(names, size)
        pairs = list_pairs(self.root)
        self.cases = compute_splits(self.root, list(pairs), opts["split_seed"], opts["val_fraction"],
                                    opts["test_fraction"])[split]
        self.samples = [(s, *pairs[s]) for s in self.cases]
        ids = {n: i for i, n in enumerate(names)}
        self._masks = []
        from PIL import Image

        for stem, image_path, mask_path in self.samples:
            mask = read_mask(mask_path, len(names), self.palette, ids)
            try:
                with Image.open(image_path) as im:  # the header only: the size
                    image_size = (im.height, im.width)
            except (OSError, SyntaxError) as err:
                raise _open_error(image_path, err) from err
            if image_size != mask.shape:
                raise ValueError(f"{mask_path}: mask size {mask.shape} differs from its image {image_path.name} "
                                 f"{image_size}; they must match pixel for pixel")
            self._masks.append(mask)

    @classmethod
    def list_cases(cls, split: str = "test", root: str | Path | None = None, **options) -> list[str]:
        """File stems of ``split``, in item order (sorted), from folder listings and ``splits.json`` only."""
        if split not in cls.info.splits:
            raise ValueError(f"folder: unknown split {split!r}; choose one of {', '.join(map(repr, cls.info.splits))}")
        opts = cls.check_options(options)
        if root is None:
            raise ValueError("folder is read from files: pass root=PATH (the folder holding images/ and masks/)")
        root = require_dir(Path(root).expanduser(), "folder dataset root", LAYOUT)
        return compute_splits(root, list(list_pairs(root)), opts.get("split_seed", 0),
                              opts.get("val_fraction", DEFAULT_FRACTIONS["val"]),
                              opts.get("test_fraction", DEFAULT_FRACTIONS["test"]))[split]

    @classmethod
    def dataset_info(cls, root: str | Path | None = None, **options) -> DatasetInfo:
        """This root's :class:`DatasetInfo` from the options and ``classes.json``, reading no image."""
        opts = cls.check_options(options)
        if root is None:
            raise ValueError("folder is read from files: pass root=PATH (the folder holding images/ and masks/)")
        root = require_dir(Path(root).expanduser(), "folder dataset root", LAYOUT)
        return make_info(class_names(root, opts.get("classes"), opts.get("palette")),
                         opts.get("image_size", INFO.image_size))

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        stem, image_path, _ = self.samples[index]
        return read_image(image_path), self._masks[index].copy(), stem
