"""The report's sections, one builder each: progress, ranking and pairwise tables, power, tuning, case roles,
object sizes, overlays, sensitivity, data, protocol and run metadata. Each returns plain values for the template."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pandas as pd

from ..checks import finite
from ..power import power_limit
from ..results import PROPOSALS, overlay_dirs
from ..vocab import FAILED_STATUSES, cell_label
from . import markup as mk
from . import plots, stats, tuning
from . import robustness as rb
from .sizes import size_view

MAX_OVERLAY_BYTES = 2_000_000
OVERLAY_CASES = 3

__all__ = ["data_section", "metadata", "overlap_section", "overlays", "pairwise_table", "power", "progress",
           "protocol_view", "ranking_table", "robustness_sections", "roles", "sensitivity", "size_section",
           "tuning_section"]


def progress(trials: pd.DataFrame, meta: dict[str, Any], per_cell: list[stats.CellStats]) -> dict[str, Any]:
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
    groups = [{**g, "dataset": cell_label(g.get("dataset"), g.get("variant"))} for g in groups if isinstance(g, dict)]
    unranked = [g for g in groups if (g.get("dataset"), g.get("arch"), g.get("loss")) not in ranked]
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


def ranking_table(c: stats.CellStats) -> dict[str, Any]:
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
    replicated = c.n_replicates > 1
    if replicated:
        cols += [("Replicates", "independent replicates of the group's tuning and confirmation ranked"),
                 ("Replicate spread", "the lowest and the highest replicate mean of the final primary metric, and "
                  "their standard deviation: how much the loss's score depends on tuning and training luck")]
    if tested:
        cols += [("Mean rank", "per-case rank averaged over cases (rank-then-aggregate)"),
                 ("Rank 95% CI", "two-level bootstrap over cases and each loss's replicates"),
                 ("P(first)", "share of bootstrap draws over cases and replicates in which the loss ranks first"),
                 ("p vs best", "the pairwise test against the best loss (the cell's test: see the verdict), "
                  "Holm-corrected over all pairs")]
    cols += [(f"{x[6:]}", f"per-class {cm}, mean over seeds") for x in class_cols]
    cols += [("Last-20% gain", f"convergence: primary metric at the final report minus at the last report at or "
              f"before {stats.TAIL_START:.0%} of the budget, mean over the ranked runs; >= "
              f"{stats.CONVERGENCE_GAIN} means still improving (more steps could change the order)"),
             ("Tuning gain", "tuned minus default primary metric (source in the tooltip)"),
             ("Best hyperparameters", "the confirmed configuration" + (" of each replicate, those that confirmed the "
                                                                        "same one together (r0–r2, r5: ...)" if
                                                                        replicated else "")),
             ("ms/step", "median training step"),
             ("Peak MB", "peak memory")]
    rows, classes = [], []
    for loss, r in t.iterrows():
        row = [mk.cell(r["rank"], int(r["rank"])), mk.loss_cell(r["title"], loss, r["in_survey"]),
               mk.cell(r["family"]), mk.cell(r["n_seeds"], r["n_seeds"],
                                         title=f"{r['n_diverged']} diverged" if r["n_diverged"] else ""),
               mk.num(r["mean"], "{:.4f}"),
               mk.cell(f"[{r['ci_lo']:.4f}, {r['ci_hi']:.4f}]" if finite(r["ci_lo"]) else "–",
                     repr(float(r["ci_hi"] - r["ci_lo"])) if finite(r["ci_lo"]) else None, "num")]
        if has_hd:
            row.append(mk.num(r["hd95"], "{:.2f}"))
        if replicated:
            row += [mk.cell(r["n_replicates"], r["n_replicates"], "num"),
                    mk.cell(f"{r['rep_min']:.3f}–{r['rep_max']:.3f} (sd {r['rep_sd']:.3f})" if finite(r["rep_sd"])
                            else "–", repr(float(r["rep_sd"])) if finite(r["rep_sd"]) else None, "num")]
        if tested:
            row += [mk.num(r.get("mean_rank"), "{:.2f}"),
                    mk.cell(f"{r['rank_lo']:.0f}–{r['rank_hi']:.0f}" if finite(r.get("rank_lo")) else "–",
                          r.get("rank_lo") if finite(r.get("rank_lo")) else None, "num"),
                    mk.num(r.get("p_first"), "{:.2f}"),
                    mk.cell(mk.pvalue(r.get("p_vs_best")) if loss != c.winner else "best",
                          repr(float(r["p_vs_best"])) if finite(r.get("p_vs_best")) else None, "num")]
        row += [mk.num(r[x], "{:.3f}") for x in class_cols]
        conv = mk.num(r.get("last20_gain"), "{:+.4f}", "warn" if loss in c.not_converged else "")
        if loss in c.not_converged:
            conv["title"] = f"not converged: gains >= {stats.CONVERGENCE_GAIN} over the last 20% of its budget"
        row.append(conv)
        gain = mk.num(r["gain"], "{:+.4f}")
        gain["title"] = str(r["gain_source"])
        if not finite(r["gain"]):
            gain["text"] = "–"
        params = stats.replicate_configurations(r["replicate_params"]) if replicated else r["params"]
        row += [gain, mk.cell(params), mk.num(r["step_ms"], "{:.1f}"), mk.num(r["peak_memory_mb"], "{:.0f}")]
        rows.append(row)
        classes.append("top" if bool(r.get("top", False)) else "")
    return mk.table(cols, rows, classes)


def pairwise_table(c: stats.CellStats) -> dict[str, Any] | None:
    p, raw = c.p_holm, c.p_raw
    if p is None or len(p) > 30:
        return None
    titles = c.table["title"]
    cols = [("", "")] + [(str(titles[x]), str(x)) for x in p.columns]
    rows = []
    for a in p.index:
        row = [mk.cell(titles[a])]
        for b in p.columns:
            v = p.loc[a, b]
            row.append(mk.cell("" if a == b else mk.pvalue(v), None if a == b else repr(float(v)),
                             "num sig" if a != b and v < stats.ALPHA else "num",
                             "" if a == b or raw is None else f"uncorrected p = {mk.pvalue(raw.loc[a, b])}"))
        rows.append(row)
    return mk.table(cols, rows)


def power(c: stats.CellStats, protocol: dict[str, Any] | None, alpha: float) -> dict[str, Any]:
    """The design limit of the cell: from its actual complete cases and ranked losses, and as planned."""
    planned = None
    entry = ((protocol or {}).get("power") or {}) if isinstance((protocol or {}).get("power"), dict) else {}
    p = entry.get(f"{c.dataset}/{c.arch}")
    if isinstance(p, dict) and all(isinstance(p.get(k), int) for k in ("n_cases", "n_losses")):
        replicates = p.get("replicates") if isinstance(p.get("replicates"), int) else 1  # older sweep.json: 1
        planned = power_limit(p["n_cases"], p["n_losses"], float(p.get("alpha", alpha)), replicates).sentence()
    return {"actual": c.power.sentence() if c.power is not None else None,
            "declarable": None if c.power is None else c.power.declarable,
            "planned": planned if planned is not None else "not recorded"}


def tuning_section(trials: pd.DataFrame, curves: pd.DataFrame, c: stats.CellStats,
                    protocol: dict[str, Any] | None, spaces: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The cell's tuning table: per loss, its tune trials by proposer, by rung reached, at full budget, the
    categorical branches they tried, and the tune trial confirmed. ``spaces``: sweep.json's ``spaces`` (per loss,
    its search space), which says which hyperparameters are categorical and their choices; without it, a
    hyperparameter whose tried values are all strings or booleans counts as categorical."""
    es = (protocol or {}).get("early_stopping") if isinstance((protocol or {}).get("early_stopping"), dict) else None
    rungs = [int(r) for r in es.get("rungs") or [] if isinstance(r, int)] if es else []
    max_t = int(es["max_t"]) if es and isinstance(es.get("max_t"), int) else None
    counts = tuning.rung_counts(trials, curves, c.dataset, c.arch, rungs, max_t)
    if counts.empty:
        return None
    names = stats.display_names(trials)
    sources = tuning.confirmed_sources(trials, c.dataset, c.arch)
    recorded = counts[[f"proposal:{x}" for x in PROPOSALS]].to_numpy().sum() > 0
    marks = [int(x[5:]) for x in counts.columns if x.startswith("rung:")]
    cols = [("Loss", ""), ("Trials", "tune trials of the group")]
    if recorded:
        cols += [("Default", "the survey's defaults (first trial of the group)"),
                 ("Branch", "the stratified start-up: the defaults with one categorical choice changed, so that "
                  "every branch of the space is tried before TPE exploits"),
                 ("Random", "proposed by the sampler's random start-up"), ("Model", "proposed by TPE's model"),
                 ("Fixed", "nothing to tune")]
        if counts["proposal:unrecorded"].any():
            cols.append(("Unrecorded", "trials without a recorded proposal"))
    for r in marks:
        cols.append((f"≥ {r} reports" + (" (max_t)" if r == max_t else ""),
                     f"tune trials whose curve reached report {r}" + (": the full budget" if r == max_t else
                                                                       ": an ASHA rung")))
    cols += [("Full budget", "completed with every step of the budget: the trials confirmation picks from"),
             ("Branches tried", "per categorical hyperparameter, the distinct values the group's tune trials tried "
              "(any status; '(no score)': only in trials without a score; 'not tried': choices of the search space "
              "no trial took); trial counts in the tooltip"),
             ("Confirmed", "tune trial whose params the ranked confirmation runs use (matched by value)")]
    order = [x for x in c.table.index if x in counts.index] + sorted(set(counts.index) - set(c.table.index))
    cell_tune = trials[(trials["stage"] == "tune") & (trials["dataset"] == c.dataset) & (trials["arch"] == c.arch)]

    def text(v: Any) -> str:
        return json.dumps(v) if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v)

    def branches(loss: str) -> dict[str, Any]:
        g = cell_tune[cell_tune["loss"] == loss]
        space = (spaces or {}).get(loss) if isinstance((spaces or {}).get(loss), dict) else None
        points = [stats.parse_json(p) for p in g["params"]]
        scored = [finite(m) for m in pd.to_numeric(g["final_metric"], errors="coerce")]
        names = sorted({k for p in points for k in p})
        if space is not None:
            cats = [k for k, d in space.items() if isinstance(d, dict) and d.get("type") == "categorical"]
        else:
            cats = [k for k in names if all(isinstance(p[k], (str, bool)) for p in points if k in p)]
        parts, tips = [], []
        for name in cats:
            tried: dict[str, list[bool]] = {}
            for p, ok in zip(points, scored):
                if name in p:
                    tried.setdefault(text(p[name]), []).append(ok)
            choices = [text(x) for x in (space or {}).get(name, {}).get("choices") or []]
            values = [x for x in choices if x in tried] + sorted(set(tried) - set(choices))
            shown = [x + ("" if any(tried[x]) else " (no score)") for x in values]
            missing = [x for x in choices if x not in tried]
            parts.append(f"{name}: {', '.join(shown) or 'none'}" + (f" (not tried: {', '.join(missing)})"
                                                                      if missing else ""))
            tips.append(f"{name}: " + ", ".join(f"{x} {len(tried[x])}" for x in values))
        return mk.cell("; ".join(parts) or "–", len(parts), "" if parts else "na", "; ".join(tips))
    rows = []
    for loss in order:
        r = counts.loc[loss]
        row = [mk.loss_cell(names.get(loss, loss), loss), mk.cell(int(r["trials"]), int(r["trials"]))]
        if recorded:
            keys = [f"proposal:{x}" for x in PROPOSALS] + (["proposal:unrecorded"] if counts["proposal:unrecorded"]
                                                           .any() else [])
            row += [mk.cell(int(r[k]), int(r[k]), "num") for k in keys]
        row += [mk.cell(int(r[f"rung:{m}"]), int(r[f"rung:{m}"]), "num") for m in marks]
        row.append(mk.cell(int(r["full_budget"]), int(r["full_budget"]), "num"))
        row.append(branches(loss))
        src = sources.get(loss)
        row.append(mk.cell("not confirmed yet" if src is None else ", ".join(src[:3]) or "no match",
                         title="" if not src or len(src) <= 3 else ", ".join(src)))
        rows.append(row)
    return {"table": mk.table(cols, rows), "proposals_recorded": bool(recorded), "rungs": rungs, "max_t": max_t,
            "scheduler": str(es.get("scheduler", "not recorded")) if es else "not recorded"}


