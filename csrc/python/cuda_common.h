// Shared by the CUDA bindings: device pointers arrive as integers (pynorm/_array.py took them
// from the caller's arrays and checked shapes, dtypes and devices); these helpers run a launcher
// with the GIL released on the array's device and the caller's stream, and turn CUDA errors into
// Python exceptions. No math here.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>

#include "arrays.h"
#include "launch.h"

namespace pynorm {
namespace py = pybind11;

inline const void* cptr(uintptr_t p) { return reinterpret_cast<const void*>(p); }
inline void* mptr(uintptr_t p) { return reinterpret_cast<void*>(p); }

inline DType cuda_dtype(int code) {
  if (code < 0 || code >= kNumDTypes) throw py::value_error("pynorm._cuda: unknown dtype code " + std::to_string(code));
  return static_cast<DType>(code);
}

inline void require_available() {
  const char* reason = nullptr;
  if (!cuda::available(&reason)) throw std::runtime_error(std::string("CUDA unavailable: ") + reason);
}

inline void check_sizes(int64_t rows, int64_t dim) {
  if (rows < 0 || dim < 0) throw py::value_error("pynorm._cuda: negative size");
}

// The row fields of a forward kernel's arguments, from device pointers (the CUDA twin of
// arrays.h's set_forward_rows).
template <class Args>
inline void set_device_forward_rows(Args& a, uintptr_t x, int64_t x_row_stride, uintptr_t y, int64_t rows, int64_t dim) {
  check_sizes(rows, dim);
  a.rows = rows;
  a.dim = dim;
  a.x = cptr(x);
  a.x_row_stride = x_row_stride;
  a.y = mptr(y);
}

// The same for a backward kernel: dy and x in, dx out.
template <class Args>
inline void set_device_backward_rows(Args& a, uintptr_t dy, int64_t dy_row_stride, uintptr_t x, int64_t x_row_stride,
                                     uintptr_t dx, int64_t rows, int64_t dim) {
  check_sizes(rows, dim);
  a.rows = rows;
  a.dim = dim;
  a.dy = cptr(dy);
  a.dy_row_stride = dy_row_stride;
  a.x = cptr(x);
  a.x_row_stride = x_row_stride;
  a.dx = mptr(dx);
}

// Runs launch() (returning nullptr or an error string) on `device` with the GIL released.
template <class Launch> void run_on_device(int device, Launch launch) {
  require_available();
  const char* error = nullptr;
  {
    py::gil_scoped_release release;
    cuda::DeviceGuard guard(device);
    error = guard.error() ? guard.error() : launch();
  }
  if (error) throw std::runtime_error(std::string("pynorm._cuda: CUDA error: ") + error);
}

}  // namespace pynorm
