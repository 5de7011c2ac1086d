"""An experiment's independent units of work, run here one after another, on a local pool of
spawned processes (``pynorm run ... --jobs N``) or on a Dask cluster (``--scheduler ADDRESS``).

Every experiment module splits its work into units (seeds, variants, grid cells):

* ``units(cfg) -> list`` of unit descriptions: tuples of str and int, hashable and sortable,
  each one computed independently of the others;
* ``run_unit(cfg, unit, out_dir, progress) -> result``: computes one unit, deterministically
  from ``cfg`` and ``unit`` alone; the result is picklable (it travels back from the worker);
  checkpoints, if the unit keeps any, go under ``out_dir``;
* ``combine(cfg, results, out_dir) -> {"metrics", "comparisons", "figures"}``: ``results``
  maps every unit to its result, in sorted unit order; the figures are drawn here.

``module.run(cfg, out_dir, progress)`` is :func:`run_units` with no executor (serial).

Bit-identical results however they ran: every unit runs with one pynorm thread and one BLAS
thread (:func:`pynorm.nn.train.single_blas_thread`), in this process or in a
worker, and ``combine`` gets the results in sorted unit order, not in completion order.

Resuming: the process that calls :func:`run_units` appends every finished unit's result to
``out_dir/units.pickle``, tagged with the whole config; a rerun with the same config reuses
those results and computes only the missing units (which resume from their own checkpoints).
Delete the file to recompute everything. With ``--scheduler`` the workers write checkpoints
into ``out_dir`` themselves, so on several machines it must be a shared folder.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import importlib
import json
import multiprocessing
import pathlib
import pickle
import re
import socket
import time
from types import ModuleType
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

from pynorm.nn.train import single_blas_thread

from ._common import progress_bar
from ._report import to_jsonable

UNITS_FILE = "units.pickle"
CLUSTER_HINT = 'pip install "pynorm[cluster]"'
#: host:port or tcp://host:port (host: a name, an IPv4 address or a bracketed IPv6 one)
ADDRESS = re.compile(r"^(?:tcp://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.\-]*):(?P<port>[0-9]{1,5})$")


class FanoutError(ValueError):
    """A --jobs or --scheduler setting that cannot be used (bad form, unreachable, no dask)."""


# -- running units ---------------------------------------------------------------------------
def runner(module_name: str) -> Callable[..., Dict[str, Any]]:
    """The ``run(cfg, out_dir, progress=True)`` of experiment module ``module_name``: every
    unit, one after another in this process, combined."""

    def run(cfg, out_dir: pathlib.Path, progress: bool = True) -> Dict[str, Any]:
        """Runs every unit of ``cfg`` serially (resumable) and combines them (see _fanout)."""
        return run_units(importlib.import_module(module_name), cfg, out_dir, progress)

    return run


def run_unit_alone(module_name: str, cfg, unit: Tuple, out_dir: str, progress: bool) -> Tuple[Any, float]:
    """One unit with one pynorm and one BLAS thread; returns (result, seconds it took). Runs in
    whichever process computes the unit (so it must stay a top-level, importable function)."""
    module = importlib.import_module(module_name)
    started = time.perf_counter()
    with single_blas_thread(pynorm_threads=1):
        result = module.run_unit(cfg, unit, pathlib.Path(out_dir), progress)
    return result, time.perf_counter() - started


def run_units(
    module: ModuleType,
    cfg,
    out_dir: pathlib.Path,
    progress: bool = True,
    executor: Optional[concurrent.futures.Executor] = None,
) -> Dict[str, Any]:
    """Computes the units of ``cfg`` that ``out_dir`` has no result for (here, or on
    ``executor``), then returns ``module.combine`` of all of them, in sorted order. Adds
    ``metrics["units"]``: the number of units and their compute seconds (sum and longest)."""
    out_dir = pathlib.Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    units = sorted(module.units(cfg))
    if len(set(units)) != len(units):
        raise ValueError(f"{module.NAME}: units(cfg) lists a unit twice: {units}")
    store = UnitStore(out_dir / UNITS_FILE, cfg)
    done = {unit: store.results[unit] for unit in units if unit in store.results}
    todo = [unit for unit in units if unit not in done]
    with progress_bar(progress, len(units), f"{module.NAME}: units") as bar:
        bar.update(len(done))
        if executor is None:
            for unit in todo:
                done[unit] = store.add(unit, run_unit_alone(module.__name__, cfg, unit, str(out_dir), progress))
                bar.update(1)
        else:
            futures = {
                executor.submit(run_unit_alone, module.__name__, cfg, unit, str(out_dir), False): unit for unit in todo
            }
            try:
                for future in concurrent.futures.as_completed(futures):
                    unit = futures[future]
                    done[unit] = store.add(unit, future.result())
                    bar.update(1)
            finally:  # after a failure, the units not started yet are dropped
                for future in futures:
                    future.cancel()
    result = module.combine(cfg, {unit: done[unit][0] for unit in units}, out_dir)
    seconds = [done[unit][1] for unit in units]
    result["metrics"]["units"] = {
        "count": len(units),
        "compute_seconds": sum(seconds),
        "longest_seconds": max(seconds, default=0.0),
    }
    return result


class UnitStore:
    """The finished units of one config: ``results`` (unit -> (result, seconds)) read from
    ``path`` (records of other configs are skipped; reading stops at a torn or unreadable
    record, which the next :meth:`add` cuts off before appending its own)."""

    def __init__(self, path: pathlib.Path, cfg) -> None:
        self.path = path
        self.key = json.dumps(to_jsonable(dataclasses.asdict(cfg)), sort_keys=True)
        self.results: Dict[Tuple, Tuple[Any, float]] = {}
        self.end = 0  # where the readable records end
        if path.is_file():
            with open(path, "rb") as f:
                while True:
                    try:
                        key, unit, value = pickle.load(f)
                    except Exception:  # noqa: BLE001 - EOF, a record torn by a kill, or a stale class
                        break
                    self.end = f.tell()
                    if key == self.key:
                        self.results[unit] = value

    def add(self, unit: Tuple, value: Tuple[Any, float]) -> Tuple[Any, float]:
        """Appends the (result, seconds) of ``unit`` to the file at once and returns it."""
        with open(self.path, "ab") as f:
            f.truncate(self.end)
            pickle.dump((self.key, unit, value), f, protocol=pickle.HIGHEST_PROTOCOL)
            self.end = f.tell()
        self.results[unit] = value
        return value


# -- executors -------------------------------------------------------------------------------
def check_jobs(text: str) -> int:
    """``--jobs``: an integer >= 1 (:class:`FanoutError` otherwise)."""
    try:
        jobs = int(text)
    except ValueError:
        raise FanoutError(f"--jobs must be an integer >= 1, got {text!r}") from None
    if jobs < 1:
        raise FanoutError(f"--jobs must be an integer >= 1, got {jobs}")
    return jobs


def check_scheduler(address: str, timeout: float = 3.0) -> str:
    """``--scheduler``: dask importable, ``address`` of the form host:port or tcp://host:port,
    and something listening there (a TCP connection within ``timeout`` seconds). Returns
    the address as tcp://host:port; raises :class:`FanoutError` saying what is wrong."""
    try:
        import dask.distributed  # noqa: F401
    except ImportError:
        raise FanoutError(f"--scheduler needs dask.distributed: {CLUSTER_HINT}") from None
    match = ADDRESS.match(address)
    port = int(match["port"]) if match else 0
    if not match or not 1 <= port <= 65535:
        raise FanoutError(f"--scheduler expects host:port or tcp://host:port, got {address!r}")
    host = match["host"].strip("[]")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as error:
        raise FanoutError(f"--scheduler {address}: no scheduler reachable there ({error})") from None
    return f"tcp://{match['host']}:{port}"


