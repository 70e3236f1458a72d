"""Search dimensions shared by the overlap losses (peers disagree on each, so the sweep may tune them)."""

from ..registry import Categorical, Float

SMOOTH = Float(1e-6, 1.0, log=True)
PER_IMAGE = Categorical((False, True))
REGION_SPACE = {"smooth": SMOOTH, "per_image": PER_IMAGE}
