"""The `babel` command: run the notebooks on a config."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from ..core.paths import results_dir, run_figures_dir, runs_dir
from . import runner
from .report import RunStatus, sweep_report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="babel", description="Multilingual expert activation study.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute the notebooks in order on one config")
    run.add_argument("config", help="YAML config, e.g. configs/default.yaml")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override one config key (repeatable), e.g. --set n_experts=128")
    run.add_argument("--only", default="", help="comma-separated notebook numbers, e.g. 01,02")
    run.add_argument("--jobs", type=int, default=1,
                     help="notebooks run side by side once what they read is done (default 1)")
    run.add_argument("--publish", action="store_true",
                     help="also write the executed notebooks over notebooks/ and their figures over "
                          "figures/<run name>/ (refreshes the committed ones; without it a run writes only "
                          "under runs/)")
    sweep = sub.add_parser("sweep", help="run several configs (models x language sets), then build the report")
    sweep.add_argument("configs", nargs="+", help="YAML configs")
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a key in every config (repeatable)")
    sweep.add_argument("--only", default="", help="comma-separated notebook numbers")
    sweep.add_argument("--report", default=str(runs_dir() / "report"), help="folder of the HTML report")
    reproduce = sub.add_parser("reproduce", help="check a run's results against the committed reference values")
    reproduce.add_argument("run", help="run folder, e.g. runs/default")
    reproduce.add_argument("--reference", default="", help="reference name (default: the run folder's name)")
    reproduce.add_argument("--only", default="", help="check only these notebooks' results, e.g. 01,02")
    reproduce.add_argument("--write", action="store_true",
                           help="store this run's values as the new reference (maintainers, after make notebooks)")
    languages = sub.add_parser("languages", help="list the languages of the UDHR text (code, name, family, genus, "
                               "script, characters per article range)")
    languages.add_argument("spec", nargs="*", help="codes or groups as in a config's languages: (default all), "
                           "e.g. paper de family:Atlantic-Congo script:Cyrillic")
    languages.add_argument("--family", default="", help="only this family, e.g. Indo-European")
    languages.add_argument("--genus", default="", help="only this genus, e.g. Romance")
    languages.add_argument("--script", default="", help="only this script, e.g. Cyrillic")
    languages.add_argument("--search", default="", help="text in the code, name, ISO code or an alias")
    languages.add_argument("--calib", default="1-20", help="calibration article range whose characters are shown")
    languages.add_argument("--heldout", default="21-30", help="held-out article range whose characters are shown")
    languages.add_argument("--format", default="table", choices=("table", "tsv", "json"), help="output format")
    languages.add_argument("--codes", action="store_true",
                           help="print only the codes, comma-separated (for a config's languages:)")
    dequantize = sub.add_parser("dequantize", help="dequantize built-in GGUF models once into the model cache")
    dequantize.add_argument("names", nargs="*", metavar="NAME", help="built-in models (default: all)")
    machine = sub.add_parser("machine", help="this machine's CPU kernels, or another kernel set to cross-check with")
    machine.add_argument("--other", action="store_true", help="print the kernel set make test-kernels forces")
    machine.add_argument("--env", default="", metavar="NAME", help="print the variables that force kernel set NAME")
    tune = sub.add_parser("tune", help="make the committed LoRA adapter of a config (maintainers)")
    tune.add_argument("config", help="YAML config, e.g. configs/default.yaml")
    tune.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config keys to change")
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


def _languages(args: argparse.Namespace) -> int:
    from ..core import languages

    try:
        codes = languages.resolve_languages(args.spec) if args.spec else None
        rows = languages.select(args.family, args.genus, args.script, args.search, codes)
        calib, heldout = languages.parse_range(args.calib), languages.parse_range(args.heldout)
    except ValueError as err:
        print(f"babel: error: {err}", file=sys.stderr)
        return 2
    try:
        print(",".join(r.code for r in rows) if args.codes else languages.listing(rows, calib, heldout, args.format))
    except BrokenPipeError:  # `babel languages | head`
        sys.stdout = None
    return 0


def _dequantize(args: argparse.Namespace) -> int:
    from ..models import loading

    for path in loading.dequantize(args.names or sorted(loading.BUILTIN_MODELS)):
        print(path)
    return 0


def _machine(args: argparse.Namespace) -> int:
    from ..core import machine

    if args.other:
        print(machine.other_kernel_set())
    elif args.env:
        print(" ".join(f"{k}={v}" for k, v in machine.kernel_environment(args.env, base={}).items()))
    else:
        print(machine.machine_info())
    return 0


def _tune(args: argparse.Namespace) -> int:
    from ..analyse import tuning
    from ..core.config import load_config

    cfg = load_config(args.config, args.overrides)
    target = tuning.write_committed(cfg)
    print(f"adapter written to {target}")
    print(tuning.describe_committed(target, cfg.model))
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from . import reproduction

    run = Path(args.run)
    name = args.reference or run.name
    if args.write:
        print(f"Reference written: {reproduction.write_reference(results_dir(run), name)}")
        return 0
    only = _only(args.only) or None
    failures = reproduction.compare(reproduction.load_reference(name), reproduction.summarise(results_dir(run), only),
                                    only)
    checked = reproduction.checks(only)
    for check in checked:
        status = "FAILED" if any(f.startswith(f"{check.name} (") or f.startswith(f"{check.name}:")
                                 for f in failures) else "ok"
        print(f"  {status:>6}  {check.notebook} {check.name} ({check.tolerance})")
    for failure in failures:
        print(f"babel: not reproduced: {failure}", file=sys.stderr)
    print(f"{len(checked) - len(failures)} of {len(checked)} checks reproduced against the reference {name!r}")
    return 1 if failures else 0


class _Plain(logging.Formatter):
    """Progress in plain words ("08_pruning_eval.ipynb done in 8 min 39 s"); warnings and errors with their
    level and source."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno <= logging.INFO:
            return record.getMessage()
        return f"{record.levelname} {record.name}: {record.getMessage()}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `babel`."""
    args = _parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(_Plain())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    if args.command == "sweep":
        return _sweep(args)
    if args.command == "report":
        return _report(args)
    if args.command == "reproduce":
        try:
            return _reproduce(args)
        except FileNotFoundError as err:
            print(f"babel: error: {err}", file=sys.stderr)
            return 2
    if args.command == "languages":
        return _languages(args)
    if args.command in ("dequantize", "machine", "tune"):
        try:
            return {"dequantize": _dequantize, "machine": _machine, "tune": _tune}[args.command](args)
        except ValueError as err:
            print(f"babel: error: {err}", file=sys.stderr)
            return 2
    start = time.perf_counter()
    try:
        result = runner.run(args.config, args.overrides, only=_only(args.only), publish=args.publish,
                            jobs=args.jobs)
    except (ValueError, FileNotFoundError, runner.NotebookFailed) as err:
        print(f"babel: error: {err}", file=sys.stderr)
        return 2
    print(f"Done: {len(result.notebooks)} notebook(s) in {runner.minutes(time.perf_counter() - start)}, "
          f"everything under {result.run_dir}/")
    print(f"  executed notebooks: {', '.join(nb.name for nb in result.notebooks)}")
    print(f"  results: {results_dir(result.run_dir)}/   figures: {run_figures_dir(result.run_dir)}/")
    print(f"Open {result.notebooks[0]} first (`make lab` starts JupyterLab).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
