"""The report's robustness panels and its overlap-versus-boundary (DSC vs HD95) Pareto view, on planted results.

The planted sweep (:func:`plant_variants`): dataset ``synthetic`` with a clean reference and two label-noise levels
plus one contrast shift, two architectures, four losses, 20 ranking cases, 3 seeds. ``steady`` (the planted robust
loss) is the worst loss on clean data but loses nothing under noise; the others lose 15-40% of their Dice at the
worst level, so ``steady`` climbs from rank 4 to rank 1. HD95 is planted so that ``tight`` (lower Dice, the lowest
HD95) and ``dice`` (the best Dice) form the Pareto set of the clean cell; ``ce`` has no HD95 at all.
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raysweep import results
from raysweep.report import build_report, robustness, stats

from test_report import CHROMIUM, chromium, tables_of

LOSSES = {  # loss -> (family, title, clean effect, share of Dice lost at the worst noise level, HD95 at clean)
    "dice": ("region", "Dice", 0.10, 0.30, 6.0),
    "tight": ("boundary", "Tight boundary", 0.05, 0.25, 3.0),
    "ce": ("pixel", "Cross-entropy", 0.02, 0.40, None),
    "steady": ("combination", "Steady", 0.00, 0.00, 8.0),
}
VARIANTS = {
    "clean": {"axis": None, "level": None, "overrides": {}},
    "noise1": {"axis": "label_noise", "level": 1, "overrides": {
        "train_options": {"label_corruption": {"kind": "boundary", "pixels": 1, "random": True}}}},
    "noise2": {"axis": "label_noise", "level": 2, "overrides": {
        "train_options": {"label_corruption": {"kind": "boundary", "pixels": 2, "random": True}}}},
    "dark": {"axis": "contrast", "level": 0.5, "overrides": {"options": {"shift": {"contrast": 0.5}}}},
}
N_CASES, SEEDS = 20, (0, 1, 2)


def _loss_share(variant: str, drop: float) -> float:
    """Multiplier of a loss's Dice in a variant: label noise scales its planted drop with the level."""
    v = VARIANTS[variant]
    if v["axis"] == "label_noise":
        return 1 - drop * v["level"] / 2
    if v["axis"] == "contrast":
        return 1 - drop / 2
    return 1.0


def plant_variants(results_dir: Path, archs=("cnn", "transformer")) -> dict:
    """Write the planted sweep (tables and sweep.json) through :func:`raysweep.results.write_trial_rows`."""
    rng = np.random.default_rng(7)
    base = rng.uniform(0.55, 0.75, N_CASES)
    has_variant = "variant" in results.SCHEMAS["trials"].names
    for arch in archs:
        for variant in VARIANTS:
            for loss, (family, title, eff, drop, hd) in LOSSES.items():
                for seed in SEEDS:
                    scores = np.clip((base + eff) * _loss_share(variant, drop) + rng.normal(0, 0.003, N_CASES), 0, 1)
                    final = float(scores.mean())
                    tid = f"confirm-{arch}-{variant}-{loss}-s{seed}"
                    row = dict(sweep_id="robust", trial_id=tid, stage="confirm", dataset="synthetic", arch=arch,
                               loss=loss, loss_title=title, family=family, in_survey=True, params={"w": 0.5},
                               is_default=False, seed=seed, status="completed", budget_steps=100, steps_done=100,
                               primary_metric="dice", final_metric=final, dice=final,
                               hd95=None if hd is None else hd + 0.01 * seed)
                    if has_variant:
                        row["variant"] = variant
                    cases = [dict(case=f"case{i:03d}", class_id=1, class_name="organ", dice=float(v))
                             for i, v in enumerate(scores)]
                    results.write_trial_rows(results_dir, tid, row, [], cases)
    meta = {"sweep_id": "robust", "config": {"datasets": ["synthetic"]}, "variants": {"synthetic": VARIANTS}}
    results.write_sweep_meta(results_dir, meta)
    return meta


