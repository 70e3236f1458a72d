"""Distance and boundary maps of label maps, for the boundary family of losses.

One map serves them all: the per-class **signed distance map** of the target (Kervadec et al.): for class ``c`` with
mask ``P``,

* outside ``P``: the distance to the nearest pixel of ``P`` (> 0);
* inside ``P``: minus the distance to the nearest pixel outside ``P``, shifted so the inner boundary is 0 (<= 0);
* a class that is empty or covers the whole image gets a zero map (there is no boundary; SciPy's EDT of an
  all-foreground mask would instead return distances to a virtual pixel outside the image).

From it the losses derive what they need with cheap tensor operations (see :func:`inside_distance`): the distance of
a pixel to the boundary of its own region (DMCE, Active Boundary, Boundary-aware), inner boundary bands (Boundary DoU),
Hausdorff distance fields and region-wise maps.

Distances are Euclidean, in units of ``spacing`` (pixel size per axis; 1 by default). Ignored pixels count as "not
this class" for every class. The maps are computed on CPU with the ``edt`` package (multi-label, anisotropic, one pass
for all inside distances), typically in DataLoader workers: see :class:`DistanceMaps`. ``benchmarks/maps.py`` compares it
with SciPy's ``distance_transform_edt`` called per class.
"""

from __future__ import annotations

from typing import Sequence

import edt
import numpy as np
import torch


