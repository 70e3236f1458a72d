"""The ``raysweep`` command line. The only module that parses arguments."""

from __future__ import annotations

import argparse
import sys

from . import cli_help


def _cmd_losses(args) -> int:
    from . import catalogue
    from .losses import FAMILIES

    if args.family and args.family not in FAMILIES:
        raise ValueError(f"--family must be one of {', '.join(FAMILIES)}, got {args.family!r}")

    if args.update_readme:
        changed = catalogue.update_readme(args.update_readme)
        print(f"{args.update_readme}: catalogue {'updated' if changed else 'already up to date'}")
    elif args.json:
        print(catalogue.as_json(args.family))
    elif args.markdown:
        print(catalogue.as_markdown())
    else:
        print(catalogue.as_text(args.family))
    return 0


def _cmd_inverseform(args) -> int:
    import time

    from .data import DATASETS, build_dataset
    from .losses.boundary import inverseform as inv

    info = DATASETS.get(args.dataset)
    if info is None:
        raise ValueError(f"unknown dataset {args.dataset!r}; choose one of {', '.join(DATASETS)}")
    options = {"root": args.root} if args.root else {}
    ds = build_dataset(args.dataset, split="train", **options)
    n = min(len(ds), args.masks)
    stride = max(1, len(ds) // n)
    print(f"InverseNet for {args.dataset}: boundary maps of {n} training masks, tile {args.tile}, {args.steps} steps")
    masks = [ds[i]["mask"].numpy() for i in range(0, stride * n, stride)]
    edges = inv.edge_tiles_from_masks(masks, ds.info.num_classes, args.tile)
    t0 = time.perf_counter()
    net, summary = inv.train_inversenet(edges, steps=args.steps, seed=args.seed)
    summary.update(dataset=args.dataset, masks=n, seconds=round(time.perf_counter() - t0, 1))
    path = inv.save_inversenet(net, args.name, summary)
    print(f"held-out error {summary['heldout_mse']:.5f} vs {summary['identity_mse']:.5f} for the identity "
          f"({summary['explained']:.0%} of the transforms explained) in {summary['seconds']} s")
    print(f"saved {path}; use it with build_loss('inverseform', inversenet={args.name!r})")
    return 0


def _cmd_data_inspect(args) -> int:
    from .data import inspect as di  # the submodule (raysweep.data.inspect)

    if args.max_cases < 1:
        raise ValueError(f"--max-cases must be at least 1, got {args.max_cases}")
    kind = di.detect(args.path)
    if kind == "config":
        from .config import read_yaml_mapping

        raw = read_yaml_mapping(args.path, "sweep config")
        reports = di.inspect_config(raw.get("datasets"), args.max_cases, progress=True)
    else:
        reports = [di.inspect_dataset(kind, args.path, max_cases=args.max_cases, progress=True)]
    print(di.as_json(reports) if args.json else di.as_text(reports), end="" if not args.json else "\n")
    errors = sum(len(r.get("errors") or []) for r in reports)
    if errors:  # warnings never fail; an error would fail the sweep, so it fails here too
        print(f"raysweep data inspect: error: {errors} broken file(s) or listing problem(s) (under 'errors' above); "
              f"a sweep on this data would refuse to start", file=sys.stderr)
        return 2
    return 0


def _cmd_train(args) -> int:
    import json

    from .trial import train_trial

    from .config import parse_yaml, read_yaml_mapping

    config = read_yaml_mapping(args.config, "config file") if args.config else {}
    overrides: dict = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE (e.g. train.steps=100), got {item!r}")
        overrides[key.strip()] = parse_yaml(value, f"--set {item}")  # YAML as in files: 1e-3, true, null, [1, 2]
    if args.loss:
        overrides["loss.name"] = args.loss
    result = train_trial({**config, **overrides})
    if args.json:
        print(json.dumps(result, indent=1, default=str))
        return 0 if result["status"] == "completed" else 1
    primary = result["primary_metric"]
    print(f"status: {result['status']}  step: {result['step']}  {primary}: {result[primary]:.4f}")
    if result["status"] != "completed":
        detail = {k: v for k, v in result.items() if k.endswith("_step") or k == "error"}
        print("  " + ", ".join(f"{k}: {v}" for k, v in detail.items()))
        return 1
    print("  " + "  ".join(f"{k}: {result[k]:.4f}" for k in ("dice", "iou", "hd95", "miou")))
    print(f"  loss: {result.get('loss', float('nan')):.4f}  steps/s: {result['steps_per_s']:.2f}  "
          f"peak memory: {result['peak_memory_mb']:.0f} MB")
    print(f"  {'class':<16}{'dice':>8}{'iou':>8}{'hd95':>9}")
    for c in [k.split("/", 1)[1] for k in result if k.startswith("dice/")]:
        print(f"  {c:<16}{result[f'dice/{c}']:>8.4f}{result[f'iou/{c}']:>8.4f}{result[f'hd95/{c}']:>9.2f}")
    return 0


def _report_path(out: str) -> str:
    """Where the CLI writes a sweep's report by default: ``reports/<sweep name>.html`` in the current folder, the
    sweep name being its output folder's name (``results/default`` -> ``reports/default.html``); ``out`` may be the
    sweep's --out folder or its results/ folder."""
    from pathlib import Path

    from .report import default_report_path
    from .results import resolve_results_dir

    sweep = default_report_path(resolve_results_dir(out)).parent  # the --out folder, however it was named
    return str(Path("reports") / f"{sweep.resolve().name}.html")


def _check_data(cfg, skip: bool) -> dict:
    """The full data check of ``raysweep run`` (raysweep.config.check_data), or its skipping, as sweep.json records
    it; a DataCheckError (ValueError) lists the broken files and ends the command with exit status 2."""
    if skip:
        print("raysweep run: --skip-data-check: the datasets' files are not checked before the sweep (sweep.json "
              "records it); a trial that reads a broken case ends as error", file=sys.stderr, flush=True)
        return {"status": "skipped", "by": "--skip-data-check"}
    from .config import check_data

    record = check_data(cfg, progress=True)
    if record["datasets"]:
        cases = sum(d["cases"] for d in record["datasets"].values())
        cached = sum(d["cached"] for d in record["datasets"].values())
        print(f"data check: {cases} cases of {', '.join(record['datasets'])} passed ({cached} unchanged since an "
              f"earlier check) in {record['seconds']:.1f} s", flush=True)
    return record


def parse_replicates(text: str) -> range:
    """``--replicates``: ``N`` (replicates 0 to N-1) or ``K:N`` (K to N-1)."""
    first, _, stop = text.rpartition(":")
    try:
        r = range(int(first or 0), int(stop))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give N or K:N (whole numbers), e.g. 10:12") from None
    if r.start < 0 or len(r) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: K:N needs 0 <= K < N (replicates K to N-1), e.g. 10:12")
    return r


def _replicates_text(cfg) -> str:
    ids = cfg.replicate_ids()
    if ids.start:
        return f" x replicates {ids.start}-{ids.stop - 1} (merge with the sweep of replicates 0-{ids.start - 1})"
    return f" x {len(ids)} replicates" if len(ids) > 1 else ""


def _cmd_run(args) -> int:
    from .config import load_config

    select = {key: names for key, names in (("datasets", args.dataset), ("architectures", args.arch),
                                            ("losses", args.loss), ("replicates", args.replicates)) if names}
    cfg = load_config(args.config, select)
    data_check = _check_data(cfg, args.skip_data_check)  # before Ray starts and before --out is touched
    from .sweep import SweepRunner

    out = args.out or f"results/{cfg.name}"
    cells = len(cfg.cells())
    where = f"{len(cfg.datasets)} datasets" + (f" in {cells} variants" if cells > len(cfg.datasets) else "")
    print(f"raysweep run: {len(cfg.groups())} groups ({where} x {len(cfg.architectures)} architectures x "
          f"{len(cfg.losses)} losses" + _replicates_text(cfg) + f") -> {out}", flush=True)
    state = SweepRunner(cfg, out, address=args.address, fresh=args.fresh, storage=args.storage,
                        data_check=data_check).run()
    print(f"sweep finished in {state['wall_s'] / 60:.1f} min; results in {out}/results", flush=True)
    try:
        from .report import build_report
    except ImportError:
        return 0
    html = build_report(f"{out}/results", args.report or _report_path(out))
    print(f"report: {html}")
    from .sweep.tracking import log_report

    log_report(cfg, state["sweep_id"], html)  # to the sweep's MLflow run, when the config tracks
    return 0


def _cmd_report(args) -> int:
    from .report import build_report

    html = build_report(args.results_dir, args.output or _report_path(args.results_dir))
    print(f"report: {html}")
    return 0


def _cmd_merge(args) -> int:
    from .results import merge_results, read_sweep_meta

    merged = merge_results(args.parts, args.out)
    meta = read_sweep_meta(merged)
    cells = ", ".join(dict.fromkeys(c for part in meta["parts"] for c in part["cells"]))  # parts of replicates repeat
    replicates = meta.get("protocol", {}).get("tuning", {}).get("replicates")
    cells += f" ({replicates} replicates)" if replicates and replicates > 1 else ""
    print(f"merged {len(args.parts)} parts into {merged}: cells {cells}"
          + (f"; {meta['wall_s'] / 60:.1f} min of sweep in all" if meta.get("wall_s") is not None else ""))
    try:
        from .report import build_report
    except ImportError:  # the report's extra is not installed: the merged tables are still complete
        return 0
    print(f"report: {build_report(merged, args.report or _report_path(args.out))}")
    return 0


#: Exit status of `raysweep compare --fail-on-contradiction` when some cell has a contradicted claim.
EXIT_CONTRADICTION = 3


def _cmd_compare(args) -> int:
    from .report.compare import as_json, as_text, contradictions, write_compare

    result, html = write_compare(args.results_a, args.results_b, args.output or "compare.html")
    print(as_json(result) if args.json else as_text(result))
    if not args.json:
        print(f"\ncompare: {html}")
    bad = contradictions(result)
    if args.fail_on_contradiction and bad:
        n = sum(k for _, k in bad)
        print(f"raysweep compare: {n} contradicted claim{'s' if n != 1 else ''} (--fail-on-contradiction): "
              + ", ".join(f"{cell} ({k})" for cell, k in bad), file=sys.stderr)
        return EXIT_CONTRADICTION
    return 0


def _cmd_export(args) -> int:
    from . import export

    conf = export.confirmed(args.results, args.cell, args.loss, args.replicate)
    if args.to == "python":
        code = export.python_code(conf)
        if not args.output:
            sys.stdout.write(code)
            return 0
        from pathlib import Path

        Path(args.output).write_text(code, encoding="utf-8")
        print(f"wrote {args.output}: {conf.summary()}")
        return 0
    path = export.write_nnunet(conf, args.output)
    print(f"wrote {path}: {conf.summary()}\nput it where nnU-Net finds trainers (with the Python that runs nnU-Net):"
          f"\n  {export.install_command(path)}\nthen train with it. {export.configurations_text(conf)}\n  "
          + "\n  ".join(export.train_commands(conf)))
    return 0


def _cmd_schema(args) -> int:
    from pathlib import Path

    from .config.model import json_schema

    text = json_schema(trial=args.trial)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"{args.output}: {'trial' if args.trial else 'sweep'} config schema written")
    else:
        sys.stdout.write(text)
    return 0