needs_variants = pytest.mark.skipif("variant" not in results.SCHEMAS["trials"].names,
                                    reason="the results schema has no variant column yet")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    out = tmp_path_factory.mktemp("robust")
    meta = plant_variants(out / "results")
    frames = stats.cell_view(results.read_results(out / "results"))
    html_path = build_report(out / "results", out / "report.html")
    return {"out": out, "meta": meta, "frames": frames, "path": html_path, "html": html_path.read_text()}


# -- the Pareto set ----------------------------------------------------------------------------------------------

def test_pareto_set_on_planted_points():
    pts = pd.DataFrame({"dsc": [0.90, 0.80, 0.85, 0.90, 0.95, 0.70, 0.80, 0.60],
                        "hd95": [5.0, 3.0, 6.0, 5.0, math.nan, 3.0, 3.0, 2.0]},
                       index=["a", "b", "c", "a_twin", "no_hd", "f", "b_twin", "g"])
    # c is beaten by a (higher DSC, lower HD95); f by b (same HD95, lower DSC); a and a_twin tie (both kept), so do
    # b and b_twin; no_hd has no HD95 and takes no part, even with the best DSC; g has the lowest HD95.
    assert sorted(robustness.pareto_set(pts)) == ["a", "a_twin", "b", "b_twin", "g"]
    assert robustness.pareto_set(pts.iloc[[4]]) == []
    one = pd.DataFrame({"dsc": [0.5], "hd95": [9.0]}, index=["only"])
    assert robustness.pareto_set(one) == ["only"]
    # A loss beaten on one criterion and tied on the other is beaten.
    assert robustness.pareto_set(pd.DataFrame({"dsc": [0.8, 0.8], "hd95": [3.0, 4.0]}, index=["x", "y"])) == ["x"]


@needs_variants
def test_overlap_boundary_of_a_cell_excludes_nan_hd95(planted):
    view = robustness.overlap_boundary(planted["frames"]["trials"], "synthetic:clean", "cnn")
    t = view["table"]
    assert set(t.index) == set(LOSSES)
    assert view["pareto"] == ["dice", "tight"]  # best DSC first
    assert view["excluded"] == ["ce"] and not t.loc["ce", "pareto"] and t.loc["ce", "n_hd95"] == 0
    assert t.loc["dice", "hd95"] == pytest.approx(6.01) and t.loc["dice", "n_runs"] == 3


# -- robustness ----------------------------------------------------------------------------------------------------

def test_variants_meta_and_axes():
    v = robustness.variants_meta({"variants": {"synthetic": VARIANTS, "bad": "x", "other": {"v": 3}}})
    assert set(v) == {"synthetic"}
    clean, ax = robustness.axes(v["synthetic"])
    assert clean == "clean"
    assert ax == {"contrast": [(0.5, "dark")], "label_noise": [(1.0, "noise1"), (2.0, "noise2")]}
    assert robustness.variants_meta({}) == {}


def test_rank_change_sentence():
    t = pd.DataFrame({"title": ["A", "B", "C", "D"], "rank_clean": [1, 2, 3, 4], "rank_worst": [2, 3, 4, 1]},
                     index=list("abcd"))
    s = robustness.rank_change_sentence(t, "clean", "noise 2", "dice")
    assert s.startswith("Between clean and noise 2, D (rank 4 → 1) moves most (3 places")
    assert "next: A (rank 1 → 2), B (rank 2 → 3)" in s
    tied = pd.DataFrame({"title": ["A", "B"], "rank_clean": [1, 2], "rank_worst": [2, 1]}, index=list("ab"))
    assert "A (rank 1 → 2), B (rank 2 → 1) move most (1 place," in robustness.rank_change_sentence(tied, "x", "y")
    same = pd.DataFrame({"title": ["A"], "rank_clean": [1], "rank_worst": [1]}, index=["a"])
    assert robustness.rank_change_sentence(same, "x", "y") == "No loss changes rank between x and y."


