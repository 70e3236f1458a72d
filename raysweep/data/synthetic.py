"""``synthetic``: the embedded default, an abdominal-CT-like toy generated from a seed in well under a second.

It is built to separate losses the way Synapse does, at a size a CPU can train on:

* 8 foreground classes + background with a strong imbalance (``lobe`` covers ~100-200x the area of ``specks``);
* small blobs (``specks``), thin elongated structures (``vessel`` ~1.5 px wide, ``band`` ~3 px), a thin-walled
  ``ring``, and touching objects (``ring`` touches ``lobe`` and ``disc``; ``vessel`` crosses ``band``);
* two classes with the same appearance told apart by side only (``bean_left`` / ``bean_right``, like the kidneys);
* overlapping intensity distributions with per-class texture, a smooth bias field, partial-volume blur and noise, so
  no class is found by an intensity threshold;
* volumes of correlated slices (shapes are 3-D, sliced along z), so per-volume 3-D metrics are exercised.

Volume ``v`` of split ``s`` depends only on ``(seed, s, v, image_size, depth)``, not on how many volumes are made.
Label noise for robustness studies (``label_noise``, ``missing_small``) is applied to the ``train`` split only; ``val``
and ``test`` labels stay clean. They are the synthetic-only special cases of the ``label_corruption`` option every
dataset takes (:mod:`raysweep.data.corruption`: boundary erosion/dilation by k pixels, dropped small components, class
swaps such as ``bean_left`` / ``bean_right``), which is the general form. A test-time shift of the ranking split's
images (``shift``: contrast, bias field, noise, resolution; :mod:`raysweep.data.shift`) applies to ``test`` only.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
from scipy import ndimage

from . import shift as _shift
from .base import (
    DatasetInfo,
    SegmentationDataset,
    TargetMaps,
    Transform,
    Volume,
    option_bool,
    option_int,
    option_probability,
    option_transform,
)
from .transforms import synthetic_transform

CLASS_NAMES = ("background", "lobe", "disc", "bean_left", "bean_right", "ring", "band", "vessel", "specks")
SPLITS = ("train", "val", "test")
DEFAULT_NUM_VOLUMES = {"train": 16, "val": 4, "test": 8}
#: The most volumes a split may ask for (``num_volumes``): far beyond any use of a generated dataset.
MAX_VOLUMES = 100_000
#: Nominal voxel spacing (z, y, x) in mm reported with every volume: thick slices, as in abdominal CT.
SPACING = (2.0, 1.0, 1.0)

INFO = DatasetInfo(
    name="synthetic",
    num_classes=len(CLASS_NAMES),
    class_names=CLASS_NAMES,
    eval_classes=tuple(range(1, len(CLASS_NAMES))),
    primary_metric="dice",
    per_volume=True,
    # Every class is present in every generated volume, so the convention only matters for missed classes, and
    # "strict" scores those as failures (TransUNet's convention would give them HD95 = 0).
    empty_convention="strict",
    in_channels=1,
    image_size=(64, 64),
    splits=SPLITS,
    eval_split="test",
    # val volumes come from their own seed stream (SeedSequence([seed, 1, v])), so they share no volume with train or
    # test by construction.
    select_split="val",
    needs_root=False,
)

# Tissue codes beyond the class ids, for intensities only (their label is background).
_AIR, _CAVITY = 9, 10
# Per tissue code: mean intensity, texture amplitude, texture kind (0 = fine, 1 = coarse). Neighbouring means are
# closer than noise + texture + bias, on purpose.
_MEAN = np.array([0.42, 0.52, 0.59, 0.64, 0.64, 0.47, 0.55, 0.72, 0.68, 0.03, 0.32])
_TEXTURE = np.array([0.07, 0.06, 0.03, 0.04, 0.04, 0.05, 0.06, 0.03, 0.03, 0.01, 0.03])
_COARSE = np.array([1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1], dtype=bool)
_NOISE_STD = 0.06
_BIAS_AMPLITUDE = 0.12


def generate_volume(seed: np.random.SeedSequence | int, image_size: int = 64, depth: int = 16,
                    label_noise: float = 0.0, missing_small: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Generate one volume.

    Args:
        seed: seed or ``SeedSequence``; the same seed gives the same volume.
        image_size: H = W in pixels (>= 32).
        depth: D, slices per volume (>= 4).
        label_noise: probability, per foreground class, that its label is eroded or dilated (into background) by one
            pixel in-plane -- a systematic annotator bias at boundaries.
        missing_small: probability that each speck is missing from the label (the image still shows it).

    Returns:
        image float32 (D, H, W) in [0, 1] and label uint8 (D, H, W) with class ids 0..8.
    """
    if image_size < 32 or depth < 4:
        raise ValueError(f"synthetic: image_size must be >= 32 and depth >= 4, got {image_size} and {depth}")
    for name, p in (("label_noise", label_noise), ("missing_small", missing_small)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"synthetic: {name} is a probability in [0, 1], got {p}")
    seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    # Two independent streams, so that label noise never changes the image or the clean label.
    rng = np.random.default_rng(np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, 0)))
    noise_rng = np.random.default_rng(np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, 1)))
    u = rng.uniform
    shape = (depth, image_size, image_size)
    z = np.linspace(-1.0, 1.0, depth)[:, None, None]
    y = np.linspace(-1.0, 1.0, image_size)[None, :, None]
    x = np.linspace(-1.0, 1.0, image_size)[None, None, :]
    px, dz = 2.0 / (image_size - 1), 2.0 / (depth - 1)  # one pixel / one slice in normalised units

    def ellipsoid(cz, cy, cx, rz, ry, rx, harmonics=()):
        """Ellipsoid whose in-plane outline may wobble (angular harmonics drifting with z): bool (D, H, W)."""
        scale = np.sqrt(np.clip(1.0 - ((z - cz) / rz) ** 2, 0.0, None))
        ny, nx = (y - cy) / ry, (x - cx) / rx
        outline = 1.0
        if harmonics:
            theta = np.arctan2(ny, nx)
            outline = 1.0 + sum(a * np.cos(k * theta + phase + drift * z) for k, a, phase, drift in harmonics)
        return np.hypot(ny, nx) < scale * outline

    tissue = np.zeros(shape, np.uint8)
    body = ellipsoid(0.0, u(-0.03, 0.03), u(-0.03, 0.03), 1e3, u(0.74, 0.80), u(0.90, 0.96))
    tissue[~body] = _AIR

    def paint(mask, code):
        tissue[mask & body] = code

    # Large organ with a wobbly outline (liver-like).
    paint(ellipsoid(u(-0.2, 0.2), -0.12 + u(-0.05, 0.05), -0.35 + u(-0.05, 0.05), u(1.2, 1.6), u(0.48, 0.56),
                    u(0.36, 0.42), [(2, u(0.06, 0.14), u(0, 2 * np.pi), u(-1, 1)),
                                    (3, u(0.04, 0.10), u(0, 2 * np.pi), u(-1, 1))]), 1)
    # Medium disc (spleen-like), absent from the end slices.
    paint(ellipsoid(u(-0.3, 0.3), u(-0.38, -0.28), u(0.28, 0.34), u(0.7, 1.0), u(0.16, 0.20), u(0.15, 0.19)), 2)
    # Thin-walled ring around a dark cavity (stomach-like), overlapping lobe and disc so that it touches both.
    cz, cy, cx, rz, radius = u(-0.2, 0.3), u(-0.45, -0.35), u(-0.02, 0.06), u(0.8, 1.1), u(0.15, 0.19)
    wall = max(2.5 * px, 0.06)
    outer = ellipsoid(cz, cy, cx, rz, radius, radius)
    scale = np.sqrt(np.clip(1.0 - ((z - cz) / rz) ** 2, 0.0, None))
    inner = np.hypot(y - cy, x - cx) < scale * radius - wall
    paint(outer, 5)
    paint(inner, _CAVITY)
    # Two look-alike beans, left and right (kidney-like), each with a medial notch.
    for code, side in ((3, -1.0), (4, 1.0)):
        by, bx, bry, brx = u(0.30, 0.40), side * u(0.38, 0.46), u(0.15, 0.19), u(0.10, 0.13)
        bean = ellipsoid(u(-0.2, 0.2), by, bx, u(0.6, 0.9), bry, brx)
        notch = np.hypot(y - by, x - (bx - side * 0.95 * brx)) < 0.45 * bry
        paint(bean & ~notch, code)
    # Curved band ~3 px wide (pancreas-like), present in a z range.
    x0, x1, yc, curv = u(-0.35, -0.25), u(0.35, 0.45), u(0.08, 0.16), u(-0.8, 0.8)
    f = yc + 0.05 * z + curv * (x - 0.05) ** 2
    slope = 2 * curv * (x - 0.05)
    half = max(1.4 * px, 0.02) * (1.0 + 0.3 * np.sin(6 * x + u(0, 2 * np.pi)))
    in_z = np.abs(z - u(-0.2, 0.2)) < u(0.5, 0.8)
    band = (np.abs(y - f) / np.sqrt(1 + slope**2) < half) & (x > x0) & (x < x1) & in_z
    paint(band, 6)
    # Very thin meandering vessel ~1.5 px wide, top to bottom through every slice.
    amp, freq, phase = u(0.04, 0.10), u(3.0, 6.0), u(0, 2 * np.pi)
    g = u(-0.1, 0.1) + amp * np.sin(freq * y + phase + 0.8 * z)
    dg = amp * freq * np.cos(freq * y + phase + 0.8 * z)
    vessel = (np.abs(x - g) / np.sqrt(1 + dg**2) < 0.75 * px) & (y > -0.62) & (y < 0.66)
    paint(vessel, 7)

    label = np.where(tissue < _AIR, tissue, 0).astype(np.uint8)
    noisy = label.copy() if (label_noise or missing_small) else label

    # Specks: tiny blobs (radius 0.9-1.4 px, 2-4 slices), centred on a voxel so that each one is visible.
    n_specks = int(rng.integers(5, 9))
    r = 0.70 * np.sqrt(rng.uniform(0, 1, n_specks))
    a = rng.uniform(0, 2 * np.pi, n_specks)
    cy_s = np.round((r * np.sin(a) * 0.77 + 1) / px) * px - 1 + rng.uniform(-0.3, 0.3, n_specks) * px
    cx_s = np.round((r * np.cos(a) * 0.93 + 1) / px) * px - 1 + rng.uniform(-0.3, 0.3, n_specks) * px
    cz_s = np.round((rng.uniform(-0.85, 0.85, n_specks) + 1) / dz) * dz - 1
    rp, rzp = rng.uniform(0.9, 1.4, n_specks) * px, rng.uniform(1.0, 2.0, n_specks) * dz
    k = (slice(None), None, None, None)
    specks = (((z - cz_s[k]) / rzp[k]) ** 2 + ((y - cy_s[k]) ** 2 + (x - cx_s[k]) ** 2) / rp[k] ** 2) < 1.0
    specks &= body
    any_speck = specks.any(0)
    tissue[any_speck] = 8
    label[any_speck] = 8
    if noisy is not label:
        kept = noise_rng.uniform(0, 1, n_specks) >= missing_small
        noisy[specks[kept].any(0)] = 8
        _boundary_noise(noisy, label_noise, noise_rng)

    # Intensities: class means (jittered per volume) + texture, partial-volume blur, smooth bias, noise.
    means = _MEAN + rng.normal(0.0, 0.015, _MEAN.shape)
    fine = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=(0.5, 0.8, 0.8))
    coarse = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=(1.0, 2.5, 2.5))
    texture = np.where(_COARSE[tissue], coarse / coarse.std(), fine / fine.std())
    image = means[tissue] + _TEXTURE[tissue] * texture
    image = ndimage.gaussian_filter(image, sigma=(0.0, 0.6, 0.6))
    c = rng.uniform(-1, 1, 7)
    bias = c[0] * y + c[1] * x + c[2] * x * y + c[3] * y**2 + c[4] * x**2 + c[5] * z + c[6] * z * x
    bias = bias / np.abs(bias).max() * _BIAS_AMPLITUDE
    image = image * u(0.92, 1.08) + bias + rng.normal(0.0, _NOISE_STD, shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32), noisy


