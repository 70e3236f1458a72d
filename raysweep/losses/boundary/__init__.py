"""Boundary-level losses: terms that act on the contours of the regions."""

from . import (  # noqa: F401
    active_boundary,
    boundary,
    boundary_aware,
    boundary_dou,
    conditional_boundary,
    hausdorff,
    inverseform,
    region_wise,
)
