"""The HTML report, built from a Parquet fixture with planted answers (tests/report_fixture.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raysweep import cli, results
from raysweep.power import power_limit
from raysweep.report import build_report, stats, tuning
from raysweep.report import across_cells

from report_fixture import CLEAR, TIE, make_fixture

EVIL = '<script>alert("x")</script>'
CHROMIUM = "/usr/bin/chromium"


class Tables(HTMLParser):
    """Every <table> of a page: its section id, header labels, rows of cell texts and row classes."""

    def __init__(self):
        super().__init__()
        self.tables, self.section, self._cell, self._row = [], None, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.section = a.get("id")
        elif tag == "table":
            self.tables.append({"section": self.section, "head": [], "rows": [], "classes": []})
        elif tag == "tr" and self.tables:
            self._row = []
            self.tables[-1]["classes"].append(a.get("class") or "")
        elif tag in ("td", "th"):
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            t = self.tables[-1]
            if not t["head"]:
                t["head"] = self._row
                t["classes"].pop()
            else:
                t["rows"].append(dict(zip(t["head"], self._row)))
            self._row = None


def tables_of(html, section):
    p = Tables()
    p.feed(html)
    return [t for t in p.tables if t["section"] == section]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The fixture sweep (with a <script> planted in a loss title and a config value) and its report via the CLI."""
    out = tmp_path_factory.mktemp("sweep")
    answers = make_fixture(out / "results", title_override=EVIL, config_extra={"note": EVIL})
    html_path = out / "report.html"
    assert cli.main(["report", str(out), "-o", str(html_path)]) == 0  # the --out folder is accepted
    return {"out": out, "html": html_path.read_text(), "path": html_path, "answers": answers}


@pytest.fixture(scope="module")
def frames(report):
    return results.read_results(report["out"] / "results")


def section_id(html, cell):
    m = re.search(r'<section id="(cell-\d+)">\s*<h2>' + re.escape(f"{cell[0]} / {cell[1]}"), html)
    assert m, cell
    return m.group(1)


# -- known answers -----------------------------------------------------------------------------------------------

def test_summary_names_the_winner_and_the_tie(report):
    (summary,) = tables_of(report["html"], "summary")
    rows = {r["Dataset / arch"]: r for r in summary["rows"]}
    clear, tie = rows["synthetic / cnn"], rows["synthetic / transformer"]
    assert clear["Winner"] == "Boundary (boundary)" and clear["Family"] == "boundary"
    # The fixture has one replicate per loss: the verdict is a case-level one, and the summary says so in red.
    assert clear["Top separable?"] == "yes — case-level test only"
    assert clear["In-run replication"] == "one replicate"
    assert tie["Winner"] in ("Dice (dice)", "Dice + CE (dice_ce)")
    assert tie["Top separable?"] == "no (tie) — case-level test only"
    assert float(clear["Spread"]) > 0.15
    assert "Boundary is best, separable from every other loss" in report["html"]
    assert "a tie at the top" in report["html"]


def test_ranking_tables(report):
    html = report["html"]
    (clear, *_) = tables_of(html, section_id(html, CLEAR))
    assert [r["Loss"] for r in clear["rows"]][0] == "Boundary (boundary)"
    assert clear["classes"] == ["top"] + [""] * 4  # only the winner in the top group
    assert [r["Rank"] for r in clear["rows"]] == ["1", "2", "3", "4", "5"]
    for column in ("dice", "95% CI", "HD95", "Mean rank", "Rank 95% CI", "p vs best", "small_organ", "Tuning gain",
                   "Best hyperparameters", "ms/step", "Peak MB"):
        assert column in clear["head"], column
    best = clear["rows"][0]
    assert best["Rank 95% CI"] == "1–1" and best["P(first)"] == "1.00" and best["p vs best"] == "best"
    assert all(r["p vs best"] == "< 0.001" for r in clear["rows"][1:])
    # dice confirmed its defaults too: ranked on its 3 tuned seeds, and the gain comes from the confirmed defaults.
    dice = next(r for r in clear["rows"] if r["Loss"] == "Dice (dice)")
    assert dice["Seeds"] == "3" and dice["Tuning gain"] == "+0.0200"
    (tie, *_) = tables_of(html, section_id(html, TIE))
    top = {r["Loss"] for r, c in zip(tie["rows"], tie["classes"]) if c == "top"}
    assert top == {"Dice (dice)", "Dice + CE (dice_ce)"}
    assert len(tie["rows"]) == 4  # ce has no confirmation runs in this cell


