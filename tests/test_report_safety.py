"""The report treats every string from configs and results as text: hostile names run nothing, in a real browser.

The fixture sweep of ``report_fixture`` is written with hostile strings in every free-text field the report shows:
sweep id, dataset and architecture names, a registry name, every loss display title, class names, a hyperparameter
name, node names, an error message, package versions, hardware, git commit, the resolved config and the config file
text, overlay file names, and the results folder's own path. Each executable payload sets its own marker attribute
on ``<html>`` when it runs. A control page with the same payloads unescaped shows that each marker does get set when
the payload is trusted; the report, opened in headless Chromium, must set none, and must show every payload as text.
"""

from __future__ import annotations

import re
import subprocess
import types
from html.parser import HTMLParser
from pathlib import Path

import pytest
import report_fixture
from markupsafe import escape

from raysweep import results
from raysweep.report import build_report

CHROMIUM = "/usr/bin/chromium"
MARK = "data-pwned"


def js(key: str) -> str:
    """Script that marks ``<html>`` with data-pwned-KEY; the attribute name is split so the text never contains it."""
    return f"document.documentElement.setAttribute('data-pwn'+'ed-{key}','1')"


#: Payloads that execute when pasted unescaped into a page body (checked by the control).
EXECUTABLE = {
    "script": f"<script>{js('script')}</script>",
    "img": f'"><img src=x onerror="{js("img")}">',
    "close": f"</script><script>{js('close')}</script>",
    "svg": f'</svg><svg onload="{js("svg")}"><script>{js("svg2")}</script></svg>',
    "title": f"</title><script>{js('title')}</script>",
    "style": f"</style><img src=x onerror=\"{js('style')}\">",
    "textarea": f"</textarea></pre><script>{js('textarea')}</script>",
    "comment": f"--><script>{js('comment')}</script><!--",
}
#: Payloads that do not run in a body but would in other contexts (a URL attribute, a template, mathtext, a script).
INERT = {
    "jsurl": f"javascript:{js('jsurl')}",
    "template": "{{ 7*7 }}{% if true %}SSTI{% endif %}",
    "math": r"$\frac{1}{0}$ and $x^$ cost $5 or $6",
    "jsonbreak": f"<!--<script>{js('jsonbreak')}</script>",
}
P = {**EXECUTABLE, **INERT}

# Where each payload goes (fixture value -> hostile value).
SWEEP_ID = f"sweep{P['title']}"
DATASET = f"synthetic{P['img']}"
ARCHS = {"cnn": f"cnn{P['script']}", "transformer": f"transformer{P['close']}"}
LOSS_NAMES = {"focal": f"focal{P['style']}"}  # a registry name
TITLES = {"dice_ce": f"Dice+CE{P['svg']}", "dice": f"Dice{P['template']}", "ce": f"CE{P['math']}",
          "focal": f"Focal{P['textarea']}", "boundary": f"Boundary{P['jsonbreak']}"}
CLASSES = {"small_organ": f"small{P['comment']}", "large_organ": f"large{P['math']}"}
PARAM = f"gamma{P['script']}"  # a hyperparameter name (focal's most important one)
NODE = P["jsurl"]
ERROR = f"RuntimeError: {P['close']} {P['img']}"
CASE = f'case000"><img src=x onerror="{js("case")}">'  # an overlay file name (no "/" in a file name)
FOLDER = f'out"><img src=x onerror="{js("folder")}">'  # the results folder's own name
SEL_CASE = f"val000{P['close']}"  # a selection case id (tune-stage case rows and sweep.json's protocol)
SCHEDULER = f"asha{P['svg']}"  # free text of sweep.json's protocol


def _rename_params(text):
    if isinstance(text, dict):
        return {PARAM if k == "gamma" else k: v for k, v in text.items()}
    return text


