"""Pixel-level losses: each pixel contributes independently."""

from . import ce, focal, topk  # noqa: F401
