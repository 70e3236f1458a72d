"""`raysweep compare`: agreement of two sweeps' rankings, against planted rankings and scipy."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as sstats

from raysweep import cli
from raysweep.report import compare as cmp

from report_fixture import write_planted_cell

LOSSES = ["a", "b", "c", "d", "e"]


def planted(path, effects, *, titles=None, dataset="d", arch="m", seed=0):
    """Separable losses: ``effects`` loss -> shift over a shared base (0.1 apart: every pair separable)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.4, 0.5, 16)
    scores = {loss: np.vstack([base + eff + rng.normal(0, 0.002, 16) for _ in range(2)])
              for loss, eff in effects.items()}
    write_planted_cell(path, scores, titles=titles, dataset=dataset, arch=arch)
    return scores


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    order = {loss: 0.1 * (5 - i) for i, loss in enumerate(LOSSES)}  # a best ... e worst
    planted(root / "a", order)
    planted(root / "a2", order, seed=1)  # same order, other noise
    planted(root / "rev", {loss: 0.1 * i for i, loss in enumerate(LOSSES)})  # e best ... a worst
    swapped = dict(order, a=order["c"], c=order["a"])  # c best, a third
    planted(root / "swap", swapped)
    planted(root / "other", order, dataset="elsewhere")
    return root


def test_identical_order_tau_one(sweeps):
    (c,) = cmp.compare(sweeps / "a", sweeps / "a2")["cells"]
    assert c["tau"] == pytest.approx(1.0) and c["top_overlap"] == 3 and c["k"] == 3
    assert c["winners_agree"] is True and c["winner_a"] == c["winner_b"] == "a"
    assert c["a_top_has_b_winner"] is True and c["b_top_has_a_winner"] is True


def test_reversed_order_tau_minus_one(sweeps):
    (c,) = cmp.compare(sweeps / "a", sweeps / "rev")["cells"]
    assert c["tau"] == pytest.approx(-1.0)
    assert c["top_a"] == ["a", "b", "c"] and c["top_b"] == ["e", "d", "c"] and c["top_overlap"] == 1
    assert c["winners_agree"] is False
    # Separable data: each top group is its winner alone, so neither holds the other's winner.
    assert c["top_group_a"] == ["a"] and c["top_group_b"] == ["e"]
    assert c["a_top_has_b_winner"] is False and c["b_top_has_a_winner"] is False


def test_tau_b_matches_scipy_on_a_partial_swap(sweeps):
    result = cmp.compare(sweeps / "a", sweeps / "swap")
    (c,) = result["cells"]
    # Independent: the two runs' orders as ranks (a..e vs c,b,a,d,e): tau-b by scipy, and by counting pairs.
    rank_a = [1, 2, 3, 4, 5]
    rank_b = [3, 2, 1, 4, 5]
    assert c["tau"] == pytest.approx(sstats.kendalltau(rank_a, rank_b).statistic)
    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5)]
    concordant = sum((rank_a[i] - rank_a[j]) * (rank_b[i] - rank_b[j]) > 0 for i, j in pairs)
    assert c["tau"] == pytest.approx((2 * concordant - len(pairs)) / len(pairs))  # (10 - 3 * 2) / 10 = 0.4
    assert c["top_overlap"] == 3 and c["winner_b"] == "c" and c["winners_agree"] is False
    row = cmp.rows(result)[0]
    assert row["Kendall tau-b"] == "+0.400" and row["Top-3 overlap"] == "3/3" and row["Winners agree"] == "no"


def test_losses_only_in_one_run_are_left_out(tmp_path):
    planted(tmp_path / "x", {"a": 0.3, "b": 0.2, "c": 0.1, "z": 0.0})
    planted(tmp_path / "y", {"a": 0.3, "b": 0.2, "c": 0.1, "w": 0.5})
    (c,) = cmp.compare(tmp_path / "x", tmp_path / "y")["cells"]
    assert c["n_common"] == 3 and c["only_a"] == ["z"] and c["only_b"] == ["w"]
    assert c["tau"] == pytest.approx(1.0) and c["winner_b"] == "a"  # w's win in B is not among the common losses
    assert c["a_top_has_b_winner"] is True and c["b_top_has_a_winner"] is False  # B's top group is {w}


