"""Robustness and overlap-versus-boundary statistics: pure pandas/scipy functions over the report's cell view.

Frames are those of :func:`raysweep.report.stats.cell_view`: ``dataset`` is the cell's label (``synthetic`` or
``synthetic:noise1``), ``base_dataset`` the registry name and ``variant`` the variant's name. Variants come from
sweep.json's ``variants``: ``{dataset: {variant: {"axis": str | None, "level": float | None, "overrides": {...}}}}``;
the variant without an axis is the clean reference, level 0 of every axis.

Robustness, per (base dataset, arch, axis):

* *Levels*: the clean variant at level 0, then every variant of the axis, sorted by level. Each loss's metric at a
  level is the mean ``final_metric`` of its ranked runs (:func:`raysweep.report.stats.ranked_runs`) in that cell,
  with a Student-t 95% interval over the confirmation seeds (:func:`raysweep.report.stats.mean_ci`).
* The *worst level* is the axis's most severe one: the largest ``|level|``; among equally severe levels, the one
  with the lowest metric averaged over the losses.
* *Retained performance* of a loss = its metric at the worst level / its metric at the clean level (ratio of the
  means over seeds); the ranking orders losses by it, 1 = the most robust.
* Paired statistics as in the main ranking, on per-case retained values: for each ranking case and loss, the case
  score at the worst level (mean over classes, then over seeds: :func:`raysweep.report.paired.replicate_scores`)
  divided by the case score at the clean level. Cases scored 0 at the clean level (no ratio) and cases missing for a
  loss are dropped (complete blocks only); with replicates, replicate r's ratio is its worst-level score over
  replicate r's clean one (:func:`retained_matrix`). Friedman over the matrix (:func:`raysweep.report.ranking.friedman`,
  as in the main ranking); the pairwise test of :mod:`raysweep.report.paired` (replicate-aware with two or more
  replicates per loss, else Wilcoxon signed-rank) with Holm's correction; the *top group* is the most robust loss
  and every loss the test cannot separate from it; bootstrap intervals of each loss's rank; the design's power
  limit.
* *Rank change*: each loss's rank by its mean metric among the compared losses at the clean level and at the worst
  level; the sentence names the losses whose rank moves most.

Overlap versus boundary, per cell: each loss's mean DSC (``dice``) and mean HD95 over its ranked runs; the *Pareto
set* is the losses that no other loss beats on both (a loss is beaten when another has a DSC at least as high and an
HD95 at least as low, one of them strictly). Equal points are both in the set. A loss without a finite HD95 (or
DSC) takes no part and is listed as excluded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sstats

from ..checks import finite
from . import paired, stats
from .ranking import ranking

#: Losses named by the rank-change sentence at most (the largest moves first).
MAX_MOVERS = 3

__all__ = ["AxisStats", "axes", "overlap_boundary", "pareto_set", "rank_change_sentence", "robustness",
           "robustness_cells", "variants_meta"]


def variants_meta(meta: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """sweep.json's ``variants``, checked: ``{dataset: {variant: {"axis", "level", "overrides"}}}``.

    Malformed entries are skipped (a report never fails on them); ``level`` becomes a float (0.0 for the clean
    variant when unset), ``overrides`` a dict.
    """
    raw = meta.get("variants") if isinstance(meta.get("variants"), dict) else {}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for dataset, entries in raw.items():
        if not isinstance(entries, dict):
            continue
        for name, e in entries.items():
            if not isinstance(e, dict):
                continue
            axis = e.get("axis") if isinstance(e.get("axis"), str) and e.get("axis") else None
            level = e.get("level")
            level = float(level) if isinstance(level, (int, float)) and not isinstance(level, bool) else (
                0.0 if axis is None else math.nan)
            out.setdefault(str(dataset), {})[str(name)] = {
                "axis": axis, "level": level,
                "overrides": e.get("overrides") if isinstance(e.get("overrides"), dict) else {}}
    return out


def axes(variants: dict[str, dict[str, Any]]) -> tuple[str | None, dict[str, list[tuple[float, str]]]]:
    """The clean variant's name and, per axis, its ``(level, variant)`` points sorted by level (clean excluded)."""
    clean = next((name for name, e in variants.items() if e["axis"] is None), None)
    out: dict[str, list[tuple[float, str]]] = {}
    for name, e in variants.items():
        if e["axis"] is not None and math.isfinite(e["level"]):
            out.setdefault(e["axis"], []).append((e["level"], name))
    return clean, {a: sorted(v) for a, v in sorted(out.items())}


