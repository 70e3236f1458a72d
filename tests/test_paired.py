"""The paired-statistics pipeline (raysweep.report.paired) value by value on planted data, against independent
computations: scipy's Welch test, a hand-written loop, an enumeration of the bootstrap draws."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sstats

from raysweep.report import paired, stats

ALPHA = 0.05


def table(blocks: dict[str, np.ndarray]) -> pd.DataFrame:
    """cases x (loss, replicate) from ``{loss: replicates x cases array}``."""
    cols, data = [], []
    for loss, x in blocks.items():
        for r, row in enumerate(np.atleast_2d(x)):
            cols.append((loss, r))
            data.append(row)
    n = len(data[0])
    return pd.DataFrame(np.array(data).T, index=[f"c{i:02d}" for i in range(n)],
                        columns=pd.MultiIndex.from_tuples(cols, names=["loss", "replicate"]))


def welch_by_hand(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(t, df) of the three-component test, written with loops from the module docstring's formulas."""
    rx, c = x.shape
    ry = y.shape[0]
    a = [sum(x[r]) / c for r in range(rx)]
    b = [sum(y[s]) / c for s in range(ry)]
    d = [sum(x[r][i] for r in range(rx)) / rx - sum(y[s][i] for s in range(ry)) / ry for i in range(c)]

    def var(v):
        m = sum(v) / len(v)
        return sum((u - m) ** 2 for u in v) / (len(v) - 1)

    parts = [(var(a) / rx, rx - 1), (var(b) / ry, ry - 1), (var(d) / c, c - 1)]
    v = sum(p for p, _ in parts)
    df = v * v / sum(p * p / k for p, k in parts)
    return (sum(d) / c) / math.sqrt(v), df


