"""Does the verdict replicate? Whole sweeps that differ only in ``tuning.seed``, compared pairwise.

    python -m benchmarks.replication [--config configs/default.yaml] [--seeds 100 200 300] [--arch NAME ...]
                                     [--out results/replication] [--md benchmarks/results/replication.md]

Each seed's sweep is the config with only ``tuning.seed`` changed (so new tuning draws and, through it, new training
seeds for every replicate: :func:`raysweep.config.tuning_seed`), run with ``raysweep run`` into ``<out>/seed<s>``
(an existing folder resumes: nothing finished is rerun). Then, per cell:

* per sweep: its time (``state.json``'s ``wall_s``: the two stages, without Ray's start-up and the report), the
  top group's size against the losses ranked, the winner, and the largest last-20% gain among the 5 best losses;
* per pair of sweeps (``raysweep compare``): claims replicated / left open / contradicted, each winner inside the
  other's top group, and Kendall's tau-b between the two mean rankings.

The targets the README states are checked and printed beside the figures. Time a sweep only on an otherwise idle
machine (Ray's trials run at nice 15 and lose to any other job). This runs whole sweeps: it is not part of
``make bench`` (the default design takes tens of minutes per seed on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TAU_TARGET = 0.8


def run_seed(config: Path, seed: int, out: Path, archs: list[str]) -> Path:
    """The config with ``tuning.seed`` = ``seed`` written beside its results, then ``raysweep run`` on it."""
    from raysweep.config.yaml_io import read_yaml_mapping

    raw = read_yaml_mapping(config)
    raw.setdefault("tuning", {})["seed"] = seed
    raw["name"] = f"{raw.get('name', 'sweep')}-seed{seed}"
    folder = out / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"  # JSON is YAML: raysweep run reads it as is
    path.write_text(json.dumps(raw, indent=1))
    cmd = [sys.executable, "-m", "raysweep.cli", "run", "--config", str(path), "--out", str(folder / "sweep"),
           "-o", str(folder / "report.html")] + [x for a in archs for x in ("--arch", a)]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return folder / "sweep"


def summarise(folders: dict[int, Path]) -> tuple[list[dict], list[dict]]:
    """Per (sweep, cell) and per (pair, cell) rows of the figures above."""
    from raysweep.report import stats
    from raysweep.report.compare import compare
    from raysweep.results import read_results

    runs = []
    for seed, folder in folders.items():
        state = json.loads((folder / "state.json").read_text())
        frames = stats.cell_view(read_results(folder / "results"))
        for cell in stats.cells(frames["trials"]):
            c = stats.cell_stats(frames["trials"], frames["cases"], *cell, curves=frames["curves"], n_boot=200)
            top5 = c.table.head(stats.CONVERGENCE_TOP)["last20_gain"]
            runs.append({"seed": seed, "cell": "/".join(cell), "minutes": state.get("wall_s", float("nan")) / 60,
                         "top": len(c.top_group), "losses": len(c.table), "winner": c.winner,
                         "max_top5_gain": float(top5.max()), "test": c.test_method,
                         "halves": c.halves})
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
             "in-run halves: tau; claims replicated / open / contradicted |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        h = r["halves"]
        halves = (f"{h['tau']:+.3f}; {h['replicated']} / {h['open']} / {h['contradicted']}" if h else "–")
        lines.append(f"| {r['seed']} | {r['cell']} | {r['minutes']:.1f} | {r['top']} / {r['losses']}"
                     f"{' (ok)' if r['top'] <= r['losses'] / 2 else ' (target: at most half)'} | {r['winner']} | "
                     f"{r['max_top5_gain']:.4f}{' (ok)' if r['max_top5_gain'] < 0.02 else ' (target: < 0.02)'} | "
                     f"{halves} |")
    lines += ["", "| pair | cell | claims replicated / open / contradicted | winners in each other's top group | "
              "Kendall tau-b |", "|---|---|---|---|---|"]
    for p in pairs:
        both = p["a_winner_in_b_top"] and p["b_winner_in_a_top"]
        lines.append(f"| {p['pair']} | {p['cell']} | {p['replicated']} / {p['open']} / {p['contradicted']}"
                     f"{'' if not p['contradicted'] else ' (' + '; '.join(p['contradicted_pairs']) + ')'} | "
                     f"{'yes' if both else 'no'} | {p['tau']:.3f}{' (ok)' if p['tau'] >= TAU_TARGET else ''} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "default.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[100, 200, 300],
                    help="tuning seeds, one sweep each (default: 100 200 300; far apart, so no two sweeps share a "
                    "training seed)")
    ap.add_argument("--arch", action="append", default=[], help="only these architectures (repeatable)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "replication")
    ap.add_argument("--md", type=Path, default=None, help="also write the tables here (markdown)")
    ap.add_argument("--no-run", action="store_true", help="only summarise the folders already in --out")
    args = ap.parse_args(argv)
    folders = {}
    for seed in args.seeds:
        folders[seed] = (args.out / f"seed{seed}" / "sweep") if args.no_run else run_seed(args.config, seed,
                                                                                           args.out, args.arch)
    runs, pairs = summarise(folders)
    text = markdown(runs, pairs)
    print(text)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
