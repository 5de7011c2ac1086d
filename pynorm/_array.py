"""The one call path of every op: array-likes in, checks, one description of the call, a backend.

An op (pynorm/ops/*.py) is one public function whatever the device. It asks :func:`backend`
for the side of the call -- the CPU (:data:`CPU`) or, when an argument is a GPU array, a
:class:`GpuBackend` for that array's library, device and stream -- and runs its checks once
through the :class:`Backend` methods (``input``, ``like``, ``parameter``, ``row_stats``,
``output``, ``rows``, ``matrices``). It then calls ``backend.kernels.<kernel>(...)`` with the
call's description by keyword: pointers (the arrays), strides in elements, sizes, the dtype
code, parameters and flags, plus ``threads=``. pynorm._core takes that description as it is;
for pynorm._cuda the GPU backend turns the arrays into device addresses and ``threads=`` into
``stream=(device, stream)`` (csrc/python/calls.h). docs/call_path.md walks through a call.

What an op needs from an array library is an :class:`Adapter`: shape (``a.shape``), dtype,
strides, pointer, device, stream, empty, contiguous copy, astype, copy into. Adapters: NumPy
(which also reads torch CPU tensors, without a copy, and nested lists), torch CUDA tensors,
CuPy arrays; any other object with ``__cuda_array_interface__`` or a CUDA ``__dlpack__`` is read
(zero-copy) by CuPy if installed, else by torch. Neither CuPy nor torch is imported unless the
caller passes their arrays.

Conventions (the same for every op; docs/call_path.md has the full list):

* dtypes: float32, float64, float16 and bfloat16 (``ml_dtypes.bfloat16``), the 16-bit types
  storage only. Integer, bool or complex *arrays* are a TypeError (a silent cast would hide a
  bug); plain Python lists and scalars of integers are read as float64. Any byte order is
  accepted: non-native arrays are converted (the caller's array is not touched).
* Parameters (weight, bias) and upstream gradients (dy) are converted to x's dtype.
* Outputs are new C-contiguous arrays of x's library, dtype and shape, or ``out=``: any writable
  array of x's shape and dtype (any byte order, strides, or overlap with x: the result is then
  computed into a fresh array and copied in).
* Scalars follow :func:`real`, thread counts :func:`threads_value`.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import numbers
import os
import sys
import threading
from typing import Any, Optional, Tuple

import numpy as np

from ._core_loader import core

try:  # bfloat16 is optional: only needed to pass bfloat16 arrays
    import ml_dtypes

    BFLOAT16: Optional[np.dtype] = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - exercised only without ml_dtypes
    BFLOAT16 = None

# ------------------------------------------------------------------------------------------
# dtypes: the table is C++'s (kDTypes in csrc/include/pynorm/common.h, exported as _core.dtypes)
# ------------------------------------------------------------------------------------------


def _numpy_dtype(name: str) -> Optional[np.dtype]:
    return BFLOAT16 if name == "bfloat16" else np.dtype(name)


DTYPE_CODES: "dict[np.dtype, int]" = {}
_ACCUMULATE: "dict[np.dtype, np.dtype]" = {}
for _name, _code, _itemsize, _accumulate in core().dtypes:
    _dtype = _numpy_dtype(_name)
    if _dtype is not None:
        if _dtype.itemsize != _itemsize:  # pragma: no cover - a broken build
            raise ImportError(f"pynorm._core says {_name} has {_itemsize} bytes, NumPy says {_dtype.itemsize}")
        DTYPE_CODES[_dtype] = _code
        _ACCUMULATE[_dtype] = _numpy_dtype(_accumulate)
SUPPORTED_DTYPES = ", ".join(name for name, *_ in core().dtypes)


def dtype_code(dtype: Any) -> int:
    """The kernel tables' index of a (supported) dtype."""
    return DTYPE_CODES[np.dtype(dtype)]


def accumulate_dtype(dtype: Any) -> np.dtype:
    """The dtype of statistics and reductions: float64 for float64, float32 otherwise."""
    return _ACCUMULATE[np.dtype(dtype)]


# ------------------------------------------------------------------------------------------
# Argument rules: one for every scalar, one for every thread count
# ------------------------------------------------------------------------------------------


