"""Fanning an experiment's units out (pynorm.experiments._fanout): the same results, bit for
bit, serially, on a pool of spawned processes and on a Dask cluster; resuming after an
interruption; one-line errors for bad --seeds / --jobs / --scheduler; run-time estimates."""

from __future__ import annotations

import dataclasses
import json
import pickle
import socket

import pytest

pytest.importorskip("matplotlib")

from pynorm import experiments  # noqa: E402
from pynorm.cli import main  # noqa: E402
from pynorm.experiments import _fanout, majority, power_method, unselectable  # noqa: E402

#: experiment name -> its module, whose Config.tiny() the tests run
TINY = {"power-method": power_method, "majority": majority, "unselectable": unselectable}


def _outcome(record):
    """What must not depend on how the units ran: metrics (less the units' timings) and
    comparisons, as JSON text (floats written exactly)."""
    metrics = {k: v for k, v in record["metrics"].items() if k != "units"}
    return json.dumps({"metrics": metrics, "comparisons": record["comparisons"]}, sort_keys=True)


def _run(name, out, pool=None):
    return experiments.run_experiment(name, out=out, cfg=TINY[name].Config.tiny(), progress=False, pool=pool)


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """Each tiny experiment run serially, once for the module."""
    return {name: _run(name, tmp_path_factory.mktemp(name)) for name in TINY}


@pytest.fixture(scope="module")
def pool():
    with _fanout.workers(jobs=2) as workers:
        yield workers.pool


@pytest.mark.parametrize("name", sorted(TINY))
def test_jobs_match_serial_bit_for_bit(name, serial, pool, tmp_path):
    fanned = _run(name, tmp_path, pool)
    assert _outcome(fanned) == _outcome(serial[name])
    assert fanned["metrics"]["units"]["count"] == len(TINY[name].units(TINY[name].Config.tiny()))


def test_pool_processes_are_spawned(pool):
    assert pool._mp_context.get_start_method() == "spawn"


def test_units_run_with_one_pynorm_and_one_blas_thread(monkeypatch, tmp_path):
    import pynorm
    from threadpoolctl import threadpool_info

    seen = {}

    def run_unit(cfg, unit, out_dir, progress):
        seen["pynorm"] = pynorm.get_num_threads()
        seen["blas"] = {info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}
        return {}

    monkeypatch.setattr(majority, "run_unit", run_unit)
    _fanout.run_unit_alone(majority.__name__, majority.Config.tiny(), ("projection", 1), str(tmp_path), False)
    assert seen["pynorm"] == 1 and seen["blas"] <= {1}


def test_dask_cluster_matches_serial(serial, tmp_path, monkeypatch):
    distributed = pytest.importorskip("dask.distributed")
    tiny = majority.Config.tiny()
    monkeypatch.setattr(majority.Config, "quick", classmethod(lambda cls: tiny))
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        status = main(
            [
                "run",
                "majority",
                "--quick",
                "--out",
                str(tmp_path),
                "--no-progress",
                "--scheduler",
                cluster.scheduler_address,
            ]
        )
    assert status == 0
    record = json.loads((tmp_path / "results.json").read_text())
    assert _outcome(record) == _outcome(serial["majority"])


