"""The loss catalogue, rendered from the registry for the terminal and JSON, and the documentation's generated
blocks (loss catalogue, Fidelity table, results schema), kept between markers in markdown pages (``docs/``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .losses import FAMILIES, LOSSES, LossSpec

def ordered_specs(family: str | None = None) -> list[LossSpec]:
    """Specs by family (pixel, region, boundary, combination), survey losses first, then by name."""
    specs = [s for s in LOSSES.values() if family in (None, s.family)]
    return sorted(specs, key=lambda s: (FAMILIES.index(s.family), not s.in_survey, s.name))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def hyperparameters(spec: LossSpec) -> str:
    """``name=default [range]`` for tuned hyperparameters, ``name=default`` for fixed ones."""
    parts = []
    for key, default in spec.defaults.items():
        if key in spec.space:
            parts.append(f"{key}={_fmt(default)} {spec.space[key].describe()}")
        else:
            parts.append(f"{key}={_fmt(default)}")
    return "; ".join(parts) or "none"


def as_json(family: str | None = None) -> str:
    return json.dumps([s.to_dict() for s in ordered_specs(family)], indent=2)


def as_markdown() -> str:
    """The catalogue table (docs/losses.md): name, family, reference, hyperparameters (tuned ones with their search range), extras."""
    lines = [
        f"{sum(s.in_survey for s in LOSSES.values())} registry names cover the survey's losses (it counts weighted "
        f"CE under CE; here `wce` has its own entry), plus {sum(not s.in_survey for s in LOSSES.values())} "
        "baselines. "
        "Hyperparameters with a range are tuned by the sweep (`log` = log-uniform); the others are fixed options.",
        "",
        "| name | family | loss | reference | hyperparameters: default [search range] | extra inputs |",
        "|---|---|---|---|---|---|",
    ]
    for s in ordered_specs():
        name = f"`{s.name}`" + ("" if s.in_survey else " (baseline)")
        extras = ", ".join(f"`{n}`" for n in sorted(s.needs)) or "-"
        if s.has_parameters:
            extras += " (learnable parameters: add `loss.parameters()` to the optimiser)"
        lines.append(f"| {name} | {s.family} | {s.title} | {s.reference} | {hyperparameters(s)} | {extras} |")
    return "\n".join(lines)


def as_text(family: str | None = None) -> str:
    specs = ordered_specs(family)
    rows = [("name", "family", "survey", "loss", "hyperparameters", "extra inputs")]
    for s in specs:
        rows.append((s.name, s.family, "yes" if s.in_survey else "no", s.title, hyperparameters(s),
                     ", ".join(sorted(s.needs)) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    out = []
    for i, r in enumerate(rows):
        out.append("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5])
        if i == 0:
            out.append("  ".join("-" * w for w in widths) + "  " + "-" * 12)
    return "\n".join(out)


_FIDELITY_HEADER = ("| loss | follows (paper equation, or the authors' code as owner/repo@commit, file) | agreement (max "
                    "relative difference on the recorded inputs) | deliberate differences and why | 3-D "
                    "(B, C, D, H, W) |\n|---|---|---|---|---|")

#: The 3-D cell of a loss whose 3-D form is its 2-D formula summed over voxels (no ``dims_note`` needed).
_SAME_IN_3D = "yes: the same formula over voxels; a one-slice volume gives the 2-D value"


def three_d_cell(spec: LossSpec) -> str:
    """The Fidelity table's 3-D cell of a loss, from its registry entry (``dims``, ``dims_note``)."""
    if 3 not in spec.dims:
        return f"**no** (a clear error): {spec.dims_note}"
    return f"yes: {spec.dims_note}" if spec.dims_note else _SAME_IN_3D


def fidelity_rows(folder: str | Path | None = None) -> dict[str, str]:
    """The Fidelity table's rows by loss name, from the markdown tables in ``docs/fidelity/*.md`` (one row per loss,
    written by whoever compared the loss with its authors' code; the tests in ``tests/test_fidelity_*.py`` hold
    the recorded values)."""
    folder = Path(folder) if folder else Path(__file__).resolve().parents[1] / "docs" / "fidelity"
    rows = {}
    for path in sorted(folder.glob("*.md")):
        for line in path.read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if line.startswith("|") and cells and cells[0] in LOSSES:
                rows[cells[0]] = line.strip()
    return rows


