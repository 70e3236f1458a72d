"""The reviewer's views of a cell: bootstrap rank distribution (blob plot), pairwise significance map, P(first),
expected best selection score against the tuning budget (raysweep.report.budget) and the branches each loss's
tuning tried. Values are checked against independent computations (brute-force enumeration, direct counting)."""

from __future__ import annotations

import itertools
import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from raysweep import results
from raysweep.report import budget, build_report, plots, sections, stats

from report_fixture import CLEAR, TIE, make_fixture

URI = re.compile(r"^data:image/png;base64,[A-Za-z0-9+/=]{200,}$")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("views")
    make_fixture(out / "results")
    html = build_report(out / "results", out / "report.html", n_boot=300).read_text()
    return {"out": out, "html": html, "frames": results.read_results(out / "results")}


@pytest.fixture(scope="module")
def cells(sweep):
    f = stats.cell_view(sweep["frames"])
    return {cell: stats.cell_stats(f["trials"], f["cases"], *cell, n_boot=300, curves=f["curves"])
            for cell in (CLEAR, TIE)}


def section(html: str, cell: tuple[str, str]) -> str:
    m = re.search(r'<section id="(cell-\d+)">\s*<h2>' + re.escape(f"{cell[0]} / {cell[1]}"), html)
    assert m, cell
    start = m.start()
    return html[start:html.index("</section>", start)]


# -- expected maximum of n trials --------------------------------------------------------------------------------

def brute_without(values, n):
    return float(np.mean([max(c) for c in itertools.combinations(values, n)]))


def brute_with(values, n):
    return float(np.mean([max(c) for c in itertools.product(values, repeat=n)]))


@pytest.mark.parametrize("seed", range(4))
def test_expected_max_equals_the_mean_over_all_n_subsets(seed):
    rng = np.random.default_rng(seed)
    values = rng.normal(0.6, 0.1, size=int(rng.integers(2, 9)))
    curve = budget.expected_max(values)
    assert len(curve) == len(values)
    for n in range(1, len(values) + 1):
        want = brute_without(list(values), n)
        assert curve[n - 1] == pytest.approx(want, abs=1e-12)
        assert budget.expected_max(values, n) == pytest.approx(want, abs=1e-12)
    assert curve[0] == pytest.approx(values.mean()) and curve[-1] == values.max()
    assert np.all(np.diff(curve) >= -1e-12)  # more trials never lower the expected best


def test_expected_max_with_ties_and_nan_dropped():
    values = [0.5, 0.7, np.nan, 0.5, 0.7, 0.2, np.inf * 0, 0.5]
    finite = [0.5, 0.7, 0.5, 0.7, 0.2, 0.5]
    curve = budget.expected_max(values)
    assert len(curve) == len(finite)
    for n in range(1, len(finite) + 1):
        assert curve[n - 1] == pytest.approx(brute_without(finite, n), abs=1e-12)
    assert curve[1] == pytest.approx(brute_without(finite, 2))  # ties at the top: not double counted
    assert budget.expected_max([0.3, 0.3, 0.3]).tolist() == pytest.approx([0.3, 0.3, 0.3])


def test_expected_max_edge_cases():
    assert budget.expected_max([0.42]).tolist() == [0.42]
    assert budget.expected_max([0.42], 1) == 0.42
    assert budget.expected_max([np.nan, 0.42, np.nan]).tolist() == [0.42]
    assert len(budget.expected_max([])) == 0 and len(budget.expected_max([np.nan])) == 0
    for bad in (0, 4):
        with pytest.raises(ValueError):
            budget.expected_max([0.1, 0.2, 0.3], bad)
    big = np.random.default_rng(0).uniform(size=400)  # no overflow of the binomial coefficients
    c = budget.expected_max(big)
    assert np.isfinite(c).all() and c[0] == pytest.approx(big.mean()) and c[-1] == pytest.approx(big.max())


def test_dodge_with_replacement_is_a_different_estimator():
    values = [0.1, 0.4, 0.35, 0.8, 0.6]
    wr = budget.expected_max_with_replacement(values)
    wo = budget.expected_max(values)
    for n in range(1, len(values) + 1):  # the helper is Dodge et al.'s estimator: the mean over all n-tuples
        assert wr[n - 1] == pytest.approx(brute_with(values, n), abs=1e-12)
    assert wr[0] == pytest.approx(wo[0])  # one trial: both are the mean
    assert np.all(wr[1:] < wo[1:] - 1e-6)  # with replacement can draw a trial twice: biased low
    assert wo[-1] == max(values) and wr[-1] < max(values)


