"""The ``raysweep`` command line. The only module that parses arguments."""

from __future__ import annotations

import argparse
import sys


def _cmd_losses(args) -> int:
    from . import catalogue

    if args.update_readme:
        changed = catalogue.update_readme(args.update_readme)
        print(f"{args.update_readme}: catalogue {'updated' if changed else 'already up to date'}")
    elif args.json:
        print(catalogue.as_json(args.category))
    elif args.markdown:
        print(catalogue.as_markdown())
    else:
        print(catalogue.as_text(args.category))
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(losses=args.loss, steps=args.steps, size=args.size, batch=args.batch, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .losses import CATEGORIES

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
    fmt.add_argument("--markdown", action="store_true", help="the README table")
    fmt.add_argument("--update-readme", metavar="FILE", help="rewrite the catalogue between the markers in FILE")
    p.add_argument("--category", choices=CATEGORIES, help="only this family")
    p.set_defaults(func=_cmd_losses)

    p = sub.add_parser(
        "demo",
        help="train a small network briefly with every loss on synthetic data and compare them",
        description="Train the same small network from the same initialisation with each loss on a synthetic "
        "multi-class batch (CPU-sized) and print, per loss, the loss decrease, per-class Dice and time per step.",
    )
    p.add_argument("--loss", action="append", metavar="NAME", help="only these losses (repeatable; default: all)")
    p.add_argument("--steps", type=int, default=60, help="optimisation steps per loss (default 60)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument("--batch", type=int, default=4, help="batch size (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of data and initialisation (default 0)")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        # Errors a user can cause are reported without a traceback.
        print(f"raysweep {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
