"""Array handling for every public function: the one place where array-likes come in, get
checked and converted, and where outputs are allocated.

Conventions (the same for every op):

* Inputs are array-likes: NumPy arrays, torch CPU tensors (detached, no copy), nested lists.
* Supported dtypes: float32, float64, float16 and bfloat16 (``ml_dtypes.bfloat16``); the
  16-bit types are storage only, all arithmetic is float32. Integer, bool or complex *arrays*
  are refused with a TypeError (convert explicitly: a silent cast would hide a bug); plain
  Python lists and scalars of integers are read as float64.
* Parameters (weight, bias) and upstream gradients (dy) are converted to x's dtype.
* Kernels see [rows, dim] views whose last axis is contiguous; leading axes are flattened
  (without a copy when NumPy can) and non-contiguous last axes are copied once.
* Outputs are new C-contiguous NumPy arrays of x's dtype and shape (or ``out=``).
* Ops on batches of matrices (linear attention) see [problems, rows, dim] views instead:
  ``as_matrices`` flattens the leading (batch, head) axes, ``matrices_output`` allocates.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from typing import Any, Optional, Tuple

import numpy as np

try:  # bfloat16 is optional: only needed to pass bfloat16 arrays
    import ml_dtypes

    BFLOAT16: Optional[np.dtype] = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - exercised only without ml_dtypes
    BFLOAT16 = None

_DTYPE_CODES = {np.dtype(np.float32): 0, np.dtype(np.float64): 1, np.dtype(np.float16): 2}
if BFLOAT16 is not None:
    _DTYPE_CODES[BFLOAT16] = 3

SUPPORTED_DTYPES = "float32, float64, float16, bfloat16"


def dtype_code(dtype: np.dtype) -> int:
    """The kernel tables' index of a (supported) dtype."""
    return _DTYPE_CODES[np.dtype(dtype)]


def accumulate_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype of statistics and reductions: float64 for float64, float32 otherwise."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def _from_torch(x: Any, name: str, fn: str) -> np.ndarray:
    torch = sys.modules["torch"]
    if x.device.type != "cpu":
        raise ValueError(f"{fn}: {name} is on device {x.device}; pynorm's kernels here take CPU arrays")
    x = x.detach()
    if x.dtype == torch.bfloat16:
        if BFLOAT16 is None:
            raise TypeError(f"{fn}: {name} is a bfloat16 tensor; install ml_dtypes to pass bfloat16")
        return x.view(torch.int16).numpy().view(BFLOAT16)
    return x.numpy()


def _is_torch_tensor(x: Any) -> bool:
    return "torch" in sys.modules and isinstance(x, sys.modules["torch"].Tensor)


def as_array(x: Any, name: str, fn: str) -> np.ndarray:
    """Any supported array-like as a NumPy array of a supported float dtype (no copy if possible)."""
    if type(x) is np.ndarray and x.dtype in _DTYPE_CODES:  # the common case, first
        return x
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{fn}: {name} must be an array of floats, got {type(x).__name__}")
    if _is_torch_tensor(x):
        arr = _from_torch(x, name, fn)
    else:
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as e:  # ragged lists and the like
            raise TypeError(f"{fn}: {name} could not be read as an array: {e}") from None
        if not isinstance(x, np.ndarray) and arr.dtype.kind in "iub":
            arr = arr.astype(np.float64)  # Python ints in lists/scalars are read as floats
    if arr.dtype not in _DTYPE_CODES:
        hint = " (install ml_dtypes for bfloat16)" if arr.dtype.name == "bfloat16" else ""
        raise TypeError(
            f"{fn}: {name} has dtype {arr.dtype}; supported dtypes are {SUPPORTED_DTYPES}{hint}. "
            "Convert it explicitly, e.g. x.astype(np.float32)."
        )
    return arr


def as_input(x: Any, name: str, fn: str, min_ndim: int = 1) -> np.ndarray:
    """The main input of a kernel: a float array with at least ``min_ndim`` dimensions."""
    arr = as_array(x, name, fn)
    if arr.ndim < min_ndim:
        raise ValueError(f"{fn}: {name} must have at least {min_ndim} dimension(s), got shape {arr.shape}")
    return arr


