"""Do two sweeps agree? Per (dataset, arch) cell ranked in both, how alike their loss rankings are.

Usage::

    from raysweep.report.compare import compare, write_compare
    result = compare("runs/a", "runs/b")            # the --out folders (or their results/ folders)
    result, path = write_compare("runs/a", "runs/b", "compare.html")

Each sweep's cell is summarised exactly as the report does it (:func:`raysweep.report.stats.cell_stats`: confirmation
runs only, mean primary metric over each loss's ranked runs, pairwise tests with Holm's correction, the claims and
top group they support). Per cell present in both:

* ``tau``: Kendall's tau-b (``scipy.stats.kendalltau``) between the two runs' mean primary metrics of the losses
  ranked in both (tau-b counts ties; 1 = the same order, -1 = reversed, about 0 = unrelated); ``tau_p`` its p-value.
* ``top_overlap``: how many of A's 3 best losses are among B's 3 best, both taken among the common losses (``k/3``;
  fewer than 3 when fewer losses are common).
* ``winners_agree``: the best loss among the common ones is the same in both.
* ``a_top_has_b_winner`` / ``b_top_has_a_winner``: B's winner is in A's top group (the losses A cannot separate from
  its best, over all of A's ranked losses), and vice versa: two runs whose winners differ but each of which cannot
  separate the other's winner from its own do not contradict each other. None where a run has no top group (no
  paired per-case scores).
* ``method_a`` / ``method_b``: the pairwise test each run's claims come from
  (:data:`raysweep.report.paired.WELCH`, the replicate-aware test, or :data:`~raysweep.report.paired.WILCOXON`, the
  case-only test that leaves tuning and training variance out), or ``"not tested"`` (no paired per-case scores).
* ``claims``: each run's *claims* are the pairs its own report declares different (Holm over all pairs of that
  run's ranked losses, adjusted p below ``alpha``), as ``(better, worse)``. Only pairs of losses ranked in both runs
  are compared (:func:`raysweep.report.paired.compare_claims`), each pair claimed by either run counted once:
  ``replicated`` (both claim it, the same way), ``open`` (one claims it, the other declares no difference) and
  ``contradicted`` (the two claim opposite directions; listed as A claims it). ``n_replicated``, ``n_open`` and
  ``n_contradicted`` count them; ``contradicted_titles`` spells each contradicted pair out with display titles
  (``"A: Dice > Focal, B: Focal > Dice"``). All three counts are None, and the lists empty, where either run is not
  tested: a run without tests declares nothing, so it neither replicates nor leaves open the other's claims.
  A replicated claim can still come from a case-only test in one or both runs: read it with ``method_a/b``.

Errors a user can cause (a folder without results, no cell ranked in both) raise FileNotFoundError / ValueError
naming the folder and the fix. Like the report, this needs pandas, scipy and Jinja2, not Ray or torch.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from scipy import stats as sstats

from .. import __version__
from ..results import read_results, resolve_results_dir
from . import paired, stats

_HERE = Path(__file__).parent
TOP_K = 3
#: Bootstrap replicates of each cell's own statistics (the comparison uses none of them: keep it cheap).
N_BOOT = 200
#: ``method_a`` / ``method_b`` of a run without pairwise tests (no paired per-case scores).
NOT_TESTED = "not tested"


def _ordered(cell: stats.CellStats, losses: set[str]) -> list[str]:
    """``cell``'s losses restricted to ``losses``, best first (the report's order: mean descending, then name)."""
    return [str(x) for x in cell.table.index if x in losses]


def _method(cell: stats.CellStats) -> str:
    return cell.tests.method if cell.tests is not None else NOT_TESTED


def compare_cells(a: stats.CellStats, b: stats.CellStats) -> dict[str, Any]:
    """The agreement of one cell's two rankings (see the module docstring for every number)."""
    common = set(a.table.index) & set(b.table.index)
    order_a, order_b = _ordered(a, common), _ordered(b, common)
    tau = tau_p = math.nan
    if len(common) >= 2:
        res = sstats.kendalltau(a.table.loc[order_a, "mean"].to_numpy(float),
                                b.table.loc[order_a, "mean"].to_numpy(float), variant="b")
        tau, tau_p = float(res.statistic), float(res.pvalue)
    k = min(TOP_K, len(common))
    top_a, top_b = order_a[:k], order_b[:k]
    winner_a, winner_b = (order_a[0] if order_a else None), (order_b[0] if order_b else None)
    names = {**dict(zip(b.table.index, b.table["title"])), **dict(zip(a.table.index, a.table["title"]))}
    titles = {str(x): str(names[x]) for x in names}
    tested = a.tests is not None and b.tests is not None
    claims = (paired.compare_claims(a.claims, b.claims, common) if tested else
              {"replicated": [], "open": [], "contradicted": []})
    counts = {f"n_{kind}": (len(pairs) if tested else None) for kind, pairs in claims.items()}
    return {
        "dataset": a.dataset, "arch": a.arch, "n_common": len(common),
        "only_a": sorted(set(a.table.index) - common), "only_b": sorted(set(b.table.index) - common),
        "tau": tau, "tau_p": tau_p, "k": k, "top_a": top_a, "top_b": top_b,
        "top_overlap": len(set(top_a) & set(top_b)),
        "winner_a": winner_a, "winner_b": winner_b,
        "winners_agree": None if winner_a is None or winner_b is None else winner_a == winner_b,
        "top_group_a": list(a.top_group), "top_group_b": list(b.top_group),
        "a_top_has_b_winner": (winner_b in a.top_group) if a.top_group and winner_b else None,
        "b_top_has_a_winner": (winner_a in b.top_group) if b.top_group and winner_a else None,
        "method_a": _method(a), "method_b": _method(b),
        "claims": {kind: [list(p) for p in pairs] for kind, pairs in claims.items()}, **counts,
        "contradicted_titles": [f"A: {titles[x]} > {titles[y]}, B: {titles[y]} > {titles[x]}"
                                for x, y in claims["contradicted"]],
        "titles": titles,
    }


