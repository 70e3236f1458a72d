"""The volumes of ``nnunet`` (:class:`~raysweep.data.nnunet.NnUNetDataset`): its ``dims: 3`` options and their checks,
the training-patch set-up and items, and its whole volumes (the ``Volume`` per-volume evaluation reads, with either
``dims``; the ``dims: 3`` evaluation items and network input). The dataset keeps the files, the splits, the
normalisation and the 2-D slices; the patch sampling and augmentation, which any volumetric dataset could use, are
:mod:`raysweep.data.patches`.

``dims: 3`` (volumes only; default 2, 2-D slices) trains on 3-D patches at native resolution, as nnU-Net's
3d_fullres does (no resizing; ``image_size`` is refused). The patch (option ``patch_size``, (d, h, w)) defaults to
the training cases' median shape, each side rounded up to a multiple of 16 and capped at 32 x 96 x 96
(:func:`~raysweep.data.patches.default_patch_size`). A training item is one patch of case ``index % cases``
(every case equally often, as nnU-Net samples cases), drawn by :class:`~raysweep.data.patches.PatchTransform`:
a share ``oversample_foreground`` (default nnU-Net's 0.33) of the patches is centred on a voxel of a foreground
class present in the case (per case and class, up to 10,000 voxel locations, at least 1% of the class, are stored
when the dataset is built), the others lie at random; where a volume is smaller than the patch, the image is
padded with 0 and the mask with 255 (ignore). Augmented (``augment``, default on for ``train``) with mirroring,
90-degree rotations (in-plane only for anisotropic spacing) and intensity scale, shift and gamma (MONAI:
``pip install 'raysweep[3d]'``). Every draw comes from the item's seed, as the 2-D augmentation does.
``len(ds)`` of ``train`` is ``patches_per_epoch`` (default: the training cases times the median number of
non-overlapping patches that tile one of them, so an epoch shows about as many voxels as the training volumes hold,
as an epoch of slices does). The ``val`` and ``test`` items are whole volumes; ``volume_input(vol)`` is the whole
normalised volume (1, C, D, H, W) for sliding-window inference with the patch size (``ds.patch_size``).
``label_corruption`` (2-D masks) is refused.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from . import corruption
from .base import Volume, option_int, option_probability
from .nnunet_files import Description, case_shape
from .patches import (
    OVERSAMPLE_FOREGROUND,
    PatchTransform,
    default_patch_size,
    default_patches_per_epoch,
    foreground_locations,
    rotation_planes,
)

__all__ = ["DIMS_OPTION_CHECKS", "PATCH_OPTIONS", "LoadedCase", "PatchPlan", "as_volume", "check_dims",
           "check_dims_options", "label_corruption_error", "map_keywords", "patch_item", "plan_patches",
           "volume_tensor", "whole_volume_item"]

#: A case as :class:`~raysweep.data.nnunet.NnUNetDataset` holds it: (case id, image float32 (D, H, W, C) normalised,
#: label uint8 (D, H, W), spacing (z, y, x) in mm or None).
LoadedCase = tuple[str, np.ndarray, np.ndarray, tuple[float, float, float] | None]

# ---------------------------------------------------------------------------------------------------------------
# options

#: Options that only 3-D patches (``dims: 3``) take.
PATCH_OPTIONS = ("patch_size", "patches_per_epoch", "oversample_foreground")


def _dims(dataset: str, name: str, value: Any) -> int:
    """``dims``: 2 (slices) or 3 (patches)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value in (2, 3):
        return int(value)
    raise ValueError(f"{dataset}: option {name} must be 2 (train on 2-D slices) or 3 (train on 3-D patches), got "
                     f"{value!r}")


def _patch_size(dataset: str, name: str, value: Any) -> tuple[int, int, int] | None:
    """``patch_size``: None (the default patch) or three ints >= 1, (d, h, w)."""
    if value is None:
        return None
    if (isinstance(value, (list, tuple)) and len(value) == 3
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in value)):
        return int(value[0]), int(value[1]), int(value[2])
    raise ValueError(f"{dataset}: option {name} must be null (the default patch) or three integers [d, h, w] >= 1 "
                     f"(voxels along D, H, W), got {value!r}")


