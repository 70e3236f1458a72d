"""3-D training patches the way nnU-Net's 3d_fullres samples them, and the patch arithmetic ``raysweep data inspect``
reports: generic over volumes (``nnunet`` with ``dims: 3`` uses them, :mod:`raysweep.data.nnunet_volumes`).

What follows nnU-Net v2 (``nnunetv2/training/dataloading/data_loader.py``, ``get_bbox``; the preprocessor's
``_sample_foreground_locations``):

* **Foreground locations**, once per case: for each foreground class present, up to
  :data:`FG_LOCATIONS_PER_CLASS` voxel coordinates (at least :data:`FG_MIN_COVERAGE` of the class's voxels), a seeded
  draw (seed 1234, as nnU-Net) without replacement (:func:`foreground_locations`).
* **Where a patch lies**: a patch of a volume smaller than the patch along an axis overhangs it by the difference,
  placed at random (half on each side on average). A *foreground-forced* patch picks a class present in the case
  (uniformly), one of its stored voxels (uniformly) and centres the patch on it; a case without foreground falls back
  to a random patch. Any other patch has its corner drawn uniformly over the positions that keep it inside the
  (overhung) volume (:func:`choose_corner`). nnU-Net keeps a forced patch inside on the lower side only and pads
  beyond the upper one; here it is shifted back inside on both sides, so the chosen voxel is always in the patch and
  a forced patch never trains on more padding than a random one.
* **Padding** (:func:`crop`): outside the volume the image is 0 (the mean of the normalised intensities) and the mask
  is 255 (ignore), so no loss scores voxels the case does not have. (nnU-Net pads its segmentation with -1 and turns
  that into background before the loss.)
* **Which patches are forced**: each one with probability ``oversample`` (nnU-Net's
  ``oversample_foreground_percent`` = :data:`OVERSAMPLE_FOREGROUND`), drawn from the patch's own seed. nnU-Net forces
  the last third of each batch instead (``round(batch_size * 0.67)`` random ones first: one of two at its batch size
  of 2); a per-patch draw keeps each item a function of its seed alone, which is what makes the trainer's batches
  reproducible whatever the number of workers (:mod:`raysweep.trial.sampling`).

The augmentation (:func:`augmentation`, MONAI dictionary transforms, ``pip install 'raysweep[3d]'``) is nnU-Net's
mirroring on every axis (p = 0.5 each) and 90-degree rotations in the planes whose patch sides are equal (p = 0.5 per
plane): the (H, W) plane only when the spacing is anisotropic (largest / smallest > :data:`ANISO_THRESHOLD`, nnU-Net's
threshold; nnU-Net then rotates in-plane only too), all three planes otherwise; then nnU-Net's intensity
augmentation: a multiplicative brightness in [0.75, 1.25] per channel (p = 0.15), an additive shift in [-0.1, 0.1]
(p = 0.15; the images are z-scored, so 0.1 standard deviation) and a gamma in [0.7, 1.5] keeping each channel's mean
and standard deviation (p = 0.3). The voxel spacing travels with the patch as the affine of MONAI's ``MetaTensor``, so
after a rotation the spacing handed to the loss's maps follows the axes that moved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .base import IGNORE_INDEX

__all__ = ["ANISO_THRESHOLD", "FG_LOCATIONS_PER_CLASS", "FG_MIN_COVERAGE", "INFERENCE_OVERLAP", "OVERSAMPLE_FOREGROUND",
           "PATCH_CAP", "PATCH_MULTIPLE", "PatchTransform", "augmentation", "choose_corner", "crop",
           "default_patch_size", "default_patches_per_epoch", "foreground_locations", "patches_per_volume",
           "require_monai", "rotation_planes", "sliding_window_positions"]

#: Largest default patch (D, H, W): a default patch is the training volumes' median shape, capped here.
PATCH_CAP = (32, 96, 96)
#: Default patch sides are rounded up to a multiple of this, so a network that halves its input four times takes them.
PATCH_MULTIPLE = 16
#: nnU-Net's ``oversample_foreground_percent``: the share of patches centred on a foreground voxel.
OVERSAMPLE_FOREGROUND = 0.33
#: Stored foreground voxels per class and case (nnU-Net's ``num_samples``) ...
FG_LOCATIONS_PER_CLASS = 10_000
#: ... and the least share of a class's voxels stored (nnU-Net's ``min_percent_coverage``).
FG_MIN_COVERAGE = 0.01
_FG_SEED = 1234
#: Largest / smallest voxel spacing above which a volume is anisotropic (nnU-Net's ``ANISO_THRESHOLD``).
ANISO_THRESHOLD = 3.0
#: Overlap of neighbouring sliding windows at inference (nnU-Net's ``tile_step_size`` 0.5).
INFERENCE_OVERLAP = 0.5

_INSTALL_3D = "pip install 'raysweep[3d]'"


def require_monai(what: str = "3-D patches (dims: 3)") -> Any:
    """The ``monai`` module, or a ValueError saying that ``what`` needs it and how to install it."""
    try:
        import monai
    except ImportError as err:
        raise ValueError(f"{what} need MONAI, which is not installed: {_INSTALL_3D} (or pip install monai)") from err
    return monai


# ---------------------------------------------------------------------------------------------------------------
# patch arithmetic


def default_patch_size(shapes: Sequence[Sequence[int]]) -> tuple[int, int, int]:
    """The default patch (d, h, w) of volumes with these (D, H, W) shapes: their median shape, each side rounded up
    to a multiple of :data:`PATCH_MULTIPLE` and capped at :data:`PATCH_CAP`."""
    if not len(shapes):
        raise ValueError("default_patch_size needs at least one volume shape")
    median = np.median(np.asarray(shapes, dtype=float), axis=0)
    return tuple(min(cap, PATCH_MULTIPLE * max(1, math.ceil(m / PATCH_MULTIPLE)))  # type: ignore[return-value]
                 for m, cap in zip(median, PATCH_CAP))


def patches_per_volume(shape: Sequence[int], patch: Sequence[int]) -> int:
    """Non-overlapping patches that tile a volume: ``ceil(D/d) * ceil(H/h) * ceil(W/w)``."""
    return math.prod(math.ceil(s / p) for s, p in zip(shape, patch))


def default_patches_per_epoch(shapes: Sequence[Sequence[int]], patch: Sequence[int]) -> int:
    """The default epoch of a training split of volumes with these (D, H, W) shapes: the cases times the median of
    their :func:`patches_per_volume` (rounded up), so an epoch shows about as many voxels as the volumes hold."""
    tiles = np.median([patches_per_volume(shape, patch) for shape in shapes])
    return len(shapes) * max(1, math.ceil(tiles))


def sliding_window_positions(shape: Sequence[int], patch: Sequence[int], overlap: float = INFERENCE_OVERLAP) -> int:
    """Windows MONAI's ``sliding_window_inference(roi_size=patch, overlap=overlap)`` evaluates on a volume: per axis,
    the volume padded to at least the patch, a step of ``int(patch * (1 - overlap))`` (the whole side when the patch
    spans it), ``ceil((size - patch) / step) + 1`` positions."""
    total = 1
    for s, p in zip(shape, patch):
        s = max(int(s), int(p))
        step = p if p == s else max(int(p * (1 - overlap)), 1)
        total *= math.ceil((s - p) / step) + 1
    return total


def rotation_planes(patch: Sequence[int], spacing: Sequence[float] | None) -> list[tuple[int, int]]:
    """The (spatial) axis pairs a 90-degree rotation may turn a ``patch`` in: planes with equal patch sides (the
    patch keeps its shape), only (H, W) = (1, 2) for anisotropic ``spacing`` (see the module docstring)."""
    anisotropic = spacing is not None and max(spacing) / min(spacing) > ANISO_THRESHOLD
    planes = [(1, 2)] if anisotropic else [(1, 2), (0, 2), (0, 1)]
    return [(a, b) for a, b in planes if patch[a] == patch[b]]


# ---------------------------------------------------------------------------------------------------------------
# sampling


def foreground_locations(label: np.ndarray, num_classes: int, seed: int = _FG_SEED) -> dict[int, np.ndarray]:
    """Stored voxels of each foreground class of ``label`` (D, H, W) (ids 1..num_classes-1; 255 is not a class):
    ``{class: int32 (n, 3) (z, y, x)}`` for the classes present, n = max(min(count, FG_LOCATIONS_PER_CLASS),
    ceil(FG_MIN_COVERAGE * count)), drawn without replacement with ``default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    flat = label.ravel()
    # One pass over the volume, then one per class over its foreground only (a CT is mostly background).
    fg = np.flatnonzero((flat > 0) & (flat < num_classes))
    values = flat[fg]
    out: dict[int, np.ndarray] = {}
    for c in range(1, num_classes):
        where = fg[values == c]
        if not len(where):
            continue
        n = max(min(FG_LOCATIONS_PER_CLASS, len(where)), math.ceil(FG_MIN_COVERAGE * len(where)))
        if n < len(where):
            where = where[np.sort(rng.choice(len(where), n, replace=False))]
        out[c] = np.stack(np.unravel_index(where, label.shape), axis=1).astype(np.int32)
    return out


