"""The `babel` command: run the notebooks on a config."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from pathlib import Path

from . import runner
from .paths import results_dir, run_figures_dir, runs_dir
from .report import RunStatus, sweep_report


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
    sweep = sub.add_parser("sweep", help="run several configs (models x language sets), then build the report")
    sweep.add_argument("configs", nargs="+", help="YAML configs")
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a key in every config (repeatable)")
    sweep.add_argument("--only", default="", help="comma-separated notebook numbers")
    sweep.add_argument("--report", default=str(runs_dir() / "report"), help="folder of the HTML report")
    report = sub.add_parser("report", help="HTML report of existing run folders")
    report.add_argument("runs", nargs="+", help="run folders, e.g. runs/default")
    report.add_argument("--out", default=str(runs_dir() / "report"), help="folder of the HTML report")
    return parser


def _only(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _sweep(args: argparse.Namespace) -> int:
    statuses = runner.sweep(args.configs, args.overrides, only=_only(args.only))
    index = sweep_report(statuses, Path(args.report))
    failed = [s for s in statuses if not s.ok]
    print(f"Sweep: {len(statuses) - len(failed)} of {len(statuses)} runs finished; report: {index}")
    for status in failed:
        print(f"  FAILED {status.config}: {status.error}")
    return 1 if failed else 0


def _report(args: argparse.Namespace) -> int:
    statuses = [RunStatus(str(run), Path(run)) for run in args.runs]
    print(f"Report: {sweep_report(statuses, Path(args.out))}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `babel`."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "sweep":
        return _sweep(args)
    if args.command == "report":
        return _report(args)
    try:
        result = runner.run(args.config, args.overrides, only=_only(args.only), publish=args.publish)
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