#: The checks of ``dims`` and of the patch options (a part of ``NnUNetDataset.option_checks``).
DIMS_OPTION_CHECKS = {
    "dims": _dims,
    "patch_size": _patch_size,
    "patches_per_epoch": lambda d, n, v: option_int(d, n, v, low=1, none=True),
    "oversample_foreground": lambda d, n, v: None if v is None else option_probability(d, n, v),
}


def check_dims_options(checked: Mapping[str, Any], options: Mapping[str, Any]) -> None:
    """The options together, after one by one (``checked``: their normalised values, ``options``: as given): the
    patch options need ``dims: 3``, which refuses the 2-D ones (``image_size``, a callable ``transform``,
    ``label_corruption``); ValueError naming the fix."""
    if checked.get("dims", 2) == 2:
        given = [k for k in PATCH_OPTIONS if checked.get(k) is not None]
        if given:
            raise ValueError(f"nnunet: option {given[0]} applies to 3-D patches only, but dims is 2 (slices); set "
                             f"dims: 3 to train on patches, or remove {given[0]}")
        return
    if checked.get("image_size") is not None:
        raise ValueError("nnunet: option image_size resizes 2-D slices, but dims is 3: patches are taken at native "
                         "resolution; remove image_size (patch_size sets the patch)")
    if callable(checked.get("transform")):
        raise ValueError("nnunet: option transform must be 'default' or null with dims: 3 (a callable transforms "
                         "2-D (H, W, C) images); remove it, or set dims: 2")
    if options.get(corruption.OPTION):
        raise label_corruption_error()


def check_dims(desc: Description, dims: int) -> Description:
    """``desc``, or a ValueError when ``dims`` is 3 but the dataset holds 2-D images (nnU-Net's natural-image
    variant)."""
    if dims == 3 and desc.two_d:
        raise ValueError(f"nnunet: option dims is 3, but {desc.root} holds 2-D images (file_ending "
                         f"{desc.file_ending!r}), which have no depth to take 3-D patches from; set dims: 2 (or "
                         f"remove it)")
    return desc


def label_corruption_error() -> ValueError:
    """The error of the ``label_corruption`` option with ``dims: 3``."""
    return ValueError("nnunet: option label_corruption corrupts 2-D (H, W) masks, but dims is 3; remove "
                      "label_corruption (or set dims: 2)")


# ---------------------------------------------------------------------------------------------------------------
# training patches


class PatchPlan(NamedTuple):
    """What ``dims: 3`` sets on an nnunet dataset, as its attributes of the same names: ``patch_size``, the (d, h, w)
    patch (every split: evaluation slides a window of this size) and, for ``train`` (None or empty otherwise),
    ``patches_per_epoch`` (``len(ds)``), ``locations`` (per volume, the stored foreground voxels by class,
    :func:`~raysweep.data.patches.foreground_locations`) and the patch ``transform``."""

    patch_size: tuple[int, int, int]
    patches_per_epoch: int | None
    locations: list[dict[int, np.ndarray]]
    transform: PatchTransform | None


def plan_patches(desc: Description, split: str, volumes: Sequence[LoadedCase], train_cases: Sequence[str],
                 num_classes: int, opts: Mapping[str, Any], augment: bool, seed: int | None) -> PatchPlan:
    """``dims: 3``: the patch size (from the training cases, whatever the split) and, for ``train``, the
    foreground locations, the epoch length and the patch transform. ``volumes``: the split's loaded cases;
    ``opts``: the checked options."""
    if split == "train":
        shapes = [label.shape for _, _, label, _ in volumes]
    else:  # the training cases' headers: every split slides the patch the training split trains on
        shapes = [case_shape(desc.training[case]) for case in train_cases]
    patch_size = opts["patch_size"] or default_patch_size(shapes)
    if split != "train":
        return PatchPlan(patch_size, None, [], None)
    locations = [foreground_locations(label, num_classes) for _, _, label, _ in volumes]
    patches_per_epoch = opts["patches_per_epoch"] or default_patches_per_epoch(shapes, patch_size)
    spacings = [sp for *_, sp in volumes if sp is not None]
    planes = rotation_planes(patch_size, tuple(np.median(spacings, axis=0)) if spacings else None)
    oversample = opts["oversample_foreground"]
    transform = PatchTransform(patch_size, OVERSAMPLE_FOREGROUND if oversample is None else oversample,
                               augment=augment, planes=planes, seed=seed)
    return PatchPlan(patch_size, patches_per_epoch, locations, transform)