def test_cli_writes_html_in_cwd_and_prints_table(sweeps, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["compare", str(sweeps / "a"), str(sweeps / "rev")]) == 0
    out = capsys.readouterr().out
    assert "Kendall tau-b" in out and "-1.000" in out and "1/3" in out and "compare.html" in out
    html = (tmp_path / "compare.html").read_text()
    assert "-1.000" in html and "<style>" in html and "<script" not in html
    assert cli.main(["compare", str(sweeps / "a"), str(sweeps / "a2"), "-o", "sub/x.html", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cells"][0]["tau"] == pytest.approx(1.0) and (tmp_path / "sub" / "x.html").is_file()


def test_cli_help_explains_each_number(capsys):
    with pytest.raises(SystemExit):
        cli.main(["compare", "--help"])
    text = capsys.readouterr().out
    for term in ("Kendall tau-b", "p(tau)", "Top-3 overlap", "Winners agree", "B's winner in A's top group",
                 "A's winner in B's top group", "compare.html", "--fail-on-contradiction", "Claims replicated",
                 "Claims open", "Claims contradicted", "Test A", "Exit status", "3 with --fail-on-contradiction"):
        assert term in text, term


def test_errors_name_the_folder_and_the_fix(sweeps, tmp_path, capsys):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="RESULTS_A: no sweep results under .*nope"):
        cmp.compare(missing, sweeps / "a")
    with pytest.raises(ValueError, match=r"no \(dataset, arch\) cell is ranked in both .*same datasets"):
        cmp.compare(sweeps / "a", sweeps / "other")
    assert cli.main(["compare", str(sweeps / "a"), str(missing)]) == 2
    err = capsys.readouterr().err
    assert "RESULTS_B" in err and str(missing) in err and "Traceback" not in err
    assert cli.main(["compare", str(sweeps / "a"), str(sweeps / "other")]) == 2
    assert "d/m" in capsys.readouterr().err


def test_html_escapes_names(tmp_path):
    evil = '<script>alert("x")</script>'
    planted(tmp_path / "x", {"a": 0.2, "b": 0.1}, titles={"a": evil})
    _, path = cmp.write_compare(tmp_path / "x", tmp_path / "x", tmp_path / "c.html")
    html = path.read_text()
    assert "<script" not in html and "&lt;script&gt;" in html


# -- claims: replicated, left open, contradicted -----------------------------------------------------------------

TITLES = {"p": "Dice", "q": "Focal", "r": "Cross-entropy", "s": "Tversky", "t": "Lovasz"}
#: Per run, loss -> planted level. Losses at different levels are 0.1 or more apart on every case (a claim, by
#: construction: 16 of 16 paired differences of one sign); losses at one level have identical scores (no claim).
#: ``t`` is ranked in A only: its claims in A must not be counted.
LEVELS_A = {"p": 0.3, "q": 0.2, "r": 0.0, "s": 0.0, "t": 0.5}
LEVELS_B = {"p": 0.2, "q": 0.3, "r": 0.0, "s": 0.2}


def planted_levels(path, levels, seed=0):
    """One case-only run (one replicate per loss) with the planted ``levels``: equal level, identical scores."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.3, 0.4, 16)
    noise = {lv: rng.normal(0, 0.002, (2, 16)) for lv in sorted(set(levels.values()))}
    write_planted_cell(path, {loss: base + lv + noise[lv] for loss, lv in levels.items()},
                       titles={x: TITLES[x] for x in levels})


def expected_claims(la, lb):
    """By construction and by hand: the planted claims of two runs over their common losses, classified."""
    common = sorted(set(la) & set(lb))

    def claimed(levels):
        return {(x, y) for x in common for y in common if levels[x] > levels[y]}

    ca, cb = claimed(la), claimed(lb)
    out = {"replicated": set(), "open": set(), "contradicted": set()}
    for x, y in ca | cb:
        if (x, y) in ca and (x, y) in cb:
            out["replicated"].add((x, y))
        elif (x, y) in ca and (y, x) in cb:
            out["contradicted"].add((x, y))
        elif (y, x) in ca and (x, y) in cb:
            pass  # the same contradicted pair, listed as A claims it
        else:
            out["open"].add((x, y))
    return out


@pytest.fixture(scope="module")
def claim_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("claims")
    planted_levels(root / "a", LEVELS_A)
    planted_levels(root / "a2", LEVELS_A, seed=1)  # the same planted claims, other scores
    planted_levels(root / "b", LEVELS_B, seed=2)
    return root


def test_expected_claims_by_hand():
    """The hand classification above, spelled out for the planted levels (a check of the test's own oracle)."""
    e = expected_claims(LEVELS_A, LEVELS_B)
    assert e["contradicted"] == {("p", "q")}
    assert e["replicated"] == {("p", "r"), ("q", "r"), ("q", "s")}
    assert e["open"] == {("p", "s"), ("s", "r")}  # A claims p > s, B does not; B claims s > r, A does not


def test_claims_replicated_open_contradicted(claim_runs):
    result = cmp.compare(claim_runs / "a", claim_runs / "b")
    (c,) = result["cells"]
    expected = expected_claims(LEVELS_A, LEVELS_B)
    assert c["n_contradicted"] == 1 and c["claims"]["contradicted"] == [["p", "q"]]
    assert c["contradicted_titles"] == ["A: Dice > Focal, B: Focal > Dice"]
    for kind in ("replicated", "open", "contradicted"):
        assert c[f"n_{kind}"] == len(expected[kind]), kind
        assert {tuple(p) for p in c["claims"][kind]} == expected[kind], kind
    assert c["only_a"] == ["t"]  # t's claims in A (t beats everyone) are not among the counted pairs
    assert c["method_a"] == c["method_b"] == "Wilcoxon signed-rank on cases"
    row = cmp.rows(result)[0]
    assert (row["Claims replicated"], row["Claims open"], row["Claims contradicted"]) == ("3", "2", "1")
    assert row["Test A"] == row["Test B"] == "Wilcoxon signed-rank on cases"
    text = cmp.as_text(result)
    assert "d/m: contradicted claim: A: Dice > Focal, B: Focal > Dice" in text
    html = cmp.render(result)
    assert "A: Dice &gt; Focal, B: Focal &gt; Dice" in html and "Claims contradicted" in html
    assert cmp.contradictions(result) == [("d/m", 1)]


@pytest.mark.parametrize("other", ["a", "a2"])
def test_identical_claims_all_replicated(claim_runs, other):
    (c,) = cmp.compare(claim_runs / "a", claim_runs / other)["cells"]
    n_claims = sum(LEVELS_A[x] > LEVELS_A[y] for x in LEVELS_A for y in LEVELS_A)  # t is common here: 9 pairs
    assert n_claims == 9
    assert (c["n_replicated"], c["n_open"], c["n_contradicted"]) == (n_claims, 0, 0)
    assert c["contradicted_titles"] == []


def test_separable_sweeps_claims(sweeps):
    """The module's five separable losses: every pair claimed; same order all replicated, reversed all contradicted."""
    (same,) = cmp.compare(sweeps / "a", sweeps / "a2")["cells"]
    assert (same["n_replicated"], same["n_open"], same["n_contradicted"]) == (10, 0, 0)
    (rev,) = cmp.compare(sweeps / "a", sweeps / "rev")["cells"]
    assert (rev["n_replicated"], rev["n_open"], rev["n_contradicted"]) == (0, 0, 10)
    (swap,) = cmp.compare(sweeps / "a", sweeps / "swap")["cells"]  # c and a swapped: a>b, a>c, b>c reversed
    assert (swap["n_replicated"], swap["n_open"], swap["n_contradicted"]) == (7, 0, 3)
    assert swap["claims"]["contradicted"] == [["a", "b"], ["a", "c"], ["b", "c"]]


def test_untested_run_counts_nothing(tmp_path):
    """A run without paired per-case scores declares nothing: counts are None ("–"), method "not tested"."""
    planted_levels(tmp_path / "a", {"p": 0.2, "q": 0.0})
    write_planted_cell(tmp_path / "one", {"p": np.full((2, 16), 0.5), "q": np.full((2, 1), 0.4)})  # 1 common case
    result = cmp.compare(tmp_path / "a", tmp_path / "one")
    (c,) = result["cells"]
    assert c["method_a"] == "Wilcoxon signed-rank on cases" and c["method_b"] == cmp.NOT_TESTED
    assert c["n_replicated"] is c["n_open"] is c["n_contradicted"] is None
    row = cmp.rows(result)[0]
    assert row["Claims open"] == "–" and row["Test B"] == "not tested"
    assert cmp.contradictions(result) == []


def test_cli_fail_on_contradiction(claim_runs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    a, b, a2 = (str(claim_runs / x) for x in ("a", "b", "a2"))
    assert cli.main(["compare", a, b]) == 0  # without the flag: 0 either way
    assert cli.main(["compare", a, a2]) == 0
    capsys.readouterr()
    assert cli.main(["compare", a, b, "--fail-on-contradiction"]) == 3
    captured = capsys.readouterr()
    assert "Claims contradicted" in captured.out and "A: Dice > Focal, B: Focal > Dice" in captured.out
    (line,) = captured.err.strip().splitlines()
    assert "1 contradicted claim" in line and "d/m (1)" in line
    assert cli.main(["compare", a, a2, "--fail-on-contradiction"]) == 0
    assert capsys.readouterr().err == ""
    # --json and the flag: the JSON on stdout (still parseable), the summary on stderr, status 3.
    assert cli.main(["compare", a, b, "--json", "--fail-on-contradiction"]) == 3
    captured = capsys.readouterr()
    (cell,) = json.loads(captured.out)["cells"]
    assert (cell["n_replicated"], cell["n_open"], cell["n_contradicted"]) == (3, 2, 1)
    assert cell["claims"]["contradicted"] == [["p", "q"]]
    assert cell["contradicted_titles"] == ["A: Dice > Focal, B: Focal > Dice"]
    assert cell["method_a"] == "Wilcoxon signed-rank on cases"
    assert "d/m (1)" in captured.err
    # Errors keep their status 2, with or without the flag.
    assert cli.main(["compare", a, str(tmp_path / "nope"), "--fail-on-contradiction"]) == 2

