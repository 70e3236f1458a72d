"""Test-time shift of image volumes: the ``synthetic`` option ``shift``, for the ranking split (``test``) only.

A shift degrades the images the confirmation runs are ranked on, leaving the labels untouched::

    shift: {contrast: 0.6,      # intensities scaled about the volume's mean by c (1 = unchanged; std scales by c)
            bias: 0.2,          # a smooth multiplicative field 1 + b * f, f a random low-order polynomial in (z, y, x)
                                #   with max |f| = 1 over the volume (0 = none; b < 1 keeps the field positive)
            noise: 0.05,        # extra Gaussian noise of std s, in the image's units (0 = none)
            resolution: 2,      # each slice downsampled by r (area averaging) and upsampled back (bilinear) to its
                                #   size: detail finer than r pixels is lost (1 = unchanged)
            seed: 0}            # optional (default 0); every key is optional

They apply in that order: resolution, contrast, bias, noise (acquisition blur, then intensity changes, then noise
last, so the added noise keeps its std). Volume ``v`` draws from ``SeedSequence([seed, dataset seed, v])`` (a stream
of its own: the clean image does not change). Shifted intensities are not clipped, so they may leave [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

OPTION = "shift"
#: key -> (neutral value, lowest value, whether the lowest is allowed, what it is)
_KEYS = {
    "contrast": (1.0, 0.0, False, "a number > 0 (the factor the intensities' spread is scaled by; 1 = unchanged)"),
    "bias": (0.0, 0.0, True, "a number in [0, 1) (the bias field's amplitude; 0 = none)"),
    "noise": (0.0, 0.0, True, "a number >= 0 (the added noise's std, in the image's units; 0 = none)"),
    "resolution": (1.0, 1.0, True, "a number >= 1 (the downsampling factor; 1 = unchanged)"),
}
NEUTRAL = {key: neutral for key, (neutral, *_rest) in _KEYS.items()} | {"seed": 0}


def check(dataset: str, name: str, value: Any) -> dict[str, float | int] | None:
    """Check a ``shift`` option by value; return it with every key filled in (neutral defaults), or None for no
    shift (None, ``{}``, or every key neutral).

    Raises:
        ValueError: naming ``<dataset>: option shift.<key>`` and the accepted values, for an unknown key or a bad
            value.
    """
    from ..checks import did_you_mean

    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"{dataset}: option {name} must be a mapping such as {{contrast: 0.7, noise: 0.05}}, "
                         f"got {value!r}")
    out: dict[str, Any] = dict(NEUTRAL)
    for key, v in value.items():
        if key == "seed":
            if not isinstance(v, (int, np.integer)) or isinstance(v, (bool, np.bool_)) or v < 0:
                raise ValueError(f"{dataset}: option {name}.seed must be an integer >= 0, got {v!r}")
            out["seed"] = int(v)
            continue
        if key not in _KEYS:
            raise ValueError(f"{dataset}: option {name}: unknown key {key!r}{did_you_mean(key, [*_KEYS, 'seed'])}; "
                             f"accepted: {', '.join(_KEYS)}, seed")
        _, low, closed, what = _KEYS[key]
        number = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
        ok = number and np.isfinite(v) and (v >= low if closed else v > low) and (key != "bias" or v < 1.0)
        if not ok:
            raise ValueError(f"{dataset}: option {name}.{key} must be {what}, got {v!r}")
        out[key] = float(v)
    return None if all(out[k] == NEUTRAL[k] for k in _KEYS) else out


def check_split(dataset: str, split: str, value: Any, eval_split: str = "test") -> None:
    """ValueError unless ``split`` is the ranking split or ``value`` asks for no shift."""
    if split != eval_split and check(dataset, OPTION, value) is not None:
        raise ValueError(f"{dataset}: option {OPTION} shifts the ranking split {eval_split!r} only, not {split!r} "
                         "(training and selection images stay as generated); move it to the dataset's eval_options")


def bias_field(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """A smooth random field over a (D, H, W) volume: a polynomial of degree 2 in normalised (z, y, x) with random
    coefficients, scaled to max |f| = 1. float64 (D, H, W)."""
    d, h, w = shape
    z = np.linspace(-1.0, 1.0, d)[:, None, None] if d > 1 else np.zeros((1, 1, 1))
    y = np.linspace(-1.0, 1.0, h)[None, :, None]
    x = np.linspace(-1.0, 1.0, w)[None, None, :]
    c = rng.uniform(-1.0, 1.0, 8)
    f = c[0] * y + c[1] * x + c[2] * x * y + c[3] * y**2 + c[4] * x**2 + c[5] * z + c[6] * z * x + c[7] * z * y
    f = np.broadcast_to(f, shape)
    peak = np.abs(f).max()
    return f / peak if peak > 0 else np.zeros(shape)


def degrade_resolution(volume: np.ndarray, factor: float) -> np.ndarray:
    """Each (H, W) slice of a (D, H, W) volume area-downsampled to ``round(H / factor) x round(W / factor)`` and
    bilinearly upsampled back to (H, W). float32 (D, H, W)."""
    d, h, w = volume.shape
    small = (max(1, round(h / factor)), max(1, round(w / factor)))
    x = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[:, None]
    x = F.interpolate(F.interpolate(x, size=small, mode="area"), size=(h, w), mode="bilinear", align_corners=False)
    return x[:, 0].numpy()


def apply(volume: np.ndarray, spec: Mapping[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Shift one volume.

    Args:
        volume: (D, H, W) intensities.
        spec: from :func:`check` (every key present).
        rng: the volume's generator.

    Returns:
        float32 (D, H, W), a new array.
    """
    out = np.asarray(volume, dtype=np.float64)
    if spec["resolution"] != 1.0:
        out = degrade_resolution(out, spec["resolution"]).astype(np.float64)
    if spec["contrast"] != 1.0:
        mean = out.mean()
        out = mean + spec["contrast"] * (out - mean)
    if spec["bias"]:
        out = out * (1.0 + spec["bias"] * bias_field(out.shape, rng))
    if spec["noise"]:
        out = out + rng.normal(0.0, spec["noise"], out.shape)
    return out.astype(np.float32)


def apply_split(images: np.ndarray, spec: Mapping[str, Any], dataset_seed: int) -> np.ndarray:
    """Shift each volume ``v`` of ``images`` (N, D, H, W) with ``default_rng(SeedSequence([spec seed, dataset_seed,
    v]))``; float32 (N, D, H, W), a new array."""
    return np.stack([apply(vol, spec, np.random.default_rng(np.random.SeedSequence([spec["seed"], dataset_seed, v])))
                     for v, vol in enumerate(images)])