def case_list(cases: list[str], limit: int = 12) -> str:
    return ", ".join(cases[:limit]) + (f" and {len(cases) - limit} more" if len(cases) > limit else "")


def roles(cases: pd.DataFrame, protocol: dict[str, Any] | None, dataset: str) -> dict[str, Any]:
    r = tuning.case_roles(cases, protocol, dataset)
    return {**r, "selection_text": case_list(r["selection"]["cases"]) or "none recorded",
            "ranking_text": case_list(r["ranking"]["cases"]) or "none recorded",
            "overlap_text": case_list(r["overlap"], 20)}


def size_section(c: stats.CellStats, cases: pd.DataFrame, trials: pd.DataFrame) -> dict[str, Any] | None:
    view = size_view(c, cases, trials)
    if view is None:
        return None
    sizes = view["sizes"]
    cols = [("Loss", ""), ("Family", ""), ("Small", "mean over the small classes"), ("Rank (small)", ""),
            ("Large", "mean over the large classes"), ("Rank (large)", "")]
    cols += [(f"{name} ({sizes[name]:.1%})", "median share of the ground truth") for name in sizes.index]
    rows, classes = [], []
    for loss, r in view["table"].iterrows():
        row = [mk.loss_cell(r["title"], loss), mk.cell(r["family"]), mk.num(r["small"]), mk.cell(int(r["rank_small"]),
               int(r["rank_small"])), mk.num(r["large"]), mk.cell(int(r["rank_large"]), int(r["rank_large"]))]
        row += [mk.num(r[name]) for name in sizes.index]
        rows.append(row)
        classes.append("top" if r["rank_small"] == 1 or r["rank_large"] == 1 else "")
    t = view["table"]
    best_small = t.index[t["rank_small"] == 1].tolist()
    best_large = t.index[t["rank_large"] == 1].tolist()
    return {"table": mk.table(cols, rows, classes), "plot": plots.size_scatter(view),
            "small": view["small"], "large": view["large"],
            "best_small": [t.loc[x, "title"] for x in best_small],
            "best_large": [t.loc[x, "title"] for x in best_large]}


