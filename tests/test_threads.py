"""Changing the thread count while other Python threads are inside kernels changes nothing in
their results: each call reads the count once, and results do not depend on it (rows and
row-reduction blocks are fixed partitions; see DESIGN.md). One thread cycles
pynorm.set_num_threads through 1..5 and the default while four threads call every op, forward
and backward, and compare each result bitwise with a reference computed before."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest

import pynorm

CALLERS = 4
ROUNDS = 3  # calls of every op by each caller
THREAD_COUNTS = [1, 2, 3, 4, 5, None]


def _calls() -> dict[str, callable]:
    """Every op on inputs large enough to run on several threads: norms in float32 and float64,
    linear attention with one problem (split among the threads) and several, causal or not."""
    rng = np.random.default_rng(31)
    calls = {}
    for dtype in (np.float32, np.float64):
        x, dy = rng.standard_normal((2, 256, 1000)).astype(dtype)
        w, b = rng.standard_normal((2, 1000)).astype(dtype)
        name = np.dtype(dtype).name
        calls.update(
            {
                f"layer_norm[{name}]": lambda x=x, w=w, b=b: pynorm.layer_norm(x, w, b, return_stats=True),
                f"layer_norm_backward[{name}]": lambda x=x, dy=dy, w=w, b=b: pynorm.layer_norm_backward(dy, x, w, b),
                f"rms_norm[{name}]": lambda x=x, w=w: pynorm.rms_norm(x, w),
                f"rms_norm_backward[{name}]": lambda x=x, dy=dy, w=w: pynorm.rms_norm_backward(dy, x, w),
                f"dyt[{name}]": lambda x=x, w=w, b=b: pynorm.dyt(x, 0.8, w, b),
                f"dyt_backward[{name}]": lambda x=x, dy=dy, w=w, b=b: pynorm.dyt_backward(dy, x, 0.8, w, b),
            }
        )
    for problems, causal in itertools.product((1, 3), (False, True)):
        q, k, v, dout = rng.standard_normal((4, problems, 700, 24)).astype(np.float32)
        kw = dict(causal=causal, normalize=True)
        name = f"{problems}x700x24,causal={causal}"
        calls[f"linear_attention[{name}]"] = lambda q=q, k=k, v=v, kw=kw: pynorm.linear_attention(q, k, v, **kw)
        calls[f"linear_attention_backward[{name}]"] = lambda q=q, k=k, v=v, dout=dout, kw=kw: (
            pynorm.linear_attention_backward(dout, q, k, v, **kw)
        )
    a, g = rng.standard_normal((2, 8192, 48)).astype(np.float32)
    m = rng.standard_normal((48, 40)).astype(np.float32)
    calls["matmul"] = lambda: pynorm.matmul(a, m)
    calls["matmul[transpose_a]"] = lambda: pynorm.matmul(a, g, transpose_a=True)
    x, dout = rng.standard_normal((2, 16, 128, 32)).astype(np.float32)
    W, V = rng.standard_normal((2, 32, 32)).astype(np.float32) / 6
    calls["merged_linear_attention"] = lambda: pynorm.merged_linear_attention(x, W, V, residual=True)
    calls["merged_linear_attention_backward"] = lambda: pynorm.merged_linear_attention_backward(
        dout, x, W, V, residual=True
    )
    return calls


def _bits(result) -> list[bytes]:
    return [np.ascontiguousarray(r).tobytes() for r in (result if isinstance(result, tuple) else (result,))]


@pytest.fixture
def restore_threads():
    yield
    pynorm.set_num_threads(None)


def test_set_num_threads_during_calls_changes_no_result(restore_threads):
    calls = _calls()
    pynorm.set_num_threads(None)
    reference = {name: _bits(call()) for name, call in calls.items()}
    stop = threading.Event()
    changes = 0
    wrong: list[str] = []
    errors: list[BaseException] = []

    def hammer():
        nonlocal changes
        for n in itertools.cycle(THREAD_COUNTS):
            if stop.is_set():
                return
            pynorm.set_num_threads(n)
            changes += 1

    def caller(offset):
        try:
            names = list(calls)
            for round_ in range(ROUNDS):
                for name in names[offset:] + names[:offset]:  # callers run different ops at a time
                    if _bits(calls[name]()) != reference[name]:
                        wrong.append(f"{name} (round {round_})")
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    hammering = threading.Thread(target=hammer)
    callers = [threading.Thread(target=caller, args=(i * len(calls) // CALLERS,)) for i in range(CALLERS)]
    hammering.start()
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    stop.set()
    hammering.join()
    assert not errors, errors
    assert not wrong, wrong
    assert changes > len(THREAD_COUNTS)  # the count really changed while the callers ran


@pytest.mark.parametrize("threads", THREAD_COUNTS[1:-1])
def test_every_thread_count_gives_the_reference(restore_threads, threads):
    """The premise of the test above, one count at a time: n threads give 1 thread's bits."""
    calls = _calls()
    pynorm.set_num_threads(1)
    reference = {name: _bits(call()) for name, call in calls.items()}
    pynorm.set_num_threads(threads)
    assert [name for name, call in calls.items() if _bits(call()) != reference[name]] == []
