"""The report's statistics: per-cell rankings of the losses from the confirmation runs, and how sure they are.

A *cell* is one (dataset, arch) pair; a *group* one (dataset, arch, loss). Conventions:

* Only ``confirm`` trials are ranked (the tuning stage's scores carry the winner's curse and ASHA truncation). A loss's
  *ranked runs* are its confirm trials with ``is_default`` false, or all of them when it has no others (its best
  configuration was the default). ``completed`` and ``diverged`` runs count (diverged scores 0, the worst value);
  ``oom``, ``error`` and ``stopped`` runs are failures and are listed, not ranked.
* Higher is better for the primary metric (``dice`` or ``miou``); rank 1 is the best. HD95 is lower-is-better.
* A loss's runs may come from several *replicates* (``tuning.replicates``): independent runs of its group's whole
  pipeline (own Optuna study, own early stopping, own seeds). Its ranked runs are chosen per replicate, as above.
* Paired statistics use per-case scores (``cases`` table; confirm rows only: tuning trials score the *selection*
  cases, which chose the configurations and so must not also rank them): for each (loss, replicate, case) the mean
  over classes of the class metric (Dice for ``dice`` datasets, IoU for ``miou`` ones), then over the replicate's
  seeds (:func:`raysweep.report.paired.replicate_scores`). Only cases scored for every (loss, replicate) enter.
* Tests (:mod:`raysweep.report.paired`; :func:`raysweep.report.ranking.ranking` is the one pipeline every ranking
  uses): with two or more replicates per loss,
  a replicate-aware moderated t-test whose error term holds the replicates' spread (tuning and training luck) and
  the cases'; with one, the Wilcoxon signed-rank test on cases (and the report says in red that tuning variance is
  not in the test). Holm's correction over all ``k (k - 1) / 2`` pairs; a *claim* is a pair declared different.
  Friedman (scipy) with Iman-Davenport's F and Nemenyi (scikit-posthocs) over the replicate-averaged cases x losses
  matrix, for reference; a two-level bootstrap (cases, and replicates within each loss) for each loss's rank
  distribution and probability of ranking first. The *top group* is the best loss and every loss not claimed worse
  than it; the top is *separable* when that group is the best loss alone. The design's *power limit*
  (:mod:`raysweep.power`) says whether any pair could be separated at all.
* In-run replication: the replicates split into two halves, each ranked and tested alone; Kendall's tau between the
  halves' mean rankings and their claims replicated, left open or contradicted
  (:func:`raysweep.report.ranking.split_half`).
* Seed agreement: Kendall's W (with the tie correction) of the runs x losses matrix of final metrics of the ranked
  runs (:func:`kendall_w`; a rater is one (replicate, k-th seed)): 1 when every run orders the losses alike, 0 when
  the orders are unrelated.
* Convergence: a run's *last-20% gain* is its primary metric at its final report minus the metric at its last report
  with ``step <= 0.8 * budget_steps`` (:func:`convergence_gains`); a loss's gain is the mean over its ranked runs.

Everything here takes pandas frames as :func:`raysweep.results.read_results` returns them; no Ray, no torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sstats

from ..vocab import RANKED_STATUSES, cell_label
from . import paired
from .paired import holm  # noqa: F401 (stats.holm: the report's public name for it)
from .ranking import ranking

ALPHA = 0.05
BOOTSTRAP = 2000
#: below this many complete cases, the report warns that the tests have little power.
MIN_CASES = 10
#: A run's last-20% gain is measured from its last report at or before this share of its budget to its final one.
TAIL_START = 0.8
#: A cell is flagged "not converged" when one of its CONVERGENCE_TOP best losses gains at least this much over the
#: last 20% of its budget (primary metric units, e.g. 0.02 Dice): more steps would likely reorder the top.
CONVERGENCE_GAIN = 0.02
CONVERGENCE_TOP = 5


def class_metric(primary: str) -> str:
    """The per-class, per-case metric that stands for ``primary``: ``dice`` -> dice, ``miou`` -> iou."""
    return "iou" if primary == "miou" else "dice"


def parse_json(text: Any) -> dict[str, Any]:
    """A JSON column's value as a dict (``{}`` for null or non-object)."""
    if not isinstance(text, str) or not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def display_names(trials: pd.DataFrame) -> dict[str, str]:
    """loss -> display title (``loss_title`` where set, else the registry name)."""
    out: dict[str, str] = {}
    for loss, title in zip(trials["loss"], trials["loss_title"]):
        if loss not in out or (isinstance(title, str) and title):
            out[loss] = title if isinstance(title, str) and title else loss
    return out