def overlays(rdir: Path, c: stats.CellStats, runs: pd.DataFrame) -> list[dict[str, Any]]:
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


def sensitivity(trials: pd.DataFrame, c: stats.CellStats, losses: list[str], spaces: dict[str, Any]
                 ) -> list[dict[str, Any]]:
    out = []
    names = stats.display_names(trials)
    for loss in losses:
        tune = tuning.tuning_trials(trials, c.dataset, c.arch, loss)
        if tune.empty:
            continue
        dims = tuning.param_dims(tune, spaces.get(loss))
        importance = tuning.param_importance(tune, spaces.get(loss))
        plot = plots.sensitivity(tune, c.primary, importance, dims)
        n_params = sum(1 for x in tune.columns if x.startswith("param:"))
        out.append({"loss": names.get(loss, loss), "id": loss, "n": len(tune), "n_params": n_params, "plot": plot,
                    "importance": sorted((importance or {}).items(), key=lambda kv: -kv[1])})
    return out


def _replicates_of(span: list[int] | None) -> str:
    """A merged part's replicates, ``[first, last]``, as the report lists them."""
    if not span:
        return ""
    return f" replicate {span[0]}" if span[0] == span[1] else f" replicates {span[0]}-{span[1]}"


def metadata(trials: pd.DataFrame, meta: dict[str, Any], max_failed: int) -> dict[str, Any]:
    counts = trials.groupby(["stage", "status"]).size().unstack(fill_value=0) if len(trials) else pd.DataFrame()
    statuses = list(counts.columns)
    count_rows = [[mk.cell(stage)] + [mk.cell(int(counts.loc[stage, s]), int(counts.loc[stage, s])) for s in statuses]
                  + [mk.cell(int(counts.loc[stage].sum()), int(counts.loc[stage].sum()))] for stage in counts.index]
    counts_table = mk.table([("Stage", "")] + [(s, "") for s in statuses] + [("All", "")], count_rows)
    failed = trials[trials["status"].isin(FAILED_STATUSES)].sort_values(["stage", "dataset", "arch", "loss",
                                                                               "trial_id"])
    names = stats.display_names(trials)
    frows = [[mk.cell(r.stage), mk.cell(f"{r.dataset}/{r.arch}"), mk.cell(names.get(r.loss, r.loss)), mk.cell(r.trial_id),
              mk.cell(r.status), mk.cell(f"{r.steps_done}/{r.budget_steps}", r.steps_done), mk.cell(r.error or "")]
             for r in failed.head(max_failed).itertuples()]
    failed_table = mk.table([("Stage", ""), ("Cell", ""), ("Loss", ""), ("Trial", ""), ("Status", ""),
                           ("Steps", "done / budget"), ("Reason", "")], frows)

    def flat(d: Any) -> list[tuple[str, str]]:
        if not isinstance(d, dict):
            return []
        return [(str(k), v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str))
                for k, v in sorted(d.items())]

    return {
        "sweep_id": meta.get("sweep_id") or ", ".join(sorted(set(trials["sweep_id"]))) or "–",
        "started_at": meta.get("started_at") or "–", "ended_at": meta.get("ended_at") or "–",
        "wall": mk.duration(meta.get("wall_s")), "git_commit": meta.get("git_commit") or "–",
        "versions": flat(meta.get("versions")), "hardware": flat(meta.get("hardware")),
        "config_text": meta.get("config_text") or "",
        "config_json": json.dumps(meta.get("config"), indent=1, sort_keys=True, default=str) if meta.get("config")
        else "", "counts": counts_table, "failed": failed_table, "n_failed": len(failed),
        "n_stopped": int((trials["status"] == "stopped").sum()), "max_failed": max_failed,
        "nodes": sorted({str(n) for n in trials["node"].dropna()}),
        "trial_wall": mk.duration(trials["wall_s"].sum()) if trials["wall_s"].notna().any() else "–",
        # a sweep merged from parts run apart (raysweep merge): each part's id, cells, start and time
        "parts": [f"{p.get('sweep_id')}: {', '.join(p.get('cells') or [])}"
                  + _replicates_of(p.get("replicates"))
                  + f", started {p.get('started_at') or '–'}, {mk.duration(p.get('wall_s'))}"
                  for p in meta.get("parts") or [] if isinstance(p, dict)],
    }