def _cmd_plan(args) -> int:
    from .sweep.plan import make_plan, plan_as_json, plan_as_text, read_config

    if args.gpus is not None and args.gpus < 0:
        raise ValueError(f"--gpus must be 0 or more, got {args.gpus}")
    if args.processes is not None and args.processes < 1:
        raise ValueError(f"--processes must be at least 1, got {args.processes}")
    cfg, missing = read_config(args.config, need_data=False)
    given = {item.rpartition("=")[0] or "*" for item in args.steps_per_s or []}
    if "*" not in given and not set(cfg.architectures) <= given and missing:
        raise FileNotFoundError(f"calibration needs the data ({'; '.join(missing)}); give --steps-per-s to plan "
                                "without it")
    plan = make_plan(cfg, gpus=args.gpus, steps_per_s=args.steps_per_s, eval_s=args.eval_s,
                     calibrate_steps=args.calibrate_steps, processes=args.processes, missing_roots=missing)
    print(plan_as_json(plan) if args.json else plan_as_text(plan), end="\n" if args.json else "")
    return 0


def build_parser() -> argparse.ArgumentParser:
    # No heavy imports here: `raysweep report` must work where torch is not installed.
    parser = argparse.ArgumentParser(
        prog="raysweep",
        description="Segmentation losses, measured: the 25 losses of Azad et al. (arXiv 2312.05391), "
        "tuned with Ray Tune + Optuna.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("losses", help="print the loss catalogue (name, family, hyperparameters, search space)",
                       description="Print the loss catalogue from the registry.")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="machine-readable: one object per loss")
    fmt.add_argument("--markdown", action="store_true", help="the catalogue as the docs' markdown table")
    fmt.add_argument("--update-readme", metavar="PATH", help="rewrite the generated blocks (catalogue, Fidelity, "
                     "schema) between their markers in PATH, a markdown file or a folder of them (docs)")
    p.add_argument("--family", metavar="FAMILY", help="only this family: pixel, region, boundary or combination")
    p.set_defaults(func=_cmd_losses)

    p = sub.add_parser(
        "run",
        help="run a sweep (default: every survey loss, CNN and Transformer, on synthetic data) and write the report",
        description="Tune every (dataset, architecture, loss) group with Optuna on Ray Tune, retrain each group's "
        "best configuration with several seeds, write every trial to Parquet and the HTML report. Running it again "
        "on the same --out resumes; --fresh starts over.",
    )
    p.add_argument("--config", help="sweep config YAML (default: configs/default.yaml)")
    p.add_argument("--out", help="output folder (default: results/<config name>)")
    p.add_argument("--address", help="Ray cluster: 'auto' (a running cluster), 'local' (start one here, the "
                   "default) or ray://host:port")
    p.add_argument("--fresh", action="store_true", help="discard what --out holds and start a new sweep")
    p.add_argument("--storage", help="where Ray Tune keeps experiments and checkpoints; on a multi-node cluster a "
                   "shared location (s3://bucket/path, gs://..., or an NFS path mounted on every node). Default: "
                   "<out>/ray")
    p.add_argument("--dataset", action="append", metavar="NAME", help="only these datasets (repeatable)")
    p.add_argument("--arch", action="append", metavar="NAME", help="only these architectures (repeatable)")
    p.add_argument("--loss", action="append", metavar="NAME", help="only these losses (repeatable)")
    p.add_argument("--replicates", type=parse_replicates, metavar="[K:]N",
                   help="run replicates K to N-1 (K:N) instead of the config's tuning.replicates, or the first N: "
                   "--replicates 10:12 into a new --out adds two replicates to a finished sweep of 10, and raysweep "
                   "merge joins them into the sweep a run of 12 would have made (a replicate's seeds and proposals "
                   "depend only on its index)")
    p.add_argument("-o", "--report", metavar="FILE.html", help="where to write the report (default: "
                   "reports/<name of --out>.html, e.g. reports/default.html)")
    p.add_argument("--skip-data-check", action="store_true",
                   help="start without the full data check (by default every case of every nnunet/folder dataset "
                   "is decoded before Ray starts, cached by file fingerprint, and broken files stop the run with "
                   "exit status 2 before --out is written); sweep.json records that it was skipped")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "report",
        help="write the HTML ranking report of a sweep's results (also of a partial or running sweep)",
        description="Build the self-contained HTML ranking report from a sweep's Parquet results: rankings with "
        "confidence intervals and significance tests per dataset and architecture, families, object sizes, "
        "hyperparameter sensitivity, learning curves, run metadata. Works offline, without Ray or a GPU.",
    )
    p.add_argument("results_dir", metavar="RESULTS_DIR", help="the sweep's --out folder or its results/ folder")
    p.add_argument("-o", "--output", metavar="FILE.html", help="where to write (default: reports/<name of the "
                   "sweep's --out folder>.html, e.g. reports/default.html)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser(
        "compare",
        help="do two sweeps agree? Kendall's tau, top-3 overlap and winners per dataset/architecture",
        description="Compare the loss rankings of two sweeps (e.g. two seeds of the whole study, or two clusters) "
        "cell by cell. Works offline, without Ray or a GPU.",
        epilog=cli_help.COMPARE_NUMBERS, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("results_a", metavar="RESULTS_A", help="sweep A: its --out folder or its results/ folder")
    p.add_argument("results_b", metavar="RESULTS_B", help="sweep B: its --out folder or its results/ folder")
    p.add_argument("-o", "--output", metavar="FILE.html", help="where to write the HTML (default: compare.html)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON instead of the table")
    p.add_argument("--fail-on-contradiction", action="store_true",
                   help="exit with status 3 when any compared cell has a contradicted claim (a pair the two sweeps "
                   "declare different in opposite directions), after printing the comparison and a one-line "
                   "summary on stderr")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser(
        "merge", help="one sweep from its parts: cells run apart (raysweep run --arch/--dataset) into one results "
        "folder and one report", description="Merge the results of a sweep run one cell at a time (the same "
        "config, each part with --arch or --dataset and its own --out) into the results one whole run would have "
        "written, then write its report. Parts whose configs differ in anything but their cells, or that share a "
        "cell, are refused.", epilog=cli_help.MERGE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("parts", nargs="+", metavar="PART", help="a part's --out folder or its results/ folder")
    p.add_argument("--out", required=True, help="a new folder for the merged sweep (its results/ must not exist "
                   "or be empty)")
    p.add_argument("-o", "--report", metavar="FILE.html", help="where to write the report (default: "
                   "reports/<name of --out>.html)")
    p.set_defaults(func=_cmd_merge)

    p = sub.add_parser(
        "export", help="the confirmed loss of a sweep as build_loss(...) code or an nnU-Net v2 trainer",
        description="Export a sweep's verdict where people train: the confirmed configuration of a loss (default: "
        "the cell's winner) as Python or as an nnU-Net v2 trainer module.",
        epilog=cli_help.EXPORT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", metavar="RESULTS", help="the sweep's --out folder or its results/ folder")
    p.add_argument("--cell", metavar="DATASET/ARCH", help="the cell, as the report names it (default: the only one)")
    p.add_argument("--loss", metavar="NAME", help="the loss (default: the cell's winner)")
    p.add_argument("--replicate", type=int, metavar="N", help="this replicate's configuration (default: the best)")
    p.add_argument("--to", required=True, choices=("nnunet", "python"), help="what to write")
    p.add_argument("-o", "--output", metavar="PATH", help="python: a file instead of stdout; nnunet: a folder or "
                   ".py file (default: ./nnUNetTrainer_raysweep_<loss>.py)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "inverseform",
        help="train the InverseNet that the inverseform loss needs, on a dataset's boundary maps",
        description="Train (self-supervised) and cache the InverseNet of the InverseForm loss: random affine "
        "transforms of the dataset's ground-truth boundary maps, regressed back. The authors' checkpoint cannot be "
        "downloaded here; pass inversenet=PATH to the loss to use it where you have it.",
    )
    p.add_argument("--dataset", default="synthetic", help="dataset whose masks to learn from (default synthetic)")
    p.add_argument("--root", help="dataset folder (for the datasets read from files)")
    p.add_argument("--name", default="default", help="cache name; the loss's inversenet= argument (default 'default')")
    p.add_argument("--tile", type=int, default=64, help="tile side in pixels (default 64)")
    p.add_argument("--steps", type=int, default=1000, help="training steps (default 1000)")
    p.add_argument("--masks", type=int, default=256, help="training masks to sample (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_inverseform)

    p = sub.add_parser("data", help="your own data: inspect a dataset folder or a sweep config's datasets",
                       description="Tools for the datasets a sweep reads.")
    data_sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    q = data_sub.add_parser(
        "inspect",
        help="classes, pixel shares, objects, spacing, intensities, splits and warnings of a dataset",
        description="Statistics a loss cares about, read from the files: per class the share of labelled "
        "pixels/voxels, the cases it appears in, objects (connected components) per case and their median size; "
        "shapes, spacing (volumes), intensity ranges per channel, the split; warnings for rare or mostly absent "
        "classes and anisotropic spacing; errors for every broken file (the full data check of raysweep run: every "
        "case of every split decoded, cached by file fingerprint). PATH is an nnU-Net raw dataset (dataset.json), a "
        "folder with images/ and masks/, or a sweep config YAML (its nnunet and folder datasets, with their "
        "options). Exit status 2 when there is an error (warnings never fail).",
    )
    q.add_argument("path", metavar="PATH_OR_CONFIG", help="dataset folder or sweep config .yaml")
    q.add_argument("--json", action="store_true", help="print the statistics as JSON")
    q.add_argument("--max-cases", type=int, default=40, metavar="N",
                   help="read at most N cases, evenly spread over the listing (default 40)")
    q.set_defaults(func=_cmd_data_inspect)

    p = sub.add_parser(
        "train",
        help="train one configuration without Ray (progress bar, final metrics); for debugging a loss",
        description="Train and evaluate one trial config with raysweep.trial.train_trial, outside Ray Tune. The "
        "config schema (every key has a default) is in the raysweep.trial.schema module docstring.",
    )
    p.add_argument("--config", metavar="FILE", help="YAML trial config (default: the built-in CPU-sized defaults)")
    p.add_argument("--loss", metavar="NAME", help="the loss to train with (sets loss.name)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, dotted, value in YAML (repeatable), e.g. --set train.steps=200 "
                   "--set loss.params.alpha=0.3 --set output_dir=runs/x")
    p.add_argument("--json", action="store_true", help="print the full final report as JSON")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "plan", help="expected trials, steps and GPU-hours of a sweep, from its config and a short calibration",
        description="Project a sweep before running it: per stage and architecture the expected trials (ASHA's "
        "nominal fractions), optimiser steps, evaluations and hours on the GPUs seen here (or --gpus N), from a "
        "short calibration run per architecture on the local device (--calibrate-steps) or from given rates "
        "(--steps-per-s: no data needed). The model is in the raysweep.sweep.plan module docstring.")
    p.add_argument("--config", required=True, metavar="FILE", help="sweep config YAML")
    p.add_argument("--gpus", type=int, metavar="N", help="plan for N GPUs (default: those torch sees here; 0: the "
                   "CPU machine)")
    p.add_argument("--calibrate-steps", type=int, default=10, metavar="K", help="calibration: 2K training steps "
                   "per architecture, the second K timed (default 10)")
    p.add_argument("--steps-per-s", action="append", metavar="[ARCH=]RATE", help="aggregate training steps/s of one "
                   "device with its concurrent trials, instead of calibrating (repeatable: cnn=63.5)")
    p.add_argument("--eval-s", action="append", metavar="[ARCH=]SECONDS", help="seconds per evaluation (default: "
                   "measured by the calibration; 0 with --steps-per-s)")
    p.add_argument("--processes", type=int, metavar="N", help="calibration trials at once (default: the trials "
                   "that share a GPU; 1 on the CPU)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser(
        "schema", help="print the JSON Schema of the sweep config (--trial: of the trial config), for editors",
        description="Print the JSON Schema generated from the config models; docs/schema/ holds them (make schema) "
        "and the YAML files point editors at them (docs/sweep.md, 'Editor completion').")
    p.add_argument("--trial", action="store_true", help="the trial config (raysweep train --config) instead")
    p.add_argument("-o", "--output", metavar="FILE", help="write it to FILE instead of stdout")
    p.set_defaults(func=_cmd_schema)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (ValueError, OSError) as exc:
        # Errors a user can cause are reported without a traceback: bad input (ValueError, FileNotFoundError), an
        # output folder that is read-only, full or in use by another run (OSError).
        print(f"raysweep {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl+C; a sweep says where its state is and how to resume
        print(f"raysweep {args.command}: interrupted{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