def real(value: Any, name: str, fn: str) -> float:
    """A scalar argument as a float. Accepted: a real number (Python int or float, a NumPy
    scalar) or an array of any library, on either device, holding exactly one real element.
    str, bytes, bool, None and complex numbers are a TypeError naming the argument."""
    kind = type(value)
    if kind is float or kind is int:  # the common case, first
        return float(value)
    if isinstance(value, (bool, np.bool_, str, bytes)) or value is None:
        raise TypeError(f"{fn}: {name} must be a real number or a one-element array, got {kind.__name__}")
    if isinstance(value, numbers.Real):
        return float(value)
    if is_gpu(value):
        adapter = gpu_adapter(value, name, fn)
        arr = adapter.convert(value, name, fn)
    elif _is_torch_tensor(value):
        arr = _from_torch(value, name, fn)
    else:
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError):
            raise TypeError(f"{fn}: {name} must be a real number or a one-element array, got {kind.__name__}") from None
        if arr.dtype.kind not in "fiu" and arr.dtype not in DTYPE_CODES:
            raise TypeError(f"{fn}: {name} must be a real number or a one-element array, got dtype {arr.dtype}")
    if math.prod(tuple(arr.shape)) != 1:
        raise ValueError(f"{fn}: {name} must have exactly one element, got shape {tuple(arr.shape)}")
    return float(arr.reshape(()))


def eps_value(eps: Any, fn: str) -> float:
    """eps: a real number (:func:`real`), finite and >= 0."""
    if type(eps) is float and 0.0 <= eps < math.inf:  # the common case, first
        return eps
    value = real(eps, "eps", fn)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{fn}: eps must be finite and >= 0, got {value}")
    return value


def threads_value(n: Any, name: str, fn: str) -> int:
    """A thread count: a positive integer (Python or NumPy) or None, which is returned as 0
    (the global setting). 0 and negatives are a ValueError, anything else a TypeError."""
    if n is None:
        return 0
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{fn}: {name} must be a positive integer or None, got {type(n).__name__} {n!r}")
    if n < 1:
        raise ValueError(f"{fn}: {name} must be a positive integer or None, got {n!r}")
    return int(n)


# ------------------------------------------------------------------------------------------
# Output buffers on the CPU
# ------------------------------------------------------------------------------------------

ALIGNMENT = 64  # bytes: lets the kernels stream whole vectors to memory from the first element
PAGE = 4096  # bytes: a load and a store whose addresses agree in their low 12 bits may alias
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
        """A uint8 buffer of nbytes + PAGE bytes (room to place the data anywhere in a page) that
        nobody else references."""
        size = nbytes + PAGE
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


def empty(shape: Tuple[int, ...], dtype: np.dtype, away_from: Tuple[int, ...] = ()) -> np.ndarray:
    """An uninitialised C-contiguous NumPy array; from 1 MiB on, its data starts on a 64-byte
    boundary and comes from the :class:`OutputCache`.

    ``away_from``: the addresses of the arrays a kernel reads while it writes this one. The data
    is then placed as far as it can be, within a 4 KiB page, from each of them: a CPU takes a
    load whose address agrees in its low 12 bits with a store still in flight for one that
    depends on that store (4K aliasing), and an input that starts just behind its output in
    the page meets that on nearly every load (as NumPy's large arrays, 16 bytes into a page,
    do beside an output 64 bytes in: docs/architecture.md)."""
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < CACHED_MIN_BYTES:  # small outputs are never streamed: plain NumPy
        return np.empty(shape, dtype=dtype)
    buffer = OUTPUT_CACHE.take(nbytes)
    start = buffer.ctypes.data
    offset = -start % ALIGNMENT
    if away_from:
        offset += page_offset([a % PAGE for a in away_from]) - (start + offset) % PAGE
        offset %= PAGE
    return buffer[offset : offset + nbytes].view(dtype).reshape(shape)


def page_offset(taken: list) -> int:
    """The 64-byte-aligned offset within a page farthest (circularly) from every offset in ``taken``."""

    def distance(o: int) -> int:
        return min(min((o - t) % PAGE, (t - o) % PAGE) for t in taken)

    return max(range(0, PAGE, ALIGNMENT), key=distance)