def _cell_trials(trials: pd.DataFrame, base: str, variant: str, arch: str, clean: bool = False) -> pd.DataFrame:
    """Trials of (base, variant, arch); for the clean variant (``clean``), rows written without a variant (``""``)
    stand in when none carries its name."""
    base_col = trials["base_dataset"] if "base_dataset" in trials.columns else trials["dataset"]
    var_col = trials["variant"].fillna("") if "variant" in trials.columns else pd.Series("", index=trials.index)
    t = trials[(base_col == base) & (trials["arch"] == arch) & (var_col == variant)]
    if t.empty and clean and variant:
        return trials[(base_col == base) & (trials["arch"] == arch) & (var_col == "")]
    return t


#: A loss whose clean metric is under this fraction of the best loss's is flagged when it leads a robustness ranking
#: (in the top group, or ranked above every loss that learned).
LEARNED_FRACTION = 0.5


@dataclass
class AxisStats:
    """Robustness of one (base dataset, arch, axis). ``table``: one row per compared loss, most robust first."""

    dataset: str
    arch: str
    axis: str
    primary: str
    clean: str
    levels: list[tuple[float, str]]
    worst: tuple[float, str] | None
    curves: pd.DataFrame
    table: pd.DataFrame
    n_cases: int = 0
    friedman: dict[str, float] | None = None
    nemenyi: pd.DataFrame | None = None
    tests: Any = None  # paired.PairTests
    p_holm: pd.DataFrame | None = None
    claims: set = field(default_factory=set)
    top_group: list[str] = field(default_factory=list)
    separable: bool | None = None
    power: Any = None
    verdict: str = ""
    sentence: str = ""
    caveats: list[str] = field(default_factory=list)
    not_compared: list[str] = field(default_factory=list)


def level_curves(trials: pd.DataFrame, base: str, arch: str, points: list[tuple[float, str]]) -> pd.DataFrame:
    """Each loss's metric per level: columns loss, title, family, level, variant, n_seeds, mean, ci_lo, ci_hi.

    ``points``: ``(level, variant)`` pairs, the clean variant first."""
    names = stats.display_names(trials) if len(trials) else {}
    rows = []
    for level, variant in points:
        runs = stats.ranked_runs(_cell_trials(trials, base, variant, arch, clean=variant == points[0][1]))
        for loss, g in runs.groupby("loss"):
            m, lo, hi = stats.mean_ci(g["final_metric"].to_numpy(float))
            rows.append({"loss": loss, "title": names.get(loss, loss), "family": g["family"].iloc[0],
                         "level": level, "variant": variant, "n_seeds": int(g["seed"].nunique()),
                         "mean": m, "ci_lo": lo, "ci_hi": hi})
    return pd.DataFrame(rows, columns=["loss", "title", "family", "level", "variant", "n_seeds", "mean", "ci_lo",
                                       "ci_hi"])


def _worst(curves: pd.DataFrame, points: list[tuple[float, str]]) -> tuple[float, str] | None:
    if not points:
        return None
    severity = max(abs(level) for level, _ in points)
    candidates = [p for p in points if abs(p[0]) == severity]
    means = {v: curves.loc[curves["variant"] == v, "mean"].mean() for _, v in candidates}
    return min(candidates, key=lambda p: (means[p[1]] if math.isfinite(means[p[1]]) else math.inf, p[1]))


