"""Does the verdict replicate? Whole sweeps that differ only in ``tuning.seed``, compared pairwise.

    python -m benchmarks.replication [--config configs/default.yaml] [--seeds 100 200 300] [--arch NAME ...]
                                     [--replicates K:N] [--out results/replication]
                                     [--md benchmarks/results/replication.md]

Each seed's sweep is the config with only ``tuning.seed`` changed (so new tuning draws and, through it, new training
seeds for every replicate: :func:`raysweep.config.tuning_seed`), run with ``raysweep run`` into ``<out>/seed<s>``
(an existing folder resumes: nothing finished is rerun). A sweep too long for one sitting runs one architecture at a
time (``--arch``, into ``<out>/seed<s>/<arch>``: a cell's seeds and scores do not depend on the cells beside it);
the parts of a seed are merged as ``raysweep merge`` merges them before they are summarised. ``--replicates K:N``
runs only replicates K to N-1 of each seed's sweep (into ``<out>/seed<s>/<arch>-r<K>-<N-1>``): a design of N
replicates measured by adding to sweeps of K already run (a replicate's seeds depend only on its index, so the
merged parts are the sweep one run of N makes). Then, per cell:

* per sweep: its time (``wall_s``: the two stages, without Ray's start-up and the report; of the part that ran the
  cell, for a sweep run in parts), the
  top group's size against the losses ranked, the winner, and the largest last-20% gain among the 5 best losses;
* per pair of sweeps (``raysweep compare``): claims replicated / left open / contradicted, each winner inside the
  other's top group, and Kendall's tau-b between the two mean rankings.

The targets docs/protocol.md states are checked and printed beside the figures. Time a sweep only on an otherwise idle
machine (Ray's trials run at nice 15 and lose to any other job). This runs whole sweeps: it is not part of
``make bench`` (the default design takes tens of minutes per seed on a 2-core CPU).

**The design trade-off** (``--design``): how many replicates a verdict needs, measured without running more. The
sweeps' replicates are pooled per cell (they are independent runs of the same pipeline when no two sweeps share a
tuning or training seed, which is checked from each ``sweep.json``), and designs of ``R`` replicates are drawn from
the pool: for each ``R``, the top group's size over random ``R``-subsets, and for each ``R`` up to half the pool,
random pairs of *disjoint* ``R``-subsets (two independent studies of that design) compared as ``raysweep compare``
compares two sweeps: contradicted claims, Kendall's tau, each winner in the other's top group. The time of a design
is the median minutes per replicate of the sweeps timed on an idle machine (``--timed``) times ``R`` (every
replicate is the same work).

    python -m benchmarks.replication --no-run --seeds 0 100 200 300 --design [--draws 200] [--timed 0 200]
        [--design-r 8 10 12] [--arch transformer]      # only these R, only these cells: a few minutes, not an hour

**Nested designs** (``--nested R ...``): each sweep cut to its first ``R`` replicates is exactly the sweep a run of
``R`` would have made (a replicate's seeds, sampler seed and start-up branch depend only on its index), so sweeps of
``N`` replicates also measure every design of fewer: per cell and ``R``, each cut sweep's top group and winner, and
per pair of cut sweeps the contradicted claims, Kendall's tau and the winners, as above. Unlike ``--design`` these
are the real sweeps, not draws; like it, they run nothing.

    python -m benchmarks.replication --no-run --seeds 100 200 300 --nested 10 11 12 13 14 \
        --out benchmarks/measured/replication-d14

Sweeps are compared only when they are one design: their configs (``sweep.json``) may differ in ``name`` and
``tuning.seed`` and nothing else (a sweep of some of the cells, ``--arch``, is compared on those), or the comparison
is refused with the keys that differ. ``--archive DIR`` copies
what the tables are computed from (each sweep's or part's Parquet tables, ``sweep.json``, ``state.json`` and its
config, not Ray's trial folders or checkpoints; one Parquet file per table) to the same place under ``DIR``
(``DIR/seed<s>`` or ``DIR/seed<s>/<arch>``; only the sweeps and parts ``--out`` holds), so a long measurement made in
parts, on different days or machines, can be summarised later with ``--no-run --out DIR``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
TAU_TARGET = 0.8


def seed_folder(out: Path, seed: int, archs: list[str], replicates: range | None = None) -> Path:
    """Where the sweep of ``tuning.seed`` = ``seed`` runs: ``out/seed<s>`` whole, ``out/seed<s>/<arch>`` for a part
    of it (``--arch``; several architectures joined with ``+``), ``out/seed<s>/<arch>-r<K>-<N-1>`` (or
    ``r<K>-<N-1>``) for the replicates K to N-1 (``--replicates K:N``). Each holds ``config.json`` and ``sweep/``."""
    folder = out / f"seed{seed}"
    name = "+".join(archs) + (f"-r{replicates.start}-{replicates.stop - 1}" if replicates else "")
    return folder / name.lstrip("-") if name else folder


def run_seed(config: Path, seed: int, out: Path, archs: list[str], replicates: range | None = None) -> Path:
    """The config with ``tuning.seed`` = ``seed`` (and, given ``replicates``, ``tuning.first_replicate`` and
    ``replicates``) written beside its results, then ``raysweep run`` on it."""
    from raysweep.config.yaml_io import read_yaml_mapping

    raw = read_yaml_mapping(config)
    raw.setdefault("tuning", {})["seed"] = seed
    if replicates:
        raw["tuning"].update(first_replicate=replicates.start, replicates=len(replicates))
    raw["name"] = re.sub(r"-seed\d+$", "", str(raw.get("name", "sweep"))) + f"-seed{seed}"  # a part's config.json too
    folder = seed_folder(out, seed, archs, replicates)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"  # JSON is YAML: raysweep run reads it as is
    path.write_text(json.dumps(raw, indent=1))
    cmd = [sys.executable, "-m", "raysweep.cli", "run", "--config", str(path), "--out", str(folder / "sweep"),
           "-o", str(folder / "report.html")] + [x for a in archs for x in ("--arch", a)]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return folder / "sweep"


def part_archs(part: Path) -> set[str]:
    """The architectures a sweep folder's ``sweep.json`` config holds."""
    return set(json.loads((part / "results" / "sweep.json").read_text()).get("config", {}).get("architectures", {}))