# ------------------------------------------------------------------------------------------
# Adapters: what the ops need from one array library
# ------------------------------------------------------------------------------------------


def _is_torch_tensor(x: Any) -> bool:
    return "torch" in sys.modules and isinstance(x, sys.modules["torch"].Tensor)


def _from_torch(x: Any, name: str, fn: str) -> np.ndarray:
    """A torch CPU tensor as a NumPy array sharing its memory."""
    torch = sys.modules["torch"]
    if x.device.type != "cpu":
        raise ValueError(f"{fn}: {name} is on device {x.device}; pass every array on the same device")
    x = x.detach()
    if x.dtype == torch.bfloat16:
        if BFLOAT16 is None:
            raise TypeError(f"{fn}: {name} is a bfloat16 tensor; install ml_dtypes to pass bfloat16")
        return x.view(torch.int16).numpy().view(BFLOAT16)
    return x.numpy()


def _unsupported(name: str, fn: str, dtype: Any, hint: str = "") -> TypeError:
    return TypeError(
        f"{fn}: {name} has dtype {dtype}; supported dtypes are {SUPPORTED_DTYPES}{hint}. "
        "Convert it explicitly, e.g. x.astype(np.float32)."
    )


class Adapter:
    """One array library's primitives. Arrays of every library have ``.shape``, ``.ndim`` and
    ``.reshape``; the rest goes through these methods. ``convert`` reads an argument as the
    library's array of a supported dtype in native byte order; ``view`` reads an ``out=``
    argument without ever copying it."""

    name = "?"

    def owns(self, a: Any) -> bool:
        raise NotImplementedError

    def convert(self, a: Any, name: str, fn: str) -> Any:
        raise NotImplementedError

    def view(self, a: Any, name: str, fn: str) -> Any:
        raise NotImplementedError

    def dtype(self, a: Any) -> np.dtype:
        return a.dtype

    def strides(self, a: Any) -> Tuple[int, ...]:
        """Strides in elements."""
        raise NotImplementedError

    def pointer(self, a: Any) -> Any:
        """What a pointer argument of the call description holds for ``a``."""
        raise NotImplementedError

    def address(self, a: Any) -> int:
        """The address of a's first element."""
        raise NotImplementedError

    def writable(self, a: Any) -> bool:
        return True

    def native(self, a: Any) -> bool:
        """Whether a is stored in the machine's byte order."""
        return True

    def is_contiguous(self, a: Any) -> bool:
        return a.flags.c_contiguous

    def device(self, a: Any) -> int:
        return -1

    def stream(self, device: int) -> int:
        return 0

    def empty(self, shape: Tuple[int, ...], dtype: np.dtype, device: int) -> Any:
        raise NotImplementedError

    def contiguous(self, a: Any) -> Any:
        raise NotImplementedError

    def astype(self, a: Any, dtype: np.dtype) -> Any:
        return a.astype(dtype)

    def copy_into(self, dst: Any, src: Any) -> None:
        raise NotImplementedError


