"""The experiments that reproduce the three papers (shared/PAPERS.md), one module each.

Run them with ``pynorm run <name|all> [--quick | --full] [--seeds ...] [--out DIR] [--jobs N |
--scheduler ADDRESS]`` or from Python with :func:`run_experiment` / :func:`run_all`.

The contract every experiment module follows (``pynorm.experiments.<module>``):

* ``NAME``: the registry name (a key of :data:`EXPERIMENTS`);
* ``PAPER``: a short citation string;
* ``Config``: a dataclass with a ``seeds`` field (a tuple of ints) and the classmethods
  ``quick()`` (minutes on 2 CPU cores, still showing the qualitative result) and ``full()``
  (the paper's settings);
* ``run(cfg, out_dir: pathlib.Path, progress: bool = True) -> dict`` returning::

      {"metrics": {stable_name: value or nested dict},
       "comparisons": [{"name", "ours", "paper",
                        "verdict": "reproduced" | "not reproduced" | "partial" | "n/a",
                        "note"}],
       "figures": [PNG file names written into out_dir]}

  Experiments that train for long keep checkpoints under ``out_dir``, so that running the
  same command again with the same ``--out`` resumes where it stopped;
* ``units(cfg)``, ``run_unit(cfg, unit, out_dir, progress)`` and ``combine(cfg, results,
  out_dir)``: the same work split into independent units (seeds, variants, grid cells) that
  may run in parallel processes or on a cluster, and their combination into run()'s dict
  (see :mod:`pynorm.experiments._fanout`; ``run`` is ``_fanout.runner(__name__)``);
* ``unit_seconds(cfg, units) -> {unit: seconds}``: each unit's estimated run time here, from
  a few timed steps of its model (printed before a ``--full`` run).

:func:`run_experiment` adds ``results.json`` and ``report.md`` to ``out_dir``
(see :mod:`pynorm.experiments._report`). Modules are imported lazily: a missing one is
reported as "not available" instead of breaking ``run all``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Dict

#: Experiment name -> module path (imported only when needed).
EXPERIMENTS: Dict[str, str] = {
    "power-method": "pynorm.experiments.power_method",
    "layerwise": "pynorm.experiments.layerwise",
    "majority": "pynorm.experiments.majority",
    "unselectable": "pynorm.experiments.unselectable",
    "dyt": "pynorm.experiments.dyt",
    "norm-efficiency": "pynorm.experiments.norm_efficiency",
}

#: What an experiment module must define.
REQUIRED_ATTRIBUTES = ("NAME", "PAPER", "Config", "run", "units", "run_unit", "combine", "unit_seconds")

VERDICTS = ("reproduced", "not reproduced", "partial", "n/a")


class ExperimentUnavailable(RuntimeError):
    """The experiment's module is missing, fails to import, or breaks the contract."""


def load(name: str) -> ModuleType:
    """The module of experiment ``name``; :class:`ExperimentUnavailable` says why it cannot be
    used (unknown name, missing module or dependency, missing contract attribute)."""
    if name not in EXPERIMENTS:
        raise ExperimentUnavailable(f"unknown experiment {name!r}; choose one of {sorted(EXPERIMENTS)}")
    path = EXPERIMENTS[name]
    try:
        module = importlib.import_module(path)
    except ImportError as error:
        raise ExperimentUnavailable(f"{name}: not available ({path} cannot be imported: {error})") from error
    missing = [attr for attr in REQUIRED_ATTRIBUTES if not hasattr(module, attr)]
    if missing:
        raise ExperimentUnavailable(f"{name}: not available ({path} lacks {', '.join(missing)})")
    return module


def available() -> Dict[str, str]:
    """Experiment name -> ``"available"`` or the reason it is not."""
    status = {}
    for name in EXPERIMENTS:
        try:
            load(name)
            status[name] = "available"
        except ExperimentUnavailable as error:
            status[name] = str(error)
    return status


def __getattr__(attr):  # run_experiment / run_all live in _report (which imports matplotlib lazily)
    if attr in ("run_experiment", "run_all", "make_config"):
        from . import _report

        return getattr(_report, attr)
    raise AttributeError(f"module 'pynorm.experiments' has no attribute {attr!r}")


__all__ = [
    "EXPERIMENTS",
    "VERDICTS",
    "ExperimentUnavailable",
    "available",
    "load",
    "make_config",
    "run_all",
    "run_experiment",
]
