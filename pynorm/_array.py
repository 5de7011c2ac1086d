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

GPU arrays (the second half of this file): CuPy arrays, torch CUDA tensors, and any object
exposing ``__cuda_array_interface__`` or a CUDA ``__dlpack__`` are recognised by
:func:`is_gpu`; :func:`dispatch` sends a call with any GPU argument to the op's CUDA
implementation, and :class:`Gpu` does for one such call what the functions above do for NumPy:
checks (every array on one GPU, no CPU array mixed in), dtype conversion, [rows, dim] views,
outputs allocated in the caller's library on the array's device, and the caller's current
stream. Neither CuPy nor torch is imported unless the caller passes their arrays.
"""

from __future__ import annotations

import functools
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


_FLOAT32, _FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)


def accumulate_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype of statistics and reductions: float64 for float64, float32 otherwise."""
    return _FLOAT64 if dtype == _FLOAT64 else _FLOAT32


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
    if type(y) is np.ndarray and y.dtype == x.dtype and y.shape == x.shape:
        return y  # the common case, first
    arr = as_array(y, name, fn)
    if arr.shape != x.shape:
        raise ValueError(f"{fn}: {name} has shape {arr.shape} but x has shape {x.shape}")
    return arr.astype(x.dtype, copy=False)


def vector(p: Any, length: int, dtype: np.dtype, name: str, fn: str) -> Optional[np.ndarray]:
    """An optional 1-d parameter of the given length, contiguous, in ``dtype``."""
    if p is None:
        return None
    if type(p) is np.ndarray and p.dtype == dtype and p.shape == (length,) and p.flags.c_contiguous:
        return p  # the common case, first
    arr = as_array(p, name, fn)
    if arr.shape != (length,):
        raise ValueError(f"{fn}: {name} must have shape ({length},) to match x's last axis, got {arr.shape}")
    return np.ascontiguousarray(arr, dtype=dtype)


def row_stats(stat: Any, x: np.ndarray, name: str, fn: str) -> Optional[np.ndarray]:
    """Saved per-row statistics (mean or rstd): one value per row of x, in the accumulate dtype."""
    if stat is None:
        return None
    if type(stat) is np.ndarray and stat.shape == x.shape[:-1] and stat.dtype == accumulate_dtype(x.dtype) and stat.flags.c_contiguous:
        return stat if stat.ndim == 1 else stat.reshape(-1)  # the common case (as layer_norm returned it), first
    arr = as_array(stat, name, fn)
    if arr.shape != x.shape[:-1] and arr.shape != (n_rows(x),):
        raise ValueError(f"{fn}: {name} must have shape {x.shape[:-1]} (one value per row), got {arr.shape}")
    return np.ascontiguousarray(arr.reshape(-1), dtype=accumulate_dtype(x.dtype))


def scalar(value: Any, name: str, fn: str) -> float:
    """A float, a 0-d array or a one-element array (e.g. DyT's alpha) as a Python float."""
    if type(value) is float:
        return value
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
    return result, (result if result.ndim == 2 else result.reshape(n_rows(x), x.shape[-1]))



# ------------------------------------------------------------------------------------------
# GPU arrays
# ------------------------------------------------------------------------------------------

_GPU_DTYPE_CODES = {"float32": 0, "float64": 1, "float16": 2, "bfloat16": 3}
_DLPACK_CUDA_DEVICES = (2, 13)  # kDLCUDA, kDLCUDAManaged (kDLCUDAHost memory is CPU memory)


def is_gpu(x: Any) -> bool:
    """True for a CUDA array: a torch CUDA tensor, a CuPy array, anything with
    ``__cuda_array_interface__`` or whose ``__dlpack_device__`` is a CUDA device."""
    if type(x) is np.ndarray or x is None or isinstance(x, (int, float, str, bytes, list, tuple)):
        return False
    if _is_torch_tensor(x):
        return x.device.type == "cuda"
    if hasattr(x, "__cuda_array_interface__"):
        return True
    dlpack_device = getattr(x, "__dlpack_device__", None)
    if dlpack_device is not None and hasattr(x, "__dlpack__"):
        try:
            return int(dlpack_device()[0]) in _DLPACK_CUDA_DEVICES
        except Exception:  # pragma: no cover - a broken producer: treat as CPU
            return False
    return False