def compare(results_a: str | Path, results_b: str | Path, *, alpha: float = stats.ALPHA,
            n_boot: int = N_BOOT) -> dict[str, Any]:
    """Compare the rankings of two sweeps cell by cell.

    Returns ``{"a": path, "b": path, "alpha": alpha, "cells": [compare_cells(...) per cell ranked in both, sorted],
    "skipped": [(cell, why)]}``.

    Raises:
        FileNotFoundError: a folder holds no sweep results.
        ValueError: no (dataset, arch) cell is ranked in both sweeps.
    """
    dirs, per = [], []
    for label, path in (("RESULTS_A", results_a), ("RESULTS_B", results_b)):
        try:
            rdir = resolve_results_dir(path)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{label}: {exc}") from None
        frames = stats.cell_view(read_results(rdir))
        t = frames["trials"]
        per.append({cell: stats.cell_stats(t, frames["cases"], *cell, alpha=alpha, n_boot=n_boot)
                    for cell in stats.cells(t)})
        dirs.append(rdir)
    cells_a, cells_b = per
    out, skipped = [], []
    for cell in sorted(set(cells_a) | set(cells_b)):
        a, b = cells_a.get(cell), cells_b.get(cell)
        why = ("only in A" if b is None else "only in B" if a is None else "not ranked in A" if a.table.empty else
               "not ranked in B" if b.table.empty else
               "no loss ranked in both" if not set(a.table.index) & set(b.table.index) else "")
        if why:
            skipped.append((f"{cell[0]}/{cell[1]}", why))
        else:
            out.append(compare_cells(a, b))
    if not out:
        def listing(cs: dict) -> str:
            return ", ".join(f"{d}/{m}" for (d, m), c in sorted(cs.items()) if not c.table.empty) or "none"

        raise ValueError(f"no (dataset, arch) cell is ranked in both {dirs[0]} (ranked: {listing(cells_a)}) and "
                         f"{dirs[1]} (ranked: {listing(cells_b)}): compare two sweeps that ran the same datasets and "
                         "architectures, after their confirmation stage has run")
    return {"a": str(dirs[0]), "b": str(dirs[1]), "alpha": alpha, "cells": out, "skipped": skipped}


# -- output ------------------------------------------------------------------------------------------------------

def _flag(v: bool | None) -> str:
    return "–" if v is None else "yes" if v else "no"


def _count(v: int | None) -> str:
    return "–" if v is None else str(v)


