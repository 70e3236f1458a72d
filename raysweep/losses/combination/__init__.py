"""Combination losses: weighted sums of a pixel-level and a region-level term."""

from . import combo, dice_ce, exp_log, unified_focal  # noqa: F401