def hostile_results(monkeypatch):
    """``report_fixture.results`` with writers that plant the hostile strings into every row and sweep.json."""

    def write_trial_rows(results_dir, trial_id, row, curves=(), cases=()):
        row = dict(row)
        loss = row["loss"]
        row.update(sweep_id=SWEEP_ID, dataset=DATASET, arch=ARCHS[row["arch"]], loss=LOSS_NAMES.get(loss, loss),
                   loss_title=TITLES[loss], node=NODE, params=_rename_params(row["params"]),
                   versions={"raysweep": P["template"]})
        if row.get("error"):
            row["error"] = ERROR
        row["per_class"] = {re.sub(r"/(\w+)$", lambda m: "/" + CLASSES.get(m.group(1), m.group(1)), k): v
                            for k, v in row["per_class"].items()}
        cases = [{**c, "class_name": CLASSES.get(c["class_name"], c["class_name"]),
                  "case": SEL_CASE if c["case"] == "val000" else c["case"]} for c in cases]
        return results.write_trial_rows(results_dir, trial_id, row, curves, cases)

    def write_sweep_meta(results_dir, meta):
        meta = dict(meta)
        meta.update(
            sweep_id=SWEEP_ID, git_commit=P["img"], config_text=f"note: {P['textarea']}\n# {P['comment']}\n",
            config={**meta["config"], "note": P["close"], P["img"]: P["template"], "archs": list(ARCHS.values())},
            versions={P["svg"]: P["script"], "python": "3.11"}, hardware={"gpus": [P["style"]], "cpus": 2},
            groups=[{"dataset": DATASET, "arch": ARCHS[g["arch"]], "loss": LOSS_NAMES.get(g["loss"], g["loss"])}
                    for g in meta["groups"]])
        proto = report_fixture.protocol(cells=[(DATASET, a) for a in ARCHS.values()])
        proto["selection"] = {DATASET: {"split": f"val{P['title']}",
                                        "cases": [SEL_CASE if c == "val000" else c
                                                  for c in proto["selection"]["synthetic"]["cases"]]}}
        proto["ranking"] = {DATASET: proto["ranking"]["synthetic"]}
        proto["early_stopping"]["scheduler"] = SCHEDULER
        proto["tuning"]["sampler"] = P["template"]
        meta["protocol"] = proto
        return results.write_sweep_meta(results_dir, meta)

    monkeypatch.setattr(report_fixture, "results", types.SimpleNamespace(
        write_trial_rows=write_trial_rows, write_sweep_meta=write_sweep_meta))


