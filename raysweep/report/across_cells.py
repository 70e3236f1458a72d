"""Rankings across cells: each loss's mean rank over the cells ranked, and the survey's family view."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ..vocab import FAMILIES
from .stats import CellStats

__all__ = ["family_view", "overall_ranking"]


def overall_ranking(per_cell: list[CellStats]) -> pd.DataFrame:
    """Mean rank of each loss over the cells where it was ranked (descriptive: few cells, no test).

    Returns a DataFrame indexed by loss: title, family, one ``rank:<dataset>/<arch>`` column per cell, mean_rank,
    n_cells, wins (cells where it is first), top_groups (cells where it is in the top group); best first.
    """
    rows: dict[str, dict[str, Any]] = {}
    for c in per_cell:
        for loss, r in c.table.iterrows():
            row = rows.setdefault(loss, {"loss": loss, "title": r["title"], "family": r["family"], "wins": 0,
                                         "top_groups": 0})
            row[f"rank:{c.dataset}/{c.arch}"] = int(r["rank"])
            row["wins"] += int(r["rank"] == 1)
            row["top_groups"] += int(loss in c.top_group)
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows.values())
    df = df.set_index(df["loss"].rename(None))
    rank_cols = [c for c in df.columns if c.startswith("rank:")]
    df["mean_rank"] = df[rank_cols].mean(axis=1)
    df["n_cells"] = df[rank_cols].notna().sum(axis=1)
    return df.sort_values(["mean_rank", "loss"])


def family_view(per_cell: list[CellStats]) -> pd.DataFrame:
    """Per family: losses ranked, best rank and median rank per cell, mean rank over all (loss, cell) pairs."""
    rows = []
    for fam in FAMILIES:
        row: dict[str, Any] = {"family": fam}
        all_ranks = []
        for c in per_cell:
            r = c.table.loc[c.table["family"] == fam, "rank"] if not c.table.empty else pd.Series(dtype=float)
            key = f"{c.dataset}/{c.arch}"
            row[f"best:{key}"] = int(r.min()) if len(r) else None
            row[f"median:{key}"] = float(r.median()) if len(r) else None
            row[f"n:{key}"] = len(r)
            all_ranks += [float(x) / max(len(c.table), 1) for x in r]  # relative rank in (0, 1]
        row["n_losses"] = max((row[k] for k in row if k.startswith("n:")), default=0)
        row["mean_relative_rank"] = float(np.mean(all_ranks)) if all_ranks else math.nan
        rows.append(row)
    df = pd.DataFrame(rows)
    return df.set_index(df["family"].rename(None))