def test_interrupted_run_resumes_with_its_finished_units(serial, pool, tmp_path, monkeypatch):
    cfg = power_method.Config.tiny()
    units = sorted(power_method.units(cfg))
    original = power_method.run_unit

    def interrupted(cfg, unit, out_dir, progress):
        if unit != units[0]:
            raise KeyboardInterrupt  # as if stopped by Ctrl-C after the first unit
        return original(cfg, unit, out_dir, progress)

    monkeypatch.setattr(power_method, "run_unit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run("power-method", tmp_path)
    monkeypatch.setattr(power_method, "run_unit", original)
    store = tmp_path / _fanout.UNITS_FILE
    assert _records(store) == [units[0]]
    resumed = _run("power-method", tmp_path, pool)  # the rest on the pool
    assert _outcome(resumed) == _outcome(serial["power-method"])
    records = _records(store)  # the pool's units in completion order, after the first one
    assert records[0] == units[0] and sorted(records) == units  # the first unit was not computed again


def _records(path):
    """The units recorded in a units.pickle file, in order."""
    found = []
    with open(path, "rb") as f:
        while True:
            try:
                found.append(pickle.load(f)[1])
            except EOFError:
                return found


def test_store_ignores_other_configs_and_a_torn_record(tmp_path):
    cfg = power_method.Config.tiny()
    store = _fanout.UnitStore(tmp_path / "units.pickle", cfg)
    store.add((0, "main"), ({"x": 1.5}, 0.1))
    _fanout.UnitStore(tmp_path / "units.pickle", dataclasses.replace(cfg, steps=7)).add((0, "main"), ({}, 0.0))
    with open(tmp_path / "units.pickle", "ab") as f:
        f.write(pickle.dumps((store.key, (0, "probe"), ({}, 0.2)))[:-5])  # killed while writing
    again = _fanout.UnitStore(tmp_path / "units.pickle", cfg)
    assert again.results == {(0, "main"): ({"x": 1.5}, 0.1)}
    again.add((1, "main"), ({"x": 2.5}, 0.3))  # written after the torn record: still readable
    assert _fanout.UnitStore(tmp_path / "units.pickle", cfg).results == {
        (0, "main"): ({"x": 1.5}, 0.1),
        (1, "main"): ({"x": 2.5}, 0.3),
    }


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seeds", "-1"], "non-negative"),
        (["--seeds", "3", "3"], "must not repeat"),
        (["--seeds", "x"], "invalid int value"),
        (["--jobs", "0"], "integer >= 1"),
        (["--jobs", "2.5"], "integer >= 1"),
        (["--scheduler", "localhost"], "host:port"),
        (["--scheduler", "http://127.0.0.1:8786"], "host:port"),
        (["--scheduler", "127.0.0.1:70000"], "host:port"),
        (["--scheduler", "tcp://127.0.0.1:{port}"], "no scheduler reachable"),
    ],
)
def test_bad_arguments_get_one_line_and_status_2(args, message, tmp_path, capsys):
    if "--scheduler" in args:  # its form is checked once dask is known to be there
        pytest.importorskip("dask.distributed")
    args = [a.format(port=_closed_port()) for a in args]
    out = tmp_path / "never"
    assert _status(["run", "power-method", "--out", str(out)] + args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()  # no work started


def test_scheduler_without_dask_says_what_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(__import__("sys").modules, "dask.distributed", None)  # import fails
    assert _status(["run", "power-method", "--out", str(tmp_path / "never"), "--scheduler", "127.0.0.1:8786"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "pynorm[cluster]"' in err and err.count("\n") == 1
    assert not (tmp_path / "never").exists()


def _status(argv):
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


def test_full_run_prints_its_estimate_first(monkeypatch, tmp_path, capsys):
    tiny = dataclasses.replace(power_method.Config.tiny(), steps=20, probe_steps=5, n_points=3, diag_noises=())
    monkeypatch.setattr(power_method.Config, "full", classmethod(lambda cls: tiny))
    assert main(["run", "power-method", "--full", "--out", str(tmp_path), "--no-progress", "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert out.index("Estimated wall time") < out.index("pynorm run power-method (full")
    assert "2 parallel jobs" in out and "(2 units to run)" in out and "an estimate" in out


def test_estimate_divides_the_units_among_the_jobs(monkeypatch, tmp_path):
    cfg = dataclasses.replace(power_method.Config.tiny(), diag_noises=())  # main and probe units only
    costs = {(0, "main"): 6.0, (0, "probe"): 1.0, (1, "main"): 5.0, (1, "probe"): 2.0}
    monkeypatch.setattr(power_method, "unit_seconds", lambda cfg, units: {u: costs[u] for u in units})
    two_seeds = dataclasses.replace(cfg, seeds=(0, 1))
    assert _fanout.estimate_seconds(power_method, two_seeds, tmp_path, 1) == (14.0, 4)
    assert _fanout.estimate_seconds(power_method, two_seeds, tmp_path, 2) == (7.0, 4)  # 6+1 | 5+2
    assert _fanout.estimate_seconds(power_method, two_seeds, tmp_path, 8) == (6.0, 4)  # the longest unit
    _fanout.UnitStore(tmp_path / _fanout.UNITS_FILE, two_seeds).add((0, "main"), ({}, 6.0))
    assert _fanout.estimate_seconds(power_method, two_seeds, tmp_path, 1) == (8.0, 3)  # a finished unit is done


@pytest.mark.parametrize("module", list(TINY.values()))
def test_unit_estimates_are_positive(module):
    cfg = module.Config.tiny()
    units = sorted(module.units(cfg))
    estimates = module.unit_seconds(cfg, units)
    assert set(estimates) == set(units) and all(0 < s < 60 for s in estimates.values())