@needs_variants
def test_robustness_ranking_finds_the_planted_robust_loss(planted):
    f = planted["frames"]
    cells = robustness.robustness_cells(f["trials"], f["cases"], planted["meta"], n_boot=200)
    assert [(c["dataset"], c["arch"]) for c in cells] == [("synthetic", "cnn"), ("synthetic", "transformer")]
    noise = next(a for a in cells[0]["axes"] if a.axis == "label_noise")
    assert noise.levels == [(0.0, "clean"), (1.0, "noise1"), (2.0, "noise2")] and noise.worst == (2.0, "noise2")
    t = noise.table
    assert t.index[0] == "steady" and t.loc["steady", "retained"] == pytest.approx(1.0, abs=0.01)
    assert t.loc["ce", "retained"] == pytest.approx(0.6, abs=0.01) and t.index[-1] == "ce"
    assert noise.top_group == ["steady"] and noise.separable and noise.n_cases == N_CASES
    assert noise.power.declarable and noise.friedman["pvalue"] < 1e-6
    assert (t.loc[t.index[1:], "p_vs_best"] < 0.05).all() and t.loc["steady", "p_first"] == 1.0
    assert t.loc["steady", "rank_clean"] == 4 and t.loc["steady", "rank_worst"] == 1
    assert "Steady (rank 4 → 1) moves most (3 places" in noise.sentence
    # Metric per level with confidence bands over the seeds.
    c = noise.curves
    assert len(c) == 3 * len(LOSSES) and (c["n_seeds"] == 3).all()
    assert (c["ci_lo"] < c["mean"]).all() and (c["mean"] < c["ci_hi"]).all()
    dice = c[c["loss"] == "dice"].set_index("level")["mean"]
    assert dice[1.0] / dice[0.0] == pytest.approx(0.85, abs=0.01)
    contrast = next(a for a in cells[0]["axes"] if a.axis == "contrast")
    assert contrast.worst == (0.5, "dark") and contrast.table.index[0] == "steady"


@needs_variants
def test_a_top_loss_that_barely_learned_is_flagged(planted):
    """A high retained ratio of a loss with little to lose is named as such: here Steady's clean runs are planted at a
    fifth of their score, so it keeps more than all of it at the worst level."""
    f = planted["frames"]
    meta = planted["meta"]
    noise = next(a for a in robustness.robustness_cells(f["trials"], f["cases"], meta, n_boot=50)[0]["axes"]
                 if a.axis == "label_noise")
    assert not any("little to lose" in x for x in noise.caveats)  # Steady learned: no flag
    trials = f["trials"].copy()
    weak = (trials["loss"] == "steady") & (trials["variant"] == "clean")
    trials.loc[weak, "final_metric"] *= 0.2
    noise = next(a for a in robustness.robustness_cells(trials, f["cases"], meta, n_boot=50)[0]["axes"]
                 if a.axis == "label_noise")
    assert noise.table.index[0] == "steady" and noise.table.loc["steady", "retained"] > 1
    assert "Steady scored under 50% of the best clean dice" in noise.caveats[0]
    # A weak loss ranked second, outside the top group but above every loss that learned, is named too.
    tight = (trials["loss"] == "tight") & (trials["variant"] == "clean")
    trials.loc[tight, "final_metric"] *= 0.3
    noise = next(a for a in robustness.robustness_cells(trials, f["cases"], meta, n_boot=50)[0]["axes"]
                 if a.axis == "label_noise")
    assert list(noise.table.index[:2]) == ["steady", "tight"] and noise.top_group == ["steady"]
    assert "Steady, Tight boundary scored under 50% of the best clean dice" in noise.caveats[0]


