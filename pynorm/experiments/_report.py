"""Running experiments and writing their results: ``results.json`` and ``report.md`` per
experiment, and a combined ``report.md`` for ``run all``.

results.json holds: name, paper, mode (quick / full / custom), config (``dataclasses.asdict``),
seeds, metrics, comparisons, figures, tables (optional extra tables of the report: title, note,
columns and rows, each row a dict keyed by column), versions (python, pynorm, numpy, torch / scipy /
matplotlib when importable), wall_time_s, started / finished (UTC, ISO 8601), status.
Non-finite floats are written as null so the file is strict JSON.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import pathlib
import platform
import time
import traceback
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np

from pynorm.nn.train import single_blas_thread

from . import EXPERIMENTS, VERDICTS, ExperimentUnavailable, load

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
MODES = ("quick", "full")


# -- configs -----------------------------------------------------------------------------
def make_config(module, mode: str = "quick", seeds: Optional[Sequence[int]] = None):
    """``module.Config.quick()`` or ``.full()``, with ``seeds`` replaced when given."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    cfg = getattr(module.Config, mode)()
    if seeds is not None:
        cfg = dataclasses.replace(cfg, seeds=check_seeds(seeds))
    return cfg


def check_seeds(seeds: Sequence[int]) -> tuple:
    """``seeds`` as a tuple of ints; ValueError if it is empty, has a negative seed (NumPy's
    generators take none) or a duplicate (the same run twice)."""
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds must not be empty")
    if min(seeds) < 0:
        raise ValueError(f"seeds must be non-negative integers, got {list(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must not repeat, got {list(seeds)}")
    return seeds


