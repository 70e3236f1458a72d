"""Pixel-level losses: each pixel contributes independently."""

from . import ce, dmce, focal, topk  # noqa: F401