def rank_change_sentence(table: pd.DataFrame, clean_label: str, worst_label: str, primary: str = "metric") -> str:
    """The sentence naming the losses whose rank moves most between the clean and the worst level.

    ``table``: indexed by loss, with title, rank_clean and rank_worst (rank by mean metric, 1 = best). Names every
    loss with the largest move, then the next largest moves up to :data:`MAX_MOVERS` losses in all.
    """
    if table.empty:
        return ""
    delta = (table["rank_worst"] - table["rank_clean"]).astype(int)
    biggest = int(delta.abs().max())
    if biggest == 0:
        return f"No loss changes rank between {clean_label} and {worst_label}."
    order = sorted((x for x in delta.index if delta[x]),
                   key=lambda x: (-abs(int(delta[x])), table.loc[x, "rank_clean"], x))
    movers = [x for x in order if abs(int(delta[x])) == biggest]
    rest = [x for x in order if x not in movers][:max(0, MAX_MOVERS - len(movers))]

    def fmt(names: list[str]) -> str:
        return ", ".join(f"{table.loc[x, 'title']} (rank {int(table.loc[x, 'rank_clean'])} → "
                         f"{int(table.loc[x, 'rank_worst'])})" for x in names)

    verb = "moves" if len(movers) == 1 else "move"
    places = f"{biggest} place{'s' if biggest != 1 else ''}"
    return (f"Between {clean_label} and {worst_label}, {fmt(movers)} {verb} most ({places}, of {len(table)} losses "
            f"ranked by mean {primary})" + (f"; next: {fmt(rest)}" if rest else "") + ".")


def robustness(trials: pd.DataFrame, cases: pd.DataFrame, base: str, arch: str, axis: str, clean: str,
               points: list[tuple[float, str]], alpha: float = stats.ALPHA, n_boot: int = stats.BOOTSTRAP
               ) -> AxisStats:
    """Metric per level, the ranking by retained performance and its paired tests (see the module docstring)."""
    t_all = trials[trials["arch"] == arch]
    t_base = t_all[(t_all["base_dataset"] if "base_dataset" in t_all.columns else t_all["dataset"]) == base]
    primary = str(t_base["primary_metric"].mode().iloc[0]) if len(t_base) else "dice"
    levels = [(0.0, clean)] + list(points)
    curves = level_curves(trials, base, arch, levels)
    worst = _worst(curves, points)
    out = AxisStats(base, arch, axis, primary, clean, levels, worst, curves, pd.DataFrame())
    if worst is None:
        out.verdict = f"No variant of axis {axis}."
        return out
    c0 = curves[curves["variant"] == clean].set_index("loss")
    c1 = curves[curves["variant"] == worst[1]].set_index("loss")
    both = sorted(set(c0.index) & set(c1.index))
    out.not_compared = sorted(set(curves["loss"]) - set(both))
    if not both:
        out.verdict = "Not compared: no loss has confirmation runs at both the clean and the worst level."
        return out
    table = pd.DataFrame({"title": c0.loc[both, "title"], "family": c0.loc[both, "family"],
                          "clean": c0.loc[both, "mean"], "worst": c1.loc[both, "mean"]})
    table["retained"] = [w / c if c and math.isfinite(c) and c > 0 else math.nan
                         for w, c in zip(table["worst"], table["clean"])]
    table["rank_clean"] = sstats.rankdata(-table["clean"].fillna(-np.inf), method="min").astype(int)
    table["rank_worst"] = sstats.rankdata(-table["worst"].fillna(-np.inf), method="min").astype(int)
    table = table.sort_values(["retained", "title"], ascending=[False, True], na_position="last")
    table["rank"] = sstats.rankdata(-table["retained"].fillna(-np.inf), method="min").astype(int)
    out.table = table
    label = f"{axis} {worst[0]:g} ({worst[1]})"
    out.sentence = rank_change_sentence(table, f"the clean data ({clean})", label, primary)
    _paired(out, trials, cases, alpha, n_boot)
    # A ratio says little for a loss that barely learned on clean data: it has little to lose (and noisy labels can
    # even help it). Name those in the top group or ranked above the first loss that learned, so the ratio is never
    # read as "the loss to use".
    best_clean = table["clean"].max()
    learned = [table.loc[x, "clean"] >= LEARNED_FRACTION * best_clean for x in table.index]
    ahead = set(table.index[:learned.index(True) if True in learned else len(learned)]) | set(out.top_group or [])
    weak = [table.loc[x, "title"] for x, ok in zip(table.index, learned) if x in ahead and not ok]
    if weak:
        out.caveats.insert(0, f"{', '.join(weak)} scored under {LEARNED_FRACTION:.0%} of the best clean {primary} "
                              f"({best_clean:.3f}): a high retained ratio there measures a loss with little to lose, "
                              "not robustness worth having; compare the retained ratios of the losses that learned.")
    return out


