"""The selection side of the report: which cases selected and which ranked (:func:`case_roles`), how each group's
tuning trials ran (rungs reached, the point confirmed), and how much each hyperparameter mattered (Optuna's
PED-ANOVA importance over the group's own search space)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import pandas as pd

from .stats import parse_json, ranked_runs

__all__ = ["case_roles", "confirmed_sources", "param_dims", "param_importance", "rung_counts", "tuning_trials"]


def rung_counts(trials: pd.DataFrame, curves: pd.DataFrame, dataset: str, arch: str,
                rungs: list[int] | None, max_t: int | None) -> pd.DataFrame:
    """Per loss of a cell, how far its tune trials got. Rows: losses; columns:

    ``trials`` (tune trials), ``proposal:<p>`` counts for each of :data:`raysweep.results.PROPOSALS` and
    ``proposal:unrecorded`` (null), ``rung:<r>`` for each rung and for ``max_t`` (a trial reached rung ``r`` when its
    highest ``training_iteration`` in ``curves`` is >= r), ``full_budget`` (completed with ``steps_done >=
    budget_steps``: the trials confirmation may pick from). Without ``rungs``/``max_t`` only the recorded columns.
    """
    from ..results import PROPOSALS

    t = trials[(trials["stage"] == "tune") & (trials["dataset"] == dataset) & (trials["arch"] == arch)]
    reached = curves[curves["trial_id"].isin(set(t["trial_id"]))].groupby("trial_id")["training_iteration"].max()
    marks = sorted({int(r) for r in (rungs or [])} | ({int(max_t)} if max_t else set()))
    rows = []
    for loss, g in t.groupby("loss"):
        top = g["trial_id"].map(reached).fillna(0).to_numpy(float)
        proposal = g["proposal"] if "proposal" in g.columns else pd.Series([None] * len(g), index=g.index)
        row: dict[str, Any] = {"loss": loss, "trials": len(g)}
        for p in PROPOSALS:
            row[f"proposal:{p}"] = int((proposal == p).sum())
        row["proposal:unrecorded"] = int(proposal.isna().sum())
        for r in marks:
            row[f"rung:{r}"] = int((top >= r).sum())
        row["full_budget"] = int(((g["status"] == "completed") & (g["steps_done"] >= g["budget_steps"])).sum())
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    return df.set_index(df["loss"].rename(None)).drop(columns="loss")


def _same_params(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if set(a) != set(b):
        return False
    for key, v in a.items():
        w = b[key]
        if isinstance(v, (int, float)) and isinstance(w, (int, float)) and not isinstance(v, bool):
            if not math.isclose(float(v), float(w), rel_tol=1e-9, abs_tol=1e-12):
                return False
        elif v != w:
            return False
    return True


def confirmed_sources(trials: pd.DataFrame, dataset: str, arch: str) -> dict[str, list[str]]:
    """loss -> trial ids of the tune trials whose params equal those of its ranked confirmation runs (full-budget
    ones first; empty when none matches, e.g. the confirmed params were rounded)."""
    t = trials[(trials["dataset"] == dataset) & (trials["arch"] == arch)]
    runs = ranked_runs(t)
    out: dict[str, list[str]] = {}
    for loss, g in runs.groupby("loss"):
        confirmed = parse_json(g.sort_values("seed")["params"].iloc[0])
        tune = t[(t["stage"] == "tune") & (t["loss"] == loss)]
        full = (tune["status"] == "completed") & (tune["steps_done"] >= tune["budget_steps"])
        tune = tune.assign(_full=full).sort_values(["_full", "trial_id"], ascending=[False, True])
        out[loss] = [tid for tid, p in zip(tune["trial_id"], tune["params"]) if _same_params(parse_json(p),
                                                                                             confirmed)]
    return out


def tuning_trials(trials: pd.DataFrame, dataset: str, arch: str, loss: str) -> pd.DataFrame:
    """The group's tune trials with their params expanded into ``param:<name>`` columns, in start order."""
    g = trials[(trials["stage"] == "tune") & (trials["dataset"] == dataset) & (trials["arch"] == arch)
               & (trials["loss"] == loss)]
    if g.empty:
        return g
    g = g.sort_values(["started_at", "trial_id"], na_position="last")
    params = pd.DataFrame([parse_json(p) for p in g["params"]], index=g.index)
    return pd.concat([g, params.add_prefix("param:")], axis=1)