def test_stats_verdicts(frames):
    t, c = frames["trials"], frames["cases"]
    clear = stats.cell_stats(t, c, *CLEAR, n_boot=200)
    assert clear.winner == "boundary" and clear.separable is True and clear.top_group == ["boundary"]
    assert clear.friedman["pvalue"] < 1e-6 and clear.n_cases == 20 and clear.n_seeds == 3
    assert clear.spread > 0.15
    tie = stats.cell_stats(t, c, *TIE, n_boot=200)
    assert tie.separable is False and set(tie.top_group) == {"dice", "dice_ce"}
    runner_up = ({"dice", "dice_ce"} - {tie.winner}).pop()
    assert tie.table.loc[runner_up, "p_vs_best"] > 0.5
    # Bootstrap rank intervals: the tied pair shares ranks 1-2, the rest are fixed.
    assert set(tie.table.loc[["dice", "dice_ce"], "rank_lo"]) == {1} and set(tie.table.loc[["dice", "dice_ce"],
                                                                                           "rank_hi"]) == {2}
    assert tie.table.loc["focal", "rank_lo"] == tie.table.loc["focal", "rank_hi"] == 4
    overall = across_cells.overall_ranking([clear, tie])
    assert overall.loc["ce", "n_cells"] == 1 and overall.loc["boundary", "wins"] == 1


def test_small_sample_caveat(tmp_path):
    rng = np.random.default_rng(0)
    for loss, shift in (("a", 0.2), ("b", 0.0), ("c", -0.1)):
        row = dict(sweep_id="s", trial_id=f"t-{loss}", stage="confirm", dataset="d", arch="m", loss=loss,
                   family="region", in_survey=True, params="{}", is_default=False, seed=0, status="completed",
                   budget_steps=1, steps_done=1, primary_metric="dice", final_metric=0.5 + shift)
        cases = [dict(case=f"c{i}", class_id=1, class_name="x", dice=0.5 + shift + rng.normal(0, 0.01))
                 for i in range(4)]
        results.write_trial_rows(tmp_path, f"t-{loss}", row, [], cases)
    f = results.read_results(tmp_path)
    s = stats.cell_stats(f["trials"], f["cases"], "d", "m", n_boot=100)
    assert s.winner == "a" and s.separable is False  # 4 cases: no two-sided Wilcoxon test can reach 0.05
    text = " ".join(s.caveats)
    assert "Only 4 paired cases" in text and "1 seed(s)" in text
    # The design limit replaces the old ad-hoc "fewer than 6 cases" caveat: 3 pairs x 2/2**4 = 0.375 >= 0.05.
    assert s.power == power_limit(4, 3, 0.05) and not s.power.declarable and s.power.cases_needed == 7
    assert "Design limit: " + power_limit(4, 3, 0.05).sentence() in s.caveats
    assert "fewer than 6 cases" not in text


def test_size_view_and_families(report):
    html = report["html"]
    assert "Best on small structures: <strong>Focal</strong>; on large ones: <strong>Boundary</strong>" in html
    (_, fam, *_) = tables_of(html, "overall")
    assert {r["Family"] for r in fam["rows"]} == {"pixel", "region", "boundary", "combination"}
    assert next(r for r in fam["rows"] if r["Family"] == "boundary")["best synthetic/cnn"] == "1"


