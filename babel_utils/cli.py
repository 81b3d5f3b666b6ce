"""The `babel` command: run the notebooks on a config."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from . import runner
from .paths import results_dir, run_figures_dir


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="babel", description="Multilingual expert activation study.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute the notebooks in order on one config")
    run.add_argument("config", help="YAML config, e.g. configs/default.yaml")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override one config key (repeatable), e.g. --set n_experts=128")
    run.add_argument("--only", default="", help="comma-separated notebook numbers, e.g. 01,02")
    run.add_argument("--publish", action="store_true",
                     help="also write the executed notebooks over notebooks/ (refreshes the committed ones)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `babel`."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    only = [part.strip() for part in args.only.split(",") if part.strip()]
    try:
        result = runner.run(args.config, args.overrides, only=only, publish=args.publish)
    except (ValueError, FileNotFoundError, runner.NotebookFailed) as err:
        print(f"babel: error: {err}", file=sys.stderr)
        return 2
    print(f"Run folder: {result.run_dir}")
    for notebook in result.notebooks:
        print(f"  executed notebook: {notebook}  ({result.seconds[notebook.name]:.1f} s)")
    print(f"  results: {results_dir(result.run_dir)}")
    print(f"  figures: {run_figures_dir(result.run_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