def patch_item(entry: LoadedCase, transform: PatchTransform, locations: Mapping[int, np.ndarray]
               ) -> tuple[dict[str, Any], tuple[float, ...] | None]:
    """A ``train`` item of a loaded case, a patch drawn (and augmented) by ``transform``: ``image`` float32
    (C, d, h, w), ``mask`` int64 (d, h, w) (255 = ignore, also where the patch overhangs the volume), ``case``
    ``"<case>_patch<z>_<y>_<x>"`` (the patch's corner in the volume before augmentation, negative where it
    overhangs); and the voxel spacing (z, y, x) of the patch's axes in mm (in the rotated order after a rotation)."""
    case, image, label, spacing = entry
    out = transform(image=image, mask=label, locations=locations, spacing=spacing)
    name = f"{case}_patch{'_'.join(map(str, out['corner']))}"
    return _item(out["image"], out["mask"], name), out["spacing"]


def _item(image: np.ndarray, mask: np.ndarray, name: str) -> dict[str, Any]:
    return {
        "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
        "mask": torch.from_numpy(np.asarray(mask, dtype=np.int64)),
        "case": name,
    }


def _takes_spacing(fn: Any) -> bool:
    """Whether the ``target_maps`` callable ``fn`` accepts a ``spacing`` keyword."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "spacing" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def map_keywords(target_maps: Any, spacing: tuple[float, ...] | None) -> dict[str, Any]:
    """The keywords a ``dims: 3`` item's ``target_maps`` is called with besides the 3-D mask: ``spacing=(z, y, x)``,
    the voxel spacing of the item's axes in mm (:func:`patch_item`), when it takes that keyword (anisotropic maps in
    mm); none when it does not. A trial's losses take none: their maps are in voxels, as their search ranges (raw
    nnU-Net volumes differ in spacing from case to case)."""
    return {"spacing": spacing} if _takes_spacing(target_maps) else {}


# ---------------------------------------------------------------------------------------------------------------
# whole volumes (evaluation)


def as_volume(entry: LoadedCase) -> Volume:
    """A loaded case as the :class:`~raysweep.data.base.Volume` that ``NnUNetDataset.volumes()`` yields (per-volume
    evaluation, either ``dims``): the image normalised, (D, H, W) for one channel and (D, C, H, W) for several, the
    label int64 (D, H, W) and the spacing (z, y, x) in mm."""
    case, image, label, spacing = entry
    image = image[..., 0] if image.shape[-1] == 1 else image.transpose(0, 3, 1, 2)
    return Volume(case, image.copy(), label.astype(np.int64), spacing)


def whole_volume_item(entry: LoadedCase) -> tuple[dict[str, Any], tuple[float, float, float] | None]:
    """A ``dims: 3`` ``val``/``test`` item of a loaded case, the whole volume: ``image`` float32 (C, D, H, W),
    ``mask`` int64 (D, H, W), ``case`` ``"<case>"``; and its spacing."""
    case, image, label, spacing = entry
    return _item(image.transpose(3, 0, 1, 2), label, case), spacing


def volume_tensor(volume: Volume) -> torch.Tensor:
    """``dims: 3`` network input of a volume: the whole normalised volume at native resolution, float32
    (1, C, D, H, W), for a sliding window of ``ds.patch_size`` (e.g. MONAI's ``sliding_window_inference(x,
    ds.patch_size, sw_batch_size, model, overlap=0.5)``; logits (1, K, D, H, W) at the label's size)."""
    image = volume.image[:, None] if volume.image.ndim == 3 else volume.image  # (D, C, H, W)
    return torch.from_numpy(np.ascontiguousarray(image.transpose(1, 0, 2, 3)[None], dtype=np.float32))