# Argument types that are never GPU arrays: the per-call check skips them (it runs on every call).
_NEVER_GPU = frozenset({np.ndarray, type(None), bool, int, float, str})


def dispatch(cuda_impl):
    """Decorator of a public op: calls ``cuda_impl`` (same signature) when any argument is a
    GPU array, the decorated CPU implementation otherwise. Mixed CPU/GPU arguments end up in
    ``cuda_impl``, whose :class:`Gpu` raises the ValueError."""

    def decorate(cpu_impl):
        @functools.wraps(cpu_impl)
        def op(*args, **kwargs):
            for a in args:
                if type(a) not in _NEVER_GPU and is_gpu(a):
                    return cuda_impl(*args, **kwargs)
            for a in kwargs.values():
                if type(a) not in _NEVER_GPU and is_gpu(a):
                    return cuda_impl(*args, **kwargs)
            return cpu_impl(*args, **kwargs)

        op.cuda_impl = cuda_impl
        return op

    return decorate


@functools.lru_cache(maxsize=None)
def _cuda_status() -> Tuple[Any, str]:
    """(module or None, reason it cannot run or '')."""
    import importlib.util

    if importlib.util.find_spec(f"{__package__}._cuda") is None:
        return None, "not built (this build has no pynorm._cuda; rebuild with nvcc on PATH, e.g. PYNORM_CUDA=ON pip install .)"
    try:
        from . import _cuda
    except ImportError as e:
        return None, f"built, but pynorm._cuda could not be imported: {e}"
    ok, reason = _cuda.status()
    return _cuda, ("" if ok else reason)


def cuda_config() -> str:
    """One line for show_config(): how the CUDA module was built and whether it can run."""
    module, reason = _cuda_status()
    if module is None:
        return reason
    built = f"built ({module.architectures})"
    if reason:
        return f"{built}; unavailable: {reason}"
    return f"{built}; available: {module.device_count()} device(s)"


def cuda_module(fn: str):
    """The CUDA module, or a RuntimeError saying why CUDA cannot be used."""
    module, reason = _cuda_status()
    if module is None or reason:
        raise RuntimeError(f"{fn}: CUDA unavailable: {reason}")
    return module


def _describe(x: Any) -> str:
    t = type(x)
    name = f"{t.__module__}.{t.__qualname__}" if t.__module__ not in ("builtins",) else t.__qualname__
    if _is_torch_tensor(x):
        return f"{name} on {x.device}"
    return name


def _library(x: Any) -> str:
    if _is_torch_tensor(x):
        return "torch"
    if "cupy" in sys.modules and isinstance(x, sys.modules["cupy"].ndarray):
        return "cupy"
    return "other"


def _device_of(x: Any) -> int:
    if _is_torch_tensor(x):
        return x.device.index if x.device.index is not None else 0
    if _library(x) == "cupy":
        return x.device.id
    return -1


def _to_library(x: Any, name: str, fn: str) -> Any:
    """A GPU array-like as a torch CUDA tensor or a CuPy array (zero-copy), so that outputs can
    be allocated in a library: CuPy if installed, else torch."""
    if _library(x) != "other":
        return x
    try:
        import cupy

        return cupy.asarray(x) if hasattr(x, "__cuda_array_interface__") else cupy.from_dlpack(x)
    except ImportError:
        pass
    try:
        import torch

        if hasattr(x, "__cuda_array_interface__"):
            return torch.as_tensor(x, device="cuda")
        return torch.from_dlpack(x)
    except ImportError:
        raise TypeError(
            f"{fn}: {name} is a GPU array ({_describe(x)}); pynorm needs CuPy or torch to read it and "
            "allocate the outputs"
        ) from None


def _dtype_name(a: Any) -> str:
    if _library(a) == "torch":
        return str(a.dtype).replace("torch.", "")
    return np.dtype(a.dtype).name


