"""pynorm: fast, tested normalization and linear-attention kernels for NumPy.

The functions work on the last axis of array-likes (NumPy arrays, torch CPU tensors, lists)
and return NumPy arrays of the input's dtype; every op has a ``*_backward``. GPU arrays (CuPy
arrays, torch CUDA tensors, anything with ``__cuda_array_interface__`` / a CUDA ``__dlpack__``)
run on the CUDA kernels of ``pynorm._cuda``, on the array's device and the caller's current
stream, and come back in the caller's library. See the README for the conventions, and
``pynorm.show_config()`` for what this build runs on (``config()["cuda"]`` says whether CUDA
was built and, if it cannot run, why).
"""

from __future__ import annotations

from . import ops
from ._array import cuda_config as _cuda_config
from ._array import threads_value as _threads_value
from ._core_loader import core as _load_core
from .ops import *  # noqa: F403 - the functional API, every name of pynorm.ops.__all__

__version__ = "0.1.0"

#: the ops (listed once, in pynorm.ops.__all__) and the build's settings
__all__ = sorted([*ops.__all__, "get_num_threads", "set_num_threads", "show_config", "simd_level"])


def set_num_threads(n: int | None) -> None:
    """Sets the number of threads pynorm's kernels use: a positive integer, or None for OpenMP's
    default (which OMP_NUM_THREADS and threadpoolctl control). 0 and negatives are a ValueError,
    non-integers a TypeError (the rule of every ``n_threads=``). Small inputs always run on one
    thread."""
    _load_core().set_num_threads(_threads_value(n, "n", "pynorm.set_num_threads"))


def get_num_threads() -> int:
    """The number of threads a large kernel call uses."""
    return _load_core().get_num_threads()


def simd_level() -> str:
    """The instruction set of the CPU kernels in use: 'baseline', 'avx2' or 'avx512'."""
    return _load_core().simd_level()


def config() -> dict:
    """What show_config prints, as a dict."""
    core = _load_core()
    return {
        "version": __version__,
        "simd_level": core.simd_level(),
        "simd_levels_compiled": list(core.compiled_simd_levels()),
        "simd_levels_supported": list(core.supported_simd_levels()),
        "openmp": f"OpenMP {core.openmp_version}",
        "threads": core.get_num_threads(),
        "cuda": _cuda_config(),
    }


def show_config() -> None:
    """Prints the version, SIMD level, OpenMP and thread count, and CUDA availability."""
    for key, value in config().items():
        print(f"{key:>22}: {value}")