# -- JSON --------------------------------------------------------------------------------
def to_jsonable(value: Any) -> Any:
    """NumPy scalars/arrays, tuples, paths -> plain JSON types; NaN/inf -> None."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if value is None or isinstance(value, str):
        return value
    if dataclasses.is_dataclass(value):
        return to_jsonable(dataclasses.asdict(value))
    return repr(value)


def versions() -> Dict[str, str]:
    """Versions of python, pynorm, numpy and (when importable) torch, scipy, matplotlib."""
    import pynorm

    found = {
        "python": platform.python_version(),
        "pynorm": getattr(pynorm, "__version__", "unknown"),
        "numpy": np.__version__,
    }
    for name in ("torch", "scipy", "matplotlib"):
        try:
            found[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - optional, any import failure just means absent
            pass
    return found


# -- formatting --------------------------------------------------------------------------
def fmt(value: Any) -> str:
    """A number with 4 significant digits, anything else as text (None -> "-")."""
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def comparisons_table(comparisons: Iterable[Dict[str, Any]], experiment: Optional[str] = None) -> List[str]:
    """Markdown table rows: quantity | pynorm | paper | verdict | note."""
    head = "| experiment " if experiment else ""
    lines = [
        f"{head}| quantity | pynorm | paper | verdict | note |",
        f"{'|---' if experiment else ''}|---|---|---|---|---|",
    ]
    for c in comparisons:
        cell = f"| {experiment} " if experiment else ""
        lines.append(
            f"{cell}| {fmt(c.get('name'))} | {fmt(c.get('ours'))} | {fmt(c.get('paper'))} | "
            f"**{fmt(c.get('verdict'))}** | {fmt(c.get('note', ''))} |"
        )
    return lines


def extra_table(table: Dict[str, Any], level: int = 1) -> List[str]:
    """Markdown of one of an experiment's extra tables: a heading, its note, and a row per
    dict of ``table["rows"]`` with the cells of ``table["columns"]``."""
    lines = [f"{'#' * (level + 1)} {table['title']}", ""]
    if table.get("note"):
        lines += [table["note"], ""]
    lines += ["| " + " | ".join(table["columns"]) + " |", "|" + "---|" * len(table["columns"])]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in table["columns"]) + " |" for row in table["rows"]]
    return lines + [""]


def _flatten(metrics: Dict[str, Any], prefix: str = "") -> List[tuple]:
    rows = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(_flatten(value, name + "."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            rows.append((name, f"[{len(value)} records]"))
        elif isinstance(value, list) and len(value) > 8:
            shown = ", ".join(fmt(v) for v in value[:3]) + ", ..., " + ", ".join(fmt(v) for v in value[-2:])
            rows.append((name, f"[{len(value)} values: {shown}]"))
        elif isinstance(value, list):
            rows.append((name, "[" + ", ".join(fmt(v) for v in value) + "]"))
        else:
            rows.append((name, fmt(value)))
    return rows


def experiment_report(record: Dict[str, Any], figure_prefix: str = "", level: int = 1) -> str:
    """The markdown report of one experiment's results record."""
    h = "#" * level
    lines = [
        f"{h} {record['name']}",
        "",
        f"Paper: {record.get('paper', '-')}",
        "",
        f"Mode: {record.get('mode')}; seeds: {record.get('seeds')}; wall time: "
        f"{fmt(record.get('wall_time_s'))} s; status: {record.get('status')}",
        "",
    ]
    if record.get("status") != "ok":
        lines += ["```", str(record.get("error", "")).strip(), "```", ""]
        return "\n".join(lines)
    lines += [f"{h}# pynorm vs the paper", ""]
    lines += comparisons_table(record.get("comparisons", [])) if record.get("comparisons") else ["(no comparisons)"]
    lines += [""]
    for table in record.get("tables", []):
        lines += extra_table(table, level)
    lines += [f"{h}# Metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in _flatten(record.get("metrics", {}))]
    if record.get("figures"):
        lines += ["", f"{h}# Figures", ""]
        lines += [f"![{name}]({figure_prefix}{name})" for name in record["figures"]]
    v = record.get("versions", {})
    lines += ["", "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()), ""]
    return "\n".join(lines)


def _check_result(name: str, result: Any, out_dir: pathlib.Path) -> None:
    if not isinstance(result, dict) or not {"metrics", "comparisons", "figures"} <= set(result):
        raise TypeError(f"{name}: run() must return a dict with metrics, comparisons and figures")
    for c in result["comparisons"]:
        missing = {"name", "ours", "paper", "verdict"} - set(c)
        if missing:
            raise ValueError(f"{name}: comparison {c!r} lacks {sorted(missing)}")
        if c["verdict"] not in VERDICTS:
            raise ValueError(f"{name}: verdict {c['verdict']!r} is not one of {VERDICTS}")
    for figure in result["figures"]:
        if not (out_dir / figure).is_file():
            raise FileNotFoundError(f"{name}: figure {figure} was not written into {out_dir}")


# -- running -----------------------------------------------------------------------------
def run_experiment(
    name: str,
    mode: str = "quick",
    seeds: Optional[Sequence[int]] = None,
    out: Optional[pathlib.Path] = None,
    progress: bool = True,
    cfg: Any = None,
    pool=None,
) -> Dict[str, Any]:
    """Runs one experiment into ``out`` (default ``results/<name>``) and writes results.json
    and report.md there. ``cfg`` (a module.Config) overrides mode/seeds (mode "custom").
    ``pool``: a concurrent.futures executor for its units (see _fanout; None: serially here).
    Returns the results record. Exceptions from the experiment propagate."""
    from ._fanout import run_units

    module = load(name)
    out_dir = pathlib.Path(out if out is not None else pathlib.Path("results") / name)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg is None:
        cfg = make_config(module, mode, seeds)
    else:
        mode = "custom"
    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    with single_blas_thread(pynorm_threads=1):  # the units: many tiny products
        result = run_units(module, cfg, out_dir, progress, pool)
    wall = time.perf_counter() - t0
    _check_result(name, result, out_dir)
    record = {
        "name": name,
        "paper": module.PAPER,
        "mode": mode,
        "status": "ok",
        "config": dataclasses.asdict(cfg),
        "seeds": list(getattr(cfg, "seeds", ())),
        "metrics": result["metrics"],
        "comparisons": result["comparisons"],
        "figures": result["figures"],
        "tables": result.get("tables", []),
        "versions": versions(),
        "wall_time_s": wall,
        "started": started.isoformat(timespec="seconds"),
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    record = to_jsonable(record)
    _write(out_dir / RESULTS_FILE, json.dumps(record, indent=1, allow_nan=False) + "\n")
    _write(out_dir / REPORT_FILE, experiment_report(record))
    return record


def run_all(
    mode: str = "quick",
    seeds: Optional[Sequence[int]] = None,
    out: Optional[pathlib.Path] = None,
    progress: bool = True,
    names: Optional[Sequence[str]] = None,
    log=print,
    pool=None,
) -> Dict[str, Dict[str, Any]]:
    """Runs every registered experiment (or ``names``) into ``out/<name>`` (default
    ``results/``), each one's units on ``pool`` (see :func:`run_experiment`), and writes
    ``out/report.md``. Unavailable experiments are reported as such; one that raises is
    recorded as failed and the others still run. Returns name -> record (status "ok", "not
    available" or "failed")."""
    out_dir = pathlib.Path(out if out is not None else "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    records: Dict[str, Dict[str, Any]] = {}
    for name in names or list(EXPERIMENTS):
        t0 = time.perf_counter()
        try:
            load(name)
        except ExperimentUnavailable as error:
            log(f"[{name}] not available: {error}")
            records[name] = {"name": name, "status": "not available", "error": str(error), "mode": mode}
            continue
        log(f"[{name}] running ({mode}) -> {out_dir / name}")
        try:
            records[name] = run_experiment(name, mode, seeds, out_dir / name, progress, pool=pool)
        except KeyboardInterrupt:
            raise
        except Exception as error:  # noqa: BLE001 - one broken experiment must not stop the others
            log(f"[{name}] FAILED: {error!r}")
            records[name] = {
                "name": name,
                "status": "failed",
                "mode": mode,
                "wall_time_s": time.perf_counter() - t0,
                "error": "".join(traceback.format_exception(type(error), error, error.__traceback__)),
            }
            continue
        log(f"[{name}] done in {records[name]['wall_time_s']:.1f} s")
    _write(out_dir / REPORT_FILE, combined_report(records))
    return records


def combined_report(records: Dict[str, Dict[str, Any]]) -> str:
    """The combined report of ``run all``: a summary, then every experiment's section with its
    figures linked as ``<name>/<figure>``."""
    lines = [
        "# pynorm: paper reproductions",
        "",
        "| experiment | status | mode | wall time (s) | reproduced | partial | not reproduced |",
        "|---|---|---|---|---|---|---|",
    ]
    total = 0.0
    for name, r in records.items():
        verdicts = [c.get("verdict") for c in r.get("comparisons", [])]
        total += r.get("wall_time_s") or 0.0
        lines.append(
            f"| {name} | {r.get('status')} | {r.get('mode', '-')} | {fmt(r.get('wall_time_s'))} | "
            f"{verdicts.count('reproduced')} | {verdicts.count('partial')} | "
            f"{verdicts.count('not reproduced')} |"
        )
    lines += ["", f"Total wall time: {total:.1f} s", ""]
    for name, r in records.items():
        if r.get("status") == "not available":
            lines += [f"## {name}", "", f"Not available: {r.get('error')}", ""]
        else:
            lines += [experiment_report(r, figure_prefix=f"{name}/", level=2)]
    return "\n".join(lines)


def _write(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
