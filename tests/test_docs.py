"""The documentation site: it builds with ``mkdocs build --strict`` (a broken link, anchor or API reference fails), and
every section the README had before it became the front page is a heading of some page (``docs/readme-sections.txt``
lists them), so nothing it said was lost."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MKDOCS_PACKAGES = ("mkdocs", "material", "mkdocstrings_handlers.python")


def _headings(text: str) -> set[str]:
    """The text of every markdown heading outside fenced code blocks (a ``# comment`` in a shell block is not one)."""
    out, fence = set(), False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
        elif not fence and (m := re.match(r"#{1,6} (.+?)\s*#*\s*$", line)):
            out.add(m.group(1))
    return out


def _mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    missing = [p for p in MKDOCS_PACKAGES if importlib.util.find_spec(p.split(".")[0]) is None]
    if missing:
        pytest.skip(f"the docs extra is not installed ({', '.join(missing)} missing): `make docs` installs it")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


def test_every_readme_section_is_a_heading_of_a_docs_page():
    sections = [line.lstrip("#").strip() for line in (DOCS / "readme-sections.txt").read_text().splitlines()
                if line.strip()]
    assert len(sections) >= 28, "docs/readme-sections.txt lost lines"
    headings = set().union(*(_headings(p.read_text()) for p in DOCS.rglob("*.md")))
    lost = [s for s in sections if s not in headings]
    assert not lost, f"README sections with no heading in docs/*.md: {lost}"


def test_the_heading_parser_skips_code_and_finds_every_level():
    text = "# Title\n\n```yaml\n# yaml-language-server: x\n```\n\n### `raysweep data inspect` prints ##\nnot # one\n"
    assert _headings(text) == {"Title", "`raysweep data inspect` prints"}


def test_site_builds_strictly_with_the_api_reference(tmp_path):
    result = _mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    site = tmp_path / "site"
    for page in ("getting-started", "losses", "sweep", "protocol", "data", "results", "report", "cluster",
                 "guarantees", "benchmarks", "layout", "api"):
        assert (site / page / "index.html").is_file(), page
    api = (site / "api" / "index.html").read_text()
    for name in ("raysweep.losses.registry.build_loss", "raysweep.losses.registry.LOSSES", "raysweep.data.build_dataset",
                 "raysweep.trial.loop.train_trial", "raysweep.config.load_config", "raysweep.sweep.runner.run_sweep",
                 "raysweep.read_results", "raysweep.report.build_report"):
        assert f'id="{name}"' in api, f"{name} missing from the API reference"
    # The docstrings' Args/Returns/Raises are parsed (Google style) into tables, not left as plain text.
    assert api.count('class="doc-section-title"') >= 10
    assert '<span title="ValueError">ValueError</span>' in api and "<p>Args:" not in api
    losses = (site / "losses" / "index.html").read_text()
    assert "<td><code>tversky</code></td>" in losses  # the generated catalogue renders as a table
    assert (site / "report-default.png").is_file()
    assert not (site / "fidelity").exists() and not (site / "readme-sections.txt").exists()


@pytest.mark.parametrize("broken", ["[a page that is not there](nowhere.md)", "[an anchor](losses.md#no-such-heading)",
                                    "[a repository file](../Makefile)"])
def test_strict_build_fails_on_a_broken_link(tmp_path, broken):
    copy = tmp_path / "repo"
    shutil.copytree(DOCS, copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    (copy / "raysweep").symlink_to(ROOT / "raysweep")  # the API reference reads the package's source
    page = copy / "docs" / "getting-started.md"
    page.write_text(page.read_text() + f"\nSee {broken}.\n")
    result = _mkdocs_build(copy / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0, f"--strict accepted {broken}"
    assert "getting-started.md" in result.stdout + result.stderr