def n_rows(arr: np.ndarray) -> int:
    """The number of rows: the product of the leading axes."""
    return math.prod(arr.shape[:-1])


def as_rows(arr: np.ndarray) -> np.ndarray:
    """A [rows, dim] view (or copy) of ``arr`` with a contiguous last axis."""
    rows2d = arr.reshape(n_rows(arr), arr.shape[-1]) if arr.ndim != 2 else arr
    if arr.shape[-1] > 1 and rows2d.strides[1] != rows2d.itemsize:
        rows2d = np.ascontiguousarray(rows2d)
    return rows2d


def as_matrices(arr: np.ndarray) -> np.ndarray:
    """A [problems, rows, dim] view (or copy) of a (..., rows, dim) array with a contiguous last
    axis: the leading axes (batch, heads) are flattened into one, a 2-d array is one problem."""
    mats = arr.reshape((math.prod(arr.shape[:-2]),) + arr.shape[-2:]) if arr.ndim != 3 else arr
    if arr.shape[-1] > 1 and mats.strides[2] != mats.itemsize:
        mats = np.ascontiguousarray(mats)
    return mats


def matrices_output(batch_shape: Tuple[int, ...], rows: int, dim: int, dtype: np.dtype) -> Tuple[np.ndarray, np.ndarray]:
    """(a new C-contiguous array of shape batch_shape + (rows, dim), its [problems, rows, dim] view)."""
    result = empty(tuple(batch_shape) + (rows, dim), np.dtype(dtype))
    return result, result.reshape(math.prod(batch_shape), rows, dim)


def same_dtype(arrays: "dict[str, np.ndarray]", fn: str) -> np.dtype:
    """The common dtype of several main inputs; a TypeError naming them if they differ (a silent
    cast could lose precision or hide a bug)."""
    dtypes = {name: arr.dtype for name, arr in arrays.items()}
    first = next(iter(dtypes.values()))
    if any(d != first for d in dtypes.values()):
        listed = ", ".join(f"{name} {d}" for name, d in dtypes.items())
        raise TypeError(f"{fn}: inputs must share one dtype, got {listed}; convert them explicitly")
    return first


def like(y: Any, x: np.ndarray, name: str, fn: str) -> np.ndarray:
    """An argument that must have x's shape (e.g. dy), converted to x's dtype."""
    arr = as_array(y, name, fn)
    if arr.shape != x.shape:
        raise ValueError(f"{fn}: {name} has shape {arr.shape} but x has shape {x.shape}")
    return arr.astype(x.dtype, copy=False)


def vector(p: Any, length: int, dtype: np.dtype, name: str, fn: str) -> Optional[np.ndarray]:
    """An optional 1-d parameter of the given length, contiguous, in ``dtype``."""
    if p is None:
        return None
    arr = as_array(p, name, fn)
    if arr.shape != (length,):
        raise ValueError(f"{fn}: {name} must have shape ({length},) to match x's last axis, got {arr.shape}")
    return np.ascontiguousarray(arr, dtype=dtype)


def row_stats(stat: Any, x: np.ndarray, name: str, fn: str) -> Optional[np.ndarray]:
    """Saved per-row statistics (mean or rstd): one value per row of x, in the accumulate dtype."""
    if stat is None:
        return None
    arr = as_array(stat, name, fn)
    if arr.shape != x.shape[:-1] and arr.shape != (n_rows(x),):
        raise ValueError(f"{fn}: {name} must have shape {x.shape[:-1]} (one value per row), got {arr.shape}")
    return np.ascontiguousarray(arr.reshape(-1), dtype=accumulate_dtype(x.dtype))


def scalar(value: Any, name: str, fn: str) -> float:
    """A float, a 0-d array or a one-element array (e.g. DyT's alpha) as a Python float."""
    if _is_torch_tensor(value):
        value = value.detach().cpu().double().numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: {name} must be a number or a one-element array, got {type(value).__name__}") from None
    if arr.size != 1:
        raise ValueError(f"{fn}: {name} must have exactly one element, got shape {arr.shape}")
    return float(arr.reshape(()))


def eps_value(eps: Any, fn: str) -> float:
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: eps must be a number, got {type(eps).__name__}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{fn}: eps must be finite and >= 0, got {value}")
    return value