def test_robustness_with_a_loss_missing_at_the_worst_level():
    rows = []
    for variant, losses in (("clean", ("a", "b")), ("hard", ("a",))):
        for loss in losses:
            for seed in (0, 1):
                rows.append(dict(trial_id=f"{variant}-{loss}-{seed}", stage="confirm", status="completed",
                                 dataset=f"d:{variant}", base_dataset="d", variant=variant, arch="m", loss=loss,
                                 loss_title=loss, family="region", is_default=False, seed=seed,
                                 primary_metric="dice", final_metric=0.5 + 0.1 * seed))
    trials = pd.DataFrame(rows)
    cases = pd.DataFrame(columns=["trial_id", "stage", "loss", "case", "dice"])
    a = robustness.robustness(trials, cases, "d", "m", "noise", "clean", [(1.0, "hard")], n_boot=50)
    assert a.not_compared == ["b"] and list(a.table.index) == ["a"]
    assert a.table.loc["a", "retained"] == pytest.approx(1.0) and "nothing to compare" in a.verdict
    # Both losses at both levels but no per-case rows: ranked by retained means, not tested.
    both = pd.concat([trials, trials[(trials["variant"] == "clean") & (trials["loss"] == "b")].assign(
        variant="hard", dataset="d:hard", trial_id=lambda f: "hard-" + f["trial_id"])])
    a = robustness.robustness(both, cases, "d", "m", "noise", "clean", [(1.0, "hard")], n_boot=50)
    assert list(a.table.index) == ["a", "b"] and a.verdict.startswith("Not tested: per-case scores are missing for a, b")
    assert a.top_group == [] and a.power is None


# -- the report ----------------------------------------------------------------------------------------------------

@needs_variants
def test_report_shows_robustness_and_overlap_panels(planted):
    html = planted["html"]
    rob = tables_of(html, "robust-0")
    variants, noise = rob[0], rob[1]
    assert [r["Variant"] for r in variants["rows"]] == ["clean", "dark", "noise1", "noise2"]
    assert 'train_options.label_corruption = {"kind": "boundary", "pixels": 2, "random": true}' in \
        variants["rows"][3]["Corruption / shift"]
    assert variants["rows"][1]["Corruption / shift"] == 'options.shift = {"contrast": 0.5}'
    assert noise["rows"][0]["Loss"] == "Steady (steady)" and noise["rows"][0]["Retained"].startswith("10")
    assert noise["rows"][0]["Rank clean → worst"] == "4 → 1" and noise["classes"][0] == "top"
    section = html[html.index('<section id="robust-0"'):html.index("</section>", html.index('<section id="robust-0"'))]
    assert "Axis: label_noise" in section and "Axis: contrast" in section
    assert section.count('alt="metric against') == 2 and "Steady (rank 4 → 1) moves most" in section
    assert "retains the most of its clean dice at label_noise 2" in section
    # Overlap vs boundary in every cell, and the Pareto sets in the summary.
    assert len(re.findall(r'<h3 id="cell-\d+-overlap"', html)) == 8 and html.count('alt="DSC against HD95 per loss"') == 8
    summary = html[html.index('<section id="summary">'):html.index("</section>", html.index('<section id="summary">'))]
    assert "<strong>synthetic:clean / cnn:</strong> Pareto set (DSC vs HD95) Dice, Tight boundary; without HD95: " \
           "Cross-entropy." in summary
    assert "Steady (rank 4 → 1) moves most" in summary
    assert 'href="#robust-1"' in html


def test_report_without_variants_has_no_robustness_section(tmp_path):
    from report_fixture import make_fixture

    make_fixture(tmp_path / "results", overlays=False)
    html = build_report(tmp_path / "results", tmp_path / "r.html").read_text()
    assert 'class="robustness"' not in html and "Robustness:" not in html
    assert "Overlap vs boundary" in html and "Pareto set (DSC vs HD95) Boundary." in html


@needs_variants
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed (Debian: apt-get install chromium)")
def test_robustness_report_in_headless_chromium(planted, tmp_path):
    screenshot = tmp_path / "robust.png"
    dom, console = chromium(planted["path"].as_uri(), tmp_path / "c", screenshot)
    assert console == [], console
    assert screenshot.stat().st_size > 10_000
    shutil.copy(screenshot, planted["out"] / "robust.png")
    assert 'tabindex="0"' in dom  # the sortable-tables script ran
    assert re.search(r'<section id="robust-0" class="robustness">', dom)
    assert dom.count('alt="metric against') == 4 and dom.count('alt="DSC against HD95 per loss"') == 8
    assert "Overlap vs boundary" in dom and "Pareto set (DSC vs HD95)" in dom