def fidelity_markdown() -> str:
    """The Fidelity table (docs/losses.md): one row per registered loss, in catalogue order; the last column, how the
    loss takes 3-D input, comes from the registry."""
    rows = fidelity_rows()
    missing = [s.name for s in ordered_specs() if s.name not in rows]
    body = [f"{rows[s.name]} {three_d_cell(s).replace('|', '/')} |" for s in ordered_specs() if s.name in rows]
    note = f"\n\nNot yet compared: {', '.join(missing)}." if missing else ""
    return _FIDELITY_HEADER + "\n" + "\n".join(body) + note


#: The generated blocks, by name, and what each is generated from. A block sits between the lines
#: ``<!-- NAME:begin (generated by `make docs-blocks` from SOURCE; do not edit) -->`` and ``<!-- NAME:end -->``.
BLOCK_SOURCES = {
    "catalogue": "the registry",
    "fidelity": "docs/fidelity/*.md",
    "schema": "raysweep/results/ and docs/results-example.json",
}


def begin_marker(name: str) -> str:
    """The line that opens block ``name`` (a key of :data:`BLOCK_SOURCES`)."""
    return f"<!-- {name}:begin (generated by `make docs-blocks` from {BLOCK_SOURCES[name]}; do not edit) -->"


def end_marker(name: str) -> str:
    """The line that closes block ``name``."""
    return f"<!-- {name}:end -->"


def _block_pattern(name: str) -> re.Pattern:
    # Any text after "NAME:begin" up to "-->" opens the block, so markers written by an older make target still match.
    return re.compile(r"(<!-- " + re.escape(name) + r":begin\b[^\n]*?-->)(.*?)(" + re.escape(end_marker(name)) + ")",
                      re.S)


def generated_blocks() -> dict[str, str]:
    """Block name -> its markdown, generated from code: the loss catalogue (registry), the Fidelity table
    (``docs/fidelity/*.md``) and the Parquet schema (raysweep.results) with real example rows
    (``docs/results-example.json``, written from a real sweep; a test checks that what a sweep writes still has
    that structure)."""
    from .results import schema_markdown
    from .results.examples import example_markdown

    example = Path(__file__).resolve().parents[1] / "docs" / "results-example.json"
    schema = schema_markdown() + ("\n\n" + example_markdown(json.loads(example.read_text())) if example.is_file() else "")
    return {"catalogue": as_markdown(), "fidelity": fidelity_markdown(), "schema": schema}


def markdown_files(*paths: str | Path) -> list[Path]:
    """The markdown files named by ``paths``: a file as given, a folder as every ``*.md`` under it (sorted).

    Raises:
        FileNotFoundError: a path that does not exist.
    """
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(path.rglob("*.md"))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist; give a markdown file or a folder of them (e.g. docs)")
    return files


def find_blocks(*paths: str | Path) -> dict[str, list[tuple[Path, str]]]:
    """Block name -> ``[(file, body), ...]``: every occurrence of each generated block in ``paths`` (files or
    folders, as :func:`markdown_files`), its body stripped of surrounding blank lines."""
    found: dict[str, list[tuple[Path, str]]] = {name: [] for name in BLOCK_SOURCES}
    for file in markdown_files(*paths):
        text = file.read_text()
        for name in BLOCK_SOURCES:
            found[name] += [(file, m.group(2).strip()) for m in _block_pattern(name).finditer(text)]
    return found


def update_blocks(*paths: str | Path) -> list[Path]:
    """Rewrite every stale generated block between its markers in ``paths`` (markdown files, or folders of them);
    return the files that changed. A file may hold any of the blocks, or none; an up-to-date block is left byte
    for byte.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: a block that none of the files holds (add its markers where it belongs).
    """
    blocks = generated_blocks()
    seen: set[str] = set()
    new_texts = {}
    for file in markdown_files(*paths):
        text = original = file.read_text()
        for name, body in blocks.items():
            pattern = _block_pattern(name)
            if pattern.search(text):
                seen.add(name)
            text = pattern.sub(lambda m, body=body: m.group(0) if m.group(2).strip() == body.strip()
                               else f"{m.group(1)}\n\n{body}\n\n{m.group(3)}", text)
        if text != original:
            new_texts[file] = text
    missing = [name for name in blocks if name not in seen]
    if missing:  # checked before writing anything: a failed update changes no file
        where = ", ".join(map(str, paths))
        raise ValueError(f"{where} hold(s) no block {', '.join(missing)}: add the lines {begin_marker(missing[0])!r} "
                         f"and {end_marker(missing[0])!r} where it belongs")
    for file, text in new_texts.items():
        file.write_text(text)
    return list(new_texts)


def update_readme(path: str | Path) -> bool:
    """``raysweep losses --update-readme PATH``: :func:`update_blocks` on one markdown file or folder (``docs``);
    return whether anything changed."""
    return bool(update_blocks(path))
