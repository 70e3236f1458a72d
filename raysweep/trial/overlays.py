"""Prediction overlays: image | truth | prediction side by side, written as PNGs for the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["encode_overlays", "overlay", "png_bytes", "slug", "write_overlays"]


def slug(name: str) -> str:
    """A file- and key-safe form of a case or class name."""
    return str(name).strip().lower().replace(" ", "_").replace("/", "_")


# Overlays: image | truth | prediction, side by side, classes in fixed colours over the grey image.
_PALETTE = np.array([
    (0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128),
], dtype=np.float32)


def overlay(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, ignore_index: int) -> np.ndarray:
    """uint8 (H, 3W, 3): the image (grey or RGB, min-max scaled), truth and prediction blended over it."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3:  # (C, H, W)
        img = img[0] if img.shape[0] != 3 else img.transpose(1, 2, 0)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(img)
    if img.shape[:2] != truth.shape:  # image at network size, labels at native size
        img = np.asarray(torch.nn.functional.interpolate(
            torch.from_numpy(img.transpose(2, 0, 1).copy())[None], size=truth.shape, mode="bilinear",
            align_corners=False)[0].numpy().transpose(1, 2, 0))

    def paint(label: np.ndarray) -> np.ndarray:
        label = np.asarray(label)
        out = img.copy()
        fg = (label > 0) & (label != ignore_index)
        colours = _PALETTE[np.where(fg, label, 0) % len(_PALETTE)]
        out[fg] = 0.45 * img[fg] + 0.55 * colours[fg]
        out[label == ignore_index] = 255.0
        return out

    return np.concatenate([img, paint(truth), paint(pred)], axis=1).clip(0, 255).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    """An overlay as PNG bytes; small synthetic slices are enlarged (without smoothing the labels)."""
    import io

    from PIL import Image

    im = Image.fromarray(rgb)
    if im.height < 128:
        factor = -(-128 // im.height)
        im = im.resize((im.width * factor, im.height * factor), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def write_overlays(d: Path, overlays: list[tuple[str, np.ndarray]]) -> None:
    """One PNG per case in ``d``, named by the case's slug."""
    d.mkdir(parents=True, exist_ok=True)
    for case, rgb in overlays:
        (d / f"{slug(case)}.png").write_bytes(png_bytes(rgb))


def encode_overlays(overlays: list[tuple[str, np.ndarray]]) -> str:
    """The overlays as JSON text ``{"<case slug>.png": "<base64 PNG>"}``: how a Tune trial's final report carries
    them to the driver (the trial's folder on a worker is not the driver's, and may never be synced)."""
    import base64
    import json

    return json.dumps({f"{slug(case)}.png": base64.b64encode(png_bytes(rgb)).decode("ascii")
                       for case, rgb in overlays})