# -- curves and crossings ----------------------------------------------------------------------------------------

def test_curves_pool_tuning_trials_over_replicates_and_skip_unscored():
    rows = []

    def add(stage, loss, rep, metric, dataset="d", arch="m"):
        rows.append({"stage": stage, "dataset": dataset, "arch": arch, "loss": loss, "replicate": rep,
                     "final_metric": metric})

    a = {0: [0.5, 0.6, np.nan], 1: [0.55, 0.4]}
    for rep, ms in a.items():
        for m in ms:
            add("tune", "a", rep, m)
    for m in (0.7, 0.1, 0.3):
        add("tune", "b", 0, m)
    add("confirm", "a", 0, 0.99)  # confirmation runs are not tuning trials
    add("tune", "a", 0, 0.99, arch="other")  # another cell
    add("tune", "c", 0, np.nan)  # no scored trial: no curve
    cv = budget.curves(pd.DataFrame(rows), "d", "m")
    assert list(cv.columns) == ["a", "b"] and list(cv.index) == [1, 2, 3, 4] and cv.index.name == "n"
    pooled = [0.5, 0.6, 0.55, 0.4]
    assert cv["a"].tolist() == pytest.approx([brute_without(pooled, n) for n in range(1, 5)])
    assert cv["b"].iloc[:3].tolist() == pytest.approx([brute_without([0.7, 0.1, 0.3], n) for n in (1, 2, 3)])
    assert math.isnan(cv.loc[4, "b"])
    assert budget.curves(pd.DataFrame(rows), "d", "nothing").empty


def planted_curves():
    n = pd.RangeIndex(1, 7, name="n")
    return pd.DataFrame({
        "fast": [0.70, 0.72, 0.73, 0.735, 0.74, 0.74],  # best with few trials, overtaken from n = 3
        "slow": [0.60, 0.70, 0.75, 0.78, 0.80, 0.81],
        "flat": [0.50, 0.51, 0.52, 0.53, 0.54, 0.55],  # below both everywhere
        "twin": [0.70, 0.72, 0.73, 0.735, 0.74, 0.74],  # equal to fast: no sign, no crossing
        "back": [0.55, 0.71, 0.72, 0.76, 0.79, np.nan],  # below slow, above at 2, below again; one n shorter
    }, index=n)


def test_crossings_on_planted_curves():
    cv = planted_curves()
    found = budget.crossings(cv, ["fast", "slow", "flat", "twin"])
    assert [c["pair"] for c in found] == [("fast", "slow"), ("slow", "twin")]
    c = found[0]
    assert (c["first"], c["at"], c["last"], c["last_at"], c["n"]) == ("fast", 3, "slow", 6, 6)
    # Crossing and crossing back; the shorter curve is compared on the n both have.
    (c,) = budget.crossings(cv, ["slow", "back"])
    assert (c["first"], c["at"], c["last"], c["last_at"], c["n"]) == ("slow", 2, "slow", 5, 5)
    assert budget.crossings(cv, ["fast", "twin", "flat"]) == []
    assert budget.crossings(cv, ["slow", "missing"]) == []  # a loss without a curve is skipped


def test_flag_sentence_and_contenders():
    cv = planted_curves()
    titles = {"fast": "Fast loss", "slow": "Slow loss"}
    text = budget.flag_sentence(budget.crossings(cv, ["fast", "slow"]), ["fast", "slow"], titles)
    assert text == ("The winner depends on the tuning budget: Fast loss vs Slow loss (Fast loss ahead below 3 "
                    "trials, Slow loss from 3).")
    back = budget.flag_sentence(budget.crossings(cv, ["back", "slow"]), ["back", "slow"], {})
    assert back.endswith("(slow ahead below 2 trials, back from 2, slow again at 5).")
    none = budget.flag_sentence([], ["fast", "flat"], titles)
    assert none.startswith("No curves among Fast loss, flat cross")
    assert budget.contenders(["a", "b", "c", "d"], ["a"]) == ["a", "b", "c"]
    assert budget.contenders(["a", "b", "c", "d"], []) == ["a", "b", "c"]
    assert budget.contenders(["a", "b", "c", "d"], ["a", "d"]) == ["a", "d"]


