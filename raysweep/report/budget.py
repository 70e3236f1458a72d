"""Expected best selection score against the tuning budget: would another budget have picked another winner?

Dodge et al. ("Show your work: improved reporting of experimental results", EMNLP 2019) report, for each model,
the *expected validation performance* of the best of ``n`` hyperparameter trials as a function of ``n``: a model
that wins with 50 trials may lose with 5. Their estimator draws the ``n`` trials *with* replacement from the ``N``
observed ones::

    E_wr[max_n] = sum_{i=1}^{N} v_(i) * ((i / N)^n - ((i - 1) / N)^n)

with ``v_(1) <= ... <= v_(N)`` the observed scores sorted ascending. Tang et al. ("Showing your work doesn't always
work", Findings of ACL 2020) show that it is biased (it can pick one trial twice, so at ``n = N`` it stays below the
observed maximum) and give the unbiased estimator of the expected maximum of ``n`` trials drawn *without*
replacement from the ``N`` observed ones, the one used here (:func:`expected_max`)::

    E[max_n] = sum_{i=n}^{N} v_(i) * C(i - 1, n - 1) / C(N, n),    n = 1..N

(``C(i - 1, n - 1) / C(N, n)`` is the probability that ``v_(i)`` is the largest of a random ``n``-subset: the other
``n - 1`` come from the ``i - 1`` values below it). ``E[max_1]`` is the mean of the values and ``E[max_N]`` their
maximum. Ties are handled by the formula as they are (it is exact over the ``C(N, n)`` subsets of positions).

**What goes in** (:func:`curves`): per loss of a cell, its tuning trials pooled over all replicates of its group
(each replicate is its own Optuna study; pooling estimates what one study would have found with ``n`` trials), each
at its ``final_metric``: the selection score the search saw (on the selection cases, never the ranking ones). Trials
without a finite score (out of memory, errors) are left out; early-stopped trials (ASHA) count at their last score,
which is what the search compared; diverged trials at the worst score they reported. The trials are not i.i.d.
draws from one distribution: each study evaluates the defaults first, then the stratified branches of its
categorical choices, then TPE's proposals, which depend on the earlier trials. So the curve is a *descriptive*
estimate of "the best of ``n`` of these trials", not the expected result of a fresh search with budget ``n``.

**Crossings** (:func:`crossings`): two losses' curves *cross* when the sign of their difference changes over the
``n`` both have (exact ties skipped): the loss with the better expected best score depends on the tuning budget.
Checked among the cell's contenders (:func:`contenders`): its top group, or its 3 best losses by mean when the top
group is a single loss (or was not tested).

numpy and pandas only; no Ray, no torch, no plotting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["contenders", "crossings", "curves", "expected_max", "expected_max_with_replacement", "flag_sentence",
           "cell_view"]

#: How many of a cell's best losses (by mean) are checked for crossings when its top group is a single loss.
TOP_K = 3
#: Differences of two curves at most this large count as ties (no sign) when looking for a crossing.
TIE_TOL = 1e-12


def _finite_sorted(values: Any) -> np.ndarray:
    v = np.asarray(values, float).ravel()
    return np.sort(v[np.isfinite(v)])


def _log_comb_table(n_max: int) -> np.ndarray:
    """``lf[k] = log(k!)`` for k = 0..n_max."""
    return np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n_max + 1, dtype=float)))])


def expected_max(values: Any, n: int | None = None) -> float | np.ndarray:
    """The unbiased expected maximum of ``n`` values drawn without replacement from ``values`` (Tang et al. 2020;
    module docstring). NaN and infinite values are dropped first (``N`` counts the finite ones).

    ``n``: an int in ``1..N`` gives a float; None gives the whole curve, an array of length ``N`` for n = 1..N
    (empty when no value is finite). Raises ValueError for an ``n`` outside ``1..N``.
    """
    v = _finite_sorted(values)
    big_n = len(v)
    if n is not None:
        n = int(n)
        if not 1 <= n <= big_n:
            raise ValueError(f"n must be in 1..{big_n} (the finite values), got {n}")
    if big_n == 0:
        return np.empty(0)
    lf = _log_comb_table(big_n)
    ns = range(1, big_n + 1) if n is None else [n]
    out = np.empty(len(ns))
    for j, m in enumerate(ns):  # one n at a time: O(N) memory however many trials
        a = np.arange(m - 1, big_n)  # i - 1 for i = m..N
        log_w = lf[a] - lf[m - 1] - lf[a - (m - 1)] - (lf[big_n] - lf[m] - lf[big_n - m])
        w = np.exp(log_w)
        out[j] = (w @ v[m - 1:]) / w.sum()  # the exact weights sum to 1; dividing removes the logs' rounding
    return float(out[0]) if n is not None else out


def expected_max_with_replacement(values: Any, n: int | None = None) -> float | np.ndarray:
    """Dodge et al.'s (2019) estimator: the expected maximum of ``n`` values drawn *with* replacement from the
    finite ``values`` (module docstring). Shown for comparison; biased below the observed maximum at ``n = N``.
    ``n``: int >= 1 (a float), or None for n = 1..N (an array)."""
    v = _finite_sorted(values)
    big_n = len(v)
    if n is not None and int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if big_n == 0:
        return np.empty(0) if n is None else math.nan
    ns = np.arange(1, big_n + 1) if n is None else np.array([int(n)])
    q = np.arange(big_n + 1) / big_n
    w = q[None, 1:] ** ns[:, None] - q[None, :-1] ** ns[:, None]
    out = w @ v
    return float(out[0]) if n is not None else out


def curves(trials: pd.DataFrame, dataset: str, arch: str) -> pd.DataFrame:
    """Per loss of the cell, the curve of :func:`expected_max` over n of its tuning trials' ``final_metric``
    (pooled over replicates; trials without a finite score left out; see the module docstring).

    Returns a DataFrame indexed by ``n`` (1..the most scored trials of any loss, named ``n``), one column per loss
    (sorted), NaN past a loss's own ``N``; empty when the cell has no scored tuning trial.
    """
    t = trials[(trials["stage"] == "tune") & (trials["dataset"] == dataset) & (trials["arch"] == arch)]
    cols: dict[str, np.ndarray] = {}
    for loss, g in t.groupby("loss", sort=True):
        c = expected_max(pd.to_numeric(g["final_metric"], errors="coerce").to_numpy(float))
        if len(c):
            cols[str(loss)] = c
    if not cols:
        return pd.DataFrame(index=pd.RangeIndex(1, 1, name="n"))
    longest = max(len(c) for c in cols.values())
    index = pd.RangeIndex(1, longest + 1, name="n")
    return pd.DataFrame({k: np.pad(c, (0, longest - len(c)), constant_values=np.nan) for k, c in cols.items()},
                        index=index)


def contenders(order: Sequence[str], top_group: Sequence[str], k: int = TOP_K) -> list[str]:
    """The losses whose curves are compared: the top group when it holds two or more losses, else the ``k`` best
    of ``order`` (the ranking, best first)."""
    top = [str(x) for x in top_group]
    return top if len(top) >= 2 else [str(x) for x in list(order)[:k]]


def crossings(curves: pd.DataFrame, top: Sequence[str]) -> list[dict[str, Any]]:
    """The pairs among ``top`` (losses with a curve) whose curves cross: the sign of their difference changes over
    the ``n`` both curves have (``|difference| <= TIE_TOL`` counts as no sign).

    Each crossing is a dict: ``pair`` (the two losses in ``top``'s order), ``first`` (the loss ahead at the
    smallest n with a sign), ``at`` (the first n at which ``first`` is no longer ahead), ``last`` (ahead at the
    largest n with a sign, ``last_at``; equal to ``first`` when the curves cross back) and ``n`` (how many n both
    curves have).
    """
    present = [x for x in top if x in curves.columns]
    out = []
    for i, a in enumerate(present):
        for b in present[i + 1:]:
            both = curves[[a, b]].dropna()
            d = (both[a] - both[b]).to_numpy(float)
            signed = np.abs(d) > TIE_TOL
            s = np.sign(d[signed])
            if len(s) < 2 or (s > 0).all() or (s < 0).all():
                continue
            ns = both.index.to_numpy()[signed]
            flip = int(np.argmax(s != s[0]))
            out.append({"pair": (a, b), "first": a if s[0] > 0 else b, "at": int(ns[flip]),
                        "last": a if s[-1] > 0 else b, "last_at": int(ns[-1]), "n": len(both)})
    return out


def flag_sentence(found: list[dict[str, Any]], top: Sequence[str], titles: dict[str, str]) -> str:
    """The report's line under the curves: the crossing pairs, or that none of ``top`` cross."""
    def name(x: str) -> str:
        return str(titles.get(x, x))

    if len(top) < 2:
        return "Fewer than two losses to compare: no crossing to look for."
    if not found:
        return (f"No curves among {', '.join(name(x) for x in top)} cross: the same loss leads at every tuning "
                "budget up to the trials run.")
    parts = []
    for c in found:
        first = c["first"]
        other = c["pair"][1] if first == c["pair"][0] else c["pair"][0]
        text = (f"{name(first)} vs {name(other)} ({name(first)} ahead below {c['at']} trials, {name(other)} from "
                f"{c['at']}")
        if c["last"] == first:
            text += f", {name(first)} again at {c['last_at']}"
        parts.append(text + ")")
    return "The winner depends on the tuning budget: " + "; ".join(parts) + "."


def cell_view(trials: pd.DataFrame, cell: Any) -> dict[str, Any]:
    """Everything the report shows for one cell (``cell``: a :class:`raysweep.report.stats.CellStats`): the
    ``curves``, the contenders (``top``), the ``crossings`` among them and the flag ``sentence`` (None when the
    cell has no scored tuning trial or nothing ranked)."""
    cv = curves(trials, cell.dataset, cell.arch)
    order = list(cell.table.index) if not cell.table.empty else []
    top = [x for x in contenders(order, cell.top_group) if x in cv.columns]
    found = crossings(cv, top)
    titles = cell.table["title"].to_dict() if not cell.table.empty else {}
    sentence = None if cv.empty or not order else flag_sentence(found, top, titles)
    return {"curves": cv, "top": top, "crossings": found, "sentence": sentence}
