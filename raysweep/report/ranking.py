"""The one paired-statistics pipeline every ranking of the report uses (the cells' ranking, the robustness
ranking): from per-case scores of each (loss, replicate) to the power of the design, the ranks and their bootstrap,
the omnibus tests, the pairwise tests with Holm, the claims, the top group and the in-run replication.
(:mod:`raysweep.report.stats` documents the conventions; :mod:`raysweep.report.paired` the tests themselves.)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sstats

from . import paired

__all__ = ["Ranking", "friedman", "group_top", "mark_top_group", "ranking", "split_half"]


@dataclass
class Ranking:
    """What the one paired pipeline (:func:`ranking`) finds for a ranking of losses over paired cases."""

    matrix: pd.DataFrame  # cases x losses (each loss's mean over its replicates and seeds), in table order
    n: int  # cases
    power: Any  # raysweep.power.PowerLimit of n cases and the ranked losses
    mean_ranks: pd.Series
    rank_samples: np.ndarray  # (bootstrap draws, losses) ranks over (replicate, case) resamples
    tests: Any = None  # paired.PairTests (Wilcoxon or moderated, Holm); None with a single case
    friedman: dict[str, float] | None = None  # with 3 or more losses
    nemenyi: pd.DataFrame | None = None
    nemenyi_top_group: list[str] = field(default_factory=list)
    claims: set = field(default_factory=set)
    top_group: list[str] = field(default_factory=list)
    separable: bool | None = None
    halves: dict[str, Any] | None = None  # in-run replication (split_half)


def ranking(table: pd.DataFrame, scores: pd.DataFrame, alpha: float, n_boot: int) -> Ranking:
    """The one paired-statistics pipeline, for the main ranking and the robustness ranking alike: ``scores``
    (cases x (loss, replicate) columns, :func:`raysweep.report.paired.replicate_scores`) of the losses of ``table``
    (one row per loss, best first) -> the design's power, mean ranks, the two-level bootstrap of ranks, Friedman with
    Iman-Davenport and Nemenyi (3 or more losses), the pairwise tests with Holm, the claims, the top group and the
    in-run replication. Adds ``mean_rank``, ``rank_lo``, ``rank_median``, ``rank_hi``, ``p_first``, ``p_vs_best``
    and ``top`` to ``table``. With a single case only the descriptive part is filled (``tests`` None)."""
    import scikit_posthocs as sp  # imported here: it pulls in matplotlib and statsmodels

    from ..power import power_limit  # numpy and scipy only

    order = [str(x) for x in table.index]
    matrix = paired.loss_means(scores)[order]
    n, k = len(matrix), len(order)
    mean_ranks = matrix.rank(axis=1, ascending=False, method="average").mean()
    table["mean_rank"] = mean_ranks
    boot, samples = paired.bootstrap_ranks(scores, order, n_boot)
    table[["rank_lo", "rank_median", "rank_hi", "p_first"]] = boot[["rank_lo", "rank_median", "rank_hi", "p_first"]]
    r = Ranking(matrix, n, power_limit(n, k, alpha), mean_ranks, samples)
    if n < 2:
        return r
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ties and small samples: the p-values say what they can
        if k >= 3:
            r.friedman = friedman(matrix)
            r.nemenyi = sp.posthoc_nemenyi_friedman(matrix)
            r.nemenyi_top_group = group_top(r.nemenyi, order[0], alpha)
    r.tests = paired.pairwise_tests(scores, order)
    r.claims = paired.claims(r.tests, alpha)
    r.top_group = mark_top_group(table, r.tests.holm, alpha)
    r.separable = len(r.top_group) == 1
    r.halves = split_half(scores, order, alpha)
    return r


def friedman(matrix: pd.DataFrame) -> dict[str, float]:
    """Friedman's test (scipy) over a cases x losses matrix of ``n >= 2`` cases and ``k >= 3`` losses, with
    Iman-Davenport's F correction (less conservative; Demsar 2006, eq. 2): ``{"statistic": chi2, "pvalue",
    "iman_davenport_f", "iman_davenport_p"}``. Call it under ``warnings.catch_warnings()`` where ties or small samples
    are expected (scipy warns; the p-values say what they can)."""
    n, k = matrix.shape
    stat, p = sstats.friedmanchisquare(*matrix.to_numpy(float).T)
    f_id = (n - 1) * stat / (n * (k - 1) - stat) if n * (k - 1) != stat else math.inf
    p_id = float(sstats.f.sf(f_id, k - 1, (k - 1) * (n - 1))) if math.isfinite(f_id) else 0.0
    return {"statistic": float(stat), "pvalue": float(p), "iman_davenport_f": float(f_id), "iman_davenport_p": p_id}


def group_top(p: pd.DataFrame, best: str, alpha: float) -> list[str]:
    return [best] + [other for other in p.columns if other != best and not p.loc[best, other] < alpha]


def mark_top_group(table: pd.DataFrame, p: pd.DataFrame, alpha: float) -> list[str]:
    """The top group of a ranking table (best first): the best loss and every loss the Holm-corrected pairwise
    p-values ``p`` cannot separate from it at ``alpha``. Adds the ``p_vs_best`` and ``top`` columns to ``table``."""
    best = str(table.index[0])
    top = group_top(p, best, alpha)
    table["p_vs_best"] = p[best]
    table.loc[best, "p_vs_best"] = math.nan
    table["top"] = table.index.isin(top)
    return top


def split_half(scores: pd.DataFrame, order: list[str], alpha: float) -> dict[str, Any] | None:
    """In-run replication of a cell: its replicates split into two halves (:func:`raysweep.report.paired.split_halves`),
    each ranked by its mean scores and tested alone (the same pipeline); Kendall's tau-b between the two halves'
    means and the halves' claims side by side (:func:`raysweep.report.paired.compare_claims`). None with fewer than
    2 replicates for some loss.

    Returns ``{"replicates": (R_a, R_b), "tau": float, "methods": (test of A, of B), "winners": (a, b), "replicated": n,
    "open": n, "contradicted": n, "contradicted_pairs": [(better in A, worse in A), ...]}``.
    """
    halves = paired.split_halves(scores)
    if halves is None:
        return None
    means, tests = [], []
    for h in halves:
        m = paired.loss_means(h)[order].mean(axis=0)
        means.append(m)
        tests.append(paired.pairwise_tests(h, order))
    tau = float(sstats.kendalltau(means[0].to_numpy(float), means[1].to_numpy(float), variant="b").statistic)
    c = paired.compare_claims(paired.claims(tests[0], alpha), paired.claims(tests[1], alpha))
    sizes = tuple(int(h.columns.get_level_values("replicate").nunique()) for h in halves)
    return {"replicates": sizes, "tau": tau, "methods": (tests[0].method, tests[1].method),
            "winners": (str(means[0].idxmax()), str(means[1].idxmax())),
            "replicated": len(c["replicated"]), "open": len(c["open"]), "contradicted": len(c["contradicted"]),
            "contradicted_pairs": c["contradicted"]}
