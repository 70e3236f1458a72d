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
                 "A's winner in B's top group", "compare.html"):
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