def parts_of(out: Path, seed: int, archs: list[str] | None = None) -> list[Path]:
    """The sweep folders of ``tuning.seed`` = ``seed`` under ``out``: the whole sweep's, or its parts' (run apart
    with ``--arch`` or ``--replicates``; with ``archs``, only the parts that hold one of them). FileNotFoundError
    when there is none."""
    folder = seed_folder(out, seed, [])
    if (folder / "sweep").is_dir():
        return [folder / "sweep"]
    parts = sorted(p / "sweep" for p in folder.iterdir() if (p / "sweep").is_dir()) if folder.is_dir() else []
    parts = [p for p in parts if not archs or part_archs(p) & set(archs)]
    if not parts:
        raise FileNotFoundError(f"{folder}: no sweep (seed{seed}/sweep) and no parts of one (seed{seed}/<arch>/sweep);"
                                " run it first (without --no-run)")
    return parts


def sweep_of(out: Path, seed: int, scratch: Path, archs: list[str] | None = None) -> Path:
    """The sweep of ``tuning.seed`` = ``seed``: the whole sweep, its only part, or its parts (those of ``archs``)
    merged into ``scratch`` (``raysweep merge``: the results one whole run writes; the parts' configs must be one
    sweep's)."""
    from raysweep.results import merge_results

    parts = parts_of(out, seed, archs)
    if len(parts) == 1:
        return parts[0]
    merge_results(parts, scratch / f"seed{seed}")
    return scratch / f"seed{seed}"


