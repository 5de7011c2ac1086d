"""The ``pynorm`` command line.

    pynorm check <power-method|majority> [--steps N] [--dtype float64|float32] [--set key=value ...]
    pynorm run <experiment|all> [--quick | --full] [--seeds 1 2 3] [--out DIR] [--no-progress]
               [--jobs N | --scheduler HOST:PORT]
    pynorm bench [--ops ...] [--threads N] [--json FILE] [--plot FILE] [--markdown]
    pynorm info

``check`` runs the pynorm.nn trainer and its torch twin side by side (needs torch), prints the
worst relative error per tensor, and exits with status 1 if any exceeds the dtype's tolerance.

``run`` runs a paper experiment (pynorm.experiments) and writes results.json, report.md and
figures into --out (default results/<experiment>; for ``all``, results/ with one folder per
experiment and a combined report.md). Default --quick. Rerunning the same command with the
same --out resumes an interrupted run from its checkpoints. Exit status 1 if an experiment
failed, 2 for bad arguments or an unavailable experiment (a one-line error, before any work).
Each experiment's independent units (seeds, variants, grid cells) run serially by default;
``--jobs N`` runs them on N local processes (spawned), ``--scheduler HOST:PORT`` on a Dask
cluster (``pip install "pynorm[cluster]"``; --out must be a folder every worker can write).
The results are bit-identical either way. Before a --full run, its estimated wall time on
this machine is printed (from a few timed training steps of each unit). See docs/running.md.

``bench`` measures every kernel against torch and the machine's own limits (pynorm.bench);
``info`` prints pynorm.show_config().
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, Dict, List, Optional, Tuple


#: The modules each command needs beyond NumPy, and the extra of pynorm that installs them.
#: Checked before any work, so that a missing one is a one-line error, not a traceback after
#: an hour of training.
REQUIREMENTS: Dict[str, Tuple[Tuple[str, ...], str]] = {
    "run": (("matplotlib", "scipy", "sklearn", "threadpoolctl", "tqdm"), "experiments"),
    "check": (("torch",), "test"),
}


def missing_requirements(command: str) -> Optional[str]:
    """The one-line error for ``command``'s missing optional modules (None if all are there)."""
    import importlib.util

    modules, extra = REQUIREMENTS.get(command, ((), ""))
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    names = ", ".join({"sklearn": "scikit-learn"}.get(m, m) for m in missing)
    return f'pynorm {command} needs {names}: pip install "pynorm[{extra}]"'


def _parse_settings(name: str, pairs: List[str]) -> Dict[str, Any]:
    """``key=value`` strings as typed overrides (types from the experiment's config classes)."""
    from .nn.models import experiment_spec
    from .nn.train import TrainConfig

    defaults = {
        f.name: f.default for cls in (experiment_spec(name).config_class, TrainConfig) for f in dataclasses.fields(cls)
    }
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
    print(
        f"pynorm check {args.experiment}: {args.steps} steps, {args.dtype}, tolerance {tolerance:.0e} "
        "(worst relative error per tensor over the run)"
    )
    width = max(len(k) for k in errors)
    for key, error in errors.items():
        print(f"  {key:<{width}}  {error:.3e}  {'ok' if error <= tolerance else 'FAIL'}")
    print("OK" if ok else "FAILED: some tensors exceed the tolerance")
    return 0 if ok else 1