def param_dims(tune: pd.DataFrame, space: dict[str, dict] | None) -> dict[str, dict]:
    """The tuned parameters that vary in ``tune`` (``param:<name>`` columns) with their search dimension.

    ``space`` is the group's space from sweep.json's ``spaces`` (``{name: {"type", "low", "high", "log"} or
    {"type": "categorical", "choices"}}``), which says the bounds and the scale exactly. Sweeps written before
    sweep.json recorded spaces get a dimension read off the values (log scale when positive and spanning over two
    decades), the only place that guesses.
    """
    out = {}
    for c in tune.columns:
        if not c.startswith("param:") or tune[c].nunique(dropna=True) < 2:
            continue
        name, v = c[len("param:"):], tune[c].dropna()
        dim = (space or {}).get(name)
        if dim is None:
            if pd.api.types.is_bool_dtype(v) or v.dtype == object:
                dim = {"type": "categorical", "choices": sorted(set(v), key=str)}
            else:
                lo, hi = float(v.min()), float(v.max())
                kind = "int" if pd.api.types.is_integer_dtype(v) else "float"
                dim = {"type": kind, "low": lo, "high": hi, "log": lo > 0 and hi / lo > 100}
        out[name] = dim
    return out


def param_importance(tune: pd.DataFrame, space: dict[str, dict] | None = None) -> dict[str, float] | None:
    """Optuna's PED-ANOVA importance of each tuned parameter for the final metric of the group's tuning trials.

    The study is rebuilt from the rows (completed and early-stopped trials with a score), with the group's search
    dimensions (:func:`param_dims`). None when Optuna is not installed, fewer than two parameters vary, or fewer
    than 8 trials have a score. Normalised to sum to 1.
    """
    try:
        import optuna
    except ImportError:
        return None
    dims = param_dims(tune, space)
    cols = [f"param:{name}" for name in dims]
    rows = tune[tune["final_metric"].notna() & tune["status"].isin(("completed", "stopped"))]
    rows = rows.dropna(subset=cols)
    if len(cols) < 2 or len(rows) < 8:
        return None
    dists = {}
    for name, d in dims.items():
        if d["type"] == "categorical":
            dists[name] = optuna.distributions.CategoricalDistribution(list(d["choices"]))
        elif d["type"] == "int":
            dists[name] = optuna.distributions.IntDistribution(int(d["low"]), int(d["high"]), log=bool(d["log"]))
        else:
            dists[name] = optuna.distributions.FloatDistribution(float(d["low"]), float(d["high"]), log=bool(d["log"]))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning
        study = optuna.create_study(direction="maximize")
        for _, r in rows.iterrows():
            params = {c[len("param:"):]: (r[c].item() if hasattr(r[c], "item") else r[c]) for c in cols}
            study.add_trial(optuna.trial.create_trial(params=params, distributions=dists,
                                                      value=float(r["final_metric"])))
        try:
            # PED-ANOVA compares the top `target_quantile` of trials with all: keep about 5 trials in the top set
            # for the small studies of a CPU sweep (Optuna's default 0.1 suits hundreds of trials).
            q = min(0.5, max(0.1, 5 / len(rows)))
            return optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(target_quantile=q))
        except (ValueError, RuntimeError):
            return None


def case_roles(cases: pd.DataFrame, protocol: dict[str, Any] | None, dataset: str) -> dict[str, Any]:
    """Which cases selected (tuning scores) and which ranked (confirmation) for ``dataset``.

    From sweep.json's ``protocol`` where it names them (``source="protocol"``), else from the ``cases`` table's
    ``tune`` and ``confirm`` rows (``source="cases table"``). ``overlap``: case ids scored by both tune and confirm
    trials in the cases table, plus any the protocol lists in both roles; it must be empty (a case that chose the
    configuration would also judge it). Returns ``{"selection": {"split", "cases"}, "ranking": {...}, "source",
    "overlap", "table_selection", "table_ranking"}`` with sorted case lists.
    """
    d = cases[cases["dataset"] == dataset]
    table_sel = sorted(set(d.loc[d["stage"] == "tune", "case"]))
    table_rank = sorted(set(d.loc[d["stage"] == "confirm", "case"]))
    proto = protocol if isinstance(protocol, dict) else {}

    def role(key: str, fallback: list[str]) -> tuple[dict[str, Any], bool]:
        entry = (proto.get(key) or {}).get(dataset) if isinstance(proto.get(key), dict) else None
        if isinstance(entry, dict) and isinstance(entry.get("cases"), list):
            return {"split": str(entry.get("split", "not recorded")), "cases": sorted(map(str, entry["cases"]))}, True
        return {"split": "not recorded", "cases": fallback}, False

    sel, from_proto_s = role("selection", table_sel)
    rank, from_proto_r = role("ranking", table_rank)
    overlap = set(table_sel) & set(table_rank)
    if from_proto_s and from_proto_r:
        overlap |= set(sel["cases"]) & set(rank["cases"])
    return {"selection": sel, "ranking": rank,
            "source": "protocol" if from_proto_s and from_proto_r else "cases table",
            "overlap": sorted(overlap), "table_selection": table_sel, "table_ranking": table_rank}
