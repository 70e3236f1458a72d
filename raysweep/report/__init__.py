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

import base64
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__
from ..power import power_limit
from ..results import PROPOSALS, SCHEMA_VERSION, overlay_dirs, read_results, read_sweep_meta, resolve_results_dir
from . import plots, stats

_HERE = Path(__file__).parent
MAX_OVERLAY_BYTES = 2_000_000
OVERLAY_CASES = 3


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

def _finite(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def _cell(text: Any, v: Any = None, cls: str = "", title: str = "") -> dict[str, Any]:
    """A table cell: displayed ``text``, sort value ``v`` (numbers sort numerically, blanks last)."""
    return {"text": "" if text is None else str(text), "v": "" if v is None else v, "cls": cls, "title": title}


def _num(v: Any, fmt: str = "{:.3f}", cls: str = "") -> dict[str, Any]:
    if not _finite(v):
        return _cell("–", None, "na " + cls)
    return _cell(fmt.format(float(v)), repr(float(v)), "num " + cls)


def _pvalue(p: Any) -> str:
    if not _finite(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _duration(seconds: Any) -> str:
    if not _finite(seconds):
        return "–"
    s = int(round(float(seconds)))
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else f"{s // 60} min {s % 60:02d} s"


def _table(columns: list[tuple[str, str]], rows: list[list[dict]], row_classes: list[str] | None = None
           ) -> dict[str, Any]:
    """``columns``: (label, tooltip); ``rows``: lists of :func:`_cell` dicts."""
    return {"columns": [{"label": c, "title": t} for c, t in columns], "rows": rows,
            "row_classes": row_classes or [""] * len(rows)}


def _loss_cell(title: str, loss: str, in_survey: bool = True) -> dict[str, Any]:
    text = title if title == loss else f"{title} ({loss})"
    return _cell(text + ("" if in_survey else " [baseline]"), title.lower())


# -- sections ----------------------------------------------------------------------------------------------------

def _progress(trials: pd.DataFrame, meta: dict[str, Any], per_cell: list[stats.CellStats]) -> dict[str, Any]:
    planned = meta.get("planned") or {}
    stages = []
    for stage in ("tune", "confirm"):
        done = int((trials["stage"] == stage).sum())
        plan = planned.get(stage)
        stages.append({"stage": stage, "planned": plan if plan is not None else "–", "done": done,
                       "missing": max(plan - done, 0) if isinstance(plan, int) else "–"})
    groups = meta.get("groups") or [
        {"dataset": d, "arch": a, "loss": x}
        for d, a, x in sorted(set(zip(trials["dataset"], trials["arch"], trials["loss"])))]
    ranked = set()
    for c in per_cell:
        ranked |= {(c.dataset, c.arch, loss) for loss in c.table.index}
    unranked = [g for g in groups if isinstance(g, dict)
                and (g.get("dataset"), g.get("arch"), g.get("loss")) not in ranked]
    missing_any = any(isinstance(s["missing"], int) and s["missing"] > 0 for s in stages)
    finished = bool(meta.get("ended_at"))
    if finished and not missing_any and not unranked:
        state = "complete"
    elif finished:
        state = "finished with gaps"
    else:
        state = "partial (running or interrupted)" if meta else "partial (no sweep.json)"
    return {"state": state, "complete": state == "complete", "stages": stages,
            "unranked": [f"{g.get('dataset')}/{g.get('arch')}/{g.get('loss')}" for g in unranked]}


def _ranking_table(c: stats.CellStats) -> dict[str, Any]:
    t = c.table
    tested = "p_vs_best" in t.columns
    has_hd = t["hd95"].notna().any()
    class_cols = [x for x in t.columns if x.startswith("class:")]
    cm = stats.class_metric(c.primary) if c.primary != "miou" else "IoU"
    cols = [("Rank", "by mean primary metric over seeds; 1 = best"), ("Loss", "display name (registry name)"),
            ("Family", "the survey's taxonomy"), ("Seeds", "confirmation runs ranked"),
            (c.primary, "mean over seeds of the final primary metric"), ("95% CI", "Student-t over seeds")]
    if has_hd:
        cols.append(("HD95", "mean HD95 over seeds (lower is better)"))
    if tested:
        cols += [("Mean rank", "per-case rank averaged over cases (rank-then-aggregate)"),
                 ("Rank 95% CI", "bootstrap over cases"), ("P(first)", "share of bootstrap replicates ranked 1st"),
                 ("p vs best", "Wilcoxon signed-rank against the best loss, Holm-corrected over all pairs")]
    cols += [(f"{x[6:]}", f"per-class {cm}, mean over seeds") for x in class_cols]
    cols += [("Last-20% gain", f"convergence: primary metric at the final report minus at the last report at or "
              f"before {stats.TAIL_START:.0%} of the budget, mean over the ranked runs; >= "
              f"{stats.CONVERGENCE_GAIN} means still improving (more steps could change the order)"),
             ("Tuning gain", "tuned minus default primary metric (source in the tooltip)"),
             ("Best hyperparameters", "the confirmed configuration"), ("ms/step", "median training step"),
             ("Peak MB", "peak memory")]
    rows, classes = [], []
    for loss, r in t.iterrows():
        row = [_cell(r["rank"], int(r["rank"])), _loss_cell(r["title"], loss, r["in_survey"]),
               _cell(r["family"]), _cell(r["n_seeds"], r["n_seeds"],
                                         title=f"{r['n_diverged']} diverged" if r["n_diverged"] else ""),
               _num(r["mean"], "{:.4f}"),
               _cell(f"[{r['ci_lo']:.4f}, {r['ci_hi']:.4f}]" if _finite(r["ci_lo"]) else "–",
                     repr(float(r["ci_hi"] - r["ci_lo"])) if _finite(r["ci_lo"]) else None, "num")]
        if has_hd:
            row.append(_num(r["hd95"], "{:.2f}"))
        if tested:
            row += [_num(r.get("mean_rank"), "{:.2f}"),
                    _cell(f"{r['rank_lo']:.0f}–{r['rank_hi']:.0f}" if _finite(r.get("rank_lo")) else "–",
                          r.get("rank_lo") if _finite(r.get("rank_lo")) else None, "num"),
                    _num(r.get("p_first"), "{:.2f}"),
                    _cell(_pvalue(r.get("p_vs_best")) if loss != c.winner else "best",
                          repr(float(r["p_vs_best"])) if _finite(r.get("p_vs_best")) else None, "num")]
        row += [_num(r[x], "{:.3f}") for x in class_cols]
        conv = _num(r.get("last20_gain"), "{:+.4f}", "warn" if loss in c.not_converged else "")
        if loss in c.not_converged:
            conv["title"] = f"not converged: gains >= {stats.CONVERGENCE_GAIN} over the last 20% of its budget"
        row.append(conv)
        gain = _num(r["gain"], "{:+.4f}")
        gain["title"] = str(r["gain_source"])
        if not _finite(r["gain"]):
            gain["text"] = "–"
        row += [gain, _cell(r["params"]), _num(r["step_ms"], "{:.1f}"), _num(r["peak_memory_mb"], "{:.0f}")]
        rows.append(row)
        classes.append("top" if bool(r.get("top", False)) else "")
    return _table(cols, rows, classes)


def _pairwise_table(c: stats.CellStats) -> dict[str, Any] | None:
    p, raw = c.wilcoxon_holm, c.wilcoxon_raw
    if p is None or len(p) > 30:
        return None
    titles = c.table["title"]
    cols = [("", "")] + [(str(titles[x]), str(x)) for x in p.columns]
    rows = []
    for a in p.index:
        row = [_cell(titles[a])]
        for b in p.columns:
            v = p.loc[a, b]
            row.append(_cell("" if a == b else _pvalue(v), None if a == b else repr(float(v)),
                             "num sig" if a != b and v < stats.ALPHA else "num",
                             "" if a == b or raw is None else f"uncorrected p = {_pvalue(raw.loc[a, b])}"))
        rows.append(row)
    return _table(cols, rows)


def _power(c: stats.CellStats, protocol: dict[str, Any] | None, alpha: float) -> dict[str, Any]:
    """The design limit of the cell: from its actual complete cases and ranked losses, and as planned."""
    planned = None
    entry = ((protocol or {}).get("power") or {}) if isinstance((protocol or {}).get("power"), dict) else {}
    p = entry.get(f"{c.dataset}/{c.arch}")
    if isinstance(p, dict) and all(isinstance(p.get(k), int) for k in ("n_cases", "n_losses")):
        planned = power_limit(p["n_cases"], p["n_losses"], float(p.get("alpha", alpha))).sentence()
    return {"actual": c.power.sentence() if c.power is not None else None,
            "declarable": None if c.power is None else c.power.declarable,
            "planned": planned if planned is not None else "not recorded"}


def _tuning_section(trials: pd.DataFrame, curves: pd.DataFrame, c: stats.CellStats,
                    protocol: dict[str, Any] | None) -> dict[str, Any] | None:
    es = (protocol or {}).get("early_stopping") if isinstance((protocol or {}).get("early_stopping"), dict) else None
    rungs = [int(r) for r in es.get("rungs") or [] if isinstance(r, int)] if es else []
    max_t = int(es["max_t"]) if es and isinstance(es.get("max_t"), int) else None
    counts = stats.rung_counts(trials, curves, c.dataset, c.arch, rungs, max_t)
    if counts.empty:
        return None
    names = stats.display_names(trials)
    sources = stats.confirmed_sources(trials, c.dataset, c.arch)
    recorded = counts[[f"proposal:{x}" for x in PROPOSALS]].to_numpy().sum() > 0
    marks = [int(x[5:]) for x in counts.columns if x.startswith("rung:")]
    cols = [("Loss", ""), ("Trials", "tune trials of the group")]
    if recorded:
        cols += [("Default", "the survey's defaults (first trial of the group)"),
                 ("Random", "proposed by the sampler's random start-up"), ("Model", "proposed by TPE's model"),
                 ("Fixed", "nothing to tune")]
        if counts["proposal:unrecorded"].any():
            cols.append(("Unrecorded", "trials without a recorded proposal"))
    for r in marks:
        cols.append((f"≥ {r} reports" + (" (max_t)" if r == max_t else ""),
                     f"tune trials whose curve reached report {r}" + (": the full budget" if r == max_t else
                                                                       ": an ASHA rung")))
    cols += [("Full budget", "completed with every step of the budget: the trials confirmation picks from"),
             ("Confirmed", "tune trial whose params the ranked confirmation runs use (matched by value)")]
    order = [x for x in c.table.index if x in counts.index] + sorted(set(counts.index) - set(c.table.index))
    rows = []
    for loss in order:
        r = counts.loc[loss]
        row = [_loss_cell(names.get(loss, loss), loss), _cell(int(r["trials"]), int(r["trials"]))]
        if recorded:
            keys = [f"proposal:{x}" for x in PROPOSALS] + (["proposal:unrecorded"] if counts["proposal:unrecorded"]
                                                           .any() else [])
            row += [_cell(int(r[k]), int(r[k]), "num") for k in keys]
        row += [_cell(int(r[f"rung:{m}"]), int(r[f"rung:{m}"]), "num") for m in marks]
        row.append(_cell(int(r["full_budget"]), int(r["full_budget"]), "num"))
        src = sources.get(loss)
        row.append(_cell("not confirmed yet" if src is None else ", ".join(src[:3]) or "no match",
                         title="" if not src or len(src) <= 3 else ", ".join(src)))
        rows.append(row)
    return {"table": _table(cols, rows), "proposals_recorded": bool(recorded), "rungs": rungs, "max_t": max_t,
            "scheduler": str(es.get("scheduler", "not recorded")) if es else "not recorded"}


def _case_list(cases: list[str], limit: int = 12) -> str:
    return ", ".join(cases[:limit]) + (f" and {len(cases) - limit} more" if len(cases) > limit else "")


def _roles(cases: pd.DataFrame, protocol: dict[str, Any] | None, dataset: str) -> dict[str, Any]:
    r = stats.case_roles(cases, protocol, dataset)
    return {**r, "selection_text": _case_list(r["selection"]["cases"]) or "none recorded",
            "ranking_text": _case_list(r["ranking"]["cases"]) or "none recorded",
            "overlap_text": _case_list(r["overlap"], 20)}


def _size_section(c: stats.CellStats, cases: pd.DataFrame, trials: pd.DataFrame) -> dict[str, Any] | None:
    view = stats.size_view(c, cases, trials)
    if view is None:
        return None
    sizes = view["sizes"]
    cols = [("Loss", ""), ("Family", ""), ("Small", "mean over the small classes"), ("Rank (small)", ""),
            ("Large", "mean over the large classes"), ("Rank (large)", "")]
    cols += [(f"{name} ({sizes[name]:.1%})", "median share of the ground truth") for name in sizes.index]
    rows, classes = [], []
    for loss, r in view["table"].iterrows():
        row = [_loss_cell(r["title"], loss), _cell(r["family"]), _num(r["small"]), _cell(int(r["rank_small"]),
               int(r["rank_small"])), _num(r["large"]), _cell(int(r["rank_large"]), int(r["rank_large"]))]
        row += [_num(r[name]) for name in sizes.index]
        rows.append(row)
        classes.append("top" if r["rank_small"] == 1 or r["rank_large"] == 1 else "")
    t = view["table"]
    best_small = t.index[t["rank_small"] == 1].tolist()
    best_large = t.index[t["rank_large"] == 1].tolist()
    return {"table": _table(cols, rows, classes), "plot": plots.size_scatter(view),
            "small": view["small"], "large": view["large"],
            "best_small": [t.loc[x, "title"] for x in best_small],
            "best_large": [t.loc[x, "title"] for x in best_large]}


def _overlays(rdir: Path, c: stats.CellStats, runs: pd.DataFrame) -> list[dict[str, Any]]:
    """Overlays of the best and the worst loss on the same cases (their lowest-seed confirmation runs)."""
    if len(c.table) < 2:
        return []
    picks = []
    for loss in (c.table.index[0], c.table.index[-1]):
        r = runs[runs["loss"] == loss].sort_values("seed")
        files: dict[str, Path] = {}
        for tid in r["trial_id"]:
            for d in overlay_dirs(rdir, tid):
                files = {p.name: p for p in sorted(d.glob("*.png")) if p.stat().st_size <= MAX_OVERLAY_BYTES}
            if files:
                break
        picks.append((loss, files))
    common = sorted(set(picks[0][1]) & set(picks[1][1]))[:OVERLAY_CASES]
    out = []
    for name in common:
        out.append({"case": Path(name).stem, "images": [
            {"loss": c.table.loc[loss, "title"], "rank": int(c.table.loc[loss, "rank"]),
             "src": "data:image/png;base64," + base64.b64encode(files[name].read_bytes()).decode("ascii")}
            for loss, files in picks]})
    return out


def _sensitivity(trials: pd.DataFrame, c: stats.CellStats, losses: list[str], spaces: dict[str, Any]
                 ) -> list[dict[str, Any]]:
    out = []
    names = stats.display_names(trials)
    for loss in losses:
        tune = stats.tuning_trials(trials, c.dataset, c.arch, loss)
        if tune.empty:
            continue
        dims = stats.param_dims(tune, spaces.get(loss))
        importance = stats.param_importance(tune, spaces.get(loss))
        plot = plots.sensitivity(tune, c.primary, importance, dims)
        n_params = sum(1 for x in tune.columns if x.startswith("param:"))
        out.append({"loss": names.get(loss, loss), "id": loss, "n": len(tune), "n_params": n_params, "plot": plot,
                    "importance": sorted((importance or {}).items(), key=lambda kv: -kv[1])})
    return out


def _metadata(trials: pd.DataFrame, meta: dict[str, Any], max_failed: int) -> dict[str, Any]:
    counts = trials.groupby(["stage", "status"]).size().unstack(fill_value=0) if len(trials) else pd.DataFrame()
    statuses = list(counts.columns)
    count_rows = [[_cell(stage)] + [_cell(int(counts.loc[stage, s]), int(counts.loc[stage, s])) for s in statuses]
                  + [_cell(int(counts.loc[stage].sum()), int(counts.loc[stage].sum()))] for stage in counts.index]
    counts_table = _table([("Stage", "")] + [(s, "") for s in statuses] + [("All", "")], count_rows)
    failed = trials[trials["status"].isin(stats.FAILED_STATUSES)].sort_values(["stage", "dataset", "arch", "loss",
                                                                               "trial_id"])
    names = stats.display_names(trials)
    frows = [[_cell(r.stage), _cell(f"{r.dataset}/{r.arch}"), _cell(names.get(r.loss, r.loss)), _cell(r.trial_id),
              _cell(r.status), _cell(f"{r.steps_done}/{r.budget_steps}", r.steps_done), _cell(r.error or "")]
             for r in failed.head(max_failed).itertuples()]
    failed_table = _table([("Stage", ""), ("Cell", ""), ("Loss", ""), ("Trial", ""), ("Status", ""),
                           ("Steps", "done / budget"), ("Reason", "")], frows)

    def flat(d: Any) -> list[tuple[str, str]]:
        if not isinstance(d, dict):
            return []
        return [(str(k), v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str))
                for k, v in sorted(d.items())]

    return {
        "sweep_id": meta.get("sweep_id") or ", ".join(sorted(set(trials["sweep_id"]))) or "–",
        "started_at": meta.get("started_at") or "–", "ended_at": meta.get("ended_at") or "–",
        "wall": _duration(meta.get("wall_s")), "git_commit": meta.get("git_commit") or "–",
        "versions": flat(meta.get("versions")), "hardware": flat(meta.get("hardware")),
        "config_text": meta.get("config_text") or "",
        "config_json": json.dumps(meta.get("config"), indent=1, sort_keys=True, default=str) if meta.get("config")
        else "", "counts": counts_table, "failed": failed_table, "n_failed": len(failed),
        "n_stopped": int((trials["status"] == "stopped").sum()), "max_failed": max_failed,
        "nodes": sorted({str(n) for n in trials["node"].dropna()}),
        "trial_wall": _duration(trials["wall_s"].sum()) if trials["wall_s"].notna().any() else "–",
    }


def _data_section(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """sweep.json's ``datasets`` (``raysweep data inspect`` statistics) as one table per dataset: what kind of data
    the ranking holds for. Skipped datasets and older sweeps (no key) give a line each."""
    out = []
    for name, r in sorted((meta.get("datasets") or {}).items()):
        if not isinstance(r, dict):
            continue
        if "skipped" in r or not isinstance(r.get("per_class"), list):
            out.append({"dataset": str(name), "skipped": str(r.get("skipped", "no statistics"))})
            continue
        cols = [("Class", "class id and name"), ("Pixels %", "share of the labelled pixels/voxels"),
                ("In cases", "inspected cases that contain the class"),
                ("Objects per case", "connected components per inspected case"),
                ("Median object size", "pixels/voxels per connected component")]
        rows = [[_cell(f"{c.get('id')} {c.get('name')}", c.get("id")), _num(100 * c["fraction"], "{:.3g}")
                 if _finite(c.get("fraction")) else _cell("–"),
                 _cell(f"{c.get('cases_present')}/{r.get('inspected')}", c.get("cases_present")),
                 _num(c.get("objects_per_case"), "{:.2f}"), _num(c.get("median_object_size"), "{:.0f}")]
                for c in r["per_class"] if isinstance(c, dict)]
        splits = r.get("splits") if isinstance(r.get("splits"), dict) else {}
        shapes = r.get("shapes") if isinstance(r.get("shapes"), dict) else None
        spacing = r.get("spacing") if isinstance(r.get("spacing"), dict) else None
        facts = [f"cases per split: {', '.join(f'{k} {v}' for k, v in splits.items())}; "
                 f"{r.get('inspected')} of {r.get('total_cases')} inspected"]
        if shapes:
            facts.append(f"shape {' x '.join(map(str, shapes.get('min', [])))} .. "
                         f"{' x '.join(map(str, shapes.get('max', [])))}")
        if spacing:
            facts.append(f"spacing (median) {' x '.join(f'{v:g}' for v in spacing.get('median', []))} mm")
        out.append({"dataset": str(name), "skipped": None, "facts": facts, "table": _table(cols, rows),
                    "warnings": [str(w) for w in r.get("warnings") or []]})
    return out


def _protocol_view(protocol: dict[str, Any] | None) -> list[tuple[str, str]]:
    """sweep.json's protocol as (key, text) pairs for the metadata; one "not recorded" line for older sweeps."""
    if not protocol:
        return [("protocol", "not recorded (a sweep from before the protocol was written to sweep.json)")]
    out = []
    for key in ("alpha", "early_stopping", "tuning", "confirmation"):
        v = protocol.get(key)
        out.append((key, "not recorded" if v is None else v if isinstance(v, str) else
                    json.dumps(v, sort_keys=True, default=str)))
    for key in ("selection", "ranking"):
        v = protocol.get(key)
        if not isinstance(v, dict):
            out.append((key, "not recorded"))
            continue
        out.append((key, "; ".join(f"{d}: {e.get('split', '?')} ({len(e.get('cases') or [])} cases)"
                                   if isinstance(e, dict) else f"{d}: {e}" for d, e in sorted(v.items()))))
    return out


def build_context(frames: dict[str, pd.DataFrame], meta: dict[str, Any], rdir: Path, *, alpha: float = stats.ALPHA,
                  n_boot: int = stats.BOOTSTRAP, max_failed: int = 200) -> dict[str, Any]:
    """Everything the template shows, as plain Python values (strings unescaped: the template escapes)."""
    trials, curves, cases = frames["trials"], frames["curves"], frames["cases"]
    protocol = meta.get("protocol") if isinstance(meta.get("protocol"), dict) else None
    per_cell = [stats.cell_stats(trials, cases, d, a, alpha=alpha, n_boot=n_boot, curves=curves)
                for d, a in stats.cells(trials)]
    ranked_cells = [c for c in per_cell if not c.table.empty]

    summary_rows, summary_classes = [], []
    for c in per_cell:
        key = f"{c.dataset} / {c.arch}"
        if c.table.empty:
            summary_rows.append([_cell(key), _cell("no confirmation runs yet"), _cell(""), _cell("–"), _cell("–"),
                                 _cell("–"), _cell("–"), _cell("–"), _cell("–"), _cell("–")])
            summary_classes.append("")
            continue
        w = c.table.iloc[0]
        sep = {True: "yes", False: "no (tie)", None: "not tested"}[c.separable]
        if c.power is None:
            power = _cell("not tested", cls="na")
        elif c.power.declarable:
            power = _cell(f"can declare (min adj. p {c.power.min_p_adjusted:.3g})", c.power.min_p_adjusted,
                          title=c.power.sentence())
        else:
            power = _cell(f"CANNOT declare any difference (needs ≥ {c.power.cases_needed} cases)",
                          c.power.min_p_adjusted, "power-none", c.power.sentence())
        names = [c.table.loc[x, "title"] for x in c.not_converged]
        if c.not_converged:
            conv = _cell("not converged: " + ", ".join(names), len(names), "warn",
                         f"gain >= {stats.CONVERGENCE_GAIN} over the last 20% of the budget among the "
                         f"{stats.CONVERGENCE_TOP} best losses")
        elif c.table["last20_gain"].notna().any():
            conv = _cell("yes", 0, title=f"none of the {stats.CONVERGENCE_TOP} best losses gains >= "
                         f"{stats.CONVERGENCE_GAIN} over the last 20% of its budget")
        else:
            conv = _cell("no curves", cls="na")
        summary_rows.append([
            _cell(key), _loss_cell(w["title"], w["loss"], w["in_survey"]), _cell(w["family"]),
            _cell(f"{w['mean']:.4f}" + (f" [{w['ci_lo']:.4f}, {w['ci_hi']:.4f}]" if _finite(w["ci_lo"]) else ""),
                  repr(float(w["mean"])), "num"),
            _num(c.spread, "{:.4f}"), _cell(sep, cls="sep-" + sep.split()[0]), power,
            _num(c.kendall_w, "{:.3f}"), conv,
            _cell(f"{len(c.table)} losses, {c.n_cases} cases, {c.n_seeds} seeds")])
        summary_classes.append("")
    summary = _table([("Dataset / arch", ""), ("Winner", "best mean primary metric"), ("Family", ""),
                      ("Mean [95% CI]", "primary metric over seeds"), ("Spread", "best minus worst loss"),
                      ("Top separable?", "Wilcoxon-Holm on paired per-case scores"),
                      ("Design power", "can the cell's complete paired cases and ranked losses separate any pair at "
                       "all after Holm's correction? (the smallest adjusted p-value the design allows)"),
                      ("Seed agreement (W)", "Kendall's W of the seeds x losses matrix of final metrics (tie-"
                       "corrected): 1 = every confirmation seed orders the losses alike, 0 = unrelated orders"),
                      ("Converged?", f"'not converged' when one of the {stats.CONVERGENCE_TOP} best losses still "
                       f"gains >= {stats.CONVERGENCE_GAIN} over the last 20% of its budget"), ("Evidence", "")],
                     summary_rows, summary_classes)
    powerless = [f"{c.dataset} / {c.arch}" for c in per_cell if c.power is not None and not c.power.declarable]

    overall = stats.overall_ranking(ranked_cells)
    overall_table = None
    if not overall.empty:
        rank_cols = [x for x in overall.columns if x.startswith("rank:")]
        rows = [[_cell(i + 1, i + 1), _loss_cell(r["title"], loss), _cell(r["family"]), _num(r["mean_rank"], "{:.2f}"),
                 _cell(int(r["n_cells"]), int(r["n_cells"])), _cell(int(r["wins"]), int(r["wins"])),
                 _cell(int(r["top_groups"]), int(r["top_groups"]))]
                + [_num(r[x], "{:.0f}") for x in rank_cols]
                for i, (loss, r) in enumerate(overall.iterrows())]
        overall_table = _table([("#", ""), ("Loss", ""), ("Family", ""), ("Mean rank", "over the cells ranked"),
                                ("Cells", ""), ("Wins", "cells where it ranks first"),
                                ("Top groups", "cells where it is not separable from the best")]
                               + [(x[5:], "rank in this cell") for x in rank_cols], rows)
    fam = stats.family_view(ranked_cells)
    fam_rows = []
    for f, r in fam.iterrows():
        row = [_cell(f), _num(r["mean_relative_rank"], "{:.2f}")]
        for c in ranked_cells:
            k = f"{c.dataset}/{c.arch}"
            row += [_num(r[f"best:{k}"], "{:.0f}"), _num(r[f"median:{k}"], "{:.1f}")]
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
        cells_ctx.append({
            "id": f"cell-{i}", "dataset": c.dataset, "arch": c.arch, "primary": c.primary, "stats": c,
            "ranking": None if c.table.empty else _ranking_table(c),
            "unranked": sorted(set(t["loss"]) - set(c.table.index)),
            "dots": plots.ranking_dots(c), "cd": plots.cd_diagram(c), "pairwise": _pairwise_table(c),
            "friedman": c.friedman, "verdict": c.verdict, "caveats": c.caveats,
            "nemenyi_top": [c.table.loc[x, "title"] for x in c.nemenyi_top_group],
            "top_titles": [c.table.loc[x, "title"] for x in c.top_group],
            "size": _size_section(c, cases, trials),
            "curves": plots.learning_curves(curves, c, set(runs["trial_id"])), "budget": plots.budget_curves(t, c),
            "overlays": _overlays(rdir, c, runs), "sensitivity": _sensitivity(trials, c, losses, meta.get("spaces") or {}),
            "power": _power(c, protocol, alpha), "tuning": _tuning_section(trials, curves, c, protocol),
            "roles": _roles(cases, protocol, c.dataset),
            "not_converged": [c.table.loc[x, "title"] for x in c.not_converged],
            "kendall_w": c.kendall_w, "w_seeds": c.w_seeds, "w_losses": c.w_losses,
        })
    return {
        "title": f"raysweep ranking: {meta.get('sweep_id') or rdir}",
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__, "schema_version": SCHEMA_VERSION, "alpha": alpha, "n_boot": n_boot,
        "results_dir": str(rdir), "progress": _progress(trials, meta, per_cell), "summary": summary,
        "powerless": powerless, "overlaps": sorted({x["dataset"] for x in cells_ctx if x["roles"]["overlap"]}),
        "protocol": _protocol_view(protocol), "convergence_gain": stats.CONVERGENCE_GAIN,
        "data": _data_section(meta),
        "convergence_top": stats.CONVERGENCE_TOP,
        "overall": overall_table, "family": _table(fam_cols, fam_rows) if ranked_cells else None,
        "family_plot": plots.family_ranks(ranked_cells), "cells": cells_ctx,
        "meta": _metadata(trials, meta, max_failed), "n_trials": len(trials),
        "css": (_HERE / "assets" / "report.css").read_text(), "js": (_HERE / "assets" / "report.js").read_text(),
    }


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