def retained_matrix(trials: pd.DataFrame, cases: pd.DataFrame, base: str, arch: str, clean: str, worst: str,
                    losses: list[str], primary: str) -> tuple[pd.DataFrame, int, list[str]]:
    """Per-case retained values, cases x (loss, replicate) (complete cases; a table of
    :mod:`raysweep.report.paired`), how many cases had no ratio (clean score 0), and the losses without per-case
    scores at either level. Replicate r's ratio divides its score at the worst level by replicate r's at the clean
    level: the replicates of two cells are independent draws, so matching them by index pairs them at random."""
    m = []
    for variant in (clean, worst):
        t = _cell_trials(trials, base, variant, arch, clean=variant == clean)
        m.append(paired.replicate_scores(cases, stats.ranked_runs(t), stats.class_metric(primary)))
    present = [set(x.columns.get_level_values("loss")) if not x.empty else set() for x in m]
    missing = [x for x in losses if x not in present[0] or x not in present[1]]
    if missing:
        return pd.DataFrame(), 0, missing
    cols = m[0].columns.intersection(m[1].columns)
    common = m[0].index.intersection(m[1].index)
    clean_m, worst_m = m[0].loc[common, cols], m[1].loc[common, cols]
    ratio = worst_m / clean_m.where(clean_m > 0)
    complete = ratio.dropna(axis=0, how="any")
    no_ratio = int(len(common) - len(complete))
    return complete.sort_index(), no_ratio, missing


def _paired(out: AxisStats, trials: pd.DataFrame, cases: pd.DataFrame, alpha: float, n_boot: int) -> None:
    table = out.table
    k = len(table)
    if k < 2:
        out.verdict = "Only one loss has runs at both levels: nothing to compare."
        return
    scores, no_ratio, missing = retained_matrix(trials, cases, out.dataset, out.arch, out.clean, out.worst[1],
                                                list(table.index), out.primary)
    if missing:
        out.verdict = (f"Not tested: per-case scores are missing for {', '.join(missing)} at the clean or the worst "
                       "level; the ranking orders retained means only.")
        return
    if no_ratio:
        out.caveats.append(f"{no_ratio} case(s) scored 0 at the clean level for some loss: no retained ratio, "
                           "left out of the paired tests.")
    order = [str(x) for x in table.index]
    matrix = paired.loss_means(scores).reindex(columns=order) if not scores.empty else pd.DataFrame(columns=order)
    n = len(matrix)
    out.n_cases = n
    if n < 2:
        out.verdict = ("Not tested: fewer than two ranking cases have per-case scores at both levels for every "
                       "loss; the ranking orders retained means only.")
        return
    table["mean_case_retained"] = matrix.mean()
    r = ranking(table, scores, alpha, n_boot)  # the main ranking's pipeline, on retained scores
    out.power, out.friedman, out.nemenyi, out.tests = r.power, r.friedman, r.nemenyi, r.tests
    tests = r.tests
    out.p_holm, out.claims, out.top_group, out.separable = tests.holm, r.claims, r.top_group, r.separable
    design = tests.design(n)
    best = str(table.index[0])
    head = (f"{table.loc[best, 'title']} retains the most of its clean {out.primary} at {out.axis} {out.worst[0]:g} "
            f"({table.loc[best, 'retained']:.1%})")
    if out.separable:
        out.verdict = f"{head}, separable from every other loss ({design}, Holm-corrected, alpha {alpha})."
    else:
        out.verdict = (f"{head}, but it is not separable from {stats.titles_of(table, out.top_group[1:])} "
                       f"({design}, Holm, alpha {alpha}).")
    if not tests.replicate_aware:
        out.caveats.append(f"Tuning and training variance are not in this test ({tests.why_cases_only}).")
    if not out.power.declarable:
        out.caveats.append("Design limit: " + out.power.sentence())