def contradictions(result: dict[str, Any]) -> list[tuple[str, int]]:
    """``[(cell, number of contradicted claims)]`` of the compared cells with at least one."""
    return [(f"{c['dataset']}/{c['arch']}", c["n_contradicted"]) for c in result["cells"] if c["n_contradicted"]]


def _tau(v: float) -> str:
    return "–" if not math.isfinite(v) else f"{v:+.3f}"


def rows(result: dict[str, Any]) -> list[dict[str, str]]:
    """One dict of display strings per compared cell (the columns of the text table and the HTML)."""
    out = []
    for c in result["cells"]:
        t = c["titles"]
        out.append({
            "Cell": f"{c['dataset']}/{c['arch']}", "Losses": str(c["n_common"]),
            "Kendall tau-b": _tau(c["tau"]), "p(tau)": "–" if not math.isfinite(c["tau_p"]) else f"{c['tau_p']:.3g}",
            "Top-3 overlap": f"{c['top_overlap']}/{c['k']}",
            "Winner A": t.get(c["winner_a"], "–") if c["winner_a"] else "–",
            "Winner B": t.get(c["winner_b"], "–") if c["winner_b"] else "–",
            "Winners agree": _flag(c["winners_agree"]),
            "B's winner in A's top group": _flag(c["a_top_has_b_winner"]),
            "A's winner in B's top group": _flag(c["b_top_has_a_winner"]),
            "Claims replicated": _count(c["n_replicated"]), "Claims open": _count(c["n_open"]),
            "Claims contradicted": _count(c["n_contradicted"]),
            "Test A": c["method_a"], "Test B": c["method_b"],
        })
    return out


def as_text(result: dict[str, Any]) -> str:
    """A plain-text table for the terminal, with the skipped cells and losses ranked in one run only."""
    table = rows(result)
    lines = [f"A: {result['a']}", f"B: {result['b']}", ""]
    if table:
        cols = list(table[0])
        width = {k: max(len(k), *(len(r[k]) for r in table)) for k in cols}
        lines.append("  ".join(k.ljust(width[k]) for k in cols))
        lines.append("  ".join("-" * width[k] for k in cols))
        lines += ["  ".join(r[k].ljust(width[k]) for k in cols).rstrip() for r in table]
    for c in result["cells"]:
        for pair in c["contradicted_titles"]:
            lines.append(f"{c['dataset']}/{c['arch']}: contradicted claim: {pair}")
    for c in result["cells"]:
        for side in ("a", "b"):
            if c[f"only_{side}"]:
                lines.append(f"{c['dataset']}/{c['arch']}: ranked only in {side.upper()} (not compared): "
                             + ", ".join(c[f"only_{side}"]))
    for cell, why in result["skipped"]:
        lines.append(f"{cell}: skipped ({why})")
    return "\n".join(lines)


def as_json(result: dict[str, Any]) -> str:
    """The result as JSON text (NaN as null)."""
    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean(result), indent=1, sort_keys=True, allow_nan=False)


def render(result: dict[str, Any]) -> str:
    """The self-contained HTML of a comparison (Jinja2, autoescaping on; only the report's own CSS is trusted)."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    from . import trusted_asset

    env = Environment(loader=FileSystemLoader(_HERE / "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    table = rows(result)
    return env.get_template("compare.html.j2").render(
        a=result["a"], b=result["b"], alpha=result.get("alpha", stats.ALPHA), rows=table,
        columns=list(table[0]) if table else [],
        cells=result["cells"], skipped=result["skipped"], top_k=TOP_K, version=__version__,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        css=trusted_asset((_HERE / "assets" / "report.css").read_text(), "css"))


def write_compare(results_a: str | Path, results_b: str | Path, out_html: str | Path = "compare.html", *,
                  alpha: float = stats.ALPHA) -> tuple[dict[str, Any], Path]:
    """:func:`compare`, then write its HTML atomically to ``out_html`` (default ``compare.html`` here)."""
    result = compare(results_a, results_b, alpha=alpha)
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(render(result), encoding="utf-8")
    tmp.replace(out)
    return result, out


__all__ = ["NOT_TESTED", "TOP_K", "as_json", "as_text", "compare", "compare_cells", "contradictions", "render", "rows",
           "write_compare"]