def threads_value(n_threads: Optional[int], fn: str) -> int:
    """A per-call thread count for the kernels (0 = the global setting)."""
    if n_threads is None:
        return 0
    if not isinstance(n_threads, (int, np.integer)) or isinstance(n_threads, bool) or n_threads < 1:
        raise ValueError(f"{fn}: n_threads must be a positive integer or None, got {n_threads!r}")
    return int(n_threads)


ALIGNMENT = 64  # bytes: lets the kernels stream whole vectors to memory from the first element
CACHED_MIN_BYTES = 1 << 20


class OutputCache:
    """Large output buffers kept for reuse once the caller has dropped them.

    Fresh memory from the OS is zeroed on first touch: for a 64 MiB output that extra pass
    costs as much as the kernel itself. So buffers of >= 1 MiB are kept (up to ``max_bytes``
    in all, least recently used first out) and handed out again once nothing references them
    any more -- every array derived from a buffer (views, reshapes, torch.from_numpy) holds a
    reference to it, so the reference count says when it is free. ``max_bytes = 0`` turns
    the cache off. Like ``np.empty``, a reused buffer holds stale values until written.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._buffers: list = []  # uint8 arrays, least recently used first
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> np.ndarray:
        """A uint8 buffer of nbytes + ALIGNMENT bytes that nobody else references."""
        size = nbytes + ALIGNMENT
        with self._lock:
            for i in range(len(self._buffers)):
                # free when only the list (and getrefcount's argument) refer to it
                if self._buffers[i].size == size and sys.getrefcount(self._buffers[i]) == 2:
                    buffer = self._buffers.pop(i)
                    self._buffers.append(buffer)
                    return buffer
            buffer = np.empty(size, dtype=np.uint8)
            self._make_room(size)
            if self.cached_bytes() + size <= self.max_bytes:
                self._buffers.append(buffer)
            return buffer

    def cached_bytes(self) -> int:
        return sum(b.size for b in self._buffers)

    def _make_room(self, size: int) -> None:
        for i in reversed([i for i in range(len(self._buffers)) if sys.getrefcount(self._buffers[i]) == 2]):
            if self.cached_bytes() + size <= self.max_bytes:
                return
            del self._buffers[i]

    def resize(self, max_bytes: int) -> None:
        with self._lock:
            self.max_bytes = max_bytes
            self._make_room(0)


OUTPUT_CACHE = OutputCache(int(float(os.environ.get("PYNORM_OUTPUT_CACHE_MB", "256")) * (1 << 20)))


def empty(shape: Tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised C-contiguous array; from 1 MiB on, its data starts on a 64-byte boundary
    and comes from the :class:`OutputCache`."""
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < CACHED_MIN_BYTES:  # small outputs are never streamed: plain NumPy
        return np.empty(shape, dtype=dtype)
    buffer = OUTPUT_CACHE.take(nbytes)
    offset = -buffer.ctypes.data % ALIGNMENT
    return buffer[offset : offset + nbytes].view(dtype).reshape(shape)


def output(x: np.ndarray, out: Optional[np.ndarray], fn: str) -> Tuple[np.ndarray, np.ndarray]:
    """(result with x's shape, its [rows, dim] view) -- a new array, or ``out`` after checks."""
    rows_shape = (math.prod(x.shape[:-1]), x.shape[-1])
    if out is None:
        result = empty(x.shape, x.dtype)
    else:
        if not isinstance(out, np.ndarray):
            raise TypeError(f"{fn}: out must be a NumPy array, got {type(out).__name__}")
        if out.shape != x.shape or out.dtype != x.dtype:
            raise ValueError(f"{fn}: out must have shape {x.shape} and dtype {x.dtype}, got {out.shape} {out.dtype}")
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError(f"{fn}: out must be a writable C-contiguous array")
        same_buffer = out.__array_interface__["data"][0] == x.__array_interface__["data"][0] and out.strides == x.strides
        if np.shares_memory(out, x) and not same_buffer:
            raise ValueError(f"{fn}: out overlaps x without being x itself (in-place use must pass out=x)")
        result = out
    return result, result.reshape(rows_shape)
