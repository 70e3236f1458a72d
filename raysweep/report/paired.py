"""The one paired-statistics pipeline of every ranking: per-case scores of each loss's replicates, the pairwise
tests, Holm's correction, the claims they support, and the bootstrap of ranks.

**The data.** A cell's scores are a cases x (loss, replicate) table (:func:`replicate_scores`): for each (loss,
replicate, case) the mean over classes of the class metric (Dice, or IoU for mIoU datasets), then the mean over the
replicate's confirmation seeds. A *replicate* is one independent run of a group's whole pipeline: its own Optuna
study, its own early-stopping bracket, its own training seeds (``tuning.replicates``). Only cases scored for every
(loss, replicate) enter (complete blocks).

**The test of a pair (X, Y).** With every loss of the cell at two or more replicates, the statistic is the
difference of the two losses' grand means, ``D = mean(X) - mean(Y)`` (over replicates and cases), and its error term
has the three sources a re-run of the study would draw anew or a new case set would change (a two-level nested
design; Bouthillier et al., "Accounting for variance in machine learning benchmarks", MLSys 2021, show that tuning
draws and training seeds each move results as much as the data do):

* ``v_X = s~_X^2 / R_X``: ``s_X^2`` is the variance of X's replicate means (each over the cases), so it holds X's
  tuning and training luck; ``s~_X^2`` is that variance *moderated* (below);
* ``v_Y = s~_Y^2 / R_Y``, the same for Y (the two losses' replicates are independent: not paired);
* ``v_C = var(d) / C``: ``d_c`` is the paired difference of the replicate-averaged scores on case ``c``, so it holds
  the cases' share (a claim should also hold on other cases of the same kind).

``t = D / sqrt(v_X + v_Y + v_C)`` with Welch-Satterthwaite degrees of freedom (Satterthwaite, Biometrics Bulletin
1946; Welch, Biometrika 1947), ``df = V^2 / sum(v_i^2 / df_i)``, two-sided p from Student's t (``v_C`` counts the
within-replicate noise a second time, of order ``1 / (R C)``: conservative).

*Moderation* (empirical Bayes; Smyth, "Linear models and empirical Bayes methods for assessing differential
expression in microarray experiments", Stat. Appl. Genet. Mol. Biol. 3(1), 2004, limma's ``squeezeVar``): with 3 to
5 replicates a loss's variance rests on 2 to 4 degrees of freedom, so by chance some losses look far steadier than
they are (three replicates that happen to agree) and others far noisier. Measured on the quick design (3
replicates, CNN, tuning seeds 0 and 100), plain Welch claims came from such lucky variances: 23 and 25 claims, none
of them made by both runs. The cell's losses share a prior for their replicate variances, a scaled inverse
chi-square ``(d0, s0^2)`` fitted to all of them (:func:`fit_prior`); each loss's variance becomes
``(d0 s0^2 + (R - 1) s^2) / (d0 + R - 1)`` with ``R - 1 + d0`` degrees of freedom. ``d0`` is estimated from how much
the variances spread: when they differ truly (a stable loss beside an unstable one), ``d0`` is small and each loss
keeps most of its own variance. Measured on the same pair of runs: 96 and 101 claims, 79 made by both, none
contradicted.

Why not a bootstrap over (replicate, case): with 3 to 5 replicates a percentile bootstrap underestimates the
replicate variance by ``(R - 1) / R`` and is discrete (3 replicates of X all above 3 of Y happens by chance 1 time in
20, yet gives a bootstrap p near 0), so its p-values are too small exactly where the replicates are few.

With one replicate per loss (``tuning.replicates: 1``, and every sweep from before replicates) the replicate terms
cannot be estimated; the test is then the two-sided Wilcoxon signed-rank test of the per-case differences (scipy,
``zero_method="zsplit"``), as before replicates, and the report says in red that tuning and training variance are not
in the test. A cell where some loss has one replicate and others more uses that case-level test too, and says which.

**Holm and the claims.** Holm's step-down correction over all ``k (k - 1) / 2`` pairs (:func:`holm`). A *claim* is a
pair whose adjusted p-value is below ``alpha``: "X beats Y", X the loss with the higher mean. The *top group* is the
best loss and every loss not claimed worse than it.

**Claims between two rankings** (:func:`compare_claims`): a pair claimed by one ranking is *replicated* when the
other claims it the same way, *contradicted* when the other claims the opposite, and *left open* when the other
declares no difference.

**Bootstrap of ranks** (:func:`bootstrap_ranks`): each draw resamples the cases with replacement (the same draw for
every loss: the blocks stay paired) and, within each loss, its replicates with replacement; the losses are ranked by
their resampled means (aggregate then rank; 1 = best). Gives each loss's rank distribution (median, 95% interval)
and its probability of ranking first. Two levels, as in challengeR's bootstrap (Wiesenfarth et al., Sci Rep 2021)
extended to the replicates.

Pure numpy/scipy/pandas; no Ray, no torch.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, special
from scipy import stats as sstats

__all__ = ["PairTests", "ReplicateVariance", "bootstrap_ranks", "claims", "compare_claims", "fit_prior", "holm",
           "loss_means", "moderate", "pairwise_tests", "replicate_means", "replicate_scores", "split_halves"]

#: The test names as the report's Methods and tables state them.
WELCH = "replicate-aware moderated t-test (Welch-Satterthwaite; replicates, cases)"
WILCOXON = "Wilcoxon signed-rank on cases"


def replicate_scores(cases: pd.DataFrame, runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per-case scores of the ranked runs: a DataFrame, cases x (loss, replicate) MultiIndex columns, complete cases
    only, sorted.

    ``cases``: the ``cases`` table (only ``confirm`` rows of ``runs``' trial ids are used: tuning rows score the
    selection cases). ``metric``: the class metric column (``dice`` or ``iou``). Values: the mean over classes per
    (trial, case), NaN classes skipped, then the mean over the replicate's seeds.
    """
    ids = set(runs.loc[runs["stage"] == "confirm", "trial_id"])
    c = cases[(cases["stage"] == "confirm") & cases["trial_id"].isin(ids)]
    if c.empty:
        return pd.DataFrame()
    rep = c["replicate"] if "replicate" in c.columns else pd.Series(0, index=c.index)
    c = c.assign(replicate=rep.fillna(0).astype(int))
    per_trial = c.groupby(["loss", "replicate", "trial_id", "case"])[metric].mean()
    per_rep = per_trial.groupby(["loss", "replicate", "case"]).mean().unstack(["loss", "replicate"])
    return per_rep.dropna(axis=0, how="any").sort_index().sort_index(axis=1)