def data_section(meta: dict[str, Any]) -> list[dict[str, Any]]:
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
        rows = [[mk.cell(f"{c.get('id')} {c.get('name')}", c.get("id")), mk.num(100 * c["fraction"], "{:.3g}")
                 if finite(c.get("fraction")) else mk.cell("–"),
                 mk.cell(f"{c.get('cases_present')}/{r.get('inspected')}", c.get("cases_present")),
                 mk.num(c.get("objects_per_case"), "{:.2f}"), mk.num(c.get("median_object_size"), "{:.0f}")]
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
        out.append({"dataset": str(name), "skipped": None, "facts": facts, "table": mk.table(cols, rows),
                    "warnings": [str(w) for w in r.get("warnings") or []]})
    return out


def protocol_view(protocol: dict[str, Any] | None) -> list[tuple[str, str]]:
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


# -- robustness and overlap versus boundary (raysweep.report.robustness) ------------------------------------------

def _overrides_text(overrides: dict[str, Any]) -> str:
    """A variant's option overrides as ``section.key = value`` pairs (values as compact JSON)."""
    parts = [f"{sec}.{k} = {json.dumps(v, sort_keys=True, default=str)}" for sec, d in sorted(overrides.items())
             if isinstance(d, dict) for k, v in sorted(d.items())]
    return "; ".join(parts) or "none (the dataset as configured)"


def variants_table(variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The corruption or shift of each variant of a dataset (sweep.json's ``variants``), the clean one first."""
    order = sorted(variants, key=lambda v: (variants[v]["axis"] is not None, variants[v]["axis"] or "",
                                            variants[v]["level"], v))
    rows = [[mk.cell(v), mk.cell(variants[v]["axis"] or "clean reference"), mk.num(variants[v]["level"], "{:g}"),
             mk.cell(_overrides_text(variants[v]["overrides"]))] for v in order]
    return mk.table([("Variant", ""), ("Axis", "what the variant changes"), ("Level", "0 = clean"),
                     ("Corruption / shift", "the option sections the variant merges onto the dataset's")], rows)


def _axis_panel(a: rb.AxisStats) -> dict[str, Any]:
    t = a.table
    tested = "p_vs_best" in t.columns
    cols = [("Rank", "by retained performance; 1 = the most robust"), ("Loss", ""), ("Family", ""),
            (f"{a.primary} clean", "mean over seeds at the clean level"),
            (f"{a.primary} worst", f"mean over seeds at {a.axis} {a.worst[0]:g}" if a.worst else ""),
            ("Retained", "worst / clean (ratio of the means over seeds)"),
            ("Rank clean → worst", "rank by mean metric at the clean and at the worst level")]
    if tested:
        cols += [("Case retained", "mean over the paired cases of worst / clean per case"),
                 ("Rank 95% CI", "bootstrap over cases"), ("P(first)", "share of bootstrap replicates ranked 1st"),
                 ("p vs best", "the pairwise test on per-case retained values against the most robust loss, "
                               "Holm-corrected over all pairs")]
    rows, classes = [], []
    for loss, r in t.iterrows():
        row = [mk.cell(int(r["rank"]), int(r["rank"])), mk.loss_cell(r["title"], loss), mk.cell(r["family"]),
               mk.num(r["clean"], "{:.4f}"), mk.num(r["worst"], "{:.4f}"), mk.num(r["retained"], "{:.1%}"),
               mk.cell(f"{int(r['rank_clean'])} → {int(r['rank_worst'])}", int(r["rank_worst"] - r["rank_clean"]),
                       "num")]
        if tested:
            row += [mk.num(r["mean_case_retained"], "{:.1%}"),
                    mk.cell(f"{r['rank_lo']:.0f}–{r['rank_hi']:.0f}", r["rank_lo"], "num"),
                    mk.num(r["p_first"], "{:.2f}"),
                    mk.cell("best" if loss == t.index[0] else mk.pvalue(r["p_vs_best"]),
                            repr(float(r["p_vs_best"])) if finite(r["p_vs_best"]) else None, "num")]
        rows.append(row)
        classes.append("top" if bool(r.get("top", False)) else "")
    return {"axis": a.axis, "worst": None if a.worst is None else {"level": a.worst[0], "variant": a.worst[1]},
            "levels": [{"level": lv, "variant": v} for lv, v in a.levels],
            "plot": plots.robustness_levels(a.curves, a.axis, a.primary, a.worst[0] if a.worst else None),
            "table": mk.table(cols, rows, classes) if len(t) else None, "verdict": a.verdict, "sentence": a.sentence,
            "caveats": a.caveats, "not_compared": a.not_compared, "n_cases": a.n_cases, "friedman": a.friedman,
            "top": [t.loc[x, "title"] for x in a.top_group]}


def robustness_sections(trials: pd.DataFrame, cases: pd.DataFrame, meta: dict[str, Any], alpha: float,
                        n_boot: int) -> list[dict[str, Any]]:
    """One "Robustness" section per (dataset, arch) whose dataset has variants (sweep.json's ``variants``)."""
    return [{"id": f"robust-{i}", "dataset": r["dataset"], "arch": r["arch"], "clean": r["clean"],
             "variants": variants_table(r["variants"]), "axes": [_axis_panel(a) for a in r["axes"]]}
            for i, r in enumerate(rb.robustness_cells(trials, cases, meta, alpha, n_boot))]


def overlap_section(trials: pd.DataFrame, c: stats.CellStats) -> dict[str, Any] | None:
    """The cell's DSC-against-HD95 view: scatter, table and Pareto set (None without confirmed runs)."""
    view = rb.overlap_boundary(trials, c.dataset, c.arch)
    t = view["table"]
    if t.empty:
        return None
    rows = [[mk.loss_cell(r["title"], loss), mk.cell(r["family"]), mk.num(r["dsc"], "{:.4f}"),
             mk.num(r["hd95"], "{:.2f}"), mk.cell(f"{r['n_hd95']}/{r['n_runs']}", r["n_hd95"], "num"),
             mk.cell("yes" if r["pareto"] else "", int(bool(r["pareto"])))] for loss, r in t.iterrows()]
    table = mk.table([("Loss", ""), ("Family", ""), ("DSC", "mean over the ranked runs (higher is better)"),
                      ("HD95", "mean over the ranked runs with a finite HD95 (lower is better)"),
                      ("Runs with HD95", "ranked runs with a finite HD95 / all ranked runs"),
                      ("Pareto", "no other loss has both a higher-or-equal DSC and a lower-or-equal HD95")],
                     rows, ["top" if p else "" for p in t["pareto"]])
    return {"plot": plots.overlap_boundary(t), "table": table,
            "pareto": [t.loc[x, "title"] for x in view["pareto"]],
            "excluded": [t.loc[x, "title"] for x in view["excluded"]]}