class Page(HTMLParser):
    """Start tags with their attributes, and the text a reader sees (outside script and style)."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self._skip = 0
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style") and self._skip > 0

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)

    @property
    def all_text(self) -> str:
        return "".join(self.text)

    def attr_values(self) -> list[str]:
        return [v for _, a in self.tags for v in a.values() if v is not None]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    try:
        hostile_results(mp)
        root = tmp_path_factory.mktemp("hostile")
        out = root / FOLDER
        report_fixture.make_fixture(out / "results")
    finally:
        mp.undo()
    for trial in ("confirm-cnn-boundary-s0", "confirm-cnn-ce-s0"):  # the clear cell's best and worst loss
        report_fixture._png(out / "overlays" / trial / f"{CASE}.png", (10, 10, 10))
    path = build_report(out, root / "report.html")
    return {"out": out, "path": path, "html": path.read_text(encoding="utf-8")}


def test_hostile_strings_reach_the_report_as_text(hostile):
    page = Page(hostile["html"])
    text = page.all_text
    shown = {
        "sweep id": SWEEP_ID, "dataset": DATASET, "arch": ARCHS["cnn"], "arch 2": ARCHS["transformer"],
        "registry name": LOSS_NAMES["focal"], "class name": CLASSES["small_organ"], "parameter name": PARAM,
        "node": NODE, "error": ERROR, "git commit": P["img"], "versions key": P["svg"], "versions value": P["script"],
        "hardware": P["style"], "config text": P["textarea"], "folder": FOLDER, "overlay case": CASE,
        "template": P["template"], "selection case": SEL_CASE, "scheduler": SCHEDULER,
        "split": f"val{P['title']}",
    }
    shown |= {f"title {k}": v for k, v in TITLES.items()}
    missing = {k: v for k, v in shown.items() if v not in text}
    assert not missing, missing
    assert "SSTI" not in text.replace(P["template"], "")  # the {% if %} was not evaluated anywhere


def test_report_markup_is_only_our_own(hostile):
    html = hostile["html"]
    page = Page(html)
    tags = {t for t, _ in page.tags}
    assert tags <= {"html", "head", "meta", "title", "link", "style", "body", "header", "h1", "h2", "h3", "p", "code",
                    "nav", "ul", "li", "a", "div", "strong", "br", "main", "section", "table", "thead", "tbody", "tr",
                    "th", "td", "span", "figure", "img", "script", "figcaption", "details", "summary", "pre", "dl",
                    "dt", "dd", "small", "footer"}, tags
    assert [t for t, _ in page.tags].count("script") == 1 and html.count("<script") == 1  # ours, at the end
    for tag, attrs in page.tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        if "src" in attrs:
            assert attrs["src"].startswith("data:image/png;base64,"), (tag, attrs["src"][:80])
        if "href" in attrs:
            assert attrs["href"].startswith("#") or attrs["href"] == "data:,", (tag, attrs["href"])
    for value in page.attr_values():
        assert not value.strip().lower().startswith("javascript:"), value
    # Nothing hostile survives unescaped in the source either.
    for needle in ("<script>document", "<img src=x", "<svg", "onerror=\"document", "</title><script>",
                   "--><script>", "<!--<script>", "</textarea></pre><script>", "</style><img"):
        assert needle not in html, needle
    assert str(escape(P["script"])) in html


def test_sensitivity_and_size_plots_survive_mathtext_and_markup(hostile):
    """Titles and class names with '$' (matplotlib mathtext) or markup still give every figure."""
    html = hostile["html"]
    assert str(escape(f"{TITLES['focal']}: 10 tuning trials, 2 parameters; most important: {PARAM}")) in html
    assert html.count('src="data:image/png;base64,') >= 8  # ranking dots, CD, curves, budget, size, sensitivity...
    assert "Small versus large structures" in html


def chromium_dom(url: str, tmp_path: Path) -> str:
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=3000", "--window-size=1400,2400",
         "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed (Debian: apt-get install chromium)")
def test_nothing_runs_in_a_real_browser(hostile, tmp_path):
    # Control: the same payloads pasted unescaped do run (each sets its marker), so their absence below means
    # something; the report's own script runs in both (tabindex on sortable headers).
    control = tmp_path / "control.html"
    payloads = [CASE, FOLDER, *(v for k, v in EXECUTABLE.items() if k != "comment"), EXECUTABLE["comment"]]
    body = "\n".join(f"<div>{p}</div>" for p in payloads)  # "comment" last: its trailing "<!--" hides the rest
    control.write_text(f"<!DOCTYPE html><html><head><title>control</title></head><body>{body}</body></html>")
    dom = chromium_dom(control.as_uri(), tmp_path / "c0")
    fired = set(re.findall(MARK + r"-(\w+)=", dom))
    assert fired >= set(EXECUTABLE) | {"case", "folder"}, fired

    dom = chromium_dom(hostile["path"].as_uri(), tmp_path / "c1")
    assert MARK not in dom, re.findall(MARK + r"-\w+", dom)
    assert 'tabindex="0"' in dom  # scripts are enabled: the report's sortable-tables script ran
    text = Page(dom).all_text
    for value in (SWEEP_ID, DATASET, ARCHS["cnn"], TITLES["dice_ce"], TITLES["focal"], CASE, ERROR, P["template"]):
        assert value in text, value  # shown as text, after the browser parsed the page


def test_report_script_builds_no_markup_from_data():
    """The one inline script only reorders rows and reads data-v with getAttribute: no HTML parsing of data."""
    from raysweep import report

    source = (Path(report.__file__).parent / "assets" / "report.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function(",
                 "setTimeout(\"", "srcdoc", "createContextualFragment", "DOMParser"):
        assert sink not in source, sink
    assert "</" not in source and "<!--" not in source  # cannot end or confuse its <script> element