def ranked_runs(trials: pd.DataFrame) -> pd.DataFrame:
    """The confirm trials that rank their loss (see the module docstring), with a ``ranked`` column."""
    if "replicate" not in trials.columns:  # frames built by hand, or before replicates existed: one replicate
        trials = trials.assign(replicate=0)
    conf = trials[(trials["stage"] == "confirm") & trials["status"].isin(RANKED_STATUSES)]
    keys = ["dataset", "arch", "loss", "replicate"]
    has_tuned = conf.groupby(keys)["is_default"].transform(lambda s: (~s.astype(bool)).any())
    return conf[~conf["is_default"].astype(bool) | ~has_tuned.astype(bool)]


def cell_view(frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The results frames as the report groups them: ``dataset`` holds the cell's dataset label
    (:func:`cell_label`), so that every (dataset, variant, arch) is a cell of its own; the registry name moves to
    ``base_dataset`` (``variant`` stays). Frames already in this view are returned as they are."""
    out = {}
    for name, frame in frames.items():
        if "base_dataset" in frame.columns or "dataset" not in frame.columns:
            out[name] = frame
            continue
        frame = frame.copy()
        variant = frame["variant"].fillna("") if "variant" in frame.columns else pd.Series("", index=frame.index)
        frame["base_dataset"] = frame["dataset"]
        frame["variant"] = variant
        frame["dataset"] = [cell_label(d, v) for d, v in zip(frame["dataset"], variant)]
        out[name] = frame
    return out


def cells(trials: pd.DataFrame) -> list[tuple[str, str]]:
    """(dataset, arch) pairs present in ``trials``, sorted."""
    return sorted({(d, a) for d, a in zip(trials["dataset"], trials["arch"])})


def mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval over seeds; the interval is NaN for fewer than two values."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    m = float(v.mean())
    if len(v) < 2 or np.allclose(v, m):
        return (m, m, m) if len(v) >= 2 else (m, math.nan, math.nan)
    lo, hi = sstats.t.interval(level, len(v) - 1, loc=m, scale=sstats.sem(v))
    return m, float(lo), float(hi)


def _one_replicate(matrix: pd.DataFrame) -> pd.DataFrame:
    """A cases x losses matrix as a cases x (loss, replicate 0) table of :mod:`raysweep.report.paired`."""
    out = matrix.copy()
    out.columns = pd.MultiIndex.from_arrays([list(matrix.columns), [0] * matrix.shape[1]], names=["loss", "replicate"])
    return out


def bootstrap_ranks(matrix: pd.DataFrame, n: int = BOOTSTRAP, seed: int = 0) -> pd.DataFrame:
    """95% bootstrap intervals of each loss's rank (1 = best) when the cases of a cases x losses matrix are
    resampled with replacement (:func:`raysweep.report.paired.bootstrap_ranks` with one replicate per loss): a
    DataFrame indexed by loss with ``rank_lo``, ``rank_median``, ``rank_hi`` and ``p_first``."""
    return paired.bootstrap_ranks(_one_replicate(matrix), list(matrix.columns), n, seed)[0]


def kendall_w(matrix: pd.DataFrame) -> float:
    """Kendall's coefficient of concordance W of a raters x objects matrix (higher value = better), tie-corrected.

    Here raters are confirmation seeds and objects losses. Each row is ranked (average ranks for ties), then
    ``W = 12 S / (m^2 (n^3 - n) - m T)`` with ``S`` the sum of squared deviations of the rank sums from their mean,
    ``m`` raters, ``n`` objects and ``T`` the sum over raters and tie groups of ``t^3 - t``. Equals
    ``chi2_Friedman / (m (n - 1))`` (seeds as blocks). NaN with fewer than 2 raters or 2 objects, or when every rater
    ties everything.
    """
    x = matrix.to_numpy(float)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2 or not np.isfinite(x).all():
        return math.nan
    m, n = x.shape
    ranks = sstats.rankdata(-x, axis=1, method="average")
    sums = ranks.sum(axis=0)
    s = float(((sums - sums.mean()) ** 2).sum())
    t = 0.0
    for row in x:
        _, counts = np.unique(row, return_counts=True)
        t += float((counts ** 3 - counts).sum())
    denom = m ** 2 * (n ** 3 - n) - m * t
    return 12 * s / denom if denom > 0 else math.nan


def seed_matrix(runs: pd.DataFrame) -> pd.DataFrame:
    """Raters x losses matrix of ``final_metric`` of the ranked runs, a rater being one (replicate, k-th seed of the
    replicate) (each replicate has its own seeds); only losses with a run for every rater."""
    if runs.empty:
        return pd.DataFrame()
    r = runs.assign(replicate=runs["replicate"].fillna(0).astype(int))
    r = r.assign(k=r.groupby(["loss", "replicate"])["seed"].rank(method="first").astype(int))
    m = r.pivot_table(index=["replicate", "k"], columns="loss", values="final_metric", aggfunc="mean")
    return m.dropna(axis=1, how="any").sort_index()


def convergence_gains(curves: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Last-20% gain of each run: DataFrame indexed by trial_id with loss, final, before, gain.

    ``final``: the metric at the run's last report (highest ``training_iteration``); ``before``: the metric at its
    last report with ``step <= TAIL_START * budget_steps``; ``gain = final - before`` (NaN when there is no such
    report, or no curve at all). ``runs``: trial rows (``trial_id``, ``loss``, ``budget_steps``).
    """
    budget = runs.set_index("trial_id")["budget_steps"]
    c = curves[curves["trial_id"].isin(set(runs["trial_id"]))]
    rows = []
    for tid, loss in zip(runs["trial_id"], runs["loss"]):
        g = c[c["trial_id"] == tid].sort_values("training_iteration")
        final = before = math.nan
        if len(g):
            final = float(g["metric"].iloc[-1]) if pd.notna(g["metric"].iloc[-1]) else math.nan
            early = g[g["step"] <= TAIL_START * float(budget[tid])]
            if len(early) and pd.notna(early["metric"].iloc[-1]):
                before = float(early["metric"].iloc[-1])
        rows.append({"trial_id": tid, "loss": loss, "final": final, "before": before, "gain": final - before})
    out = pd.DataFrame(rows, columns=["trial_id", "loss", "final", "before", "gain"])
    return out.set_index("trial_id")


def group_gains(curves: pd.DataFrame, runs: pd.DataFrame) -> pd.Series:
    """Mean last-20% gain per loss over its ranked runs (runs without a gain are skipped; NaN if none has one)."""
    g = convergence_gains(curves, runs)
    return g.groupby("loss")["gain"].mean() if len(g) else pd.Series(dtype=float)


@dataclass
class CellStats:
    """Statistics of one (dataset, arch) cell. ``table`` has one row per loss, best first."""

    dataset: str
    arch: str
    primary: str
    table: pd.DataFrame
    n_cases: int = 0
    n_seeds: int = 0
    friedman: dict[str, float] | None = None
    p_holm: pd.DataFrame | None = None
    p_raw: pd.DataFrame | None = None
    nemenyi: pd.DataFrame | None = None
    mean_ranks: pd.Series | None = None
    top_group: list[str] = field(default_factory=list)
    nemenyi_top_group: list[str] = field(default_factory=list)
    separable: bool | None = None
    verdict: str = ""
    caveats: list[str] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    matrix: pd.DataFrame | None = None
    power: Any = None  # raysweep.power.PowerLimit of the complete cases and ranked losses; None when untested
    kendall_w: float = math.nan
    w_seeds: int = 0
    w_losses: int = 0
    not_converged: list[str] = field(default_factory=list)
    tests: Any = None  # raysweep.report.paired.PairTests of the ranking; None when untested
    claims: set = field(default_factory=set)  # (better, worse) pairs declared different (Holm, alpha)
    rank_samples: np.ndarray | None = None  # (bootstrap draws, losses) ranks, columns in table order
    n_replicates: int = 1  # the most replicates a loss has in the cell
    replicate_means: pd.DataFrame | None = None  # replicates x losses: each replicate's mean over the cases
    halves: dict[str, Any] | None = None  # in-run replication (split_half); None with fewer than 2 replicates
    replication_warning: str = ""  # set when tuning and training variance are not in the test (shown in red)

    @property
    def test_method(self) -> str:
        return self.tests.method if self.tests is not None else ""

    @property
    def winner(self) -> str | None:
        return None if self.table.empty else str(self.table.index[0])

    @property
    def spread(self) -> float:
        """Best minus worst mean primary metric of the ranked losses."""
        m = self.table["mean"].dropna()
        return float(m.max() - m.min()) if len(m) else math.nan


def titles_of(table: pd.DataFrame, losses: list[str], most: int = 6) -> str:
    """``"A, B and 3 more"``: the display titles of ``losses`` for a verdict sentence."""
    titles = [table.loc[x, "title"] for x in losses]
    return ", ".join(titles[:most]) + (f" and {len(titles) - most} more" if len(titles) > most else "")


def _tuning_gain(trials: pd.DataFrame, loss: str, ranked_mean: float) -> tuple[float, str]:
    """Tuned minus default primary metric, and where the default's score comes from."""
    g = trials[trials["loss"] == loss]
    conf_default = g[(g["stage"] == "confirm") & g["is_default"].astype(bool) & g["status"].isin(RANKED_STATUSES)]
    conf_tuned = g[(g["stage"] == "confirm") & ~g["is_default"].astype(bool) & g["status"].isin(RANKED_STATUSES)]
    if not conf_tuned.empty and not conf_default.empty:
        return float(conf_tuned["final_metric"].mean() - conf_default["final_metric"].mean()), "confirm"
    if conf_tuned.empty and not conf_default.empty:
        return 0.0, "default is best"
    tune_default = g[(g["stage"] == "tune") & g["is_default"].astype(bool)]
    full = tune_default[tune_default["status"].isin(RANKED_STATUSES)]
    if not full.empty and math.isfinite(ranked_mean):
        return float(ranked_mean - full["final_metric"].mean()), "tune default"
    if not tune_default.empty:
        return math.nan, "default " + "/".join(sorted(set(tune_default["status"])))
    return math.nan, "no default run"


def _params_text(text: Any) -> str:
    params = parse_json(text)
    parts = []
    for k, v in sorted(params.items()):
        parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(parts) or "(none)"


def replicate_configurations(params: dict[int, str]) -> str:
    """Each replicate's confirmed configuration (replicate number -> its text), replicates that confirmed the same
    one together, in the order each first appears: ``{0: "a=1", 1: "a=1", 2: "a=2", 3: "a=1"}`` gives
    ``"r0–r1, r3: a=1; r2: a=2"``. With 10 replicates that mostly agree, one entry instead of ten. A replicate with
    no confirmation run is absent, not renumbered: ``{0: "x", 2: "x"}`` gives ``"r0, r2: x"``."""
    together: dict[str, list[int]] = {}
    for i, p in sorted(params.items()):
        together.setdefault(p, []).append(i)
    return "; ".join(f"{_replicate_spans(ix)}: {p}" for p, ix in together.items())


def _replicate_spans(ix: list[int]) -> str:
    """``[0, 1, 2, 5]`` (ascending) -> ``"r0–r2, r5"``."""
    spans, start = [], ix[0]
    for prev, nxt in zip(ix, ix[1:] + [None]):
        if nxt != prev + 1:
            spans.append(f"r{start}" if start == prev else f"r{start}–r{prev}")
            start = nxt
    return ", ".join(spans)


def cell_stats(trials: pd.DataFrame, cases: pd.DataFrame, dataset: str, arch: str, alpha: float = ALPHA,
               n_boot: int = BOOTSTRAP, curves: pd.DataFrame | None = None) -> CellStats:
    """Ranking table and tests of one cell (see the module docstring for every convention).

    ``table`` columns: loss, title, family, in_survey, n_seeds, mean, ci_lo, ci_hi, rank (by mean; 1 = best),
    hd95, per-class ``class:<name>`` means, gain, gain_source, params, step_ms, peak_memory_mb, last20_gain (NaN
    without ``curves``), and, where per-case scores exist, mean_rank (rank-then-aggregate), rank_lo, rank_hi,
    p_first, p_vs_best (the pairwise test, Holm), top (in the top group); n_replicates, rep_sd, rep_min, rep_max
    (spread of the replicates' mean final metric) and replicate_params (replicate -> its confirmed configuration).
    """
    t = trials[(trials["dataset"] == dataset) & (trials["arch"] == arch)]
    runs = ranked_runs(t)
    primary = str(t["primary_metric"].mode().iloc[0]) if len(t) else "dice"
    names = display_names(trials)
    cm = class_metric(primary)
    rows = []
    class_names: list[str] = []
    for loss, g in runs.groupby("loss"):
        m, lo, hi = mean_ci(g["final_metric"].to_numpy(float))
        per_class: dict[str, list[float]] = {}
        for text in g["per_class"]:
            for key, v in parse_json(text).items():
                metric, _, cls = key.partition("/")
                if metric == (("miou" if primary == "miou" else cm)) and isinstance(v, (int, float)):
                    per_class.setdefault(cls, []).append(float(v))
        for cls in per_class:
            if cls not in class_names:
                class_names.append(cls)
        gain, source = _tuning_gain(t, loss, m)
        first = g.sort_values("seed").iloc[0]
        reps = g.groupby("replicate")
        rep_means = reps["final_metric"].mean()
        rows.append({
            "loss": loss, "title": names.get(loss, loss), "family": first["family"],
            "in_survey": bool(first["in_survey"]), "n_seeds": int(reps["seed"].nunique().min()),
            "n_replicates": int(len(rep_means)),
            "rep_sd": float(rep_means.std(ddof=1)) if len(rep_means) >= 2 else math.nan,
            "rep_min": float(rep_means.min()), "rep_max": float(rep_means.max()),
            "replicate_params": {int(i): _params_text(p.sort_values("seed")["params"].iloc[0]) for i, p in reps},
            "n_diverged": int((g["status"] == "diverged").sum()),
            "mean": m, "ci_lo": lo, "ci_hi": hi,
            "hd95": float(g["hd95"].mean()) if g["hd95"].notna().any() else math.nan,
            **{f"class:{c}": float(np.nanmean(v)) for c, v in per_class.items()},
            "gain": gain, "gain_source": source, "params": _params_text(first["params"]),
            "step_ms": float(g["step_ms"].median()) if g["step_ms"].notna().any() else math.nan,
            "peak_memory_mb": float(g["peak_memory_mb"].max()) if g["peak_memory_mb"].notna().any() else math.nan,
        })
    table = pd.DataFrame(rows)
    if table.empty:
        return CellStats(dataset, arch, primary, table, caveats=["No completed confirmation runs yet: nothing to "
                                                                  "rank in this cell."])
    table = table.set_index(table["loss"].rename(None)).sort_values(["mean", "loss"], ascending=[False, True])
    table["rank"] = sstats.rankdata(-table["mean"].fillna(-np.inf), method="min").astype(int)
    out = CellStats(dataset, arch, primary, table, n_seeds=int(table["n_seeds"].max()), class_names=class_names,
                    n_replicates=int(table["n_replicates"].max()))
    gains = group_gains(curves, runs) if curves is not None else pd.Series(dtype=float)
    table["last20_gain"] = [float(gains.get(x, math.nan)) for x in table.index]
    top = table.head(CONVERGENCE_TOP)
    out.not_converged = [str(x) for x in top.index[top["last20_gain"] >= CONVERGENCE_GAIN]]
    seeds = seed_matrix(runs)
    out.kendall_w, out.w_seeds, out.w_losses = kendall_w(seeds), seeds.shape[0], seeds.shape[1]
    _paired_tests(out, cases, runs, alpha, n_boot)
    return out


def _paired_tests(out: CellStats, cases: pd.DataFrame, runs: pd.DataFrame, alpha: float, n_boot: int) -> None:
    table = out.table
    k = len(table)
    if k < 2:
        out.verdict = "Only one loss has confirmation runs: nothing to compare."
        return
    scores = paired.replicate_scores(cases, runs, class_metric(out.primary))
    matrix = paired.loss_means(scores)
    missing = [loss for loss in table.index if loss not in matrix.columns]
    if matrix.empty or missing:
        out.verdict = "Not tested: per-case scores are missing" + (f" for {', '.join(missing)}" if missing and
                                                                    not matrix.empty else "") + "."
        out.caveats.append("The ranking orders mean scores over seeds only; without paired per-case scores for "
                           "every loss there is no significance test.")
        return
    order = [str(x) for x in table.index]
    out.replicate_means = paired.replicate_means(scores)[order]
    r = ranking(table, scores, alpha, n_boot)
    out.matrix, out.n_cases, out.power, out.mean_ranks, out.rank_samples = (r.matrix, r.n, r.power, r.mean_ranks,
                                                                          r.rank_samples)
    if r.tests is None:
        out.verdict = "Not tested: a single evaluation case."
        out.caveats.append("One case cannot support any test; the ranking is descriptive.")
        return
    out.friedman, out.nemenyi, out.nemenyi_top_group = r.friedman, r.nemenyi, r.nemenyi_top_group
    out.tests = tests = r.tests
    out.p_raw, out.p_holm, out.claims = tests.raw, tests.holm, r.claims
    out.top_group, out.separable, out.halves = r.top_group, r.separable, r.halves
    n, best = r.n, order[0]
    design = tests.design(n)
    best_title = table.loc[best, "title"]
    if out.separable:
        out.verdict = (f"{best_title} is best, separable from every other loss ({design}, Holm-corrected, alpha "
                       f"{alpha}).")
    else:
        out.verdict = (f"{best_title} has the best mean, but it is not separable from "
                       f"{titles_of(table, out.top_group[1:])} ({design}, Holm, alpha {alpha}): a tie at the top.")
    if not tests.replicate_aware:
        out.replication_warning = (
            f"Tuning and training variance are not in this test: {tests.why_cases_only}, so each loss's scores "
            "come from one tuning draw and its seeds, and a claim may not survive a re-run of the study with new "
            "tuning draws and seeds. Set tuning.replicates to 3 or more.")
    if not out.power.declarable:
        out.caveats.append("Design limit: " + out.power.sentence())
    if n < MIN_CASES:
        out.caveats.append(f"Only {n} paired cases: the tests have little power here, so 'not separable' means 'not "
                           f"shown to differ', not 'equal'.")
    if out.n_seeds < 3 and out.n_replicates < 2:
        out.caveats.append(f"{out.n_seeds} seed(s) per loss: the intervals over seeds are wide or undefined.")
    if k >= 10:
        out.caveats.append(f"{k} losses give {k * (k - 1) // 2} pairwise comparisons; Holm's correction keeps the "
                           "family-wise error at alpha, so only large differences are declared.")