def flat_config(config: dict, prefix: str = "") -> dict[str, str]:
    """A config's leaves as dotted keys (``tuning.seed``) -> their JSON text, comparable and hashable."""
    out = {}
    for k, v in config.items():
        out.update(flat_config(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": json.dumps(v)})
    return out


def design_differences(folders: dict[int, Path]) -> dict[str, set]:
    """The config keys (dotted) whose values differ between the sweeps, other than ``name`` and ``tuning.seed``;
    empty when they are one design. A sweep of some of the cells (``--arch``, ``--dataset``) is compared on the cells
    it has. Sweeps written before ``sweep.json`` kept the config are not compared."""

    configs = {}
    for seed, folder in folders.items():
        config = json.loads((folder / "results" / "sweep.json").read_text()).get("config")
        if config is not None:
            configs[seed] = {k: v for k, v in flat_config(config).items() if k not in ("name", "tuning.seed")}

    def values(key):
        # a sweep run with --arch or --dataset lacks the other cells: only the cells it has are compared
        cell = key.split(".")[:2] if key.startswith(("architectures.", "datasets.")) else None
        return {c.get(key, "(absent)") for c in configs.values()
                if cell is None or any(k.startswith(".".join(cell) + ".") for k in c)}

    seen = {k: values(k) for k in sorted(set().union(*configs.values()) if configs else ())}
    return {k: v for k, v in seen.items() if len(v) > 1}


def check_one_design(folders: dict[int, Path]) -> None:
    """ValueError naming each differing key when the sweeps are not one design (:func:`design_differences`)."""
    diff = design_differences(folders)
    if diff:
        keys = "; ".join(f"{k}: {' vs '.join(sorted(v))}" for k, v in diff.items())
        raise ValueError(f"the sweeps of tuning.seed {', '.join(map(str, folders))} are not one design (only name and "
                         f"tuning.seed may differ): {keys}. Compare sweeps run from the same config")


def archive(sweeps: list[Path], out: Path, dest: Path) -> list[Path]:
    """Copy each sweep folder under ``out`` (a whole sweep or a part: :func:`parts_of`) to the same place under
    ``dest``: its tables (one Parquet file each), ``state.json`` and the ``config.json`` beside it, not Ray's trial
    folders or checkpoints. A copy already there is replaced, others are left alone. Returns the copies."""
    import shutil

    from raysweep.results import write_compact_copy

    copies = []
    for folder in sweeps:
        target = dest / folder.relative_to(out)
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        write_compact_copy(folder / "results", target / "results")  # a file per table, not per trial
        shutil.copy2(folder / "state.json", target / "state.json")
        if (folder.parent / "config.json").is_file():
            shutil.copy2(folder.parent / "config.json", target.parent / "config.json")
        copies.append(target)
    return copies


def sweep_minutes(folder: Path, cell: str | None = None) -> float:
    """Minutes the sweep ran (sweep.json's ``wall_s``, else state.json's): the stages, without Ray's start-up and
    the report. For a sweep merged from parts, the time of the parts that ran ``cell`` (its replicates may have run
    in several), or of all parts without one."""
    path = folder / "results" / "sweep.json"
    meta = json.loads(path.read_text()) if path.is_file() else {}
    ran = [part["wall_s"] for part in meta.get("parts", []) if cell and cell in part["cells"]]
    if ran:
        return math.nan if None in ran else sum(ran) / 60
    if meta.get("wall_s") is None and (folder / "state.json").is_file():
        meta = json.loads((folder / "state.json").read_text())
    return (meta.get("wall_s") if meta.get("wall_s") is not None else math.nan) / 60


def summarise(folders: dict[int, Path]) -> tuple[list[dict], list[dict]]:
    """Per (sweep, cell) and per (pair, cell) rows of the figures above."""
    from raysweep.report import stats
    from raysweep.report.compare import compare
    from raysweep.results import read_results

    runs = []
    for seed, folder in folders.items():
        frames = stats.cell_view(read_results(folder / "results"))
        for cell in stats.cells(frames["trials"]):
            c = stats.cell_stats(frames["trials"], frames["cases"], *cell, curves=frames["curves"], n_boot=200)
            top5 = c.table.head(stats.CONVERGENCE_TOP)["last20_gain"]
            runs.append({"seed": seed, "cell": "/".join(cell), "minutes": sweep_minutes(folder, "/".join(cell)),
                         "top": len(c.top_group), "losses": len(c.table), "winner": c.winner,
                         "max_top5_gain": float(top5.max()), "test": c.test_method,
                         "halves": c.halves, "kendall_w": c.kendall_w})
    pairs = []
    for a, b in itertools.combinations(folders, 2):
        result = compare(folders[a], folders[b])
        for c in result["cells"]:
            pairs.append({"pair": f"{a} vs {b}", "cell": f"{c['dataset']}/{c['arch']}",
                          "replicated": c["n_replicated"], "open": c["n_open"], "contradicted": c["n_contradicted"],
                          "contradicted_pairs": c["contradicted_titles"],
                          "a_winner_in_b_top": c["b_top_has_a_winner"], "b_winner_in_a_top": c["a_top_has_b_winner"],
                          "tau": c["tau"]})
    return runs, pairs


def markdown(runs: list[dict], pairs: list[dict]) -> str:
    lines = ["| sweep (tuning.seed) | cell | minutes | top group / losses | winner | largest last-20% gain, top 5 | "
             "in-run halves: tau; claims replicated / open / contradicted | Kendall's W |",
             "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        h = r["halves"]
        halves = (f"{h['tau']:+.3f}; {h['replicated']} / {h['open']} / {h['contradicted']}" if h else "–")
        lines.append(f"| {r['seed']} | {r['cell']} | {r['minutes']:.1f} | {r['top']} / {r['losses']}"
                     f"{' (ok)' if r['top'] <= r['losses'] / 2 else ' (target: at most half)'} | {r['winner']} | "
                     f"{r['max_top5_gain']:.4f}{' (ok)' if r['max_top5_gain'] < 0.02 else ' (target: < 0.02)'} | "
                     f"{halves} | {r['kendall_w']:.3f} |")
    lines += ["", "| pair | cell | claims replicated / open / contradicted | winners in each other's top group | "
              "Kendall tau-b |", "|---|---|---|---|---|"]
    for p in pairs:
        both = p["a_winner_in_b_top"] and p["b_winner_in_a_top"]
        lines.append(f"| {p['pair']} | {p['cell']} | {p['replicated']} / {p['open']} / {p['contradicted']}"
                     f"{'' if not p['contradicted'] else ' (' + '; '.join(p['contradicted_pairs']) + ')'} | "
                     f"{'yes' if both else 'no'} | {p['tau']:.3f}{' (ok)' if p['tau'] >= TAU_TARGET else ''} |")
    return "\n".join(lines) + "\n"


def pooled_scores(folders: dict[int, Path], timed: list[int] | None = None
                  ) -> tuple[dict[str, "pd.DataFrame"], float]:
    """Per cell, the cases x (loss, replicate) scores of every sweep's replicates pooled (replicates renumbered
    0..N-1 in sweep order; only cases every replicate scored), and the median minutes per replicate of the sweeps
    in ``timed`` (default: all; name the sweeps timed on an idle machine, as a busy one slows a sweep).
    ValueError when two sweeps share a tuning or training seed (their replicates would not be independent)."""
    import pandas as pd

    from raysweep.report import paired, stats
    from raysweep.results import read_results

    seen: dict[int, int] = {}
    blocks: dict[str, list] = {}
    minutes = []
    offset = 0
    for sweep_seed, folder in folders.items():
        meta = json.loads((folder / "results" / "sweep.json").read_text())
        reps = meta["protocol"]["confirmation"].get("replicate_seeds") or {"0": {"tune": meta["protocol"]["tuning"][
            "seed"], "confirm": meta["protocol"]["confirmation"]["seeds"]}}
        for rep in reps.values():
            for s in [rep["tune"], *rep["confirm"]]:
                if s in seen and seen[s] != sweep_seed:
                    raise ValueError(f"{folder}: seed {s} is also used by the sweep of tuning.seed {seen[s]}; pooled "
                                     f"replicates must not share a seed (space the tuning seeds further apart)")
                seen[s] = sweep_seed
        if timed is None or sweep_seed in timed:
            minutes.append(sweep_minutes(folder) / len(reps))
        frames = stats.cell_view(read_results(folder / "results"))
        for cell in stats.cells(frames["trials"]):
            t = frames["trials"]
            t = t[(t["dataset"] == cell[0]) & (t["arch"] == cell[1])]
            sc = paired.replicate_scores(frames["cases"], stats.ranked_runs(t), stats.class_metric(
                str(t["primary_metric"].mode().iloc[0])))
            sc.columns = pd.MultiIndex.from_tuples([(loss, offset + r) for loss, r in sc.columns],
                                                   names=["loss", "replicate"])
            blocks.setdefault("/".join(cell), []).append(sc)
        offset += len(reps)
    pools = {cell: pd.concat(b, axis=1).dropna(axis=0, how="any").sort_index(axis=1) for cell, b in blocks.items()}
    return pools, float(statistics.median(minutes)) if minutes else math.nan


def _verdict(scores, alpha: float):
    """(winner, top group, claims, mean of each loss) of one design's scores, as the report decides them."""
    from raysweep.report import paired

    tests = paired.pairwise_tests(scores)
    means = paired.loss_means(scores).mean().sort_values(ascending=False)
    found = paired.claims(tests, alpha)
    best = str(means.index[0])
    worse = {y for x, y in found if x == best}
    return best, [loss for loss in means.index if loss not in worse], found, means


def _compare_verdicts(a, b) -> dict:
    """Two :func:`_verdict` results compared as ``raysweep compare`` compares two sweeps: contradicted claims, Kendall's
    tau-b between the mean rankings, and whether each winner is inside the other's top group."""
    from scipy.stats import kendalltau

    from raysweep.report.paired import compare_claims

    return {"contradicted": len(compare_claims(a[2], b[2])["contradicted"]),
            "tau": float(kendalltau(a[3].reindex(b[3].index), b[3]).statistic),
            "winners_inside": a[0] in b[1] and b[0] in a[1]}


def design_tradeoff(pools: dict[str, "pd.DataFrame"], minutes_per_replicate: float, draws: int = 200,
                    seed: int = 0, alpha: float = 0.05, sizes: list[int] | None = None) -> list[dict]:
    """One row per (cell, R): the top group's size over ``draws`` random R-subsets of the pooled replicates
    (median, min, max, share of draws at most half the losses) and, for R up to half the pool, over ``draws``
    random pairs of disjoint R-subsets: contradicted claims (mean, share of pairs with any), Kendall's tau (min,
    median, share of pairs below the 0.8 target) and the share of pairs whose winners are each in the other's top
    group. ``sizes``: only these R (default: every R from 2 to the pool's size)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = []
    for cell, pool in pools.items():
        reps = sorted(set(pool.columns.get_level_values("replicate")))
        k = len(set(pool.columns.get_level_values("loss")))

        def subset(chosen, pool=pool):
            return pool.loc[:, pool.columns.get_level_values("replicate").isin(chosen)]

        for r in [r for r in (sizes or range(2, len(reps) + 1)) if 2 <= r <= len(reps)]:
            tops = [len(_verdict(subset(rng.choice(reps, r, replace=False)), alpha)[1])
                    for _ in range(draws if r < len(reps) else 1)]
            row = {"cell": cell, "R": r, "minutes": minutes_per_replicate * r, "losses": k,
                   "top_median": float(np.median(tops)), "top_min": min(tops), "top_max": max(tops),
                   "top_half_share": float(np.mean([t <= k / 2 for t in tops])), "pairs": 0}
            if 2 * r <= len(reps):
                contra, taus, inside = [], [], []
                for _ in range(draws):
                    perm = rng.permutation(reps)
                    c = _compare_verdicts(_verdict(subset(perm[:r]), alpha), _verdict(subset(perm[r:2 * r]), alpha))
                    contra.append(c["contradicted"])
                    taus.append(c["tau"])
                    inside.append(c["winners_inside"])
                row.update(pairs=draws, contra_mean=float(np.mean(contra)),
                           contra_share=float(np.mean([c > 0 for c in contra])), tau_min=float(min(taus)),
                           tau_median=float(np.median(taus)),
                           tau_below=float(np.mean([t < TAU_TARGET for t in taus])),
                           winners_inside=float(np.mean(inside)))
            rows.append(row)
    return rows


def nested_designs(folders: dict[int, Path], sizes: list[int], alpha: float = 0.05) -> list[dict]:
    """One row per (cell, R): each sweep cut to its first R replicates (replicates 0 to R-1 are what a run of R would
    have made: a replicate's seeds depend only on its index), ranked as the report ranks, and compared pairwise as
    ``raysweep compare`` compares: the sweeps as they would have ended with a design of R replicates. R larger than
    a sweep's replicates is skipped."""
    pools = {seed: pooled_scores({seed: folder})[0] for seed, folder in folders.items()}
    rows = []
    for cell in sorted(set.intersection(*(set(p) for p in pools.values()))):
        n = min(len(set(p[cell].columns.get_level_values("replicate"))) for p in pools.values())
        for r in [r for r in sizes if 1 <= r <= n]:
            v = {seed: _verdict(p[cell].loc[:, p[cell].columns.get_level_values("replicate") < r], alpha)
                 for seed, p in pools.items()}
            pairs = [{"pair": f"{a} vs {b}", **_compare_verdicts(v[a], v[b])} for a, b in itertools.combinations(v, 2)]
            rows.append({"cell": cell, "R": r, "losses": len(v[next(iter(v))][3]),
                         "top": {seed: len(x[1]) for seed, x in v.items()},
                         "winner": {seed: x[0] for seed, x in v.items()}, "pairs": pairs})
    return rows


def nested_markdown(rows: list[dict]) -> str:
    lines = ["| cell | replicates R | top group / losses, per sweep | winner, per sweep | pairs: contradicted claims; "
             f"tau (below {TAU_TARGET} bold); winners in each other's top group |", "|---|---|---|---|---|"]

    def pair(p: dict) -> str:
        tau = f"{p['tau']:.3f}" if p["tau"] >= TAU_TARGET else f"**{p['tau']:.3f}**"
        return f"{p['pair']}: {p['contradicted']}; {tau}"

    for r in rows:
        pairs = ", ".join(pair(p) for p in r["pairs"])
        inside = "yes" if all(p["winners_inside"] for p in r["pairs"]) else "no"
        lines.append(f"| {r['cell']} | {r['R']} | {', '.join(map(str, r['top'].values()))} / {r['losses']} | "
                     f"{', '.join(r['winner'].values())} | {pairs}; {inside} |")
    return "\n".join(lines) + "\n"


def design_markdown(rows: list[dict]) -> str:
    lines = ["| cell | replicates R | minutes (projected) | top group: median (min-max) / losses | top group at most "
             "half | two disjoint R-designs: contradicted claims, mean (pairs with any) | tau: median (min; pairs "
             f"below {TAU_TARGET}) | winners in each other's top group |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        two = ((f"{r['contra_mean']:.2f} ({r['contra_share']:.0%})",
                f"{r['tau_median']:.3f} ({r['tau_min']:.3f}; {r['tau_below']:.0%})",
                f"{r['winners_inside']:.0%}") if r["pairs"] else ("–", "–", "–"))
        lines.append(f"| {r['cell']} | {r['R']} | {r['minutes']:.0f} | {r['top_median']:.0f} ({r['top_min']}-"
                     f"{r['top_max']}) / {r['losses']} | {r['top_half_share']:.0%} | {' | '.join(two)} |")
    return "\n".join(lines) + "\n"


def replicate_range(text: str) -> range:
    """``K:N`` -> ``range(K, N)`` (the parser of ``raysweep run --replicates``)."""
    from raysweep.cli import parse_replicates

    return parse_replicates(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "default.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[100, 200, 300],
                    help="tuning seeds, one sweep each (default: 100 200 300; far apart, so no two sweeps share a "
                    "training seed)")
    ap.add_argument("--arch", action="append", default=[], help="only these architectures (repeatable)")
    ap.add_argument("--replicates", type=replicate_range, default=None, metavar="K:N",
                    help="run only replicates K to N-1 of each seed's sweep (into <seed>/<arch>-r<K>-<N-1>): more "
                    "replicates for sweeps already run, merged with them when summarised")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "replication")
    ap.add_argument("--md", type=Path, default=None, help="also write the tables here (markdown)")
    ap.add_argument("--no-run", action="store_true", help="only summarise the folders already in --out")
    ap.add_argument("--archive", type=Path, default=None,
                    help="copy each sweep's (or part's) tables, sweep.json, state.json and config to the same "
                    "place under ARCHIVE (module "
                    "docstring)")
    ap.add_argument("--design", action="store_true",
                    help="also measure the design trade-off from the sweeps' pooled replicates (module docstring)")
    ap.add_argument("--draws", type=int, default=200, help="random designs drawn per R with --design (default 200)")
    ap.add_argument("--design-r", type=int, nargs="+", default=None, metavar="R",
                    help="with --design: only these numbers of replicates (default: 2 to the pool's size)")
    ap.add_argument("--nested", type=int, nargs="+", default=None, metavar="R",
                    help="also rank each sweep cut to its first R replicates, the sweep a run of R would have made, "
                    "and compare those pairwise (module docstring)")
    ap.add_argument("--timed", type=int, nargs="+", default=None,
                    help="with --design: the tuning seeds whose sweeps ran on an idle machine; their minutes per "
                    "replicate set the projected times (default: every sweep's)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="replication-") as scratch:  # parts merged here: derived, not kept
        folders = {}
        for seed in args.seeds:
            if not args.no_run:
                run_seed(args.config, seed, args.out, args.arch, args.replicates)
            folders[seed] = sweep_of(args.out, seed, Path(scratch), args.arch)
        check_one_design(folders)
        if args.archive:
            archive([p for seed in args.seeds for p in parts_of(args.out, seed, args.arch)], args.out, args.archive)
        runs, pairs = summarise(folders)
        text = markdown(runs, pairs)

        def in_archs(cell: str) -> bool:  # "dataset/arch" among --arch (all when none is named)
            return not args.arch or cell.split("/")[-1] in args.arch

        if args.design:
            pools, per_replicate = pooled_scores(folders, args.timed)
            pools = {c: p for c, p in pools.items() if in_archs(c)}
            text += "\n" + design_markdown(design_tradeoff(pools, per_replicate, args.draws, sizes=args.design_r))
        if args.nested:
            text += "\n" + nested_markdown([r for r in nested_designs(folders, args.nested) if in_archs(r["cell"])])
    print(text)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