class Gpu:
    """One call on GPU arrays: created from the call's array arguments (None is skipped),
    it checks that they are all GPU arrays on one device, loads the CUDA module (raising
    "CUDA unavailable: ..." when it cannot run), and knows the library, device and stream that
    the outputs and the kernels use (those of the first array, x)."""

    def __init__(self, fn: str, arrays: dict):
        self.fn = fn
        present = {k: v for k, v in arrays.items() if v is not None}
        on_cpu = [k for k, v in present.items() if not is_gpu(v)]
        if len(on_cpu) == len(present):  # the GPU argument was a scalar one (e.g. alpha)
            raise ValueError(
                f"{fn}: a GPU scalar was passed with CPU arrays ({', '.join(on_cpu)}); pass every array on the "
                "same device"
            )
        if on_cpu:
            gpu_name = next(k for k in present if k not in on_cpu)
            raise ValueError(
                f"{fn}: {gpu_name} is a GPU array ({_describe(present[gpu_name])}) but {on_cpu[0]} is not "
                f"({_describe(present[on_cpu[0]])}); pass every array on the same device"
            )
        self.module = cuda_module(fn)
        first = next(iter(present))
        self.reference = _to_library(present[first], first, fn)
        self.lib = _library(self.reference)
        self.device = _device_of(self.reference)
        for k, v in present.items():
            v = _to_library(v, k, fn)
            if _library(v) != self.lib:
                raise ValueError(f"{fn}: {k} is a {_describe(v)} but {first} is a {_describe(self.reference)}; use one library")
            if _device_of(v) != self.device:
                raise ValueError(f"{fn}: {k} is on GPU {_device_of(v)} but {first} is on GPU {self.device}")
        self.stream = self._stream()

    def _stream(self) -> int:
        if self.lib == "torch":
            torch = sys.modules["torch"]
            return int(torch.cuda.current_stream(self.device).cuda_stream)
        cupy = sys.modules["cupy"]
        with cupy.cuda.Device(self.device):
            return int(cupy.cuda.get_current_stream().ptr)

    # --- inputs ---------------------------------------------------------------------------
    def input(self, x: Any, name: str, min_ndim: int = 1) -> Any:
        """A GPU array of a supported dtype with at least ``min_ndim`` dimensions."""
        x = _to_library(x, name, self.fn)
        dtype = _dtype_name(x)
        if dtype not in _GPU_DTYPE_CODES:
            raise TypeError(
                f"{self.fn}: {name} has dtype {dtype}; supported dtypes are {SUPPORTED_DTYPES}. Convert it explicitly."
            )
        if x.ndim < min_ndim:
            raise ValueError(f"{self.fn}: {name} must have at least {min_ndim} dimension(s), got shape {tuple(x.shape)}")
        return x

    def astype(self, a: Any, dtype: str) -> Any:
        if _dtype_name(a) == dtype:
            return a
        if self.lib == "torch":
            return a.to(getattr(sys.modules["torch"], dtype))
        return a.astype(dtype)

    def like(self, y: Any, x: Any, name: str) -> Any:
        """An argument with x's shape (e.g. dy), in x's dtype."""
        y = self.input(y, name, 0)
        if tuple(y.shape) != tuple(x.shape):
            raise ValueError(f"{self.fn}: {name} has shape {tuple(y.shape)} but x has shape {tuple(x.shape)}")
        return self.astype(y, _dtype_name(x))

    def _contiguous(self, a: Any) -> Any:
        if self.lib == "torch":
            return a.contiguous()
        return sys.modules["cupy"].ascontiguousarray(a)

    def vector(self, p: Any, length: int, x: Any, name: str) -> Any:
        """An optional (length,) parameter, contiguous, in x's dtype."""
        if p is None:
            return None
        p = self.input(p, name, 0)
        if tuple(p.shape) != (length,):
            raise ValueError(f"{self.fn}: {name} must have shape ({length},) to match x's last axis, got {tuple(p.shape)}")
        return self._contiguous(self.astype(p, _dtype_name(x)))

    def row_stats(self, stat: Any, x: Any, name: str) -> Any:
        """Saved per-row statistics: one value per row, contiguous, in the accumulate dtype."""
        if stat is None:
            return None
        stat = self.input(stat, name, 0)
        rows = math.prod(tuple(x.shape)[:-1])
        if tuple(stat.shape) != tuple(x.shape)[:-1] and tuple(stat.shape) != (rows,):
            raise ValueError(
                f"{self.fn}: {name} must have shape {tuple(x.shape)[:-1]} (one value per row), got {tuple(stat.shape)}"
            )
        return self._contiguous(self.astype(stat.reshape(-1), self.accumulate_dtype(x)))

    def scalar(self, value: Any, name: str) -> float:
        """A number or a one-element array (on either device) as a float."""
        if is_gpu(value):
            value = _to_library(value, name, self.fn)
            if math.prod(tuple(value.shape)) != 1:
                raise ValueError(f"{self.fn}: {name} must have exactly one element, got shape {tuple(value.shape)}")
            return float(value.reshape(-1)[0].item())
        return scalar(value, name, self.fn)

    # --- views the kernels take -------------------------------------------------------------
    def matrices(self, a: Any) -> Tuple[Any, int, int]:
        """(array kept alive, problem stride, row stride) in elements for a (..., n, d) array seen
        as [problems, n, d] with a contiguous last axis (copied when the leading axes do not
        collapse into one stride)."""
        shape = tuple(a.shape)
        n, d = shape[-2], shape[-1]
        mats = a.reshape((math.prod(shape[:-2]), n, d))
        strides = self.strides(mats)
        if d > 1 and strides[2] != 1:
            mats = self._contiguous(mats)
            strides = self.strides(mats)
        return mats, strides[0], strides[1]

    def rows(self, a: Any) -> Tuple[Any, int]:
        """(array kept alive, row stride in elements) of ``a`` as [rows, dim], last axis contiguous."""
        shape = tuple(a.shape)
        rows2d = a.reshape((math.prod(shape[:-1]), shape[-1]))
        strides = self.strides(rows2d)
        if shape[-1] > 1 and strides[1] != 1:
            rows2d = self._contiguous(rows2d)
            strides = self.strides(rows2d)
        return rows2d, strides[0]

    def strides(self, a: Any) -> Tuple[int, ...]:
        if self.lib == "torch":
            return tuple(a.stride())
        return tuple(s // a.itemsize for s in a.strides)

    @staticmethod
    def ptr(a: Any) -> int:
        """The device address of a (0 for None)."""
        if a is None:
            return 0
        if _library(a) == "torch":
            return int(a.data_ptr())
        return int(a.data.ptr)

    @staticmethod
    def dtype(a: Any) -> str:
        """The dtype's name: float32, float64, float16 or bfloat16."""
        return _dtype_name(a)

    def dtype_code(self, a: Any) -> int:
        return _GPU_DTYPE_CODES[_dtype_name(a)]

    @staticmethod
    def accumulate_dtype(a: Any) -> str:
        return "float64" if _dtype_name(a) == "float64" else "float32"

    # --- outputs ----------------------------------------------------------------------------
    def empty(self, shape: Tuple[int, ...], dtype: str) -> Any:
        """A new C-contiguous array in the caller's library, on the call's device."""
        shape = tuple(int(s) for s in shape)
        if self.lib == "torch":
            torch = sys.modules["torch"]
            return torch.empty(shape, dtype=getattr(torch, dtype), device=f"cuda:{self.device}")
        cupy = sys.modules["cupy"]
        with cupy.cuda.Device(self.device):
            return cupy.empty(shape, dtype=dtype)

    def output(self, x: Any, out: Any) -> Any:
        """A new array of x's shape and dtype, or ``out`` after checks."""
        if out is None:
            return self.empty(tuple(x.shape), _dtype_name(x))
        if tuple(out.shape) != tuple(x.shape) or _dtype_name(out) != _dtype_name(x):
            raise ValueError(
                f"{self.fn}: out must have shape {tuple(x.shape)} and dtype {_dtype_name(x)}, "
                f"got {tuple(out.shape)} {_dtype_name(out)}"
            )
        contiguous = out.is_contiguous() if self.lib == "torch" else out.flags.c_contiguous
        if not contiguous:
            raise ValueError(f"{self.fn}: out must be C-contiguous")
        return out
