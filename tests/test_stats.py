"""Every number the report prints, against an independent computation on planted data.

Planted matrices are built here with numpy, written through the sweep's own writer (``report_fixture.
write_planted_cell``) and read back, so the path under test is the report's: Parquet -> ``stats.cell_stats``. The
expected values are computed here from the planted arrays with scipy/numpy calls or by hand, never with the code
under test.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sstats

from raysweep import results
from raysweep.power import power_limit
from raysweep.report import stats, tuning

from report_fixture import write_planted_cell

N_BOOT = 300


def read_cell(path, curves=True, **kw):
    f = results.read_results(path)
    return stats.cell_stats(f["trials"], f["cases"], "d", "m", n_boot=kw.pop("n_boot", N_BOOT),
                            curves=f["curves"] if curves else None, **kw), f


def holm_by_hand(p):
    """Holm: sort ascending, multiply the i-th (0-based) by m - i, cumulative maximum, clip at 1."""
    p = np.asarray(p, float)
    m = len(p)
    order = np.argsort(p)
    adj_sorted = np.minimum(1.0, np.maximum.accumulate([(m - i) * p[j] for i, j in enumerate(order)]))
    out = np.empty(m)
    out[order] = adj_sorted
    return out


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """5 losses x 3 seeds x 16 cases with graded effects (some pairs close, some far): a cell with every test."""
    rng = np.random.default_rng(7)
    n_cases, seeds = 16, 3
    base = rng.uniform(0.5, 0.7, n_cases)
    effects = {"a": 0.10, "b": 0.095, "c": 0.06, "d": 0.02, "e": 0.0}
    scores = {loss: base + eff + rng.normal(0, 0.01, (seeds, n_cases)) for loss, eff in effects.items()}
    path = tmp_path_factory.mktemp("planted")
    write_planted_cell(path, scores)
    cell, frames = read_cell(path)
    # The expected cases x losses matrix: mean over seeds per case (one class per case).
    matrix = pd.DataFrame({loss: s.mean(axis=0) for loss, s in scores.items()},
                          index=[f"case{i:03d}" for i in range(n_cases)])
    return {"scores": scores, "cell": cell, "matrix": matrix, "path": path, "frames": frames}


# -- Wilcoxon, Holm, top group -----------------------------------------------------------------------------------

def test_wilcoxon_uncorrected_and_holm(planted):
    cell, m = planted["cell"], planted["matrix"]
    losses = list(cell.table.index)
    pairs = [(i, j) for i in range(len(losses)) for j in range(i + 1, len(losses))]
    raw = [sstats.wilcoxon(m[losses[i]] - m[losses[j]], zero_method="zsplit").pvalue for i, j in pairs]
    adj = holm_by_hand(raw)
    for (i, j), r, h in zip(pairs, raw, adj):
        a, b = losses[i], losses[j]
        assert cell.p_raw.loc[a, b] == pytest.approx(r, rel=1e-12)
        assert cell.p_holm.loc[a, b] == pytest.approx(h, rel=1e-12)
        assert cell.p_holm.loc[b, a] == pytest.approx(h, rel=1e-12)
    assert not np.allclose(raw, adj)  # Holm does change these numbers: removing it must fail above
    best = losses[0]
    for other in losses[1:]:
        assert cell.table.loc[other, "p_vs_best"] == pytest.approx(cell.p_holm.loc[best, other])
    # The top group by hand: the best and every loss whose Holm p against it is not below alpha.
    k = {(losses[i], losses[j]): h for (i, j), h in zip(pairs, adj)}
    expected = [best] + [x for x in losses[1:] if k.get((best, x), k.get((x, best))) >= stats.ALPHA]
    assert cell.top_group == expected and set(expected) == {"a", "b"}


def test_holm_function_matches_statsmodels_definition():
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.5])
    assert np.allclose(stats.holm(p), holm_by_hand(p))
    assert np.allclose(stats.holm(p), [0.04, 0.09, 0.09, 0.025, 0.5])  # by hand: 5*.005, 4*.01, max(3*.03, 2*.04)


def test_top_group_separable_and_tied(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.uniform(0.4, 0.6, 20)
    jitter = np.where(np.arange(20) % 2 == 0, 0.001, -0.001)
    sep = {"win": base + 0.2, "x": base + rng.normal(0, 0.01, 20), "y": base - 0.1 + rng.normal(0, 0.01, 20)}
    write_planted_cell(tmp_path / "sep", {k: v[None] for k, v in sep.items()})
    cell, _ = read_cell(tmp_path / "sep")
    assert cell.winner == "win" and cell.top_group == ["win"] and cell.separable is True
    tie = {"t1": base + 0.2, "t2": base + 0.2 + jitter, "z": base}
    write_planted_cell(tmp_path / "tie", {k: v[None] for k, v in tie.items()})
    cell, _ = read_cell(tmp_path / "tie")
    assert set(cell.top_group) == {"t1", "t2"} and cell.separable is False
    assert cell.p_raw.loc["t1", "t2"] == pytest.approx(
        sstats.wilcoxon(tie["t1"] - tie["t2"], zero_method="zsplit").pvalue)


# -- ranks, means, intervals -------------------------------------------------------------------------------------

def test_mean_ranks_rank_then_aggregate_best_is_one(planted):
    cell, m = planted["cell"], planted["matrix"]
    x = m.to_numpy()
    # By hand: on each case the loss with the highest score gets rank 1 (no ties in continuous data).
    ranks = np.array([[1 + np.sum(row > v) for v in row] for row in x], float)
    expected = pd.Series(ranks.mean(axis=0), index=m.columns)
    for loss in m.columns:
        assert cell.table.loc[loss, "mean_rank"] == pytest.approx(expected[loss])
    assert cell.table.loc["a", "mean_rank"] < cell.table.loc["e", "mean_rank"]  # ascending ranks would flip this
    assert cell.table.loc["e", "mean_rank"] == pytest.approx(5.0)  # e is planted last on every case


def test_rank_column_and_winner(planted):
    cell, scores = planted["cell"], planted["scores"]
    means = {loss: float(s.mean(axis=1).mean()) for loss, s in scores.items()}  # mean over seeds of final_metric
    order = sorted(means, key=lambda k: -means[k])
    assert list(cell.table.index) == order and cell.winner == order[0] == "a"
    assert list(cell.table["rank"]) == [1, 2, 3, 4, 5]
    for loss in scores:
        assert cell.table.loc[loss, "mean"] == pytest.approx(means[loss])


def test_student_t_interval_n_minus_1_df(planted):
    cell, scores = planted["cell"], planted["scores"]
    for loss, s in scores.items():
        v = s.mean(axis=1)  # the 3 seeds' final metrics
        n = len(v)
        half = sstats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n)
        assert cell.table.loc[loss, "ci_lo"] == pytest.approx(v.mean() - half, rel=1e-10)
        assert cell.table.loc[loss, "ci_hi"] == pytest.approx(v.mean() + half, rel=1e-10)
        wrong = sstats.t.ppf(0.975, n) * v.std(ddof=1) / math.sqrt(n)  # n df: a visibly narrower interval
        assert abs((cell.table.loc[loss, "ci_hi"] - cell.table.loc[loss, "ci_lo"]) - 2 * wrong) > 1e-4


def bootstrap_by_loop(x, n, seed):
    """The same multinomial draws as stats.bootstrap_ranks, then one replicate at a time: resample the cases,
    mean per loss, rank (1 = best, ties to the lowest rank)."""
    rng = np.random.default_rng(seed)
    n_cases, k = x.shape
    draws = rng.multinomial(n_cases, np.full(n_cases, 1.0 / n_cases), size=n)
    ranks = np.empty((n, k))
    for b in range(n):
        idx = np.repeat(np.arange(n_cases), draws[b])
        means = x[idx].mean(axis=0)
        ranks[b] = [1 + np.sum(means > v) for v in means]
    return ranks


def test_bootstrap_rank_intervals(planted):
    m = planted["matrix"]
    got = stats.bootstrap_ranks(m, n=N_BOOT, seed=0)
    ranks = bootstrap_by_loop(m.to_numpy(), N_BOOT, 0)
    assert np.allclose(got["rank_lo"], np.percentile(ranks, 2.5, axis=0))
    assert np.allclose(got["rank_hi"], np.percentile(ranks, 97.5, axis=0))
    assert np.allclose(got["p_first"], (ranks == 1).mean(axis=0))
    cell = planted["cell"]  # the cell's table carries the same numbers (same seed, same n)
    assert np.allclose(cell.table.loc[m.columns, "rank_lo"], got["rank_lo"])
    assert np.allclose(cell.table.loc[m.columns, "p_first"], got["p_first"])
    # a and b are planted 0.005 apart: both can come first; e is planted last everywhere.
    assert got.loc["a", "rank_lo"] == 1 and got.loc["e", "rank_lo"] == got.loc["e", "rank_hi"] == 5


def test_bootstrap_dominant_loss_is_always_first():
    rng = np.random.default_rng(3)
    x = pd.DataFrame(rng.uniform(0, 0.5, (12, 4)), columns=list("pqrs"))
    x["p"] = x.max(axis=1) + 0.1  # best on every case
    got = stats.bootstrap_ranks(x, n=500, seed=5)
    assert got.loc["p", "rank_lo"] == got.loc["p", "rank_hi"] == 1 and got.loc["p", "p_first"] == 1.0


# -- Friedman, Iman-Davenport, Kendall's W ------------------------------------------------------------------------

def test_friedman_and_iman_davenport(planted):
    cell, m = planted["cell"], planted["matrix"]
    x = m.to_numpy()
    n, k = x.shape
    chi2, p = sstats.friedmanchisquare(*x.T)
    # By hand (no ties): ranks within each case, chi2 = 12 / (n k (k+1)) sum R_j^2 - 3 n (k+1).
    r = np.array([sstats.rankdata(row) for row in x]).sum(axis=0)
    assert chi2 == pytest.approx(12 / (n * k * (k + 1)) * np.sum(r ** 2) - 3 * n * (k + 1))
    f_id = (n - 1) * chi2 / (n * (k - 1) - chi2)
    assert cell.friedman["statistic"] == pytest.approx(chi2) and cell.friedman["pvalue"] == pytest.approx(p)
    assert cell.friedman["iman_davenport_f"] == pytest.approx(f_id)
    assert cell.friedman["iman_davenport_p"] == pytest.approx(sstats.f.sf(f_id, k - 1, (k - 1) * (n - 1)))


def w_by_identity(m):
    """Kendall's W = chi2_Friedman / (m (n - 1)), seeds as blocks (scipy applies the tie correction)."""
    x = np.asarray(m, float)
    raters, n = x.shape
    chi2, _ = sstats.friedmanchisquare(*x.T)
    return chi2 / (raters * (n - 1))