def _boundary_noise(label: np.ndarray, p: float, rng: np.random.Generator) -> None:
    """In place: with probability ``p`` per foreground class, erode it (to background) or dilate it (into
    background only) by one pixel in-plane."""
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    for cls in range(1, len(CLASS_NAMES)):
        if rng.uniform() >= p:
            continue
        mask = label == cls
        if rng.uniform() < 0.5:
            label[mask & ~ndimage.binary_erosion(mask, in_plane)] = 0
        else:
            label[ndimage.binary_dilation(mask, in_plane) & (label == 0)] = cls


def _case_id(split: str, v: int) -> str:
    """Case id of volume ``v`` of ``split``: the split name makes ids unique across splits (``"val002"``)."""
    return f"{split}{v:03d}"


def check_shift_split(split: str, value: object) -> None:
    """ValueError unless ``split`` is the ranking split ``"test"`` or ``value`` asks for no shift."""
    _shift.check_split(INFO.name, split, value, INFO.eval_split)


@functools.lru_cache(maxsize=8)
def _shifted_split(seed: int, split: str, image_size: int, depth: int, num_volumes: int,
                   shift: tuple[tuple[str, float], ...]) -> np.ndarray:
    """The split's images under ``shift`` (a checked spec as sorted items), cached: float32 (N, D, H, W), read-only.
    Labels are not shifted (``_generate_split``'s stay as they are)."""
    images, _ = _generate_split(seed, split, image_size, depth, num_volumes, 0.0, 0.0)
    shifted = _shift.apply_split(images, dict(shift), seed)
    shifted.flags.writeable = False
    return shifted


