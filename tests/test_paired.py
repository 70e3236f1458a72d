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
    # and, with two losses (too few to fit a prior for their variances: no moderation), the test is exactly Welch's
    # t-test on the replicate means (scipy as the oracle).
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


def trigamma_inverse(x: float) -> float:
    """limma's trigammaInverse (Smyth 2004): Newton's method on 1 / trigamma, from y = 0.5 + 1 / x."""
    from scipy.special import polygamma

    y = 0.5 + 1.0 / x
    for _ in range(50):
        tri = float(polygamma(1, y))
        dif = tri * (1 - tri / x) / float(polygamma(2, y))
        y += dif
        if -dif / y < 1e-12:
            break
    return y


def prior_by_hand(s2, df):
    """Smyth's moment estimates of (d0, s0^2), written out with loops and another solver."""
    from scipy.special import digamma, polygamma

    e = [math.log(v) - digamma(d / 2) + math.log(d / 2) for v, d in zip(s2, df)]
    m = sum(e) / len(e)
    excess = sum((x - m) ** 2 for x in e) / (len(e) - 1) - sum(polygamma(1, d / 2) for d in df) / len(df)
    if excess <= 0:
        return math.inf, math.exp(m)
    d0 = 2 * trigamma_inverse(excess)
    return d0, math.exp(m + digamma(d0 / 2) - math.log(d0 / 2))


def test_prior_of_the_replicate_variances_equals_smyths_moments():
    rng = np.random.default_rng(8)
    df = np.full(40, 2.0)
    sigma2 = 0.01 ** 2 * 6 / rng.chisquare(6, 40)  # true variances from a scaled inverse chi-square, d0 = 6
    s2 = sigma2 * rng.chisquare(2, 40) / 2
    d0, s0 = paired.fit_prior(s2, df)
    ref = prior_by_hand(s2, df)
    assert d0 == pytest.approx(ref[0], rel=1e-8) and s0 == pytest.approx(ref[1], rel=1e-8)
    assert 1 < d0 < 40  # a finite prior, of the size planted
    assert paired.fit_prior(np.full(5, 0.02), np.full(5, 2.0)) == (math.inf, pytest.approx(prior_by_hand(
        [0.02] * 5, [2.0] * 5)[1]))  # no spread beyond chance: one common variance
    assert paired.fit_prior(np.array([0.1, 0.0, 0.2]), np.full(3, 2.0))[0] == 0.0  # two positive: no prior


def test_moderated_test_matches_a_hand_computation():
    rng = np.random.default_rng(12)
    sds = {"a": 0.005, "b": 0.03, "c": 0.01, "d": 0.06}
    blocks = {k: 0.6 + rng.normal(0, sd, (3, 1)) + rng.normal(0, 0.02, (3, 16)) for k, sd in sds.items()}
    tests = paired.pairwise_tests(table(blocks))
    s2 = [np.var(b.mean(axis=1), ddof=1) for b in blocks.values()]
    d0, s0 = prior_by_hand(s2, [2.0] * 4)
    assert math.isfinite(d0)
    post = {k: (d0 * s0 + 2 * v) / (d0 + 2) for k, v in zip(blocks, s2)}
    assert list(tests.variance.post) == pytest.approx(list(post.values()), rel=1e-8)
    for x in blocks:
        for y in blocks:
            if x >= y:
                continue
            d = blocks[x].mean(axis=0) - blocks[y].mean(axis=0)
            parts = [(post[x] / 3, d0 + 2), (post[y] / 3, d0 + 2), (np.var(d, ddof=1) / 16, 15)]
            v = sum(p for p, _ in parts)
            df = v * v / sum(p * p / n for p, n in parts)
            ref = 2 * sstats.t.sf(abs(d.mean()) / math.sqrt(v), df)
            assert tests.raw.loc[x, y] == pytest.approx(ref, rel=1e-8) and tests.df.loc[x, y] == pytest.approx(df)


def test_lucky_small_variances_no_longer_make_claims_on_their_own():
    # Ten losses; eight have a replicate sd of about 0.03, and two of them, 0.03 apart, have three replicates that
    # happen to agree to 0.004. Plain Welch takes that at face value and declares their gap even after multiplying by
    # all 45 pairs (Holm's strictest step); moderated, their variances are pulled towards the others' and it is a tie.
    rng = np.random.default_rng(21)
    flat = np.zeros(16)
    blocks = {f"l{i}": (0.3 + 0.03 * i + np.array([-0.03, 0.0, 0.03]) + rng.normal(0, 0.01, 3))[:, None] + flat
              for i in range(8)}
    blocks["lucky1"] = (0.72 + np.array([-0.004, 0.0, 0.004]))[:, None] + flat
    blocks["lucky2"] = (0.69 + np.array([-0.004, 0.0, 0.004]))[:, None] + flat
    tests = paired.pairwise_tests(table(blocks))
    welch = sstats.ttest_ind(blocks["lucky1"].mean(1), blocks["lucky2"].mean(1), equal_var=False).pvalue
    assert welch * 45 < ALPHA  # unmoderated: declared even at Holm's strictest step
    assert tests.variance.post[-1] > 10 * tests.variance.s2[-1]
    assert tests.holm.loc["lucky1", "lucky2"] >= ALPHA and ("lucky1", "lucky2") not in paired.claims(tests, ALPHA)


def test_holm_decides_at_alpha_not_at_half_alpha():
    # Three losses whose replicate means spread alike (no spread of the variances beyond chance: d0 = inf, a common
    # known variance, a normal test; the raw p-values are computed here from the formula). The gap of 'mid' over
    # 'low' is chosen so that its Holm-adjusted p (the family's largest) lies between alpha / 2 and alpha: it must be
    # claimed, and a threshold at alpha / 2 would drop it.
    flat = np.zeros(10)
    a = np.array([1.0, 1.1, 0.9, 1.05, 0.95])
    blocks = {"top": (a + 3.0)[:, None] + flat, "mid": (a + 0.12)[:, None] + flat, "low": a[:, None] + flat}
    tests = paired.pairwise_tests(table(blocks))
    d0, s0 = prior_by_hand([np.var(a, ddof=1)] * 3, [4.0] * 3)
    assert d0 == math.inf and tests.variance.d0 == math.inf
    se = math.sqrt(2 * s0 / 5)
    raw = {pair: 2 * sstats.norm.sf(abs(blocks[pair[0]].mean() - blocks[pair[1]].mean()) / se)
           for pair in [("top", "mid"), ("top", "low"), ("mid", "low")]}
    order = sorted(raw, key=raw.get)
    adjusted = {}
    running = 0.0
    for i, pair in enumerate(order):
        running = max(running, (3 - i) * raw[pair])
        adjusted[pair] = min(1.0, running)
    for (x, y), p in adjusted.items():
        assert tests.holm.loc[x, y] == pytest.approx(p, rel=1e-9, abs=1e-300)
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