def axis_spacing(spacing: float | Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    """``spacing`` as one positive float per axis of an ``ndim``-D map (None: 1 per axis; a scalar: the same on
    each)."""
    if spacing is None:
        return (1.0,) * ndim
    if np.isscalar(spacing):
        spacing = (float(spacing),) * ndim
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != ndim or min(spacing) <= 0:
        raise ValueError(f"spacing must be {ndim} positive numbers (one per axis), got {spacing}")
    return spacing


def min_step(spacing: float | Sequence[float] | None, ndim: int) -> float:
    """The smallest spacing of an ``ndim``-D map: the shift :func:`signed_distance_map` applies inside a region."""
    return min(axis_spacing(spacing, ndim))


def signed_distance_map(labels: np.ndarray, num_classes: int, spacing: float | Sequence[float] | None = None,
                        ignore_index: int | None = 255) -> np.ndarray:
    """Per-class signed distance map of one label map.

    Args:
        labels: ``(H, W)`` or ``(D, H, W)`` integer class map (``ignore_index`` allowed).
        num_classes: ``C``.
        spacing: pixel size per axis (scalar or one value per axis); distances are in these units.
        ignore_index: label of ignored pixels (outside every class), or None.

    Returns:
        float32 ``(C, *labels.shape)``: > 0 outside the class, <= 0 inside (0 on its inner boundary), zero for a
        class that is absent or fills the whole map.
    """
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise ValueError(f"labels must be (H, W) or (D, H, W), got shape {labels.shape}")
    sp = axis_spacing(spacing, labels.ndim)
    lab = labels.astype(np.int64, copy=False)
    valid_range = (lab >= 0) & (lab < num_classes)
    if ignore_index is not None:
        valid_range |= lab == ignore_index
    if not valid_range.all():
        bad = np.unique(lab[~valid_range])[:10].tolist()
        raise ValueError(f"labels {bad} outside [0, {num_classes - 1}] (ignore_index={ignore_index})")
    # One multi-label pass gives, for every pixel, the distance to the nearest pixel of another label: the inside
    # distance of the pixel's own class. Labels are shifted by one because edt treats 0 as background.
    codes = np.where((lab >= 0) & (lab < num_classes), lab + 1, num_classes + 1).astype(np.uint32)
    inside = edt.edt(codes, anisotropy=sp, black_border=False)
    step = min(sp)
    out = np.zeros((num_classes,) + lab.shape, dtype=np.float32)
    counts = np.bincount(lab[(lab >= 0) & (lab < num_classes)].ravel(), minlength=num_classes)
    for c in np.nonzero((counts > 0) & (counts < lab.size))[0]:
        mask = lab == c
        # Outside distances need one transform per class: the distance to the nearest pixel of c.
        outside = edt.edt(~mask, anisotropy=sp, black_border=False)
        out[c] = np.where(mask, -np.maximum(inside - step, 0.0), outside)
    return out


class DistanceMaps:
    """Picklable ``mask -> {"dist_map": (C, *mask.shape) float32}`` for the datasets' ``target_maps`` hook (a 2-D
    ``(H, W)`` or 3-D ``(D, H, W)`` mask; ``spacing`` per axis of the mask).

    Build it with the dataset's number of classes (and pixel spacing); it runs in the DataLoader workers, after the
    geometric augmentation, so the maps always match the augmented mask.
    """

    def __init__(self, num_classes: int, spacing: float | Sequence[float] | None = None,
                 ignore_index: int | None = 255):
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.spacing = spacing
        self.ignore_index = ignore_index

    def __call__(self, mask) -> dict[str, np.ndarray]:
        mask = mask.numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        return {"dist_map": signed_distance_map(mask, self.num_classes, self.spacing, self.ignore_index)}

    def __repr__(self) -> str:
        return f"DistanceMaps(num_classes={self.num_classes}, spacing={self.spacing})"


def batch_signed_distance(target: torch.Tensor, num_classes: int, spacing=None,
                          ignore_index: int | None = 255) -> torch.Tensor:
    """Signed distance maps of a batch ``(B, H, W)`` or ``(B, D, H, W)`` -> float32 ``(B, C, *spatial)`` on
    ``target``'s device.

    Computed on CPU (the targets are copied once); used when a loss is called without precomputed ``dist_map``.
    """
    labels = target.detach().cpu().numpy()
    maps = np.stack([signed_distance_map(lab, num_classes, spacing, ignore_index) for lab in labels])
    return torch.from_numpy(maps).to(target.device)


def resolve_dist_map(dist_map: torch.Tensor | None, target: torch.Tensor, num_classes: int,
                     ignore_index: int | None, spacing: float | Sequence[float] | None = None) -> torch.Tensor:
    """The given ``dist_map`` after a shape check, or one computed from ``target`` (B, H, W) or (B, D, H, W) with
    ``spacing`` (per axis of the target's spatial dims; None: 1, distances in pixels)."""
    if dist_map is None:
        return batch_signed_distance(target, num_classes, spacing, ignore_index=ignore_index)
    b, *spatial = target.shape
    if tuple(dist_map.shape) != (b, num_classes, *spatial):
        raise ValueError(
            f"dist_map has shape {tuple(dist_map.shape)}, expected {(b, num_classes, *spatial)} (B, C, *spatial); "
            "compute it with raysweep.losses.maps.DistanceMaps(num_classes) on the augmented mask"
        )
    return dist_map.to(device=target.device, dtype=torch.float32)


def inside_distance(dist_map: torch.Tensor, labels: torch.Tensor, step: float = 1.0) -> torch.Tensor:
    """Distance of each pixel to the nearest pixel of another class, ``(B, *spatial)``, from a signed distance map
    ``(B, C, *spatial)``.

    ``step`` is the smallest pixel spacing (the shift applied inside). Pixels on a region's inner boundary get
    ``step``; a pixel whose class fills the whole image (no boundary) gets 0.
    """
    sd_true = dist_map.gather(1, labels.unsqueeze(1)).squeeze(1)
    has_boundary = dist_map.abs().flatten(2).amax(2).gather(1, labels.flatten(1)).view_as(sd_true) > 0
    return torch.where(has_boundary, step - sd_true, torch.zeros_like(sd_true))


def max_pool(x: torch.Tensor, kernel: int, stride: int = 1, padding: int = 0) -> torch.Tensor:
    """``max_pool2d`` of a ``(N, C, H, W)`` tensor or ``max_pool3d`` of a ``(N, C, D, H, W)`` one (the dimension of
    the neighbourhood follows the input's)."""
    pool = torch.nn.functional.max_pool3d if x.ndim == 5 else torch.nn.functional.max_pool2d
    return pool(x, kernel, stride, padding)


def label_boundaries(labels: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Class-agnostic boundary mask ``(B, H, W)`` or ``(B, D, H, W)`` float: valid pixels with a neighbour of another
    valid label (8-neighbourhood in 2-D, 26 in 3-D).

    Ignored neighbours do not make a boundary. Runs on the labels' device (two max-poolings), no distance transform.
    """
    lab = labels.unsqueeze(1).float()
    if valid is None:
        valid = torch.ones_like(labels, dtype=torch.bool)
    v = valid.unsqueeze(1)
    inf = torch.full_like(lab, float("inf"))
    highest = max_pool(torch.where(v, lab, -inf), 3, 1, 1)
    lowest = -max_pool(torch.where(v, -lab, -inf), 3, 1, 1)
    edge = ((highest > lab) | (lowest < lab)) & v
    return edge.squeeze(1).float()


def distance_field(masks: torch.Tensor, spacing: float | Sequence[float] | None = None) -> torch.Tensor:
    """Distance of every pixel to the boundary of its mask, for a batch of masks ``(N, H, W)`` or ``(N, D, H, W)``
    bool -> float32, in units of ``spacing`` (per axis; 1 by default).

    Inside a mask: the distance to the nearest pixel outside; outside: the distance to the nearest pixel inside
    (MONAI's ``EDT(fg) + EDT(bg)``, used by the Hausdorff DT loss). Empty and full masks give a zero field.

    On CUDA with cuCIM or CuPy installed the transform runs on the GPU (no copy to the host); otherwise on CPU with the
    ``edt`` package, one multi-label pass per mask (foreground and background labelled 1 and 2 give both distances
    at once), which ``benchmarks/maps.py`` measures against SciPy.
    """
    if masks.ndim not in (3, 4):
        raise ValueError(f"masks must be (N, H, W) or (N, D, H, W), got {tuple(masks.shape)}")
    sp = axis_spacing(spacing, masks.ndim - 1)
    flat = masks.flatten(1)
    has_boundary = flat.any(1) & ~flat.all(1)
    if masks.is_cuda:
        field = _distance_field_gpu(masks, has_boundary, sp)
        if field is not None:
            return field
    arr = masks.detach().cpu().numpy()
    keep = has_boundary.cpu().numpy()
    out = np.zeros(arr.shape, dtype=np.float32)
    for i in np.nonzero(keep)[0]:
        out[i] = edt.edt(arr[i].astype(np.uint8) + 1, anisotropy=sp, black_border=False)
    return torch.from_numpy(out).to(masks.device)


def _gpu_edt():
    """A CUDA Euclidean distance transform taking CuPy arrays: cuCIM's, else CuPy's own ``cupyx.scipy.ndimage`` one
    (same values; on an H100, 54 ms against edt's 187 ms on CPU for 72 masks of 224x224), else None."""
    try:
        from cucim.core.operations.morphology import distance_transform_edt

        return distance_transform_edt
    except ImportError:
        pass
    try:
        from cupyx.scipy.ndimage import distance_transform_edt

        return distance_transform_edt
    except ImportError:
        return None


def _distance_field_gpu(masks: torch.Tensor, has_boundary: torch.Tensor,
                        spacing: tuple[float, ...]) -> torch.Tensor | None:
    cu_edt = _gpu_edt()
    if cu_edt is None:
        return None
    import cupy

    out = torch.zeros(masks.shape, dtype=torch.float32, device=masks.device)
    for i in torch.nonzero(has_boundary).flatten().tolist():
        m = cupy.asarray(masks[i])
        out[i] = torch.as_tensor(cu_edt(m, sampling=spacing) + cu_edt(~m, sampling=spacing), device=masks.device)
    return out
