"""The report's figures: matplotlib, rendered headless to PNG data URIs (``data:image/png;base64,...``).

PNG rather than SVG: a figure with hundreds of points stays a few tens of kB, and an ``<img>`` cannot run script
whatever text (loss names, class names) a figure holds. Mathtext is off in every figure (``text.parse_math``), so
such names are drawn verbatim: a ``$`` in a name is a dollar sign, not TeX (nor a crash). Figures are built on
:class:`matplotlib.figure.Figure` directly (no pyplot state, no GUI backend). Every function returns a data URI, or
None when there is nothing to draw. Colours: one per loss family, the same in every figure.
"""

from __future__ import annotations

import base64
import functools
import io
import math
from collections.abc import Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .stats import CellStats

FAMILY_COLORS = {"pixel": "#1f77b4", "region": "#ff7f0e", "boundary": "#2ca02c", "combination": "#9467bd"}
OTHER = "#bbbbbb"
DPI = 90


def _plain_text(fn):
    """Run a figure function with mathtext off: loss titles, class and parameter names are drawn as they are, so a
    name holding ``$...$`` neither renders as TeX nor crashes the report with a mathtext ValueError."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context({"text.parse_math": False}):
            return fn(*args, **kwargs)

    return wrapper


def _uri(fig: Figure, tight: bool = True) -> str:
    """PNG data URI of ``fig``. ``tight`` crops to the drawn content (a second draw; off for the many small
    figures of the sensitivity section, which set their margins themselves)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight" if tight else None, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _color(family: str) -> str:
    return FAMILY_COLORS.get(family, OTHER)


def _legend_families(ax, families: Sequence[str]) -> None:
    from matplotlib.patches import Patch

    seen = [f for f in FAMILY_COLORS if f in set(families)]
    ax.legend(handles=[Patch(color=FAMILY_COLORS[f], label=f) for f in seen], fontsize=8, loc="lower right",
              frameon=False)


@_plain_text
def ranking_dots(cell: CellStats) -> str | None:
    """Mean primary metric with its 95% interval over seeds, one row per loss (best on top), family colours.

    Losses in the top group (not separable from the best) are drawn as filled markers, the others hollow.
    """
    t = cell.table
    if t.empty:
        return None
    k = len(t)
    fig = Figure(figsize=(6.4, 0.9 + 0.28 * k))
    ax = fig.add_subplot()
    y = np.arange(k)[::-1]
    for yi, (_, r) in zip(y, t.iterrows()):
        c = _color(r["family"])
        if math.isfinite(r["ci_lo"]):
            ax.plot([r["ci_lo"], r["ci_hi"]], [yi, yi], color=c, lw=2)
        top = bool(r.get("top", r["rank"] == 1))
        ax.plot(r["mean"], yi, "o", color=c, mfc=c if top else "white", ms=6)
    ax.set_yticks(y, [str(x) for x in t["title"]], fontsize=8)
    ax.set_xlabel(f"{cell.primary} (mean over seeds, 95% CI); filled: top group")
    ax.grid(axis="x", alpha=0.3)
    _legend_families(ax, list(t["family"]))
    return _uri(fig)


@_plain_text
def cd_diagram(cell: CellStats) -> str | None:
    """Critical-difference diagram (scikit-posthocs): mean per-case ranks, bars join losses that the
    pairwise test (Holm) does not separate."""
    if cell.mean_ranks is None or cell.p_holm is None or len(cell.mean_ranks) < 2:
        return None
    import scikit_posthocs as sp

    titles = cell.table["title"].to_dict()
    ranks = cell.mean_ranks.rename(index=titles)
    sig = cell.p_holm.rename(index=titles, columns=titles)
    if ranks.index.duplicated().any():  # two losses with one display title: fall back to registry names
        ranks, sig = cell.mean_ranks, cell.p_holm
    k = len(ranks)
    fig = Figure(figsize=(7.5, 1.2 + 0.16 * k))
    ax = fig.add_subplot()
    sp.critical_difference_diagram(ranks, sig, ax=ax, label_props={"fontsize": 8})
    ax.set_title("mean rank over cases (1 = best); bars: not separable (pairwise test, Holm)", fontsize=8)
    return _uri(fig)