def test_sensitivity_and_importance(report, frames):
    tune = tuning.tuning_trials(frames["trials"], *TIE, "focal")
    imp = tuning.param_importance(tune)
    assert max(imp, key=imp.get) == "gamma"
    assert "Focal: 10 tuning trials, 2 parameters; most important: gamma" in report["html"]


def test_partial_sweep_says_what_is_missing(report):
    html = report["html"]
    assert "Sweep partial (running or interrupted)." in html
    assert "confirm: 30 of 33 trials (3 missing)" in html
    assert "Not ranked yet (no confirmation runs): synthetic/transformer/ce." in html


def test_run_metadata_and_failures(report):
    html = report["html"]
    failed = [t for t in tables_of(html, "run") if "Reason" in t["head"]][0]
    assert {r["Trial"]: r["Status"] for r in failed["rows"]} == {
        k: v for k, v in report["answers"]["failed"].items() if v != "stopped"}
    assert "RuntimeError: <boom> & friends" in {r["Reason"] for r in failed["rows"]}  # parser unescapes
    assert "RuntimeError: &lt;boom&gt; &amp; friends" in html
    assert "1 tuning trials stopped early by ASHA" in html
    assert "0123abc" in html and "datasets: [synthetic]" in html


def test_every_string_is_escaped_and_nothing_is_fetched(report):
    html = report["html"]
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html  # loss title and config value
    assert html.count("<script") == 1  # our own sortable-tables script only
    assert not re.search(r'(src|href)="(https?:)?//', html)  # no CDN, nothing remote
    assert "<link rel=\"stylesheet\"" not in html


def test_overlays_of_best_and_worst(report):
    html = report["html"]
    assert 'alt="Boundary on case000"' in html and "on case001" in html
    assert html.count('class="overlay"') == 4  # 2 cases x (best, worst)


def test_cli_writes_reports_to_the_reports_folder_by_default(tmp_path, monkeypatch, report):
    """`raysweep report` names the report after the sweep's --out folder, under reports/ in the current folder,
    whether given the --out folder or its results/ folder."""
    import shutil

    sweep = tmp_path / "runs" / "mysweep"
    shutil.copytree(report["out"] / "results", sweep / "results")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["report", str(sweep)]) == 0
    assert (tmp_path / "reports" / "mysweep.html").is_file()
    (tmp_path / "reports" / "mysweep.html").unlink()
    assert cli.main(["report", str(sweep / "results")]) == 0
    assert (tmp_path / "reports" / "mysweep.html").is_file() and not (sweep / "report.html").exists()


def test_data_section_shows_the_inspected_statistics_of_sweep_json(tmp_path, report):
    import shutil

    from raysweep.data.inspect import inspect_config

    shutil.copytree(report["out"] / "results", tmp_path / "results")
    (stats,) = inspect_config({"synthetic": {"options": {"image_size": 32, "depth": 4, "num_volumes": 2}}})
    stats["per_class"][1]["name"] = "<script>lobe</script>"
    stats["warnings"] = ["class 'ring' is rare"]
    results.update_sweep_meta(tmp_path / "results", datasets={"synthetic": stats,
                                                                "synapse": {"dataset": "synapse", "skipped": "why"}})
    html = build_report(tmp_path / "results").read_text()
    data = html[html.index('<section id="data">'):html.index('<section id="overall">')]
    fraction = f"{100 * stats['per_class'][7]['fraction']:.3g}"
    assert "vessel" in data and fraction in data and "class &#39;ring&#39; is rare" in data
    assert "&lt;script&gt;lobe&lt;/script&gt;" in data and "<script>lobe" not in html
    assert "Not inspected: why." in data
    assert '<section id="data">' not in report["html"]  # a sweep without statistics has no data section


