"""The ``pynorm`` command line.

    pynorm check <experiment> [--steps N] [--dtype float64|float32] [--set key=value ...]
    pynorm run <experiment|all> [--quick | --full] [--seeds 1 2 3] [--out DIR] [--no-progress]

``check`` runs the pynorm.nn trainer and its torch twin side by side (needs torch), prints the
worst relative error per tensor, and exits with status 1 if any exceeds the dtype's tolerance.

``run`` runs a paper experiment (pynorm.experiments) and writes results.json, report.md and
figures into --out (default results/<experiment>; for ``all``, results/ with one folder per
experiment and a combined report.md). Default --quick. Rerunning the same command with the
same --out resumes an interrupted run from its checkpoints. Exit status 1 if an experiment
failed, 2 for bad arguments or an unavailable experiment.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, Dict, List, Optional


def _parse_settings(name: str, pairs: List[str]) -> Dict[str, Any]:
    """``key=value`` strings as typed overrides (types from the experiment's config classes)."""
    from .nn.models import experiment_spec
    from .nn.train import TrainConfig

    defaults = {f.name: f.default for cls in (experiment_spec(name).config_class, TrainConfig)
                for f in dataclasses.fields(cls)}
    settings: Dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        if key not in defaults:
            raise ValueError(f"unknown setting {key!r} for {name}; known: {sorted(defaults)}")
        default = defaults[key]
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"--set {key}: expected true or false, got {text!r}")
            settings[key] = text.lower() in ("true", "1")
        elif isinstance(default, int):
            settings[key] = int(text)
        elif isinstance(default, float):
            settings[key] = float(text)
        elif isinstance(default, tuple):
            settings[key] = tuple(float(v) for v in text.split(","))
        else:  # str or None-by-default (clip_norm, out_dir)
            settings[key] = None if text.lower() == "none" else _number_or_text(text)
    return settings


def _number_or_text(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _check(args: argparse.Namespace) -> int:
    from .nn.twin import check_with_twin

    settings = _parse_settings(args.experiment, args.set or [])
    errors, tolerance, ok = check_with_twin(args.experiment, args.steps, args.dtype, **settings)
    print(f"pynorm check {args.experiment}: {args.steps} steps, {args.dtype}, tolerance {tolerance:.0e} "
          "(worst relative error per tensor over the run)")
    width = max(len(k) for k in errors)
    for key, error in errors.items():
        print(f"  {key:<{width}}  {error:.3e}  {'ok' if error <= tolerance else 'FAIL'}")
    print("OK" if ok else "FAILED: some tensors exceed the tolerance")
    return 0 if ok else 1


def _run(args: argparse.Namespace) -> int:
    import pathlib

    from . import experiments

    mode = "full" if args.full else "quick"
    progress = not args.no_progress
    if args.experiment == "all":
        records = experiments.run_all(mode, args.seeds, pathlib.Path(args.out or "results"), progress)
        out = pathlib.Path(args.out or "results")
        print(f"pynorm run all ({mode}): report in {out / 'report.md'}")
        for name, record in records.items():
            print(f"  {name:<16} {record['status']}")
        return 1 if any(r["status"] == "failed" for r in records.values()) else 0
    try:
        experiments.load(args.experiment)
    except experiments.ExperimentUnavailable as error:
        print(f"pynorm run: {error}", file=sys.stderr)
        return 2
    out = pathlib.Path(args.out or pathlib.Path("results") / args.experiment)
    record = experiments.run_experiment(args.experiment, mode, args.seeds, out, progress)
    from .experiments._report import fmt

    print(f"pynorm run {args.experiment} ({mode}, seeds {record['seeds']}): {record['wall_time_s']:.1f} s; "
          f"report in {out / 'report.md'}")
    for c in record["comparisons"]:
        print(f"  {c['verdict']:<15} {c['name']}: pynorm {fmt(c['ours'])} vs paper {fmt(c['paper'])}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``pynorm`` command."""
    from .nn.models import EXPERIMENTS

    parser = argparse.ArgumentParser(prog="pynorm", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="compare the pynorm.nn trainer with its torch twin, step by step")
    check.add_argument("experiment", choices=sorted(EXPERIMENTS))
    check.add_argument("--steps", type=int, default=50, help="training steps (default 50)")
    check.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    check.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override an experiment or training setting, e.g. --set batch_size=256 (repeatable)")
    from .experiments import EXPERIMENTS as PAPER_EXPERIMENTS

    run = commands.add_parser("run", help="run a paper experiment (or all) and write results, figures, a report")
    run.add_argument("experiment", choices=list(PAPER_EXPERIMENTS) + ["all"])
    size = run.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small settings, minutes on 2 cores (default)")
    size.add_argument("--full", action="store_true", help="the paper's settings (hours)")
    run.add_argument("--seeds", type=int, nargs="+", help="seeds to run (default: the experiment's)")
    run.add_argument("--out", help="output folder (default results/<experiment>, or results/ for all)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        return _run(args) if args.command == "run" else _check(args)
    except (ValueError, TypeError) as error:
        print(f"pynorm {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