@_plain_text
def learning_curves(curves: pd.DataFrame, cell: CellStats, trial_ids: set[str]) -> str | None:
    """Primary metric against steps of the ranked confirmation runs, mean over seeds: the best three and the worst
    loss in colour, the others grey."""
    c = curves[curves["trial_id"].isin(trial_ids) & curves["metric"].notna()]
    if c.empty or cell.table.empty:
        return None
    order = list(cell.table.index)
    highlight = order[:3] + ([order[-1]] if len(order) > 3 else [])
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.add_subplot()
    for loss, g in c.groupby("loss"):
        m = g.groupby("step")["metric"].mean()
        if loss in highlight:
            r = cell.table.loc[loss]
            ax.plot(m.index, m.to_numpy(), lw=2, label=f"#{int(r['rank'])} {r['title']}")
        else:
            ax.plot(m.index, m.to_numpy(), lw=0.8, color=OTHER)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(cell.primary)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return _uri(fig)


@_plain_text
def budget_curves(trials: pd.DataFrame, cell: CellStats) -> str | None:
    """Best-so-far tuning score against the number of tuning trials, one line per loss (family colours)."""
    t = trials[(trials["stage"] == "tune") & (trials["dataset"] == cell.dataset) & (trials["arch"] == cell.arch)]
    if t.empty:
        return None
    fig = Figure(figsize=(6.4, 3.0))
    ax = fig.add_subplot()
    for loss, g in t.groupby("loss"):
        g = g.sort_values(["started_at", "trial_id"], na_position="last")
        best = g["final_metric"].fillna(-np.inf).cummax().replace(-np.inf, np.nan).to_numpy()
        ax.step(np.arange(1, len(best) + 1), best, where="post", color=_color(g["family"].iloc[0]), lw=1, alpha=0.8)
    ax.set_xlabel("tuning trials of the loss")
    ax.set_ylabel(f"best {cell.primary} so far")
    ax.grid(alpha=0.3)
    _legend_families(ax, list(t["family"]))
    return _uri(fig)


@_plain_text
def sensitivity(tune: pd.DataFrame, primary: str, importance: dict[str, float] | None,
                dims: dict[str, dict]) -> str | None:
    """One panel per tuned parameter: final metric of each tuning trial against the parameter's value.

    Filled dots: completed trials; hollow: early-stopped (ASHA, fewer steps); the default configuration in red.
    ``dims`` (:func:`raysweep.report.tuning.param_dims`) gives each axis its search range and scale (log where the
    search sampled log-uniformly). Panels are ordered by importance where known.
    """
    cols = [f"param:{name}" for name in dims]
    scored = tune[tune["final_metric"].notna()]
    if not cols or scored.empty:
        return None
    if importance:
        cols.sort(key=lambda c: -importance.get(c[len("param:"):], 0.0))
    cols = cols[:6]
    width = 2.3 * len(cols) + 0.4
    fig = Figure(figsize=(width, 2.4))
    fig.subplots_adjust(left=0.6 / width, right=1 - 0.15 / width, bottom=0.3, top=0.95, wspace=0.12)
    axes = fig.subplots(1, len(cols), sharey=True, squeeze=False)[0]
    for ax, col in zip(axes, cols):
        name = col[len("param:"):]
        for status, mfc in (("completed", "C0"), ("stopped", "white"), ("diverged", "black")):
            g = scored[scored["status"] == status]
            x = pd.to_numeric(g[col], errors="coerce")
            ax.plot(x, g["final_metric"], "o", ms=4, color="C0", mfc=mfc, alpha=0.8, ls="none")
        d = scored[scored["is_default"].astype(bool)]
        ax.plot(pd.to_numeric(d[col], errors="coerce"), d["final_metric"], "o", ms=6, color="C3", mfc="none")
        dim = dims[name]
        if dim.get("log"):
            ax.set_xscale("log")
        if dim["type"] in ("float", "int"):  # the whole searched range, so clustering shows
            lo, hi = dim["low"], dim["high"]
            ax.set_xlim(*((lo / 1.2, hi * 1.2) if dim.get("log") else (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))))
        label = name if len(name) < 28 else "..." + name[-25:]
        if importance and name in importance:
            label += f"\n(importance {importance[name]:.2f})"
        ax.set_xlabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(primary, fontsize=8)
    return _uri(fig, tight=False)