def test_kendall_w_without_and_with_ties():
    rng = np.random.default_rng(11)
    x = pd.DataFrame(rng.normal(size=(4, 6)) + np.arange(6), columns=list("abcdef"))
    assert stats.kendall_w(x) == pytest.approx(w_by_identity(x))
    tied = pd.DataFrame([[1, 1, 2, 3, 3], [2, 1, 1, 3, 4], [1, 2, 2, 2, 5]], columns=list("abcde"), dtype=float)
    assert stats.kendall_w(tied) == pytest.approx(w_by_identity(tied))
    # Without the tie correction W would differ here: the check above would catch its removal.
    r = np.array([sstats.rankdata(-row) for row in tied.to_numpy()])
    s = ((r.sum(0) - r.sum(0).mean()) ** 2).sum()
    assert abs(12 * s / (3 ** 2 * (5 ** 3 - 5)) - w_by_identity(tied)) > 1e-3
    same = pd.DataFrame([[3, 2, 1]] * 3, columns=list("abc"), dtype=float)
    assert stats.kendall_w(same) == pytest.approx(1.0)


def test_cell_kendall_w_over_seeds(planted):
    cell, scores = planted["cell"], planted["scores"]
    seeds_x_losses = np.column_stack([s.mean(axis=1) for s in scores.values()])  # final_metric per (seed, loss)
    assert cell.kendall_w == pytest.approx(w_by_identity(seeds_x_losses))
    assert (cell.w_seeds, cell.w_losses) == (3, 5)


