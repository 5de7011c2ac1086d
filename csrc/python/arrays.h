// The CPU backend of the call descriptions (calls.h): pointer arguments are NumPy arrays.
// Python has already checked shapes, converted dtypes and made the user-facing errors; these
// checks guard the C++ boundary itself: a wrong call into _core raises, and never makes a
// kernel read or write outside the arrays it was given.
#pragma once
#include <pybind11/numpy.h>

#include <algorithm>
#include <string>

#include "calls.h"
#include "pynorm/dispatch.h"

namespace pynorm {

struct Cpu {
  static constexpr const char* module = "pynorm._core";
  static constexpr const char* context = "threads";  // the keyword saying where to run
  using Context = int;                                // requested threads; 0: the global setting

  // The data pointer of the array in a pointer argument (nullptr for None when optional),
  // after checking that it holds elements of `dtype` and that `region` lies inside it.
  static void* address(const py::object& o, const Region& region, DType dtype, const char* name, bool writable,
                       bool optional) {
    if (optional && o.is_none()) return nullptr;
    if (!py::isinstance<py::array>(o)) throw py::type_error(message(name, "must be a NumPy array"));
    const auto a = py::reinterpret_borrow<py::array>(o);
    if (a.itemsize() != itemsize(dtype)) throw py::value_error(message(name, "has the wrong itemsize"));
    if (writable && !a.writeable()) throw py::value_error(message(name, "must be writable"));
    if (!region.empty()) {
      int64_t lo = 0, hi = 0;  // byte offsets of the region's first and last element, from the data pointer
      for (int i = 0; i < 3; ++i) span(region.size[i], region.stride[i] * a.itemsize(), lo, hi);
      int64_t array_lo = 0, array_hi = 0;
      for (py::ssize_t i = 0; i < a.ndim(); ++i) span(a.shape(i), a.strides(i), array_lo, array_hi);
      if (a.size() == 0 || lo < array_lo || hi > array_hi)
        throw py::value_error(message(name, "is smaller than the sizes and strides given for it"));
    }
    return const_cast<void*>(a.data());
  }
  static const void* in(const py::object& o, const Region& r, DType t, const char* name) {
    return address(o, r, t, name, false, false);
  }
  static const void* in_or_null(const py::object& o, const Region& r, DType t, const char* name) {
    return address(o, r, t, name, false, true);
  }
  static void* out(const py::object& o, const Region& r, DType t, const char* name) {
    return address(o, r, t, name, true, false);
  }
  static void* out_or_null(const py::object& o, const Region& r, DType t, const char* name) {
    return address(o, r, t, name, true, true);
  }

  // Runs the kernel of `a` for `dtype` with the GIL released, on the threads `work` (bytes or
  // multiply-adds, see threads_for) deserves.
  template <class Args> static void run(int threads, Args& a, DType dtype, int64_t work) {
    a.threads = threads_for(work, threads);
    py::gil_scoped_release release;
    launch(a, dtype);
  }

  // The kernel of each argument struct, from the one list (pynorm/dispatch.h).
#define PYNORM_LAUNCH(op, Args) \
  static void launch(const Args& a, DType t) { kernels().op[int(t)](a); }
  PYNORM_CPU_KERNELS(PYNORM_LAUNCH)
#undef PYNORM_LAUNCH

 private:
  static std::string message(const char* name, const char* what) { return std::string(module) + ": " + name + " " + what; }
  // Widens [lo, hi] (byte offsets of the first and the last element) by an axis of n elements.
  static void span(int64_t n, int64_t stride, int64_t& lo, int64_t& hi) {
    if (n <= 0) return;
    const int64_t last = (n - 1) * stride;
    lo += std::min<int64_t>(0, last);
    hi += std::max<int64_t>(0, last);
  }
};

}  // namespace pynorm