def test_cell_view_of_the_fixture(sweep, cells):
    t = stats.cell_view(sweep["frames"])["trials"]
    clear = budget.cell_view(t, cells[CLEAR])
    assert clear["top"] == list(cells[CLEAR].table.index[:3])  # a single-loss top group: the 3 best by mean
    tie = budget.cell_view(t, cells[TIE])
    assert set(tie["top"]) == {"dice", "dice_ce"}  # the tied top group
    # Independent: dice in the cnn cell has one errored trial (no score) of 6, focal 10 scored trials.
    cv = clear["curves"]
    assert cv["dice"].notna().sum() == 5 and cv["focal"].notna().sum() == 10
    g = t[(t["stage"] == "tune") & (t["dataset"] == CLEAR[0]) & (t["arch"] == CLEAR[1]) & (t["loss"] == "dice")]
    v = g["final_metric"].dropna().tolist()
    assert cv["dice"].dropna().tolist() == pytest.approx([brute_without(v, n) for n in range(1, 6)])
    for view in (clear, tie):
        assert view["sentence"] == budget.flag_sentence(view["crossings"], view["top"],
                                                        cells[CLEAR if view is clear else TIE].table["title"])


# -- plots and their data -----------------------------------------------------------------------------------------

def test_rank_shares_count_the_bootstrap_draws(cells):
    c = cells[TIE]
    shares = plots.rank_shares(c)
    s = c.rank_samples
    assert list(shares.index) == list(c.table.index) and list(shares.columns) == [1, 2, 3, 4]
    for j, loss in enumerate(c.table.index):
        for r in range(1, 5):
            assert shares.loc[loss, r] == pytest.approx(np.mean(s[:, j] == r))
        assert shares.loc[loss, 1] == pytest.approx(c.table.loc[loss, "p_first"])
    assert shares.sum(axis=1).tolist() == pytest.approx([1.0] * 4)
    # The planted tie: dice and dice_ce share ranks 1-2, boundary is 3rd and focal 4th in every draw.
    assert shares.loc[["dice", "dice_ce"], [1, 2]].to_numpy().sum() == pytest.approx(2.0)
    assert shares.loc["boundary", 3] == 1.0 and shares.loc["focal", 4] == 1.0


def test_claim_grid_follows_the_holm_p_values(cells):
    for cell in (CLEAR, TIE):
        c = cells[cell]
        grid = plots.claim_grid(c)
        order = list(c.table.index)
        assert list(grid.index) == order == list(grid.columns)
        for a in order:
            for b in order:
                p, d = c.p_holm.loc[a, b], c.tests.diff.loc[a, b]
                want = 0 if a == b or not p < stats.ALPHA else (1 if d > 0 else -1)
                assert grid.loc[a, b] == want, (a, b)
    clear = plots.claim_grid(cells[CLEAR])
    assert (clear.loc["boundary"].drop("boundary") == 1).all()  # the planted clear winner beats every loss
    tie = plots.claim_grid(cells[TIE])
    assert tie.loc["dice", "dice_ce"] == 0 and tie.loc["dice_ce", "dice"] == 0  # the planted tie


def test_plots_draw_the_fixture_and_nothing_without_samples(sweep, cells):
    t = stats.cell_view(sweep["frames"])["trials"]
    for c in cells.values():
        view = budget.cell_view(t, c)
        for uri in (plots.rank_blobs(c), plots.significance_map(c),
                    plots.expected_max_curves(view["curves"], c, view["top"])):
            assert uri and URI.match(uri)
    bare = stats.CellStats("d", "m", "dice", cells[CLEAR].table.copy())
    assert bare.rank_samples is None and bare.p_holm is None
    assert plots.rank_blobs(bare) is None and plots.rank_shares(bare) is None
    assert plots.significance_map(bare) is None and plots.claim_grid(bare) is None
    assert plots.expected_max_curves(pd.DataFrame(index=pd.RangeIndex(1, 1, name="n")), bare, []) is None
    # Titles holding mathtext are drawn verbatim (no crash).
    odd = stats.CellStats("d", "m", "dice", cells[TIE].table.assign(title=["$x_1$", "$$", "a $b", "c"]),
                          rank_samples=cells[TIE].rank_samples, p_holm=cells[TIE].p_holm, claims=cells[TIE].claims)
    assert plots.rank_blobs(odd) and plots.significance_map(odd)