class Workers(NamedTuple):
    """Where units run: ``pool`` (None: serially, in this process) and how many at once."""

    pool: Optional[concurrent.futures.Executor]
    slots: int


@contextlib.contextmanager
def workers(jobs: int = 1, scheduler: Optional[str] = None, timeout: float = 10.0) -> Iterator[Workers]:
    """Serial for one job and no scheduler; else a pool of ``jobs`` spawned processes (never
    forked: a forked child would inherit this process's OpenMP and BLAS thread pools); or,
    with ``scheduler`` (checked with :func:`check_scheduler` first), a concurrent.futures view
    of a dask.distributed client connected to it. Shut down on exit."""
    if scheduler is not None:
        from dask.distributed import Client

        try:
            client = Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError) as error:  # something listens there, but no dask scheduler
            raise FanoutError(f"--scheduler {scheduler}: cannot connect a dask client ({error})") from None
        with client:
            pool = client.get_executor(pure=False)
            try:
                yield Workers(pool, sum(client.nthreads().values()))
            finally:
                pool.shutdown(wait=False)
    elif jobs > 1:
        pool = concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
        try:
            yield Workers(pool, jobs)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    else:
        yield Workers(None, 1)


# -- estimates -------------------------------------------------------------------------------
def estimate_seconds(module: ModuleType, cfg, out_dir: pathlib.Path, slots: int) -> Tuple[float, int]:
    """(estimated wall seconds, units left) of running ``cfg`` into ``out_dir`` on ``slots``
    parallel workers as fast as this machine: ``module.unit_seconds(cfg, units)`` (each unit's
    seconds, from a few timed steps of its model at the config's settings) handed out longest
    first to the least loaded worker. Units that ``out_dir`` holds results for count as done."""
    done = UnitStore(pathlib.Path(out_dir) / UNITS_FILE, cfg).results
    units = [unit for unit in sorted(module.units(cfg)) if unit not in done]
    costs = module.unit_seconds(cfg, units) if units else {}
    return makespan(sorted((costs[unit] for unit in units), reverse=True), slots), len(units)


def makespan(costs: List[float], slots: int) -> float:
    """Finishing time of ``costs`` handed out in order, each to the least loaded of ``slots``."""
    loads = [0.0] * max(1, slots)
    for cost in costs:
        loads[loads.index(min(loads))] += cost
    return max(loads)