class NumpyAdapter(Adapter):
    """NumPy arrays; torch CPU tensors (read as NumPy arrays sharing their memory), nested lists
    and other array-likes (np.asarray). Outputs are NumPy arrays from the :class:`OutputCache`."""

    name = "numpy"

    def owns(self, a: Any) -> bool:
        return isinstance(a, np.ndarray)

    def convert(self, a: Any, name: str, fn: str) -> np.ndarray:
        if type(a) is np.ndarray:
            arr = a
        elif isinstance(a, (str, bytes)):
            raise TypeError(f"{fn}: {name} must be an array of floats, got {type(a).__name__}")
        elif _is_torch_tensor(a):
            arr = _from_torch(a, name, fn)
        else:
            try:
                arr = np.asarray(a)
            except (ValueError, TypeError) as e:  # ragged lists and the like
                raise TypeError(f"{fn}: {name} could not be read as an array: {e}") from None
            if not isinstance(a, np.ndarray) and arr.dtype.kind in "iub":
                arr = arr.astype(np.float64)  # Python ints in lists/scalars are read as floats
        if not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))  # a converted copy: the caller's array is untouched
        if arr.dtype not in DTYPE_CODES:
            hint = " (install ml_dtypes for bfloat16)" if arr.dtype.name == "bfloat16" else ""
            raise _unsupported(name, fn, arr.dtype, hint)
        return arr

    def view(self, a: Any, name: str, fn: str) -> np.ndarray:
        if isinstance(a, np.ndarray):
            return a
        if _is_torch_tensor(a):
            return _from_torch(a, name, fn)
        raise TypeError(f"{fn}: {name} must be a NumPy array (or a torch CPU tensor), got {type(a).__name__}")

    def strides(self, a: np.ndarray) -> Tuple[int, ...]:
        size, strides = a.itemsize, a.strides
        if len(strides) == 2:
            return strides[0] // size, strides[1] // size
        return tuple(s // size for s in strides)

    def pointer(self, a: np.ndarray) -> np.ndarray:
        return a  # _core reads the data pointer (and checks the region) itself

    def address(self, a: np.ndarray) -> int:
        return a.__array_interface__["data"][0]

    def writable(self, a: np.ndarray) -> bool:
        return a.flags.writeable

    def native(self, a: np.ndarray) -> bool:
        return a.dtype.isnative

    def empty(self, shape, dtype, device):
        return empty(tuple(shape), dtype)

    def contiguous(self, a):
        return np.ascontiguousarray(a)

    def astype(self, a, dtype):
        return a.astype(dtype, copy=False)

    def copy_into(self, dst, src):
        np.copyto(dst, src)


@functools.lru_cache(maxsize=None)
def _torch_dtypes() -> "dict[Any, np.dtype]":
    torch = sys.modules["torch"]
    table = {getattr(torch, dtype.name): dtype for dtype in DTYPE_CODES if dtype.name != "bfloat16"}
    if BFLOAT16 is not None:
        table[torch.bfloat16] = BFLOAT16
    return table


class GpuAdapter(Adapter):
    """A GPU array library; it also reads any other library's GPU array, without a copy
    (``wrap``), and allocates outputs on the input's device."""

    library = ""  # the module to import

    def available(self) -> bool:
        return importlib.util.find_spec(self.library) is not None

    def wrap(self, a: Any) -> Any:
        raise NotImplementedError

    def supported(self, a: Any) -> bool:
        raise NotImplementedError

    def convert(self, a, name, fn):
        if not self.owns(a):
            a = self.wrap(a)
        if not self.supported(a):
            raise _unsupported(name, fn, str(a.dtype).replace("torch.", ""))
        return a

    def view(self, a, name, fn):
        return a

    def address(self, a):
        return self.pointer(a)


class TorchAdapter(GpuAdapter):
    """torch CUDA tensors."""

    name = library = "torch"

    def owns(self, a):
        return _is_torch_tensor(a) and a.is_cuda

    def wrap(self, a):
        import torch

        return torch.as_tensor(a, device="cuda") if hasattr(a, "__cuda_array_interface__") else torch.from_dlpack(a)

    def supported(self, a):
        return a.dtype in _torch_dtypes()

    def dtype(self, a):
        return _torch_dtypes()[a.dtype]

    def strides(self, a):
        return tuple(a.stride())

    def pointer(self, a):
        return int(a.data_ptr())

    def is_contiguous(self, a):
        return a.is_contiguous()

    def device(self, a):
        return a.device.index if a.device.index is not None else sys.modules["torch"].cuda.current_device()

    def stream(self, device):
        return int(sys.modules["torch"].cuda.current_stream(device).cuda_stream)

    def _torch_dtype(self, dtype):
        return next(t for t, d in _torch_dtypes().items() if d == dtype)

    def empty(self, shape, dtype, device):
        torch = sys.modules["torch"]
        return torch.empty(tuple(int(s) for s in shape), dtype=self._torch_dtype(dtype), device=f"cuda:{device}")

    def contiguous(self, a):
        return a.contiguous()

    def astype(self, a, dtype):
        return a.to(self._torch_dtype(dtype))

    def copy_into(self, dst, src):
        dst.copy_(src)


class CupyAdapter(GpuAdapter):
    """CuPy arrays."""

    name = library = "cupy"

    def owns(self, a):
        return "cupy" in sys.modules and isinstance(a, sys.modules["cupy"].ndarray)

    def wrap(self, a):
        import cupy

        return cupy.asarray(a) if hasattr(a, "__cuda_array_interface__") else cupy.from_dlpack(a)

    def supported(self, a):
        return a.dtype in DTYPE_CODES

    def strides(self, a):
        return tuple(s // a.itemsize for s in a.strides)

    def pointer(self, a):
        return int(a.data.ptr)

    def device(self, a):
        return a.device.id

    def stream(self, device):
        cupy = sys.modules["cupy"]
        with cupy.cuda.Device(device):
            return int(cupy.cuda.get_current_stream().ptr)

    def empty(self, shape, dtype, device):
        cupy = sys.modules["cupy"]
        with cupy.cuda.Device(device):
            return cupy.empty(tuple(int(s) for s in shape), dtype=dtype)

    def contiguous(self, a):
        return sys.modules["cupy"].ascontiguousarray(a)

    def copy_into(self, dst, src):
        sys.modules["cupy"].copyto(dst, src)


NUMPY, TORCH, CUPY = NumpyAdapter(), TorchAdapter(), CupyAdapter()
GPU_ADAPTERS = [TORCH, CUPY]  # the libraries whose GPU arrays are recognised by type
_READERS = (CUPY, TORCH)  # who reads any other GPU array: CuPy if installed, else torch

_DLPACK_CUDA_DEVICES = (2, 13)  # kDLCUDA, kDLCUDAManaged (kDLCUDAHost memory is CPU memory)
# Argument types that are never GPU arrays: the per-call check skips them (it runs on every call).
_NEVER_GPU = frozenset({np.ndarray, type(None), bool, int, float, str, list, tuple})


def is_gpu(x: Any) -> bool:
    """True for a CUDA array: a torch CUDA tensor, a CuPy array, anything with
    ``__cuda_array_interface__`` or whose ``__dlpack_device__`` is a CUDA device."""
    if type(x) in _NEVER_GPU or isinstance(x, (np.ndarray, np.generic, bytes)):
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


def _describe(x: Any) -> str:
    t = type(x)
    name = f"{t.__module__}.{t.__qualname__}" if t.__module__ not in ("builtins",) else t.__qualname__
    if _is_torch_tensor(x):
        return f"{name} on {x.device}"
    return name


def gpu_adapter(a: Any, name: str, fn: str) -> Adapter:
    """The adapter of a GPU array: its library's, or the reader's for any other GPU array."""
    for adapter in GPU_ADAPTERS:
        if adapter.owns(a):
            return adapter
    for adapter in _READERS:
        if adapter.available():
            return adapter
    raise TypeError(
        f"{fn}: {name} is a GPU array ({_describe(a)}); pynorm needs CuPy or torch to read it and allocate the outputs"
    )


# ------------------------------------------------------------------------------------------
# Backends: one call's side, and the checks every op shares, written once
# ------------------------------------------------------------------------------------------


class Backend:
    """Where a call runs: an adapter, the kernels (pynorm._core, or the CUDA module's through
    :class:`_CudaKernels`), and the checks of every op on top of the adapter's primitives.
    Errors name the op (``fn``) and the argument."""

    def __init__(self, adapter: Adapter, kernels: Any):
        self.adapter = adapter
        self.kernels = kernels

    # --- arguments ----------------------------------------------------------------------------
    def convert(self, a: Any, name: str, fn: str) -> Any:
        return self.adapter.convert(a, name, fn)

    def view(self, a: Any, name: str, fn: str) -> Any:
        return self.adapter.view(a, name, fn)

    def dtype(self, a: Any) -> np.dtype:
        return self.adapter.dtype(a)

    def code(self, a: Any) -> int:
        """a's dtype code, for the description."""
        return DTYPE_CODES[self.adapter.dtype(a)]

    def input(self, a: Any, name: str, fn: str, min_ndim: int = 1) -> Any:
        """A main input: a float array with at least ``min_ndim`` dimensions."""
        if type(a) is np.ndarray and a.dtype in DTYPE_CODES and a.ndim >= min_ndim:
            return a  # the common case, first
        arr = self.convert(a, name, fn)
        if arr.ndim < min_ndim:
            raise ValueError(f"{fn}: {name} must have at least {min_ndim} dimension(s), got shape {tuple(arr.shape)}")
        return arr

    def same_dtype(self, arrays: "dict[str, Any]", fn: str) -> np.dtype:
        """The common dtype of several main inputs; a TypeError naming them if they differ (a
        silent cast could lose precision or hide a bug)."""
        dtypes = {name: self.adapter.dtype(arr) for name, arr in arrays.items()}
        first = next(iter(dtypes.values()))
        if any(d != first for d in dtypes.values()):
            listed = ", ".join(f"{name} {d}" for name, d in dtypes.items())
            raise TypeError(f"{fn}: inputs must share one dtype, got {listed}; convert them explicitly")
        return first

    def cast(self, a: Any, dtype: np.dtype) -> Any:
        return a if self.adapter.dtype(a) == dtype else self.adapter.astype(a, dtype)

    def contiguous(self, a: Any) -> Any:
        return a if self.adapter.is_contiguous(a) else self.adapter.contiguous(a)

    def like(self, a: Any, x: Any, name: str, fn: str) -> Any:
        """An argument that must have x's shape (e.g. dy), converted to x's dtype."""
        if type(a) is np.ndarray and a.dtype == x.dtype and a.shape == x.shape:
            return a  # the common case, first
        arr = self.convert(a, name, fn)
        if tuple(arr.shape) != tuple(x.shape):
            raise ValueError(f"{fn}: {name} has shape {tuple(arr.shape)} but x has shape {tuple(x.shape)}")
        return self.cast(arr, self.adapter.dtype(x))

    def parameter(self, p: Any, shape: Tuple[int, ...], dtype: np.dtype, name: str, fn: str) -> Any:
        """An optional parameter of the given shape (weight, bias: (dim,)), contiguous, in ``dtype``."""
        if p is None:
            return None
        if type(p) is np.ndarray and p.dtype == dtype and p.shape == shape and p.flags.c_contiguous:
            return p  # the common case, first
        arr = self.convert(p, name, fn)
        if tuple(arr.shape) != shape:
            raise ValueError(f"{fn}: {name} must have shape {shape} to match x's last axis, got {tuple(arr.shape)}")
        return self.contiguous(self.cast(arr, dtype))

    def row_stats(self, stat: Any, x: Any, name: str, fn: str) -> Any:
        """Saved per-row statistics (mean or rstd): one value per row of x, contiguous, in the
        accumulate dtype, as a 1-d array."""
        if stat is None:
            return None
        dtype = _ACCUMULATE[self.adapter.dtype(x)]
        rows_shape = tuple(x.shape[:-1])
        if type(stat) is np.ndarray and stat.dtype == dtype and stat.shape == rows_shape and stat.flags.c_contiguous:
            return stat if stat.ndim == 1 else stat.reshape(-1)  # the common case (as layer_norm returned it), first
        arr = self.convert(stat, name, fn)
        if tuple(arr.shape) != rows_shape and tuple(arr.shape) != (math.prod(rows_shape),):
            raise ValueError(f"{fn}: {name} must have shape {rows_shape} (one value per row), got {tuple(arr.shape)}")
        return self.contiguous(self.cast(arr.reshape(-1), dtype))

    # --- what the kernels see -----------------------------------------------------------------
    def rows(self, a: Any) -> Tuple[Any, int]:
        """(a as [rows, dim] with a contiguous last axis -- a view when the leading axes allow,
        else a copy --, its row stride in elements)."""
        if type(a) is np.ndarray and a.ndim == 2 and (a.strides[1] == a.itemsize or a.shape[1] <= 1):
            return a, a.strides[0] // a.itemsize  # the common case, first
        shape = a.shape
        rows2d = a if a.ndim == 2 else a.reshape(math.prod(shape[:-1]), shape[-1])
        strides = self.adapter.strides(rows2d)
        if shape[-1] > 1 and strides[1] != 1:
            rows2d = self.adapter.contiguous(rows2d)
            strides = self.adapter.strides(rows2d)
        return rows2d, strides[0]

    def matrices(self, a: Any) -> Tuple[Any, Tuple[int, int]]:
        """(a (..., n, d) array as [problems, n, d] with a contiguous last axis, its (problem,
        row) strides in elements); 2-d arrays are one problem."""
        shape = a.shape
        mats = a if a.ndim == 3 else a.reshape(math.prod(shape[:-2]), shape[-2], shape[-1])
        strides = self.adapter.strides(mats)
        if shape[-1] > 1 and strides[2] != 1:
            mats = self.adapter.contiguous(mats)
            strides = self.adapter.strides(mats)
        return mats, (strides[0], strides[1])

    def empty(self, shape: Tuple[int, ...], dtype: np.dtype) -> Any:
        """A new C-contiguous array in the call's library, on its device."""
        return self.adapter.empty(shape, dtype, -1)

    def empty_beside(self, shape: Tuple[int, ...], dtype: np.dtype, inputs: Tuple[Any, ...]) -> Any:
        """:meth:`empty` for an output that a kernel writes while it reads ``inputs``."""
        return self.empty(shape, dtype)

    def output(self, x: Any, out: Any, fn: str, inputs: Tuple[Any, ...] = ()) -> Tuple[Any, Any, Any]:
        """(y, y as [rows, dim], copy_to) for a result of x's shape and dtype: y is what the kernel
        writes -- ``out`` itself when it is C-contiguous in native byte order and does not
        partly overlap x, else a new array that :meth:`deliver` copies into ``out`` (copy_to).
        ``inputs``: arrays the kernel reads beside x (a new y is placed away from them all)."""
        dtype, copy_to = self.adapter.dtype(x), None
        inputs = (x, *inputs)
        if out is None:
            y = self.empty_beside(x.shape, dtype, inputs)
            return y, (y if y.ndim == 2 else y.reshape(math.prod(x.shape[:-1]), x.shape[-1])), None
        else:
            target = self.view(out, "out", fn)
            target_dtype = self.adapter.dtype(target)
            if tuple(target.shape) != tuple(x.shape) or target_dtype.newbyteorder("=") != dtype:
                raise ValueError(
                    f"{fn}: out must have shape {tuple(x.shape)} and dtype {dtype}, "
                    f"got {tuple(target.shape)} {target_dtype}"
                )
            if not self.adapter.writable(target):
                raise ValueError(f"{fn}: out is read-only; pass a writable array")
            if (
                self.adapter.is_contiguous(target)
                and self.adapter.native(target)
                and not self._partly_overlaps(target, x)
            ):
                y = target
            else:
                y, copy_to = self.empty_beside(x.shape, dtype, inputs), target
        return y, (y if y.ndim == 2 else y.reshape(math.prod(x.shape[:-1]), x.shape[-1])), copy_to

    def deliver(self, y: Any, copy_to: Any, out: Any) -> Any:
        """The op's result: y, or ``out`` once y is copied into it when :meth:`output` said so."""
        if copy_to is not None:
            self.adapter.copy_into(copy_to, y)
        return y if out is None else out

    def _bounds(self, a: Any) -> Tuple[int, int]:
        """The addresses [first byte, last byte + 1) of a's elements."""
        lo = hi = self.adapter.address(a)
        itemsize = self.adapter.dtype(a).itemsize
        for n, stride in zip(a.shape, self.adapter.strides(a)):
            if n == 0:
                return lo, lo
            extent = (n - 1) * stride * itemsize
            lo, hi = (lo + extent, hi) if extent < 0 else (lo, hi + extent)
        return lo, hi + itemsize

    def _partly_overlaps(self, out: Any, x: Any) -> bool:
        """Whether out shares memory with x without being x itself (in-place use is out=x)."""
        (out_lo, out_hi), (x_lo, x_hi) = self._bounds(out), self._bounds(x)
        if out_hi <= x_lo or x_hi <= out_lo:
            return False
        return not (out_lo == x_lo and self.adapter.strides(out) == self.adapter.strides(x))


class GpuBackend(Backend):
    """A call on GPU arrays: every array argument must be of the first one's library and on its
    device; outputs are allocated there and the kernels run on the library's current stream."""

    def __init__(self, adapter: Adapter, module: Any, fn: str, first: Tuple[str, Any]):
        super().__init__(adapter, _CudaKernels(module, self, fn))
        self.first_name, self.first = first
        self.device: Optional[int] = None

    def convert(self, a, name, fn):
        return self._checked(self.adapter.convert(a, name, fn), name, fn)

    def view(self, a, name, fn):
        return self._checked(self.adapter.view(a, name, fn), name, fn)

    def _checked(self, a, name, fn):
        if not self.adapter.owns(a):
            raise ValueError(
                f"{fn}: {name} is a {_describe(a)} but {self.first_name} is a {_describe(self.first)}; use one library"
            )
        device = self.adapter.device(a)
        if self.device is None:
            self.device = device
        elif device != self.device:
            raise ValueError(f"{fn}: {name} is on GPU {device} but {self.first_name} is on GPU {self.device}")
        return a

    def empty(self, shape, dtype):
        return self.adapter.empty(shape, dtype, self.device)


_PLAIN = frozenset({type(None), int, float, bool, tuple})


class _CudaKernels:
    """The CUDA module's kernels taking a call description: arrays become device addresses,
    ``threads=`` (meaningless on a GPU) becomes ``stream=(device, stream)``."""

    def __init__(self, module: Any, backend: GpuBackend, fn: str):
        self.module, self.backend, self.fn = module, backend, fn

    def __getattr__(self, kernel: str):
        launch = getattr(self.module, kernel, None)
        if launch is None:
            raise TypeError(f"{self.fn} has no CUDA kernel: pass CPU (NumPy) arrays")
        backend = self.backend

        def run(*, threads: int, **description):
            pointer = backend.adapter.pointer
            description = {k: v if type(v) in _PLAIN else pointer(v) for k, v in description.items()}
            launch(**description, stream=(backend.device, backend.adapter.stream(backend.device)))

        return run


class CpuBackend(Backend):
    """The CPU: NumPy arrays, pynorm._core's kernels, outputs from the :class:`OutputCache`."""

    empty = staticmethod(empty)

    def empty_beside(self, shape, dtype, inputs):
        return empty(shape, dtype, tuple(self.adapter.address(a) for a in inputs))


CPU = CpuBackend(NUMPY, core())


def backend(fn: str, names: Tuple[str, ...], arrays: Tuple[Any, ...], scalars: Tuple[Any, ...] = ()) -> Backend:
    """The side of a call: :data:`CPU`, or a :class:`GpuBackend` when an array argument is a GPU
    array -- after checking that every array argument is (a ValueError otherwise) and that the
    CUDA module can run (a RuntimeError saying why not). ``scalars``: the scalar arguments that
    may be one-element arrays (a GPU one with CPU arrays is a ValueError)."""
    for a in arrays:
        if type(a) not in _NEVER_GPU and is_gpu(a):
            return _gpu_backend(fn, names, arrays)
    for a in scalars:
        if type(a) not in _NEVER_GPU and is_gpu(a):
            raise ValueError(f"{fn}: a GPU scalar was passed with CPU arrays; pass every array on the same device")
    return CPU


def _gpu_backend(fn: str, names: Tuple[str, ...], arrays: Tuple[Any, ...]) -> GpuBackend:
    present = [(name, a) for name, a in zip(names, arrays) if a is not None]
    gpu_name, gpu_array = next((name, a) for name, a in present if is_gpu(a))
    on_cpu = [name for name, a in present if not is_gpu(a)]
    if on_cpu:
        other = dict(present)[on_cpu[0]]
        raise ValueError(
            f"{fn}: {gpu_name} is a GPU array ({_describe(gpu_array)}) but {on_cpu[0]} is not ({_describe(other)}); "
            "pass every array on the same device"
        )
    module = cuda_module(fn)
    return GpuBackend(gpu_adapter(present[0][1], present[0][0], fn), module, fn, present[0])


# ------------------------------------------------------------------------------------------
# The CUDA module
# ------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _cuda_status() -> Tuple[Any, str]:
    """(module or None, reason it cannot run or '')."""
    if importlib.util.find_spec(f"{__package__}._cuda") is None:
        return (
            None,
            "not built (this build has no pynorm._cuda; rebuild with nvcc on PATH, e.g. PYNORM_CUDA=ON pip install .)",
        )
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