def loss_means(scores: pd.DataFrame) -> pd.DataFrame:
    """cases x losses: each loss's per-case score averaged over its replicates."""
    return scores.T.groupby(level="loss").mean().T if not scores.empty else pd.DataFrame()


def replicate_means(scores: pd.DataFrame) -> pd.DataFrame:
    """replicates x losses: each replicate's mean score over the cases (NaN where a loss lacks that replicate)."""
    return scores.mean(axis=0).unstack("loss") if not scores.empty else pd.DataFrame()


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values of one family (any shape; NaN-free), in the input's order.

    Sorted ascending, the i-th smallest (0-based) is multiplied by ``m - i``, then made monotone with a cumulative
    maximum and clipped at 1 (equal to statsmodels' ``multipletests(method="holm")``).
    """
    p = np.asarray(pvalues, float)
    flat = p.ravel()
    m = len(flat)
    if m == 0:
        return p.copy()
    order = np.argsort(flat, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * flat[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out.reshape(p.shape)


@dataclass
class ReplicateVariance:
    """Each loss's replicate variance, moderated (:func:`moderate`): ``s2`` the sample variances of its replicate
    means, ``df`` theirs (``R - 1``), the prior ``d0`` / ``s0_2`` fitted over the cell's losses, and ``post`` /
    ``post_df`` the moderated variances and their degrees of freedom (``df + d0``; inf when ``d0`` is)."""

    s2: np.ndarray
    df: np.ndarray
    d0: float
    s0_2: float
    post: np.ndarray
    post_df: np.ndarray


def _trigamma(x):
    return special.polygamma(1, x)


def fit_prior(s2: np.ndarray, df: np.ndarray) -> tuple[float, float]:
    """The scaled inverse-chi-square prior ``(d0, s0^2)`` of a set of sample variances with ``df`` degrees of freedom
    each, by Smyth's moments of the log variances (Smyth 2004, section 6.2; limma's ``fitFDist``):
    ``e = log s^2 - digamma(df / 2) + log(df / 2)``; ``trigamma(d0 / 2) = var(e) - mean(trigamma(df / 2))``, solved
    for ``d0`` (``d0 = inf`` when the right side is not positive: the variances spread no more than chance allows);
    ``s0^2 = exp(mean(e) + digamma(d0 / 2) - log(d0 / 2))``. Zero variances take no part. ``(0, nan)`` with fewer
    than three positive variances (no prior: the variances are used as they are)."""
    s2, df = np.asarray(s2, float), np.asarray(df, float)
    ok = (s2 > 0) & np.isfinite(s2) & (df > 0)
    if ok.sum() < 3:
        return 0.0, math.nan
    e = np.log(s2[ok]) - special.digamma(df[ok] / 2) + np.log(df[ok] / 2)
    excess = float(e.var(ddof=1) - _trigamma(df[ok] / 2).mean())
    if excess <= 0:
        return math.inf, float(math.exp(e.mean()))
    d0 = 2 * optimize.brentq(lambda x: _trigamma(x) - excess, 1e-10, 1e10)
    return float(d0), float(math.exp(e.mean() + special.digamma(d0 / 2) - math.log(d0 / 2)))


def moderate(blocks: dict[str, np.ndarray]) -> ReplicateVariance:
    """Moderated replicate variances of a cell's losses (``{loss: replicates x cases array}``, every loss with 2 or
    more replicates): each loss's variance of its replicate means, shrunk towards the prior fitted over all losses
    (:func:`fit_prior`): ``post = (d0 s0^2 + df s^2) / (d0 + df)`` with ``df + d0`` degrees of freedom."""
    a = [x.mean(axis=1) for x in blocks.values()]
    s2 = np.array([v.var(ddof=1) for v in a])
    df = np.array([len(v) - 1.0 for v in a])
    d0, s0_2 = fit_prior(s2, df)
    if d0 == 0:
        post = s2.copy()
    elif math.isinf(d0):
        post = np.full_like(s2, s0_2)
    else:
        post = (d0 * s0_2 + df * s2) / (d0 + df)
    return ReplicateVariance(s2, df, d0, s0_2, post, df + d0)


def _welch(x: np.ndarray, y: np.ndarray, vx: tuple[float, float], vy: tuple[float, float]
           ) -> tuple[float, float, float, float]:
    """(D, standard error, df, two-sided p) of the replicate-aware test of one pair; ``x``, ``y``: replicates x
    cases arrays of the two losses, ``vx``, ``vy``: their (moderated) replicate variances and its degrees of freedom
    (see the module docstring)."""
    d = x.mean(axis=0) - y.mean(axis=0)
    c = len(d)
    diff = float(d.mean())
    parts = [(vx[0] / len(x), vx[1]), (vy[0] / len(y), vy[1])]
    if c >= 2:
        parts.append((d.var(ddof=1) / c, c - 1))
    v = sum(p for p, _ in parts)
    if v <= 0:
        return diff, 0.0, math.inf, (1.0 if diff == 0 else 0.0)
    # Satterthwaite: a term with infinite degrees of freedom (a known variance) adds nothing to the denominator.
    estimated = [p ** 2 / n for p, n in parts if p > 0 and math.isfinite(n)]
    df = v ** 2 / sum(estimated) if estimated else math.inf
    t = diff / math.sqrt(v)
    p = 2 * (sstats.t.sf(abs(t), df) if math.isfinite(df) else sstats.norm.sf(abs(t)))
    return diff, math.sqrt(v), float(df), float(p)


def _wilcoxon(d: np.ndarray) -> float:
    if not np.any(d):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ties and small samples: the p-value says what it can
        p = float(sstats.wilcoxon(d, zero_method="zsplit").pvalue)
    return p if math.isfinite(p) else 1.0


@dataclass
class PairTests:
    """All-pairs tests of one ranking. Square losses x losses frames (symmetric; 1.0 / 0.0 on the diagonal):
    ``raw`` and ``holm`` p-values, ``diff`` (row's mean minus column's), ``se`` and ``df`` (NaN for the Wilcoxon
    test). ``method``: :data:`WELCH` or :data:`WILCOXON`; ``replicates``: per loss, its replicates in the test;
    ``why_cases_only``: why the case-level test was used (empty for the replicate-aware one)."""

    raw: pd.DataFrame
    holm: pd.DataFrame
    diff: pd.DataFrame
    se: pd.DataFrame
    df: pd.DataFrame
    method: str
    replicates: dict[str, int]
    why_cases_only: str = ""
    variance: ReplicateVariance | None = None  # the moderated replicate variances (replicate-aware test only)

    @property
    def replicate_aware(self) -> bool:
        return self.method == WELCH

    def design(self, n_cases: int) -> str:
        """The test as a verdict names it: ``replicate-aware moderated t-test on 3 replicates x 32 paired cases``
        (``3+`` when some loss has more) or ``Wilcoxon signed-rank on 32 paired cases``."""
        if not self.replicate_aware:
            return f"Wilcoxon signed-rank on {n_cases} paired cases"
        low = min(self.replicates.values())
        more = "+" if max(self.replicates.values()) > low else ""
        return f"replicate-aware moderated t-test on {low}{more} replicates x {n_cases} paired cases"


def pairwise_tests(scores: pd.DataFrame, order: list[str] | None = None) -> PairTests:
    """All-pairs two-sided tests of a cases x (loss, replicate) table (:func:`replicate_scores`), Holm over the
    ``k (k - 1) / 2`` pairs. ``order``: the losses' order in the frames (default: the table's)."""
    losses = order or list(dict.fromkeys(scores.columns.get_level_values("loss")))
    blocks = {loss: scores[loss].to_numpy(float).T for loss in losses}  # replicates x cases
    reps = {loss: int(x.shape[0]) for loss, x in blocks.items()}
    single = [loss for loss, r in reps.items() if r < 2]
    aware = not single
    why = ("" if aware else "one replicate per loss (tuning.replicates: 1)" if len(single) == len(losses) else
           f"{', '.join(sorted(single))} ha{'s' if len(single) == 1 else 've'} a single replicate")
    k = len(losses)
    raw, diff, se, df = np.ones((k, k)), np.zeros((k, k)), np.full((k, k), math.nan), np.full((k, k), math.nan)
    iu = np.triu_indices(k, 1)
    var = moderate(blocks) if aware else None
    for i, j in zip(*iu):
        x, y = blocks[losses[i]], blocks[losses[j]]
        if aware:
            dij, sij, fij, p = _welch(x, y, (var.post[i], var.post_df[i]), (var.post[j], var.post_df[j]))
            se[i, j] = se[j, i] = sij
            df[i, j] = df[j, i] = fij
        else:
            d = x.mean(axis=0) - y.mean(axis=0)
            dij, p = float(d.mean()), _wilcoxon(d)
        raw[i, j] = raw[j, i] = p
        diff[i, j], diff[j, i] = dij, -dij
    adj = np.ones((k, k))
    if len(iu[0]):
        adj[iu] = holm(raw[iu])
        adj[(iu[1], iu[0])] = adj[iu]

    def frame(a):
        return pd.DataFrame(a, index=losses, columns=losses)

    return PairTests(frame(raw), frame(adj), frame(diff), frame(se), frame(df), WELCH if aware else WILCOXON, reps,
                     why, var)


def claims(tests: PairTests, alpha: float) -> set[tuple[str, str]]:
    """The pairs the ranking declares different at ``alpha`` (Holm-adjusted), as ``(better, worse)``."""
    out = set()
    losses = list(tests.holm.index)
    for i, x in enumerate(losses):
        for y in losses[i + 1:]:
            if tests.holm.loc[x, y] < alpha:
                d = tests.diff.loc[x, y]
                if d != 0:
                    out.add((x, y) if d > 0 else (y, x))
    return out


def compare_claims(a: set[tuple[str, str]], b: set[tuple[str, str]],
                   common: set[str] | None = None) -> dict[str, list[tuple[str, str]]]:
    """Claims of two rankings side by side, over the pairs claimed by either (both losses in ``common`` when given):
    ``replicated`` (claimed the same way by both), ``open`` (claimed by one, no difference in the other) and
    ``contradicted`` (claimed in opposite directions, listed as A claims it). Each list sorted."""
    if common is not None:
        a = {p for p in a if set(p) <= common}
        b = {p for p in b if set(p) <= common}
    replicated = a & b
    contradicted = {p for p in a if (p[1], p[0]) in b}
    opened = {p for p in a | b if p not in replicated and p not in contradicted and (p[1], p[0]) not in contradicted}
    return {"replicated": sorted(replicated), "open": sorted(opened), "contradicted": sorted(contradicted)}


def bootstrap_ranks(scores: pd.DataFrame, order: list[str], n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Two-level bootstrap of each loss's rank (module docstring): ``(summary, samples)``.

    ``summary``: indexed by loss (``order``) with ``rank_lo``, ``rank_median``, ``rank_hi`` (2.5%, 50%, 97.5%) and
    ``p_first`` (the share of draws in which the loss ranks first). ``samples``: the ``(n, k)`` int array of ranks,
    columns in ``order`` (for the rank-distribution plot). With one replicate per loss the draws are those of a
    case bootstrap (the same random numbers as before replicates existed).
    """
    n_cases = len(scores)
    rng = np.random.default_rng(seed)
    # Case weights as multinomial counts: (n, cases) @ (cases, ...) gives the draws' means without an (n, cases, k)
    # array.
    weights = rng.multinomial(n_cases, np.full(n_cases, 1.0 / n_cases), size=n).astype(float) / n_cases
    means = np.empty((n, len(order)))
    for j, loss in enumerate(order):
        x = scores[loss].to_numpy(float)  # cases x replicates
        r = x.shape[1]
        if r == 1:
            means[:, j] = weights @ x[:, 0]
        else:
            rw = rng.multinomial(r, np.full(r, 1.0 / r), size=n).astype(float) / r  # (n, replicates)
            means[:, j] = np.einsum("nc,cr,nr->n", weights, x, rw)
    ranks = sstats.rankdata(-means, axis=1, method="min").astype(int)
    summary = pd.DataFrame({
        "rank_lo": np.percentile(ranks, 2.5, axis=0),
        "rank_median": np.median(ranks, axis=0),
        "rank_hi": np.percentile(ranks, 97.5, axis=0),
        "p_first": (ranks == 1).mean(axis=0),
    }, index=order)
    return summary, ranks


def split_halves(scores: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The replicates split into two halves (the first ``ceil(R / 2)`` replicate indices of each loss, and the
    rest), each a table like ``scores``; None when some loss has fewer than 2 replicates."""
    halves: tuple[list, list] = ([], [])
    for loss in dict.fromkeys(scores.columns.get_level_values("loss")):
        reps = sorted(scores[loss].columns)
        if len(reps) < 2:
            return None
        cut = math.ceil(len(reps) / 2)
        halves[0].extend((loss, r) for r in reps[:cut])
        halves[1].extend((loss, r) for r in reps[cut:])
    return scores[halves[0]], scores[halves[1]]