@_plain_text
def size_scatter(view: dict) -> str | None:
    """Each loss as a point: mean class metric on small classes (x) against large classes (y)."""
    t = view["table"]
    if t.empty or t["large"].isna().all():
        return None
    fig = Figure(figsize=(4.8, 4.0))
    ax = fig.add_subplot()
    for _, r in t.iterrows():
        ax.plot(r["small"], r["large"], "o", color=_color(r["family"]))
        ax.annotate(str(r["title"]), (r["small"], r["large"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("small classes: " + ", ".join(map(str, view["small"]))[:60], fontsize=8)
    ax.set_ylabel("large classes: " + ", ".join(map(str, view["large"]))[:60], fontsize=8)
    ax.grid(alpha=0.3)
    _legend_families(ax, list(t["family"]))
    return _uri(fig)


@_plain_text
def family_ranks(per_cell: Sequence[CellStats]) -> str | None:
    """Relative rank (rank / losses in the cell; lower is better) of every ranked loss per family, all cells."""
    data: dict[str, list[float]] = {f: [] for f in FAMILY_COLORS}
    for c in per_cell:
        for _, r in c.table.iterrows():
            data.setdefault(r["family"], []).append(r["rank"] / len(c.table))
    fams = [f for f, v in data.items() if v]
    if not fams:
        return None
    fig = Figure(figsize=(5.6, 2.8))
    ax = fig.add_subplot()
    ax.boxplot([data[f] for f in fams], tick_labels=fams, showfliers=False)
    rng = np.random.default_rng(0)
    for i, f in enumerate(fams, start=1):
        x = i + rng.uniform(-0.12, 0.12, len(data[f]))
        ax.plot(x, data[f], "o", ms=4, color=_color(f), alpha=0.8)
    ax.set_ylabel("relative rank (lower is better)")
    ax.invert_yaxis()
    ax.grid(axis="y", alpha=0.3)
    return _uri(fig)


def _loss_styles(losses: Sequence[str]) -> dict[str, tuple[tuple, str, str]]:
    """One (colour, line style, marker) per loss in a stable order: tab10 colours, then the next line style."""
    colors, styles, markers = matplotlib.colormaps["tab10"].colors, ("-", "--", ":"), ("o", "s", "^")
    return {loss: (colors[i % 10], styles[i // 10 % 3], markers[i // 10 % 3]) for i, loss in enumerate(sorted(losses))}


@_plain_text
def robustness_levels(curves: pd.DataFrame, axis: str, primary: str, worst_level: float | None = None) -> str | None:
    """Each loss's metric against the level of one axis (level 0: the clean data), one line per loss, with its
    95% interval over seeds as a band. ``curves``: :func:`raysweep.report.robustness.level_curves`'s frame."""
    if curves.empty or curves["mean"].notna().sum() == 0:
        return None
    looks = _loss_styles(list(curves["loss"].unique()))
    fig = Figure(figsize=(7.4, 3.6))
    ax = fig.add_subplot()
    for loss, g in curves.sort_values("level").groupby("loss", sort=True):
        c, ls, marker = looks[loss]
        ax.plot(g["level"], g["mean"], marker=marker, ls=ls, color=c, lw=1.4, ms=4, label=str(g["title"].iloc[0]))
        band = g[g["ci_lo"].notna() & g["ci_hi"].notna()]
        if len(band) >= 2:
            ax.fill_between(band["level"], band["ci_lo"], band["ci_hi"], color=c, alpha=0.15, lw=0)
        elif len(band) == 1:
            ax.plot([band["level"].iloc[0]] * 2, [band["ci_lo"].iloc[0], band["ci_hi"].iloc[0]], color=c, lw=3,
                    alpha=0.3)
    if worst_level is not None and math.isfinite(worst_level):
        ax.axvline(worst_level, color="#999", ls=":", lw=1)
    ax.set_xticks(sorted(curves["level"].unique()))
    ax.set_xlabel(f"{axis} level (0 = clean)")
    ax.set_ylabel(f"{primary} (mean over seeds, 95% band)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              ncol=1 if curves["loss"].nunique() <= 16 else 2)
    return _uri(fig)


@_plain_text
def overlap_boundary(table: pd.DataFrame) -> str | None:
    """DSC (x, higher is better) against HD95 (y, lower is better) of each loss, family colours; the Pareto set
    (``pareto`` column) ringed in black and joined by its front. Losses without a finite HD95 are not drawn."""
    t = table[table["dsc"].notna() & table["hd95"].notna()]
    if t.empty:
        return None
    fig = Figure(figsize=(6.0, 4.2))
    ax = fig.add_subplot()
    for _, r in t.iterrows():
        on = bool(r["pareto"])
        ax.plot(r["dsc"], r["hd95"], "o", color=_color(r["family"]), ms=8 if on else 6, mec="black" if on else "none",
                mew=1.6 if on else 0, alpha=1.0 if on else 0.75)
        ax.annotate(str(r["title"]), (r["dsc"], r["hd95"]), fontsize=7, xytext=(4, 3), textcoords="offset points",
                    fontweight="bold" if on else "normal")
    front = t[t["pareto"].astype(bool)].sort_values(["dsc", "hd95"])
    if len(front) >= 2:
        ax.step(front["dsc"], front["hd95"], where="pre", color="black", lw=0.8, ls="--")
    ax.set_xlabel("DSC (mean over seeds; higher is better)")
    ax.set_ylabel("HD95 (mean over seeds; lower is better)")
    ax.set_title("ringed: the Pareto set (no loss beats it on both)", fontsize=8)
    ax.grid(alpha=0.3)
    _legend_families(ax, list(t["family"]))
    return _uri(fig)


# -- rank distribution, pairwise claims, expected best score against tuning budget ---------------------------------

def rank_shares(cell: CellStats) -> pd.DataFrame | None:
    """Share of the bootstrap draws (``cell.rank_samples``) at each rank: losses (table order) x ranks 1..k; None
    without samples."""
    s = cell.rank_samples
    if s is None or len(s) == 0:
        return None
    k = s.shape[1]
    counts = np.stack([np.bincount(s[:, j], minlength=k + 1)[1:k + 1] for j in range(k)])
    return pd.DataFrame(counts / len(s), index=list(cell.table.index[:k]), columns=range(1, k + 1))


@_plain_text
def rank_blobs(cell: CellStats) -> str | None:
    """Blob plot of the bootstrap rank distributions (challengeR; Wiesenfarth et al., Sci Rep 2021): one row per
    loss (table order, best on top), a circle at each rank whose area is the share of the draws at that rank, the
    median as a black cross and the 95% interval (2.5% to 97.5% percentiles) as a black line; family colours."""
    shares = rank_shares(cell)
    if shares is None:
        return None
    s, t = cell.rank_samples, cell.table
    k = s.shape[1]
    fig = Figure(figsize=(2.4 + 0.5 * max(k, 4), 1.0 + 0.34 * k))
    ax = fig.add_subplot()
    y = np.arange(k)[::-1]
    ranks = np.arange(1, k + 1)
    for j, (yi, (loss, r)) in enumerate(zip(y, t.iloc[:k].iterrows())):
        share = shares.loc[loss].to_numpy(float)
        on = share > 0
        ax.scatter(ranks[on], np.full(on.sum(), yi), s=260 * share[on], color=_color(r["family"]), alpha=0.8,
                   edgecolors="none", zorder=2)
        lo, hi = np.percentile(s[:, j], [2.5, 97.5])
        ax.plot([lo, hi], [yi, yi], color="black", lw=1, zorder=3)
        ax.plot(np.median(s[:, j]), yi, "x", color="black", ms=6, mew=1.5, zorder=4)
    ax.set_yticks(y, [str(x) for x in t["title"].iloc[:k]], fontsize=8)
    ax.set_xticks(ranks)
    ax.set_xlim(0.4, k + 0.6)
    ax.set_ylim(-0.7, k - 0.3)
    ax.set_xlabel(f"rank over {len(s)} bootstrap draws (1 = best); area: share of draws; x: median; "
                  "line: 95% interval", fontsize=8)
    ax.grid(alpha=0.3)
    _legend_families(ax, list(t["family"]))
    ax.get_legend().set_loc("upper left")
    ax.get_legend().set_bbox_to_anchor((1.01, 1.0))  # beside the axes: the blobs fill every corner
    return _uri(fig)


#: Colours of the significance map: row claimed better than column, row claimed worse.
BETTER, WORSE = "#2b83ba", "#e66101"


def claim_grid(cell: CellStats) -> pd.DataFrame | None:
    """losses x losses (table order) of the cell's claims: 1 where the row's loss is claimed better than the
    column's, -1 where claimed worse, 0 where not separable (and on the diagonal); None without tests."""
    if cell.p_holm is None:
        return None
    order = [x for x in cell.table.index if x in cell.p_holm.index]
    grid = pd.DataFrame(0, index=order, columns=order, dtype=int)
    for better, worse in cell.claims:
        if better in grid.index and worse in grid.index:
            grid.loc[better, worse], grid.loc[worse, better] = 1, -1
    return grid


@_plain_text
def significance_map(cell: CellStats) -> str | None:
    """The pairwise claims as a k x k grid in table order: cell (i, j) blue when loss i is claimed better than loss
    j, orange when claimed worse, blank when the pair is not separable; the diagonal grey."""
    grid = claim_grid(cell)
    if grid is None or grid.empty:
        return None
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    k = len(grid)
    titles = [str(cell.table.loc[x, "title"]) for x in grid.index]
    g = grid.to_numpy(float, copy=True)
    np.fill_diagonal(g, np.nan)
    side = 1.8 + 0.3 * k
    fig = Figure(figsize=(side + 1.6, side))
    ax = fig.add_subplot()
    cmap = ListedColormap([WORSE, "white", BETTER]).with_extremes(bad="#dddddd")
    ax.imshow(np.ma.masked_invalid(g), cmap=cmap, vmin=-1.5, vmax=1.5, aspect="equal")
    ax.set_xticks(range(k), titles, rotation=90, fontsize=8)
    ax.set_yticks(range(k), titles, fontsize=8)
    ax.set_xticks(np.arange(-0.5, k, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, k, 1), minor=True)
    ax.grid(which="minor", color="#999999", lw=0.5)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("column loss", fontsize=8)
    ax.set_ylabel("row loss", fontsize=8)
    ax.legend(handles=[Patch(color=BETTER, label="row better"), Patch(color=WORSE, label="row worse"),
                       Patch(facecolor="white", edgecolor="#999999", label="not separable")],
              fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return _uri(fig)


@_plain_text
def expected_max_curves(curves: pd.DataFrame, cell: CellStats, top: Sequence[str],
                        titles: dict[str, str] | None = None) -> str | None:
    """Expected best selection score against the number of tuning trials n (:func:`raysweep.report.budget.curves`:
    index n, one column per loss), one line per loss: the contenders ``top`` in distinct colours with a legend, the
    others thin and grey. ``titles``: display names of losses not in ``cell.table``."""
    if curves.empty or curves.notna().sum().sum() == 0:
        return None
    names = {**(titles or {}), **cell.table["title"].to_dict()} if not cell.table.empty else dict(titles or {})
    looks = _loss_styles(list(top))
    fig = Figure(figsize=(6.4, 3.2))
    ax = fig.add_subplot()
    for loss in curves.columns:
        c = curves[loss].dropna()
        if loss in looks:
            continue
        ax.plot(c.index, c.to_numpy(), color=OTHER, lw=0.8)
    for loss in top:  # on top of the grey lines, in the contenders' order
        if loss not in curves.columns:
            continue
        c = curves[loss].dropna()
        color, ls, marker = looks[loss]
        ax.plot(c.index, c.to_numpy(), color=color, ls=ls, marker=marker, ms=3, lw=2,
                label=str(names.get(loss, loss)))
    ax.set_xlabel("tuning trials n (pooled over replicates)")
    ax.set_ylabel(f"expected best {cell.primary}", fontsize=8)
    ax.grid(alpha=0.3)
    if top:
        ax.legend(fontsize=8, frameon=False, loc="lower right")
    return _uri(fig)
