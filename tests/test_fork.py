"""Worker processes: pynorm in multiprocessing.Process, Pool and ProcessPoolExecutor workers
started by fork, forkserver and spawn gives the parent's bits.

GNU libgomp's thread pool does not survive fork: before pynorm ran a forked child serially, a
child forked after the parent had run a kernel on 2 threads hung in its first call. Each
scenario therefore runs in its own interpreter (this file as a script) under a hard timeout, so
that a hang fails its test instead of blocking the suite. The scenario's parent runs every op on
2 threads, then starts workers that run the same calls, and compares their results with its own
bitwise.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import multiprocessing
import os
import signal
import subprocess
import pickle
import sys

import numpy as np
import pytest

import pynorm

START_METHODS = ["fork", "forkserver", "spawn"]
RUNNERS = ["process", "pool", "executor"]
WORKERS = 2
# Seconds a scenario may take: a few interpreter starts (spawn, forkserver) on a loaded machine.
SCENARIO_TIMEOUT = 120


def op_results() -> dict[str, str]:
    """A digest of every output of each op's forward and backward, on inputs large enough that
    pynorm uses 2 threads in the parent (and, for linear attention, one problem: the path that
    splits a problem among the threads, and several problems)."""
    rng = np.random.default_rng(19)
    x = rng.standard_normal((256, 1024)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    w, b = rng.standard_normal((2, 1024)).astype(np.float32)
    calls = {
        "layer_norm": lambda: pynorm.layer_norm(x, w, b),
        "layer_norm_backward": lambda: pynorm.layer_norm_backward(dy, x, w, b),
        "rms_norm": lambda: pynorm.rms_norm(x, w),
        "rms_norm_backward": lambda: pynorm.rms_norm_backward(dy, x, w),
        "dyt": lambda: pynorm.dyt(x, 0.7, w, b),
        "dyt_backward": lambda: pynorm.dyt_backward(dy, x, 0.7, w, b),
    }
    for problems in (1, 4):
        q, k, v, dout = rng.standard_normal((4, problems, 600, 32)).astype(np.float32)
        for causal in (False, True):
            kw = dict(causal=causal, normalize=True)
            name = f"linear_attention[{problems}x600x32,causal={causal}]"
            calls[name] = lambda q=q, k=k, v=v, kw=kw: pynorm.linear_attention(q, k, v, **kw)
            calls[name + "_backward"] = lambda q=q, k=k, v=v, dout=dout, kw=kw: pynorm.linear_attention_backward(
                dout, q, k, v, **kw
            )
    digests = {}
    for name, call in calls.items():
        out = call()
        outs = out if isinstance(out, tuple) else (out,)
        digests[name] = hashlib.sha256(b"".join(np.ascontiguousarray(o).tobytes() for o in outs)).hexdigest()
    return digests


def worker(_task: int = 0) -> dict[str, object]:
    """What a worker returns: op_results() computed there, and the thread count it sees."""
    return {"results": op_results(), "threads": pynorm.get_num_threads()}


def _put_results(queue) -> None:
    queue.put(worker())


def forked(function):
    """function() run in a child made by os.fork (its result comes back through a pipe)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, and never return into the caller's code
        os.close(read)
        try:
            with os.fdopen(write, "wb") as pipe:
                pickle.dump(function(), pipe)
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and data, f"forked child failed (status {status})"
    return pickle.loads(data)


def _forked_worker() -> dict[str, object]:
    """In a child made by os.fork: worker() after asking for 2 threads, worker() in a child of
    this child, and whether a call asking for 2 threads itself matches one on 1 thread."""
    pynorm.set_num_threads(2)
    x = np.ones((512, 1024), np.float32)
    per_call = np.array_equal(pynorm.layer_norm(x, n_threads=2), pynorm.layer_norm(x, n_threads=1))
    return {**worker(), "grandchild": forked(worker), "n_threads=2 per call": per_call}


def run_scenario(method: str, runner: str) -> list[str]:
    """In this process: op_results() on 2 threads, then WORKERS workers of the given kind and
    start method (runner "os.fork": one child by os.fork, and its own child); returns what differs
    from this process's results, and from one thread in a child forked from this process."""
    pynorm.set_num_threads(2)
    assert pynorm.get_num_threads() == 2
    parent = op_results()
    ctx = multiprocessing.get_context(method)
    if runner == "os.fork":
        child = forked(_forked_worker)
        children = [child, child["grandchild"]]
        if not child["n_threads=2 per call"]:
            return ["n_threads=2 per call"]
    elif runner == "process":
        queue = ctx.Queue()
        procs = [ctx.Process(target=_put_results, args=(queue,)) for _ in range(WORKERS)]
        for p in procs:
            p.start()
        children = [queue.get() for _ in procs]
        for p in procs:
            p.join()
            assert p.exitcode == 0, f"worker exited with {p.exitcode}"
    elif runner == "pool":
        with ctx.Pool(WORKERS) as pool:
            children = pool.map(worker, range(WORKERS))
    else:
        with concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=ctx) as executor:
            children = list(executor.map(worker, range(WORKERS)))
    differ = {name for child in children for name in parent if child["results"].get(name) != parent[name]}
    if method == "fork" and any(child["threads"] != 1 for child in children):
        differ.add(f"threads {[child['threads'] for child in children]} (expected 1 in a forked child)")
    if pynorm.get_num_threads() != 2:
        differ.add("the parent's threads")
    return sorted(differ)


def _run_in_subprocess(method: str, runner: str) -> subprocess.CompletedProcess:
    """Runs this file as a script for one scenario, killing its whole process group (the workers
    too) if it outlives SCENARIO_TIMEOUT."""
    package_root = os.path.dirname(os.path.dirname(pynorm.__file__))  # the pynorm this test imports
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), method, runner],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=SCENARIO_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
        raise AssertionError(f"{runner} workers started by {method} hung (killed after {SCENARIO_TIMEOUT} s):\n{out}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out)


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("method", START_METHODS)
def test_workers_get_the_parents_bits(method, runner):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"start method {method} is not available here")
    done = _run_in_subprocess(method, runner)
    assert done.returncode == 0 and done.stdout.strip().endswith("same bits"), done.stdout


def test_a_child_of_os_fork_and_its_child_run_on_one_thread():
    done = _run_in_subprocess("fork", "os.fork")
    assert done.returncode == 0 and done.stdout.strip().endswith("same bits"), done.stdout


if __name__ == "__main__":
    differ = run_scenario(sys.argv[1], sys.argv[2])
    print(f"differ: {differ}" if differ else "same bits")
    sys.exit(1 if differ else 0)