@functools.lru_cache(maxsize=16)
def _generate_split(seed: int, split: str, image_size: int, depth: int, num_volumes: int, label_noise: float,
                    missing_small: float) -> tuple[np.ndarray, np.ndarray]:
    """All volumes of a split, cached in memory: images float32 (N, D, H, W), labels uint8 (N, D, H, W), read-only."""
    noisy = split == "train"
    vols = [
        generate_volume(np.random.SeedSequence([seed, SPLITS.index(split), v]), image_size, depth,
                        label_noise if noisy else 0.0, missing_small if noisy else 0.0)
        for v in range(num_volumes)
    ]
    images = np.stack([im for im, _ in vols])
    labels = np.stack([lb for _, lb in vols])
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


class SyntheticDataset(SegmentationDataset):
    """2-D slices of generated volumes; ``volumes()`` yields the volumes themselves for 3-D evaluation.

    Args:
        split: ``"train"``, ``"val"`` (selection: tuning trials) or ``"test"`` (ranking: confirmation runs);
            disjoint volumes from the same seed.
        seed: generation seed (also seeds the augmentation in the main process).
        image_size: H = W in pixels.
        depth: slices per volume.
        num_volumes: volumes in this split (default: train 16, val 4, test 8).
        label_noise, missing_small: training-label noise, see :func:`generate_volume`; ignored for val/test. The
            general form, for every dataset, is the ``label_corruption`` option of
            :func:`~raysweep.data.build_dataset` (:mod:`raysweep.data.corruption`).
        shift: test-time shift of the images, ``{contrast, bias, noise, resolution, seed}`` (see
            :mod:`raysweep.data.shift`); the ranking split ``"test"`` only (ValueError for another split); labels
            and the clean images of the other splits are untouched.
        transform: ``"default"`` (:func:`~raysweep.data.transforms.synthetic_transform`), None, or a callable.
        augment: augment in the default transform (default: ``split == "train"``).
        target_maps: see :class:`~raysweep.data.base.SegmentationDataset`.

    Items: ``image`` float32 (1, H, W) in [0, 1] (a shifted test split may leave it), ``mask`` int64 (H, W),
    ``case`` ``"<split><vvv>_slice<zz>"``.
    """

    info = INFO
    option_checks = {
        "seed": option_int,
        "image_size": lambda d, n, v: option_int(d, n, v, low=32),
        "depth": lambda d, n, v: option_int(d, n, v, low=4),
        # bounded: validation lists every case of a split, and 10^8 names exhausted the memory of a 24 GB machine
        "num_volumes": lambda d, n, v: option_int(d, n, v, low=1, none=True, high=MAX_VOLUMES),
        "label_noise": option_probability,
        "missing_small": option_probability,
        "transform": option_transform,
        "augment": option_bool,
        "shift": _shift.check,
    }

    def __init__(self, split: str = "train", seed: int = 0, image_size: int = 64, depth: int = 16,
                 num_volumes: int | None = None, label_noise: float = 0.0, missing_small: float = 0.0,
                 transform: Transform | str | None = "default", augment: bool | None = None,
                 shift: dict | None = None, target_maps: TargetMaps | None = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"synthetic: unknown split {split!r}; choose one of {', '.join(map(repr, SPLITS))}")
        opts = self.check_options({"seed": seed, "image_size": image_size, "depth": depth, "num_volumes": num_volumes,
                                   "label_noise": label_noise, "missing_small": missing_small,
                                   "transform": transform, "augment": augment, "shift": shift})
        check_shift_split(split, shift)
        seed, image_size, depth = opts["seed"], opts["image_size"], opts["depth"]
        label_noise, missing_small = opts["label_noise"], opts["missing_small"]
        num_volumes = DEFAULT_NUM_VOLUMES[split] if num_volumes is None else opts["num_volumes"]
        augment = split == "train" if augment is None else augment
        size = (image_size, image_size)
        self.eval_transform = synthetic_transform(size, augment=False)
        if transform == "default":
            transform = synthetic_transform(size, augment=augment)
            transform.set_random_seed(seed)
        super().__init__(split, transform, target_maps)
        self.seed, self.image_size, self.depth = int(seed), int(image_size), int(depth)
        self.images, self.labels = _generate_split(self.seed, split, self.image_size, self.depth, num_volumes,
                                                   float(label_noise), float(missing_small))
        #: the checked shift (every key filled in), or None
        self.shift = opts["shift"]
        if self.shift is not None:
            self.images = _shifted_split(self.seed, split, self.image_size, self.depth, num_volumes,
                                         tuple(sorted(self.shift.items())))

    @classmethod
    def list_cases(cls, split: str = "test", root: None = None, **options) -> list[str]:
        """Volume case ids of ``split`` (``"<split><vvv>"``), as ``volumes()`` yields them, computed from
        ``num_volumes`` without generating anything; the other options are checked by value."""
        if split not in SPLITS:
            raise ValueError(f"synthetic: unknown split {split!r}; choose one of {', '.join(map(repr, SPLITS))}")
        num_volumes = cls.check_options(options).get("num_volumes")
        check_shift_split(split, options.get("shift"))
        n = DEFAULT_NUM_VOLUMES[split] if num_volumes is None else num_volumes
        return [_case_id(split, v) for v in range(n)]

    def __len__(self) -> int:
        return self.images.shape[0] * self.images.shape[1]

    def _case(self, v: int) -> str:
        return _case_id(self.split, v)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        v, zi = divmod(index, self.depth)
        return self.images[v, zi][:, :, None].copy(), self.labels[v, zi].copy(), f"{self._case(v)}_slice{zi:02d}"

    def volumes(self) -> Iterator[Volume]:
        """Yield each volume: ``Volume(case, image (D, H, W) float32, label (D, H, W) int64, spacing=SPACING)``."""
        for v in range(self.images.shape[0]):
            yield Volume(self._case(v), self.images[v].copy(), self.labels[v].astype(np.int64), SPACING)