# -- the rendered report ------------------------------------------------------------------------------------------

def test_report_has_the_new_views_in_every_cell(sweep, cells):
    html = sweep["html"]
    for cell in (CLEAR, TIE):
        s = section(sweep["html"], cell)
        for name in ("rank-blobs", "significance", "budget-max"):
            m = re.search(r'<h3 id="cell-\d+-' + name + r'">[^<]+</h3>\s*<figure><img src="data:image/png;base64,',
                          s)
            assert m, (cell, name)
        assert "Rank distribution" in s and "Pairwise significance map" in s
        assert "Expected best score against tuning budget" in s
        assert "two-level bootstrap draws" in s and "Tang et al. 2020" in s
        view = budget.cell_view(stats.cell_view(sweep["frames"])["trials"], cells[cell])
        assert f'budget-flag">{view["sentence"]}</p>'.replace("'", "&#39;") in s
    assert html.count('class="caveat budget-flag"') + html.count('class="note budget-flag"') == 2
    assert "share of bootstrap draws over cases and replicates in which the loss ranks first" in html


# -- the branches each loss's tuning tried ----------------------------------------------------------------------

def test_tuning_table_lists_the_branches_tried(sweep, cells):
    f = stats.cell_view(sweep["frames"])
    trials, curves = f["trials"].copy(), f["curves"]
    sel = (trials["stage"] == "tune") & (trials["arch"] == CLEAR[1]) & (trials["loss"] == "dice")
    ids = sorted(trials.loc[sel, "trial_id"])  # tune-cnn-dice-0..5; #4 errored (no score)
    region = {0: "dice", 1: "generalized_dice", 2: "dice", 3: "generalized_dice", 4: "tversky", 5: "dice"}
    for tid in ids:
        i = int(tid.rsplit("-", 1)[1])
        trials.loc[trials["trial_id"] == tid, "params"] = json.dumps(
            {"region": region[i], "squared": i % 2 == 1, "levels": 2, "w": 0.1 * i})
    assert trials.loc[trials["trial_id"] == "tune-cnn-dice-4", "final_metric"].isna().all()

    def branches(spaces):
        t = sections.tuning_section(trials, curves, cells[CLEAR], None, spaces)["table"]
        head = [c["label"] for c in t["columns"]]
        rows = {r[0]["text"]: dict(zip(head, r)) for r in t["rows"]}
        return rows["Dice (dice)"]["Branches tried"], rows["Focal (focal)"]["Branches tried"]

    # Without sweep.json's spaces: strings and booleans are categorical; the int and the float are not.
    dice, focal = branches(None)
    assert dice["text"] == "region: dice, generalized_dice, tversky (no score); squared: false, true"
    assert dice["title"] == "region: dice 3, generalized_dice 2, tversky 1; squared: false 3, true 3"
    assert focal["text"] == "–"  # only float hyperparameters
    # With the spaces: the space's categorical dimensions, its choices' order, and the choices never tried.
    spaces = {"dice": {"region": {"type": "categorical", "choices": ["tversky", "dice", "generalized_dice",
                                                                     "lovasz"]},
                       "squared": {"type": "categorical", "choices": [True, False]},
                       "levels": {"type": "categorical", "choices": [2, 3]},
                       "w": {"type": "float", "low": 0.0, "high": 1.0, "log": False}}}
    dice, focal = branches(spaces)
    assert dice["text"] == ("region: tversky (no score), dice, generalized_dice (not tried: lovasz); "
                            "squared: true, false; levels: 2 (not tried: 3)")
    # The fixture itself has no categorical hyperparameter.
    t = sections.tuning_section(f["trials"], curves, cells[CLEAR], None)["table"]
    col = [c["label"] for c in t["columns"]].index("Branches tried")
    assert {r[col]["text"] for r in t["rows"]} == {"–"}