def test_rebuild_from_tune_only_and_empty_results(tmp_path, report):
    src = report["out"] / "results"
    f = results.read_results(src)
    tune = f["trials"][f["trials"]["stage"] == "tune"].head(12)
    for r in tune.to_dict("records"):
        r = {k: (None if isinstance(v, float) and np.isnan(v) or v is pd.NaT else v) for k, v in r.items()}
        results.write_trial_rows(tmp_path / "results", r["trial_id"], r)
    path = build_report(tmp_path / "results")
    assert path == tmp_path / "report.html"
    html = path.read_text()
    assert "no confirmation runs yet" in html and "partial (no sweep.json)" in html
    empty = tmp_path / "empty"
    results.write_sweep_meta(empty, {"sweep_id": "just-started", "planned": {"tune": 5, "confirm": 2}})
    html = build_report(empty, tmp_path / "e.html").read_text()
    assert "tune: 0 of 5 trials (5 missing)" in html and "No confirmation runs yet: nothing to rank." in html


# -- the real browser --------------------------------------------------------------------------------------------

def chromium(url: str, tmp_path: Path, screenshot: Path) -> tuple[str, list[str]]:
    """Open ``url`` headless; return the DOM after scripts ran and the page's console messages."""
    profile = tmp_path / "profile"
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--window-size=1400,2400",
         f"--screenshot={screenshot}", "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Page console output (any level, uncaught exceptions included) is logged as "...:CONSOLE:<line>] ...".
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, console


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed (Debian: apt-get install chromium)")
def test_report_in_headless_chromium(report, tmp_path):
    # Control: the console capture does see errors, so an empty list below means something.
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>console.error('planted'); nope();</script></body></html>")
    _, console = chromium(bad.as_uri(), tmp_path / "c0", tmp_path / "bad.png")
    assert any("planted" in line for line in console) and any("nope" in line for line in console)

    # The report, plus a probe that sorts the clear cell's ranking table by its metric column (ascending).
    html = report["html"]
    cell = section_id(html, CLEAR)
    probe = ("<script>var t=document.querySelector('#" + cell + " table.sortable');t.tHead.rows[0].cells[4].click();"
             "document.body.setAttribute('data-order',Array.prototype.map.call(t.tBodies[0].rows,function(r){"
             "return r.cells[1].textContent}).join('|'));</script></body>")
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("</body>", probe))
    screenshot = tmp_path / "report.png"
    dom, console = chromium(report["path"].as_uri(), tmp_path / "c1", screenshot)
    assert console == [], console
    assert screenshot.stat().st_size > 10_000
    shutil.copy(screenshot, report["out"] / "report.png")  # beside the report, for a look
    assert 'tabindex="0"' in dom  # the sortable-tables script ran
    dom, console = chromium(probed.as_uri(), tmp_path / "c2", tmp_path / "probed.png")
    assert console == [], console
    order = re.search(r'data-order="([^"]*)"', dom).group(1).split("|")
    assert order[0].endswith("(ce)") and order[-1] == "Boundary (boundary)"  # worst first, ascending


# -- protocol, power, convergence, seed agreement, tuning --------------------------------------------------------

def test_summary_power_agreement_and_convergence(report, frames):
    from scipy import stats as sstats

    (summary,) = tables_of(report["html"], "summary")
    rows = {r["Dataset / arch"]: r for r in summary["rows"]}
    for cell, n_losses in ((CLEAR, 5), (TIE, 4)):
        row = rows[f"{cell[0]} / {cell[1]}"]
        p = power_limit(20, n_losses, 0.05)  # 20 complete paired cases, ranked losses
        assert row["Design power"] == f"can declare (min adj. p {p.min_p_adjusted:.3g})"
        assert p.sentence().replace("<", "&lt;") in report["html"]
        # Kendall's W by the identity W = chi2_Friedman / (m (n - 1)), seeds as blocks.
        t = frames["trials"]
        runs = t[(t["stage"] == "confirm") & ~t["is_default"] & (t["dataset"] == cell[0]) & (t["arch"] == cell[1])]
        m = runs.pivot_table(index="seed", columns="loss", values="final_metric").to_numpy()
        w = sstats.friedmanchisquare(*m.T).statistic / (m.shape[0] * (m.shape[1] - 1))
        assert row["Seed agreement (W)"] == f"{w:.3f}"
    assert rows["synthetic / cnn"]["Converged?"] == "not converged: Dice"  # planted: dice gains 0.03
    assert rows["synthetic / transformer"]["Converged?"] == "yes"
    assert "Not converged:" in report["html"]
    # The planned power from sweep.json is shown too.
    assert "Design limit (planned, sweep.json): " + power_limit(20, 5, 0.05).sentence().replace("<", "&lt;") in \
        report["html"]