# -- power ---------------------------------------------------------------------------------------------------------

def test_power_limit_of_the_cell(planted):
    cell = planted["cell"]
    assert cell.power == power_limit(16, 5, 0.05)
    # Independently: the smallest two-sided Wilcoxon p on 16 cases is 2 / 2**16 (exact), times 10 pairs.
    assert cell.power.min_p_adjusted == pytest.approx(10 * 2 / 2 ** 16) and cell.power.declarable


# -- selection cases never rank ----------------------------------------------------------------------------------

@pytest.mark.parametrize("same_ids", [False, True])
def test_tune_case_rows_change_no_ranking_number(tmp_path, planted, same_ids):
    """Tune-stage case rows with extreme values (the worst loss perfect, the best zero) leave every number alone,
    on their own case ids or even on the ranking cases' ids."""
    ids = [f"case{i:03d}" for i in range(16)] if same_ids else [f"sel{i:03d}" for i in range(16)]
    tune = {"e": np.ones(16), "a": np.zeros(16), "b": np.zeros(16), "c": np.zeros(16), "d": np.zeros(16)}
    write_planted_cell(tmp_path, planted["scores"], tune_cases=tune, tune_case_ids=ids)
    cell, frames = read_cell(tmp_path)
    assert (frames["cases"]["stage"] == "tune").sum() == 5 * 16  # they are there
    ref = planted["cell"]
    num = ["mean", "ci_lo", "ci_hi", "rank", "mean_rank", "rank_lo", "rank_hi", "p_first", "p_vs_best"]
    pd.testing.assert_frame_equal(cell.table[num], ref.table[num])
    pd.testing.assert_frame_equal(cell.matrix, ref.matrix)
    pd.testing.assert_frame_equal(cell.p_holm, ref.p_holm)
    assert cell.friedman == ref.friedman and cell.n_cases == ref.n_cases == 16 and cell.top_group == ref.top_group
    roles = tuning.case_roles(frames["cases"], None, "d")
    assert roles["overlap"] == (ids if same_ids else []) and roles["source"] == "cases table"
    assert roles["selection"]["cases"] == sorted(ids)