def test_replicate_test_equals_welch_when_cases_add_no_variance():
    # Every case moves with its replicate (the per-case difference is the same on every case): the case term is 0
    # and the test is exactly Welch's t-test on the replicate means (scipy as the oracle).
    rng = np.random.default_rng(1)
    shape = rng.normal(0, 0.05, 12)
    x = np.array([0.70, 0.74, 0.69, 0.73])[:, None] + shape
    y = np.array([0.66, 0.64, 0.69])[:, None] + shape
    tests = paired.pairwise_tests(table({"x": x, "y": y}))
    ref = sstats.ttest_ind(x.mean(axis=1), y.mean(axis=1), equal_var=False)
    assert tests.method == paired.WELCH
    assert tests.raw.loc["x", "y"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert tests.df.loc["x", "y"] == pytest.approx(ref.df, rel=1e-9)
    assert tests.diff.loc["x", "y"] == pytest.approx(x.mean() - y.mean()) == -tests.diff.loc["y", "x"]


def test_replicate_test_matches_a_hand_computation_with_all_three_terms():
    rng = np.random.default_rng(7)
    x = 0.7 + rng.normal(0, 0.03, (3, 1)) + rng.normal(0, 0.05, (3, 20))
    y = 0.6 + rng.normal(0, 0.03, (4, 1)) + rng.normal(0, 0.05, (4, 20))
    tests = paired.pairwise_tests(table({"x": x, "y": y}))
    t, df = welch_by_hand(x, y)
    assert tests.df.loc["x", "y"] == pytest.approx(df, rel=1e-9)
    assert tests.raw.loc["x", "y"] == pytest.approx(2 * sstats.t.sf(abs(t), df), rel=1e-9)
    assert tests.se.loc["x", "y"] == pytest.approx(abs(tests.diff.loc["x", "y"] / t), rel=1e-9)


def test_cases_say_different_but_the_replicates_disagree_so_it_is_a_tie():
    # Within each replicate, x beats y on every one of 30 cases by a steady margin, so a case-level test on the
    # replicate-averaged scores declares them different; but x's replicates straddle y's (one replicate of x is far
    # below y): a re-run could order them either way. The replicate-aware test must say "tie".
    case = np.linspace(0.3, 0.9, 30)
    x = np.array([0.10, 0.12, -0.15])[:, None] + case
    y = np.array([0.00, 0.01, -0.01])[:, None] + case + 0.001 * np.sin(np.arange(30))
    scores = table({"x": x, "y": y})
    avg = paired.loss_means(scores)
    wilcoxon = sstats.wilcoxon(avg["x"] - avg["y"], zero_method="zsplit").pvalue
    assert wilcoxon < 1e-5  # the case-level test says "different"
    tests = paired.pairwise_tests(scores)
    assert tests.raw.loc["x", "y"] > ALPHA and paired.claims(tests, ALPHA) == set()


def test_a_planted_true_difference_is_claimed_and_its_direction_is_right():
    rng = np.random.default_rng(3)
    k, r, c = 6, 4, 32
    blocks = {f"l{i}": 0.5 + 0.08 * i + rng.normal(0, 0.01, (r, 1)) + rng.normal(0, 0.03, (r, c)) for i in range(k)}
    tests = paired.pairwise_tests(table(blocks))
    claims = paired.claims(tests, ALPHA)
    # Every pair is 0.08 or more apart with replicate sd 0.01: all 15 claimed, the higher mean better.
    assert claims == {(f"l{j}", f"l{i}") for i in range(k) for j in range(i + 1, k)}


def test_holm_decides_at_alpha_not_at_half_alpha():
    # Three pairs whose raw p-values are known exactly (Welch with no case variance, oracle: scipy): choose the
    # replicate means so that the largest Holm-adjusted p lies between alpha / 2 and alpha. It must be claimed; a
    # threshold at alpha / 2 would drop it.
    # Replicate sd 0.079 (var 0.00625), 5 replicates each: the standard error of a difference is 0.05 with 8 df, so a
    # gap of 0.125 gives t = 2.5, p = 0.037 (the largest p of the family: Holm leaves it as it is).
    flat = np.zeros(10)
    a = np.array([1.0, 1.1, 0.9, 1.05, 0.95])
    blocks = {"top": (a + 3.0)[:, None] + flat, "mid": (a + 0.125)[:, None] + flat, "low": a[:, None] + flat}
    tests = paired.pairwise_tests(table(blocks))
    raw = {pair: sstats.ttest_ind(blocks[pair[0]].mean(1), blocks[pair[1]].mean(1), equal_var=False).pvalue
           for pair in [("top", "mid"), ("top", "low"), ("mid", "low")]}
    order = sorted(raw, key=raw.get)
    adjusted = {}
    running = 0.0
    for i, pair in enumerate(order):
        running = max(running, (3 - i) * raw[pair])
        adjusted[pair] = min(1.0, running)
    for (x, y), p in adjusted.items():
        assert tests.holm.loc[x, y] == pytest.approx(p, rel=1e-9)
    assert ALPHA / 2 < adjusted[("mid", "low")] < ALPHA
    assert ("mid", "low") in paired.claims(tests, ALPHA)
    assert ("mid", "low") not in paired.claims(tests, ALPHA / 2)


def test_one_replicate_falls_back_to_wilcoxon_on_cases_as_before():
    rng = np.random.default_rng(5)
    m = pd.DataFrame(rng.uniform(0.4, 0.8, (16, 3)), columns=["a", "b", "c"])
    tests = paired.pairwise_tests(stats._one_replicate(m))
    assert tests.method == paired.WILCOXON and not tests.replicate_aware
    assert "one replicate per loss" in tests.why_cases_only
    ref = sstats.wilcoxon(m["a"] - m["c"], zero_method="zsplit").pvalue
    assert tests.raw.loc["a", "c"] == pytest.approx(ref, rel=1e-12)
    # A cell where one loss has a single replicate cannot estimate that loss's replicate variance: case test, named.
    mixed = table({"a": np.vstack([m["a"], m["a"] + 0.01]), "b": m["b"].to_numpy()[None]})
    t = paired.pairwise_tests(mixed)
    assert t.method == paired.WILCOXON and t.why_cases_only == "b has a single replicate"


def test_compare_claims_counts_replicated_open_and_contradicted():
    a = {("x", "y"), ("x", "z"), ("y", "z")}
    b = {("x", "y"), ("z", "x"), ("w", "y")}
    got = paired.compare_claims(a, b)
    assert got == {"replicated": [("x", "y")], "open": [("w", "y"), ("y", "z")], "contradicted": [("x", "z")]}
    assert paired.compare_claims(a, b, common={"x", "y", "z"})["open"] == [("y", "z")]


def test_two_level_bootstrap_equals_a_draw_by_draw_loop():
    rng = np.random.default_rng(11)
    blocks = {"a": rng.uniform(0.5, 0.9, (3, 8)), "b": rng.uniform(0.5, 0.9, (2, 8)), "c": rng.uniform(0.4, 0.8, 8)}
    scores = table(blocks)
    order = ["a", "b", "c"]
    summary, samples = paired.bootstrap_ranks(scores, order, n=300, seed=4)
    # The same random numbers, one draw at a time: case counts first (all draws), then each multi-replicate loss's
    # replicate counts, in order.
    g = np.random.default_rng(4)
    case_w = g.multinomial(8, np.full(8, 1 / 8), size=300) / 8
    rep_w = {loss: g.multinomial(len(blocks[loss]), np.full(len(blocks[loss]), 1 / len(blocks[loss])), size=300)
             / len(blocks[loss]) for loss in ("a", "b")}
    expect = np.empty((300, 3), int)
    for i in range(300):
        means = []
        for loss in order:
            x = np.atleast_2d(blocks[loss])
            w = rep_w[loss][i] if loss in rep_w else np.ones(1)
            per_case = (w[:, None] * x).sum(axis=0)
            means.append(float((case_w[i] * per_case).sum()))
        expect[i] = sstats.rankdata(-np.array(means), method="min")
    assert (samples == expect).all()
    assert summary.loc["a", "p_first"] == pytest.approx((expect[:, 0] == 1).mean())
    assert summary["rank_median"].tolist() == np.median(expect, axis=0).tolist()


def test_split_halves_take_the_first_half_of_each_loss_replicates():
    x = np.arange(5 * 4, dtype=float).reshape(5, 4)
    y = np.arange(3 * 4, dtype=float).reshape(3, 4)
    a, b = paired.split_halves(table({"x": x, "y": y}))
    assert list(a.columns) == [("x", 0), ("x", 1), ("x", 2), ("y", 0), ("y", 1)]
    assert list(b.columns) == [("x", 3), ("x", 4), ("y", 2)]
    assert paired.split_halves(table({"x": x, "y": y[:1]})) is None