def _bounds(shape: Sequence[int], patch: Sequence[int]) -> tuple[list[int], list[int]]:
    """nnU-Net's ``lbs``/``ubs``: the lowest and highest patch corner per axis (negative where the patch overhangs)."""
    need = [max(p - s, 0) for s, p in zip(shape, patch)]
    lows = [-n // 2 for n in need]
    highs = [s + n // 2 + n % 2 - p for s, p, n in zip(shape, patch, need)]
    return lows, highs


def choose_corner(shape: Sequence[int], patch: Sequence[int], rng: np.random.Generator,
                  locations: Mapping[int, np.ndarray] | None = None, force_fg: bool = False
                  ) -> tuple[tuple[int, int, int], int | None]:
    """The lower corner (z, y, x) of a patch of a volume of ``shape`` (negative where it overhangs) and the class it
    was centred on (None for a random patch); see the module docstring.

    Args:
        shape, patch: (D, H, W) and (d, h, w) in voxels.
        rng: the draw.
        locations: :func:`foreground_locations` of the case (needed when ``force_fg``).
        force_fg: centre the patch on a foreground voxel (a random patch when the case has none).
    """
    lows, highs = _bounds(shape, patch)
    classes = sorted(c for c, v in (locations or {}).items() if len(v))
    if force_fg and classes:
        c = classes[int(rng.integers(len(classes)))]
        voxel = locations[c][int(rng.integers(len(locations[c])))]
        corner = tuple(int(min(max(int(v) - p // 2, lo), hi)) for v, p, lo, hi in zip(voxel, patch, lows, highs))
        return corner, c  # type: ignore[return-value]
    return tuple(int(rng.integers(lo, hi + 1)) for lo, hi in zip(lows, highs)), None  # type: ignore[return-value]


def crop(image: np.ndarray, label: np.ndarray, corner: Sequence[int], patch: Sequence[int]
         ) -> tuple[np.ndarray, np.ndarray]:
    """The patch at ``corner`` of image float32 (D, H, W, C) and label uint8 (D, H, W): image float32 (C, d, h, w)
    (0 outside the volume) and mask uint8 (d, h, w) (255 outside the volume)."""
    inside = tuple(slice(max(c, 0), min(c + p, s)) for c, p, s in zip(corner, patch, label.shape))
    pad = [(max(-c, 0), max(c + p - s, 0)) for c, p, s in zip(corner, patch, label.shape)]
    img = np.moveaxis(image[inside], -1, 0)
    msk = label[inside]
    if any(a or b for a, b in pad):
        img = np.pad(img, [(0, 0), *pad], constant_values=0.0)
        msk = np.pad(msk, pad, constant_values=IGNORE_INDEX)
    # Copies: a patch spanning the whole volume would otherwise be a view the augmentation could write into.
    return np.array(img, dtype=np.float32, order="C"), np.array(msk, dtype=np.uint8, order="C")


# ---------------------------------------------------------------------------------------------------------------
# augmentation


def augmentation(planes: Sequence[tuple[int, int]]) -> Any:
    """The MONAI ``Compose`` of the module docstring, over the keys ``image`` (C, d, h, w) and ``mask`` (1, d, h, w),
    rotating in ``planes`` (:func:`rotation_planes`). ValueError naming ``raysweep[3d]`` when MONAI is missing."""
    require_monai("the 3-D augmentation (dims: 3)")
    from monai.transforms import (
        Compose,
        RandAdjustContrastd,
        RandFlipd,
        RandRotate90d,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    keys = ["image", "mask"]
    steps: list[Any] = [RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(3)]
    steps += [RandRotate90d(keys, prob=0.5, max_k=3, spatial_axes=plane) for plane in planes]
    steps += [
        RandScaleIntensityd("image", factors=(-0.25, 0.25), prob=0.15, channel_wise=True),
        RandShiftIntensityd("image", offsets=(-0.1, 0.1), prob=0.15, channel_wise=True),
        RandAdjustContrastd("image", gamma=(0.7, 1.5), prob=0.3, retain_stats=True),
    ]
    return Compose(steps)


class PatchTransform:
    """Draws a training patch of a whole case and augments it; every draw comes from one seed.

    ``transform(image=float32 (D, H, W, C), mask=uint8 (D, H, W), locations={class: (n, 3)}, spacing=(z, y, x))``
    returns ``{"image": float32 (C, d, h, w), "mask": uint8 (d, h, w) (255 = ignore, also where the patch overhangs
    the volume), "spacing": (z, y, x) of the patch's axes in mm (permuted by a rotation), "corner": (z, y, x) of the
    patch in the volume before augmentation, "forced": True for a foreground-forced patch}``.

    ``set_random_seed(seed)`` reseeds it (the trainer's :class:`~raysweep.trial.sampling.SeededItems` does before each
    item, with the item's seed); between reseeds successive calls draw on.

    Args:
        patch_size: (d, h, w).
        oversample: probability that a patch is foreground-forced.
        augment: apply :func:`augmentation` (rotating in ``planes``); False gives the patch as cropped.
        planes: :func:`rotation_planes` of the patch and the training volumes' spacing.
        seed: the initial seed (None: fresh entropy).
    """

    def __init__(self, patch_size: Sequence[int], oversample: float = OVERSAMPLE_FOREGROUND, augment: bool = True,
                 planes: Sequence[tuple[int, int]] = ((1, 2),), seed: int | None = None) -> None:
        self.patch_size = tuple(int(p) for p in patch_size)
        self.oversample = float(oversample)
        self.augment = augmentation(planes) if augment else None
        self.set_random_seed(seed)

    def set_random_seed(self, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed)
        if self.augment is not None:
            self.augment.set_random_state(seed=int(self.rng.integers(2**32)))

    def __call__(self, *, image: np.ndarray, mask: np.ndarray, locations: Mapping[int, np.ndarray] | None = None,
                 spacing: Sequence[float] | None = None) -> dict[str, Any]:
        forced = bool(self.rng.random() < self.oversample)
        corner, _ = choose_corner(mask.shape, self.patch_size, self.rng, locations, forced)
        img, msk = crop(image, mask, corner, self.patch_size)
        sp = tuple(float(s) for s in spacing) if spacing is not None else None
        if self.augment is not None:
            img, msk, sp = self._augment(img, msk, sp)
        return {"image": img, "mask": msk, "spacing": sp, "corner": corner, "forced": forced}

    def _augment(self, image: np.ndarray, mask: np.ndarray, spacing: tuple[float, ...] | None
                 ) -> tuple[np.ndarray, np.ndarray, tuple[float, ...] | None]:
        import torch
        from monai.data import MetaTensor
        from monai.data.utils import affine_to_spacing

        # The affine carries the spacing through the rotations (MONAI updates it with the array).
        affine = torch.diag(torch.tensor([*(spacing or (1.0, 1.0, 1.0)), 1.0], dtype=torch.float64))
        out = self.augment({"image": MetaTensor(torch.from_numpy(image), affine=affine),
                            "mask": MetaTensor(torch.from_numpy(mask[None]), affine=affine.clone())})
        moved = affine_to_spacing(out["mask"].affine, r=3)
        return (np.ascontiguousarray(out["image"].as_tensor().numpy(), dtype=np.float32),
                np.ascontiguousarray(out["mask"].as_tensor().numpy()[0], dtype=np.uint8),
                tuple(float(s) for s in moved) if spacing is not None else None)