def robustness_cells(trials: pd.DataFrame, cases: pd.DataFrame, meta: dict[str, Any], alpha: float = stats.ALPHA,
                     n_boot: int = stats.BOOTSTRAP) -> list[dict[str, Any]]:
    """Per (base dataset, arch) with variants: ``{"dataset", "arch", "variants", "clean", "axes": [AxisStats]}``."""
    out = []
    base_col = trials["base_dataset"] if "base_dataset" in trials.columns else trials["dataset"]
    for base, variants in sorted(variants_meta(meta).items()):
        clean, per_axis = axes(variants)
        if clean is None or not per_axis:
            continue
        for arch in sorted(set(trials.loc[base_col == base, "arch"])):
            out.append({"dataset": base, "arch": arch, "variants": variants, "clean": clean,
                        "axes": [robustness(trials, cases, base, arch, a, clean, pts, alpha, n_boot)
                                 for a, pts in per_axis.items()]})
    return out


# -- overlap versus boundary -------------------------------------------------------------------------------------

def pareto_set(points: pd.DataFrame) -> list[str]:
    """Index labels of the rows no other row beats on both ``dsc`` (higher) and ``hd95`` (lower); rows with a NaN
    in either take no part. Equal points are both kept."""
    p = points[points["dsc"].notna() & points["hd95"].notna()]
    d, h = p["dsc"].to_numpy(float), p["hd95"].to_numpy(float)
    keep = []
    for i, name in enumerate(p.index):
        beaten = (d >= d[i]) & (h <= h[i]) & ((d > d[i]) | (h < h[i]))
        if not beaten.any():
            keep.append(name)
    return keep


def overlap_boundary(trials: pd.DataFrame, dataset: str, arch: str) -> dict[str, Any]:
    """Per loss of one cell (``dataset``: the cell's label): mean DSC and HD95 over its ranked runs, the Pareto set.

    Returns ``{"table": DataFrame indexed by loss (title, family, dsc, hd95, n_runs, n_hd95, pareto), "pareto":
    [loss, ...] (best DSC first), "excluded": [loss, ...] (no finite HD95 or DSC)}``. DSC is the ``dice`` column,
    or ``final_metric`` for a ``dice`` cell whose ``dice`` is unset.
    """
    t = trials[(trials["dataset"] == dataset) & (trials["arch"] == arch)]
    runs = stats.ranked_runs(t)
    names = stats.display_names(trials) if len(trials) else {}
    rows = []
    for loss, g in runs.groupby("loss"):
        dsc = pd.to_numeric(g["dice"], errors="coerce") if "dice" in g.columns else pd.Series(np.nan, index=g.index)
        if dsc.isna().all() and (g["primary_metric"] == "dice").all():
            dsc = pd.to_numeric(g["final_metric"], errors="coerce")
        hd = pd.to_numeric(g["hd95"], errors="coerce")
        hd = hd[np.isfinite(hd.to_numpy(float))]
        rows.append({"loss": loss, "title": names.get(loss, loss), "family": g["family"].iloc[0],
                     "dsc": float(dsc.mean()) if dsc.notna().any() else math.nan,
                     "hd95": float(hd.mean()) if len(hd) else math.nan, "n_runs": len(g), "n_hd95": len(hd)})
    table = pd.DataFrame(rows, columns=["loss", "title", "family", "dsc", "hd95", "n_runs", "n_hd95"])
    table = table.set_index(table["loss"].rename(None)).drop(columns="loss")
    front = pareto_set(table)
    table["pareto"] = table.index.isin(front)
    excluded = [x for x in table.index if not (finite(table.loc[x, "dsc"]) and finite(table.loc[x, "hd95"]))]
    front = sorted(front, key=lambda x: (-table.loc[x, "dsc"], table.loc[x, "hd95"], x))
    return {"table": table.sort_values(["dsc", "hd95"], ascending=[False, True]), "pareto": front,
            "excluded": excluded}