def test_last20_gain_column(report):
    html = report["html"]
    (clear, *_) = tables_of(html, section_id(html, CLEAR))
    gains = {r["Loss"]: r["Last-20% gain"] for r in clear["rows"]}
    assert gains.pop("Dice (dice)") == "+0.0300" and set(gains.values()) == {"+0.0050"}


def test_tuning_table(report):
    html = report["html"]
    (table,) = [t for t in tables_of(html, section_id(html, CLEAR)) if "Full budget" in t["head"]]
    rows = {r["Loss"]: r for r in table["rows"]}
    # dice: 6 trials (default, 2 random, 3 model); #4 errored (no curve), #5 stopped at report 4 of 10.
    dice = rows["Dice (dice)"]
    assert [dice[k] for k in ("Trials", "Default", "Branch", "Random", "Model", "Fixed")] == ["6", "1", "0", "2", "3",
                                                                                      "0"]
    assert [dice[f"≥ {r} reports"] for r in (1, 2, 4, 8)] == ["5", "5", "5", "4"]
    assert dice["≥ 10 reports (max_t)"] == "4" and dice["Full budget"] == "4"
    assert dice["Confirmed"] == "tune-cnn-dice-2"
    assert dice["Branches tried"] == "–"  # no categorical hyperparameter in the fixture
    (ce,) = [r for k, r in rows.items() if k.endswith("(ce)")]  # #4 diverged at step 7 (no report), #5 oom
    assert ce["≥ 1 reports"] == "4" and ce["Full budget"] == "4"
    assert rows["Focal (focal)"]["Trials"] == "10" and rows["Focal (focal)"]["≥ 10 reports (max_t)"] == "10"


def test_selection_and_ranking_cases(report):
    html = report["html"]
    assert "Selection cases (tuning scores and the choice of each configuration; split val, 8 cases, from the " \
           "protocol): val000, val001" in html
    assert "Ranking cases (confirmation runs only; split test, 20 cases, from the protocol): case000" in html
    assert "do not overlap in the cases table" in html and 'id="overlap"' not in html


