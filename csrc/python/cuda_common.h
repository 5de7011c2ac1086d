// The CUDA backend of the call descriptions (calls.h): pointer arguments are device addresses
// (ints) that pynorm/_array.py took from the caller's arrays after checking shapes, dtypes and
// devices; a launch runs with the GIL released on the description's device and stream, and a
// CUDA error becomes a Python exception. No math here.
#pragma once
#include <cstdint>
#include <string>
#include <utility>

#include "calls.h"
#include "launch.h"

namespace pynorm {

struct Cuda {
  static constexpr const char* module = "pynorm._cuda";
  static constexpr const char* context = "stream";  // the keyword saying where to run
  using Context = std::pair<int, uintptr_t>;         // (device index, cudaStream_t address)

  static void* address(const py::object& o, const char* name, bool optional) {
    if (optional && o.is_none()) return nullptr;
    if (!PyLong_Check(o.ptr())) throw py::type_error(std::string(module) + ": " + name + " must be a device address (int)");
    return reinterpret_cast<void*>(o.cast<uintptr_t>());
  }
  static const void* in(const py::object& o, const Region&, DType, const char* name) { return address(o, name, false); }
  static const void* in_or_null(const py::object& o, const Region&, DType, const char* name) {
    return address(o, name, true);
  }
  static void* out(const py::object& o, const Region&, DType, const char* name) { return address(o, name, false); }
  static void* out_or_null(const py::object& o, const Region&, DType, const char* name) {
    return address(o, name, true);
  }

  // Runs the kernel of `a` on the context's device and stream with the GIL released.
  template <class Args> static void run(const Context& where, Args& a, DType dtype, int64_t /*work*/) {
    const char* reason = nullptr;
    if (!cuda::available(&reason)) throw std::runtime_error(std::string("CUDA unavailable: ") + reason);
    const char* error = nullptr;
    {
      py::gil_scoped_release release;
      cuda::DeviceGuard guard(where.first);
      error = guard.error() ? guard.error() : launch(a, dtype, reinterpret_cast<void*>(where.second));
    }
    if (error) throw std::runtime_error(std::string(module) + ": CUDA error: " + error);
  }

  static const char* launch(const NormForwardArgs& a, DType t, void* s) { return cuda::norm_forward(a, t, s); }
  static const char* launch(const NormBackwardArgs& a, DType t, void* s) { return cuda::norm_backward(a, t, s); }
  static const char* launch(const DytForwardArgs& a, DType t, void* s) { return cuda::dyt_forward(a, t, s); }
  static const char* launch(const DytBackwardArgs& a, DType t, void* s) { return cuda::dyt_backward(a, t, s); }
  static const char* launch(const LinearAttentionForwardArgs& a, DType t, void* s) {
    return cuda::linear_attention_forward(a, t, s);
  }
  static const char* launch(const LinearAttentionBackwardArgs& a, DType t, void* s) {
    return cuda::linear_attention_backward(a, t, s);
  }
};

}  // namespace pynorm