def test_case_roles_from_protocol():
    cases = pd.DataFrame({"dataset": ["d"] * 3, "stage": ["tune", "confirm", "confirm"], "case": ["v1", "t1", "t2"]})
    proto = {"selection": {"d": {"split": "val", "cases": ["v1", "v2"]}},
             "ranking": {"d": {"split": "test", "cases": ["t1", "t2"]}}}
    r = tuning.case_roles(cases, proto, "d")
    assert r["source"] == "protocol" and r["selection"] == {"split": "val", "cases": ["v1", "v2"]}
    assert r["ranking"]["split"] == "test" and r["overlap"] == []
    proto["ranking"]["d"]["cases"].append("v2")  # the protocol itself lists a case in both roles
    assert tuning.case_roles(cases, proto, "d")["overlap"] == ["v2"]


# -- convergence ---------------------------------------------------------------------------------------------------

def test_convergence_gain_planted_curves(tmp_path):
    rng = np.random.default_rng(2)
    base = rng.uniform(0.5, 0.6, 12)
    losses = {f"l{i}": base + 0.05 * (6 - i) for i in range(6)}  # l0 best ... l5 worst
    def steps(gain_at_80_to_100):
        # 0.49 before step 80, 0.5 at step 80 (the last report at or before 80% of the budget), then the gain
        return [(s, 0.49 if s < 80 else (0.5 if s == 80 else 0.5 + gain_at_80_to_100)) for s in range(10, 101, 10)]

    curves = {
        "l0": [steps(0.02)] * 3,  # gain 0.02 in every run: flagged (>= 0.02)
        "l1": [steps(0.019)] * 3,  # just below
        "l2": [[(25, 0.4), (50, 0.5), (75, 0.55), (100, 0.6)]] * 2 + [[(100, 0.7)]],  # 0.05, 0.05 and NaN -> 0.05
        "l3": [steps(0.0)] * 3, "l4": [steps(-0.01)] * 3,
        "l5": [steps(0.05)] * 3,  # large gain, but ranked 6th: outside the top 5, not flagged
    }
    write_planted_cell(tmp_path, {k: np.vstack([v] * 3) for k, v in losses.items()}, curves=curves)
    cell, frames = read_cell(tmp_path, n_boot=50)
    expected = {"l0": 0.02, "l1": 0.019, "l2": 0.05, "l3": 0.0, "l4": -0.01, "l5": 0.05}
    for loss, g in expected.items():
        assert cell.table.loc[loss, "last20_gain"] == pytest.approx(g, abs=1e-12), loss
    per_run = stats.convergence_gains(frames["curves"], stats.ranked_runs(frames["trials"]))
    assert math.isnan(per_run.loc["confirm-m-l2-s2", "gain"])  # no report at or before step 80
    assert list(cell.table.index) == list(losses) and cell.not_converged == ["l0", "l2"]
    assert stats.CONVERGENCE_GAIN == 0.02 and stats.CONVERGENCE_TOP == 5


# -- rungs and proposals -----------------------------------------------------------------------------------------

def test_rung_counts_planted_curves():
    reached = {"t0": 10, "t1": 8, "t2": 4, "t3": 3, "t4": 2, "t5": 1, "t6": 0}  # 0: no curve at all
    proposals = ["default", "random", "random", "model", "model", "model", None]
    trials = pd.DataFrame({
        "trial_id": list(reached), "stage": "tune", "dataset": "d", "arch": "m", "loss": "x",
        "proposal": proposals, "status": ["completed", "completed", "stopped", "stopped", "stopped", "stopped",
                                          "error"],
        "steps_done": [100, 100, 40, 30, 20, 10, 0], "budget_steps": 100})
    curves = pd.DataFrame([{"trial_id": t, "training_iteration": i, "step": 10 * i, "metric": 0.5}
                           for t, n in reached.items() for i in range(1, n + 1)])
    counts = tuning.rung_counts(trials, curves, "d", "m", [1, 2, 4, 8], 10)
    r = counts.loc["x"]
    by_hand = {m: sum(v >= m for v in reached.values()) for m in (1, 2, 4, 8, 10)}
    assert by_hand == {1: 6, 2: 5, 4: 3, 8: 2, 10: 1}
    assert {m: int(r[f"rung:{m}"]) for m in by_hand} == by_hand
    assert int(r["full_budget"]) == 2 and int(r["trials"]) == 7
    assert (int(r["proposal:default"]), int(r["proposal:random"]), int(r["proposal:model"]),
            int(r["proposal:fixed"]), int(r["proposal:unrecorded"])) == (1, 2, 3, 0, 1)