def test_old_sweep_without_protocol_and_overlap_warning(tmp_path):
    """A sweep from before the protocol (no protocol, no proposal) still renders, saying "not recorded"; tune case
    rows on the ranking cases raise the overlap alarm."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.4, 0.6, 8)
    scores = {x: np.vstack([base + e + rng.normal(0, 0.01, 8) for _ in range(3)]) for x, e in
              (("a", 0.2), ("b", 0.1), ("c", 0.0))}
    from report_fixture import write_planted_cell

    write_planted_cell(tmp_path / "results", scores, tune_cases={"a": np.ones(3)},
                       tune_case_ids=["case000", "case001", "x9"])
    results.write_sweep_meta(tmp_path / "results", {"sweep_id": "old"})
    html = build_report(tmp_path).read_text()
    assert "not recorded (a sweep from before the protocol" in html
    assert "Design limit (planned, sweep.json): not recorded" in html
    assert "split not recorded" in html and "from the cases table" in html
    assert 'id="overlap"' in html and "2 case(s) were scored by tuning trials and by confirmation runs: case000, " \
                                      "case001" in html
    assert "rungs not recorded" in html
    # 8 cases, 3 losses: 3 * 2 / 2**8 < 0.05, so the design can declare; the alarm stays off.
    assert 'id="powerless"' not in html


def test_powerless_design_is_prominent(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.uniform(0.4, 0.6, 5)
    scores = {x: np.vstack([base + e + rng.normal(0, 0.01, 5)]) for x, e in (("a", 0.2), ("b", 0.1), ("c", 0.0))}
    from report_fixture import write_planted_cell

    write_planted_cell(tmp_path / "results", scores)
    html = build_report(tmp_path).read_text()
    p = power_limit(5, 3, 0.05)
    assert not p.declarable
    (summary,) = tables_of(html, "summary")
    assert summary["rows"][0]["Design power"] == f"CANNOT declare any difference (needs ≥ {p.cases_needed} cases)"
    assert 'id="powerless"' in html and "No difference can be declared in d / m" in html
    assert p.sentence().replace("<", "&lt;").replace(">", "&gt;") in html


def test_replicate_configurations_group_the_replicates_that_confirmed_the_same_one():
    from raysweep.report.stats import replicate_configurations

    assert replicate_configurations(dict(enumerate(["a=1", "a=1", "a=2", "a=1"]))) == "r0–r1, r3: a=1; r2: a=2"
    assert replicate_configurations(dict(enumerate(["x"] * 10))) == "r0–r9: x"
    assert replicate_configurations(dict(enumerate("pqppqp"))) == "r0, r2–r3, r5: p; r1, r4: q"
    assert replicate_configurations({4: "only"}) == "r4: only"
    assert replicate_configurations({3: "x", 0: "x", 1: "y"}) == "r0, r3: x; r1: y"  # r2 lost: not renumbered


def test_replicates_put_tuning_variance_in_the_test_and_one_replicate_says_it_is_not(tmp_path, report):
    # Three replicates per loss (one seed each): the verdict comes from the replicate-aware test, the ranking shows
    # each loss's spread over its replicates, and no red warning; the one-replicate fixture carries the warning.
    from raysweep.report import paired

    rng = np.random.default_rng(2)
    base = rng.uniform(0.4, 0.6, 16)
    shifts = {"a": [0.30, 0.32, 0.31], "b": [0.10, 0.14, 0.06], "c": [0.0, 0.01, -0.01]}
    scores = {x: np.vstack([base + s + rng.normal(0, 0.005, 16) for s in v]) for x, v in shifts.items()}
    from report_fixture import write_planted_cell

    write_planted_cell(tmp_path / "results", scores, replicates=3)
    frames = stats.cell_view(results.read_results(tmp_path / "results"))
    cell = stats.cell_stats(frames["trials"], frames["cases"], "d", "m")
    assert cell.test_method == paired.WELCH and cell.n_replicates == 3 and not cell.replication_warning
    assert cell.table.loc["b", "rep_min"] == pytest.approx((base + 0.06).mean(), abs=0.01)
    assert cell.table.loc["b", "rep_sd"] == pytest.approx(np.std([0.10, 0.14, 0.06], ddof=1), abs=0.005)
    assert cell.halves["replicates"] == (2, 1) and cell.halves["methods"] == (paired.WELCH, paired.WILCOXON)
    html = build_report(tmp_path).read_text()
    assert "replicate-aware moderated t-test on 3 replicates x 16 paired cases" in html
    assert "replication-warning" not in html.split("<h2>Methods</h2>")[0]
    assert ">Replicate spread<" in html or "Replicate spread</th>" in html
    ranking = next(t for t in tables_of(html, "cell-0") if "Best hyperparameters" in t["head"])
    assert {row["Best hyperparameters"] for row in ranking["rows"]} == {"r0–r2: w=0.5"}  # one entry, not three
    one = report["html"]
    assert 'class="alarm-text replication-warning"' in one
    assert "Tuning and training variance are not in this test: one replicate per loss" in one
