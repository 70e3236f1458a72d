"""The HTML ranking report: which loss wins, where, by how much, and how sure we are.

Usage::

    from raysweep.report import build_report
    path = build_report("runs/default/results")          # or the sweep's --out folder; writes <out>/report.html
    path = build_report("runs/default", "ranking.html")   # anywhere

The report reads only the Parquet tables and ``sweep.json`` of :mod:`raysweep.results` (pandas, pyarrow, scipy,
scikit-posthocs, matplotlib, Jinja2; Optuna, when installed, for parameter importance): it runs on a laptop without
Ray or torch, and on a partial sweep, whose missing trials and groups it lists. Statistics conventions are in
:mod:`raysweep.report.stats`.

Form: one self-contained HTML file (inline CSS, one small inline script that makes tables sortable, figures as PNG
data URIs); it works offline and its tables read without JavaScript. Jinja2 autoescaping is on and the template
marks nothing safe except this package's own CSS and script, so every string that comes from configs or results is
escaped.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from .. import __version__
from ..checks import finite
from ..results import SCHEMA_VERSION, read_results, read_sweep_meta, resolve_results_dir
from . import markup as mk
from . import across_cells
from . import budget, plots, sections, stats

_HERE = Path(__file__).parent


def default_report_path(results_dir: str | Path) -> Path:
    """``<out>/report.html`` for ``<out>/results``; ``<results_dir>/report.html`` otherwise."""
    results_dir = Path(results_dir)
    return (results_dir.parent if results_dir.name == "results" else results_dir) / "report.html"


def build_report(results_dir: str | Path, out_html: str | Path | None = None, *, alpha: float = stats.ALPHA,
                 n_boot: int = stats.BOOTSTRAP, max_failed: int = 200) -> Path:
    """Build the report and write it atomically; return its path.

    Args:
        results_dir: a sweep's ``--out`` folder or its ``results`` folder.
        out_html: where to write (default :func:`default_report_path`).
        alpha: significance level of the tests.
        n_boot: bootstrap replicates for the rank intervals.
        max_failed: failed trials listed by name (the rest are counted).

    Raises:
        FileNotFoundError: no results under ``results_dir``.
        ValueError: unreadable results (e.g. a newer schema version).
    """
    rdir = resolve_results_dir(results_dir)
    frames = read_results(rdir)
    meta = read_sweep_meta(rdir)
    html = render(build_context(frames, meta, rdir, alpha=alpha, n_boot=n_boot, max_failed=max_failed))
    out = Path(out_html) if out_html is not None else default_report_path(rdir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    return out


# -- formatting --------------------------------------------------------------------------------------------------

def build_context(frames: dict[str, pd.DataFrame], meta: dict[str, Any], rdir: Path, *, alpha: float = stats.ALPHA,
                  n_boot: int = stats.BOOTSTRAP, max_failed: int = 200) -> dict[str, Any]:
    """Everything the template shows, as plain Python values (strings unescaped: the template escapes)."""
    frames = stats.cell_view(frames)  # a variant of a dataset is a cell of its own
    trials, curves, cases = frames["trials"], frames["curves"], frames["cases"]
    protocol = meta.get("protocol") if isinstance(meta.get("protocol"), dict) else None
    per_cell = [stats.cell_stats(trials, cases, d, a, alpha=alpha, n_boot=n_boot, curves=curves)
                for d, a in stats.cells(trials)]
    ranked_cells = [c for c in per_cell if not c.table.empty]

    summary_rows, summary_classes = [], []
    for c in per_cell:
        key = f"{c.dataset} / {c.arch}"
        if c.table.empty:
            summary_rows.append([mk.cell(key), mk.cell("no confirmation runs yet"), mk.cell("")]
                                + [mk.cell("–") for _ in range(8)])
            summary_classes.append("")
            continue
        w = c.table.iloc[0]
        sep = {True: "yes", False: "no (tie)", None: "not tested"}[c.separable]
        if c.replication_warning and c.separable is not None:
            sep += " — case-level test only"
        if c.power is None:
            power = mk.cell("not tested", cls="na")
        elif c.power.declarable:
            power = mk.cell(f"can declare (min adj. p {c.power.min_p_adjusted:.3g})", c.power.min_p_adjusted,
                          title=c.power.sentence())
        else:
            power = mk.cell(f"CANNOT declare any difference (needs ≥ {c.power.cases_needed} cases)",
                          c.power.min_p_adjusted, "power-none", c.power.sentence())
        names = [c.table.loc[x, "title"] for x in c.not_converged]
        if c.not_converged:
            conv = mk.cell("not converged: " + ", ".join(names), len(names), "warn",
                         f"gain >= {stats.CONVERGENCE_GAIN} over the last 20% of the budget among the "
                         f"{stats.CONVERGENCE_TOP} best losses")
        elif c.table["last20_gain"].notna().any():
            conv = mk.cell("yes", 0, title=f"none of the {stats.CONVERGENCE_TOP} best losses gains >= "
                         f"{stats.CONVERGENCE_GAIN} over the last 20% of its budget")
        else:
            conv = mk.cell("no curves", cls="na")
        summary_rows.append([
            mk.cell(key), mk.loss_cell(w["title"], w["loss"], w["in_survey"]), mk.cell(w["family"]),
            mk.cell(f"{w['mean']:.4f}" + (f" [{w['ci_lo']:.4f}, {w['ci_hi']:.4f}]" if finite(w["ci_lo"]) else ""),
                  repr(float(w["mean"])), "num"),
            mk.num(c.spread, "{:.4f}"), mk.cell(sep, cls="power-none" if c.replication_warning else
                                               "sep-" + sep.split()[0], title=c.replication_warning), power,
            mk.num(c.kendall_w, "{:.3f}"), _halves_cell(c), conv,
            mk.cell(f"{len(c.table)} losses, {c.n_cases} cases, " + (
                f"{c.n_replicates} replicates x {c.n_seeds} seed(s)" if c.n_replicates > 1 else f"{c.n_seeds} seeds"))])
        summary_classes.append("")
    summary = mk.table([("Dataset / arch", ""), ("Winner", "best mean primary metric"), ("Family", ""),
                      ("Mean [95% CI]", "primary metric over seeds"), ("Spread", "best minus worst loss"),
                      ("Top separable?", "the best loss claimed better than every other (Holm over all pairs): "
                       "a replicate-aware test with two or more replicates per loss, else Wilcoxon on cases (red: "
                       "tuning and training variance are not in the test)"),
                      ("Design power", "can the cell's complete paired cases and ranked losses separate any pair at "
                       "all after Holm's correction? (the smallest adjusted p-value the design allows)"),
                      ("Seed agreement (W)", "Kendall's W of the runs x losses matrix of final metrics (tie-"
                       "corrected; a run is one replicate's k-th confirmation seed, so with replicates W is the "
                       "agreement of independent re-runs): 1 = every run orders the losses alike, 0 = unrelated "
                       "orders"),
                      ("In-run replication", "the replicates split in two halves, each ranked and tested alone: "
                       "Kendall's tau-b between the halves' mean rankings, and the halves' claims replicated / left "
                       "open / contradicted"),
                      ("Converged?", f"'not converged' when one of the {stats.CONVERGENCE_TOP} best losses still "
                       f"gains >= {stats.CONVERGENCE_GAIN} over the last 20% of its budget"), ("Evidence", "")],
                     summary_rows, summary_classes)
    powerless = [f"{c.dataset} / {c.arch}" for c in per_cell if c.power is not None and not c.power.declarable]

    overall = across_cells.overall_ranking(ranked_cells)
    overall_table = None
    if not overall.empty:
        rank_cols = [x for x in overall.columns if x.startswith("rank:")]
        rows = [[mk.cell(i + 1, i + 1), mk.loss_cell(r["title"], loss), mk.cell(r["family"]), mk.num(r["mean_rank"], "{:.2f}"),
                 mk.cell(int(r["n_cells"]), int(r["n_cells"])), mk.cell(int(r["wins"]), int(r["wins"])),
                 mk.cell(int(r["top_groups"]), int(r["top_groups"]))]
                + [mk.num(r[x], "{:.0f}") for x in rank_cols]
                for i, (loss, r) in enumerate(overall.iterrows())]
        overall_table = mk.table([("#", ""), ("Loss", ""), ("Family", ""), ("Mean rank", "over the cells ranked"),
                                ("Cells", ""), ("Wins", "cells where it ranks first"),
                                ("Top groups", "cells where it is not separable from the best")]
                               + [(x[5:], "rank in this cell") for x in rank_cols], rows)
    fam = across_cells.family_view(ranked_cells)
    fam_rows = []
    for f, r in fam.iterrows():
        row = [mk.cell(f), mk.num(r["mean_relative_rank"], "{:.2f}")]
        for c in ranked_cells:
            k = f"{c.dataset}/{c.arch}"
            row += [mk.num(r[f"best:{k}"], "{:.0f}"), mk.num(r[f"median:{k}"], "{:.1f}")]
        fam_rows.append(row)
    fam_cols = [("Family", ""), ("Mean relative rank", "rank / losses in the cell, over all cells (lower is better)")]
    for c in ranked_cells:
        fam_cols += [(f"best {c.dataset}/{c.arch}", "best rank of the family"),
                     (f"median {c.dataset}/{c.arch}", "median rank of the family")]

    cells_ctx = []
    for i, c in enumerate(per_cell):
        t = trials[(trials["dataset"] == c.dataset) & (trials["arch"] == c.arch)]
        runs = stats.ranked_runs(t)
        losses = list(c.table.index) + sorted(set(t["loss"]) - set(c.table.index))
        bv = budget.cell_view(t, c)
        cells_ctx.append({
            "id": f"cell-{i}", "dataset": c.dataset, "arch": c.arch, "primary": c.primary, "stats": c,
            "ranking": None if c.table.empty else sections.ranking_table(c),
            "unranked": sorted(set(t["loss"]) - set(c.table.index)),
            "dots": plots.ranking_dots(c), "cd": plots.cd_diagram(c), "pairwise": sections.pairwise_table(c),
            "friedman": c.friedman, "verdict": c.verdict, "caveats": c.caveats,
            "replication_warning": c.replication_warning,
            "nemenyi_top": [c.table.loc[x, "title"] for x in c.nemenyi_top_group],
            "top_titles": [c.table.loc[x, "title"] for x in c.top_group],
            "size": sections.size_section(c, cases, trials),
            "curves": plots.learning_curves(curves, c, set(runs["trial_id"])), "budget": plots.budget_curves(t, c),
            "overlays": sections.overlays(rdir, c, runs), "sensitivity": sections.sensitivity(trials, c, losses, meta.get("spaces") or {}),
            "power": sections.power(c, protocol, alpha), "tuning": sections.tuning_section(trials, curves, c, protocol,
                                                                                      meta.get("spaces") or {}),
            "roles": sections.roles(cases, protocol, c.dataset),
            "not_converged": [c.table.loc[x, "title"] for x in c.not_converged],
            "kendall_w": c.kendall_w, "w_seeds": c.w_seeds, "w_losses": c.w_losses,
            "overlap": sections.overlap_section(trials, c),
            "rank_blobs": plots.rank_blobs(c), "significance": plots.significance_map(c),
            "budget_max": plots.expected_max_curves(bv["curves"], c, bv["top"], stats.display_names(t)),
            "budget_crossings": bv["crossings"], "budget_flag": bv["sentence"],
        })
    return {
        "title": f"raysweep ranking: {meta.get('sweep_id') or rdir}",
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__, "schema_version": SCHEMA_VERSION, "alpha": alpha, "n_boot": n_boot,
        "results_dir": str(rdir), "progress": sections.progress(trials, meta, per_cell), "summary": summary,
        "powerless": powerless, "overlaps": sorted({x["dataset"] for x in cells_ctx if x["roles"]["overlap"]}),
        "protocol": sections.protocol_view(protocol), "convergence_gain": stats.CONVERGENCE_GAIN,
        "data": sections.data_section(meta),
        "convergence_top": stats.CONVERGENCE_TOP,
        "overall": overall_table, "family": mk.table(fam_cols, fam_rows) if ranked_cells else None,
        "family_plot": plots.family_ranks(ranked_cells), "cells": cells_ctx,
        "robustness": sections.robustness_sections(trials, cases, meta, alpha, n_boot),
        "meta": sections.metadata(trials, meta, max_failed), "n_trials": len(trials),
        "css": (_HERE / "assets" / "report.css").read_text(), "js": (_HERE / "assets" / "report.js").read_text(),
    }


def _halves_cell(c: stats.CellStats) -> dict[str, Any]:
    """The summary's in-run replication cell: tau between the two halves of the replicates and their claims."""
    h = c.halves
    if not h:
        return mk.cell("one replicate" if c.n_replicates < 2 else "–", cls="na",
                       title="needs two or more replicates per loss (tuning.replicates)")
    text = (f"tau {h['tau']:+.3f}; claims {h['replicated']} replicated / {h['open']} open / {h['contradicted']} "
            f"contradicted")
    title = (f"replicates {h['replicates'][0]} + {h['replicates'][1]}; halves' winners "
             f"{c.table.loc[h['winners'][0], 'title']} / {c.table.loc[h['winners'][1], 'title']}; each half tested "
             f"with: {' / '.join(dict.fromkeys(h['methods']))}")
    return mk.cell(text, h["tau"], "warn" if h["contradicted"] else "", title)


def render(context: dict[str, Any]) -> str:
    """The HTML text of the report (Jinja2, autoescaping on)."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(_HERE / "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    context = {**context, "css": trusted_asset(context["css"], "css"), "js": trusted_asset(context["js"], "js")}
    return env.get_template("report.html.j2").render(**context)


def trusted_asset(text: str, key: str):
    """``text`` (one of this package's own static assets) marked safe for the template, after checking it.

    Only our own static assets are trusted; "</", "<!--" and "<script" cannot occur in them (checked), so they can
    neither end their element nor switch the HTML parser into a script's escaped states.
    """
    from markupsafe import Markup

    bad = [x for x in ("</", "<!--", "<script") if x in text.lower()]
    if bad:
        raise ValueError(f"report asset {key} must not contain {bad[0]!r}")
    return Markup(text)


__all__ = ["build_context", "build_report", "default_report_path", "render"]