def _run(args: argparse.Namespace) -> int:
    import pathlib

    from . import experiments
    from .experiments import _fanout
    from .experiments._report import check_seeds

    mode = "full" if args.full else "quick"
    progress = not args.no_progress
    seeds = check_seeds(args.seeds) if args.seeds is not None else None
    names = list(experiments.EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    if args.experiment != "all":
        try:
            experiments.load(args.experiment)
        except experiments.ExperimentUnavailable as error:
            print(f"pynorm run: {error}", file=sys.stderr)
            return 2
    scheduler = _fanout.check_scheduler(args.scheduler) if args.scheduler else None
    root = pathlib.Path(args.out or "results")
    outs = (
        {name: root / name for name in names}
        if args.experiment == "all"
        else {args.experiment: pathlib.Path(args.out or pathlib.Path("results") / args.experiment)}
    )
    with _fanout.workers(args.jobs, scheduler) as workers:
        if args.full:
            _print_estimates(outs, seeds, workers.slots, scheduler is not None)
        if args.experiment == "all":
            records = experiments.run_all(mode, seeds, root, progress, pool=workers.pool)
            print(f"pynorm run all ({mode}): report in {root / 'report.md'}")
            for name, record in records.items():
                print(f"  {name:<16} {record['status']}")
            return 1 if any(r["status"] == "failed" for r in records.values()) else 0
        out = outs[args.experiment]
        record = experiments.run_experiment(args.experiment, mode, seeds, out, progress, pool=workers.pool)
    from .experiments._report import fmt

    print(
        f"pynorm run {args.experiment} ({mode}, seeds {record['seeds']}): {record['wall_time_s']:.1f} s; "
        f"report in {out / 'report.md'}"
    )
    for c in record["comparisons"]:
        print(f"  {c['verdict']:<15} {c['name']}: pynorm {fmt(c['ours'])} vs paper {fmt(c['paper'])}")
    return 0


def _print_estimates(outs: Dict[str, Any], seeds, slots: int, cluster: bool) -> None:
    """Prints each --full experiment's estimated wall time (and the total) before it starts."""
    from . import experiments
    from .experiments._fanout import estimate_seconds
    from .experiments._report import make_config

    where = (
        f"{slots} worker threads of the cluster, if each is as fast as this machine"
        if cluster
        else f"{slots} parallel job{'s' if slots > 1 else ''} on this machine"
    )
    print(
        f"Estimated wall time of the --full run on {where} (an estimate: each unit's training steps "
        "times a few steps timed now, units handed out longest first):"
    )
    total = 0.0
    for name, out in outs.items():
        try:
            module = experiments.load(name)
        except experiments.ExperimentUnavailable:
            continue
        seconds, left = estimate_seconds(module, make_config(module, "full", seeds), out, slots)
        total += seconds
        print(f"  {name:<16} ~{_duration(seconds)} ({left} unit{'s' if left != 1 else ''} to run)")
    if len(outs) > 1:
        print(f"  {'total':<16} ~{_duration(total)}")
    sys.stdout.flush()


def _duration(seconds: float) -> str:
    """Seconds as '45 s', '12 min' or '3.4 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _jobs(text: str) -> int:
    """argparse type of --jobs."""
    from .experiments._fanout import check_jobs

    try:
        return check_jobs(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--jobs ")) from None


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr (no usage block), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``pynorm`` command."""
    from .nn.models import ALIASES, EXPERIMENTS

    parser = _Parser(prog="pynorm", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="compare the pynorm.nn trainer with its torch twin, step by step")
    check.add_argument(
        "experiment",
        choices=list(EXPERIMENTS) + sorted(ALIASES),
        help=f"one of {', '.join(EXPERIMENTS)} (the names pynorm run takes)",
    )
    check.add_argument("--steps", type=int, default=50, help="training steps (default 50)")
    check.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    check.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override an experiment or training setting, e.g. --set batch_size=256 (repeatable)",
    )
    from .experiments import EXPERIMENTS as PAPER_EXPERIMENTS

    run = commands.add_parser("run", help="run a paper experiment (or all) and write results, figures, a report")
    run.add_argument("experiment", choices=list(PAPER_EXPERIMENTS) + ["all"])
    size = run.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small settings, minutes on 2 cores (default)")
    size.add_argument("--full", action="store_true", help="the paper's settings (hours)")
    run.add_argument("--seeds", type=int, nargs="+", help="seeds to run (default: the experiment's)")
    run.add_argument("--out", help="output folder (default results/<experiment>, or results/ for all)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    fanout = run.add_mutually_exclusive_group()
    fanout.add_argument(
        "--jobs",
        type=_jobs,
        default=1,
        metavar="N",
        help="run the independent units (seeds, variants, cells) on N local processes",
    )
    fanout.add_argument(
        "--scheduler",
        metavar="HOST:PORT",
        help="run the units on the Dask cluster of this scheduler (needs pynorm[cluster])",
    )
    commands.add_parser(
        "bench", add_help=False, help="kernel speed vs torch and the machine's limits (see bench --help)"
    )
    commands.add_parser("info", help="print the build and run-time configuration")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # its options are pynorm.bench's own (argparse's REMAINDER would eat none)
        from . import bench as bench_module

        return bench_module.main(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "info":
        from . import show_config

        show_config()
        return 0
    missing = missing_requirements(args.command)
    if missing:
        print(missing, file=sys.stderr)
        return 2
    try:
        return _run(args) if args.command == "run" else _check(args)
    except (ValueError, TypeError) as error:
        print(f"pynorm {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
