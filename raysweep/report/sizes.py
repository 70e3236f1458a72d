"""Losses against object size: each class's share of the labelled pixels, and a loss's rank on small vs large
classes (the survey's claim that region losses help small structures, measured)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sstats

from .stats import CellStats, class_metric, ranked_runs

__all__ = ["class_sizes", "size_view"]


def class_sizes(cases: pd.DataFrame, dataset: str) -> pd.Series:
    """Median ``gt_fraction`` per class name over the dataset's cases (object size), smallest first; empty if
    unknown."""
    # The ranking cases (confirm rows): the sizes describe the cases the ranking is about.
    c = cases[(cases["dataset"] == dataset) & (cases["stage"] == "confirm") & cases["gt_fraction"].notna()]
    if c.empty:
        return pd.Series(dtype=float)
    # Each case's ground truth is the same in every trial: one value per (case, class).
    per_case = c.groupby(["class_name", "case"])["gt_fraction"].first()
    return per_case.groupby("class_name").median().sort_values()


def size_view(cell: CellStats, cases: pd.DataFrame, trials: pd.DataFrame) -> dict[str, Any] | None:
    """Per-class results grouped by object size for one cell; None without per-case sizes.

    Classes whose median ground-truth share is below the median over classes are *small*, the rest *large*.
    Returns ``{"sizes": Series class -> median share, "small": [...], "large": [...], "table": DataFrame}`` with
    one row per loss: the class metric per class (ordered by size), ``small`` and ``large`` means, their ranks.
    """
    sizes = class_sizes(cases, cell.dataset)
    if len(sizes) < 2 or cell.table.empty:
        return None
    t = trials[(trials["dataset"] == cell.dataset) & (trials["arch"] == cell.arch)]
    runs = ranked_runs(t)
    m = class_metric(cell.primary)
    c = cases[(cases["stage"] == "confirm") & cases["trial_id"].isin(set(runs["trial_id"]))]
    if c.empty:
        return None
    per_class = c.groupby(["loss", "class_name"])[m].mean().unstack("class_name")
    classes = [x for x in sizes.index if x in per_class.columns]
    cut = float(np.median(sizes[classes]))
    small = [x for x in classes if sizes[x] < cut] or classes[:1]
    large = [x for x in classes if x not in small]
    table = per_class[classes].copy()
    table["small"] = table[small].mean(axis=1)
    table["large"] = table[large].mean(axis=1) if large else math.nan
    table["rank_small"] = sstats.rankdata(-table["small"].fillna(-np.inf), method="min")
    table["rank_large"] = sstats.rankdata(-table["large"].fillna(-np.inf), method="min")
    table["title"] = [cell.table["title"].get(x, x) for x in table.index]
    table["family"] = [cell.table["family"].get(x, "") for x in table.index]
    return {"sizes": sizes[classes], "small": small, "large": large,
            "table": table.sort_values(["rank_small", "rank_large"])}
