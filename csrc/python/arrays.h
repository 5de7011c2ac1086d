// Raw views of the arrays pynorm/_array.py prepared. Python has already checked shapes and
// converted dtypes and made user-facing errors; these checks guard the C++ boundary itself
// (a wrong call into _core raises, never reads out of bounds).
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "pynorm/common.h"

namespace pynorm {
namespace py = pybind11;

inline DType dtype_from_code(int code) {
  if (code < 0 || code >= kNumDTypes) throw py::value_error("pynorm._core: unknown dtype code " + std::to_string(code));
  return static_cast<DType>(code);
}

// A [rows, dim] array whose last axis is contiguous.
struct Rows {
  void* data;
  int64_t rows, dim, row_stride;  // row_stride in elements
};

inline Rows rows_of(const py::array& a, DType dtype, const char* name) {
  const int64_t size = itemsize(dtype);
  if (a.ndim() != 2) throw py::value_error(std::string("pynorm._core: ") + name + " must be 2-d");
  if (a.itemsize() != size) throw py::value_error(std::string("pynorm._core: ") + name + " has the wrong itemsize");
  if (a.shape(0) == 0 || a.shape(1) == 0) return {const_cast<void*>(a.data()), a.shape(0), a.shape(1), 0};  // no element is read
  if (a.shape(1) > 1 && a.strides(1) != size)
    throw py::value_error(std::string("pynorm._core: ") + name + " must be contiguous along its last axis");
  if (a.strides(0) % size != 0) throw py::value_error(std::string("pynorm._core: ") + name + " has a misaligned stride");
  return {const_cast<void*>(a.data()), a.shape(0), a.shape(1), a.strides(0) / size};
}

// A [problems, rows, cols] batch of matrices whose last axis is contiguous.
struct Matrices {
  void* data;
  int64_t problems, rows, cols;
  int64_t problem_stride, row_stride;  // in elements
};

inline Matrices matrices_of(const py::array& a, DType dtype, const char* name) {
  const int64_t size = itemsize(dtype);
  if (a.ndim() != 3) throw py::value_error(std::string("pynorm._core: ") + name + " must be 3-d");
  if (a.itemsize() != size) throw py::value_error(std::string("pynorm._core: ") + name + " has the wrong itemsize");
  if (a.size() > 0 && a.shape(2) > 1 && a.strides(2) != size)  // (NumPy gives empty arrays 0 strides)
    throw py::value_error(std::string("pynorm._core: ") + name + " must be contiguous along its last axis");
  if (a.strides(0) % size != 0 || a.strides(1) % size != 0)
    throw py::value_error(std::string("pynorm._core: ") + name + " has a misaligned stride");
  return {const_cast<void*>(a.data()), a.shape(0), a.shape(1), a.shape(2), a.strides(0) / size, a.strides(1) / size};
}

inline void require_writable_contiguous(const py::array& a, const char* name) {
  if (!a.writeable() || !(a.flags() & py::array::c_style))
    throw py::value_error(std::string("pynorm._core: ") + name + " must be a writable C-contiguous array");
}

inline void same_shape(const Rows& a, const Rows& b, const char* name) {
  if (a.rows != b.rows || a.dim != b.dim) throw py::value_error(std::string("pynorm._core: ") + name + " has the wrong shape");
}

// A 1-d contiguous array of n elements of the given type, or None (-> nullptr).
inline void* vector_or_null(const py::object& o, int64_t n, DType dtype, const char* name, bool writable = false) {
  if (o.is_none()) return nullptr;
  py::array a = py::reinterpret_borrow<py::array>(o);
  if (!py::isinstance<py::array>(o) || a.ndim() != 1 || a.shape(0) != n || a.itemsize() != itemsize(dtype) ||
      !(a.flags() & py::array::c_style) || (writable && !a.writeable()))
    throw py::value_error(std::string("pynorm._core: ") + name + " must be a contiguous 1-d array of length " +
                          std::to_string(n));
  return writable ? a.mutable_data() : const_cast<void*>(a.data());
}

// Fills the row fields every forward kernel takes (rows, dim, x, x_row_stride, y) from x and
// its output, after checking them.
template <class Args> inline void set_forward_rows(Args& a, const py::array& x, const py::array& y, DType dtype) {
  const Rows xr = rows_of(x, dtype, "x"), yr = rows_of(y, dtype, "y");
  same_shape(xr, yr, "y");
  require_writable_contiguous(y, "y");
  a.rows = xr.rows;
  a.dim = xr.dim;
  a.x = xr.data;
  a.x_row_stride = xr.row_stride;
  a.y = yr.data;
}

// The same for a backward kernel: dy and x in, dx out.
template <class Args>
inline void set_backward_rows(Args& a, const py::array& dy, const py::array& x, const py::array& dx, DType dtype) {
  const Rows xr = rows_of(x, dtype, "x"), dyr = rows_of(dy, dtype, "dy"), dxr = rows_of(dx, dtype, "dx");
  same_shape(xr, dyr, "dy");
  same_shape(xr, dxr, "dx");
  require_writable_contiguous(dx, "dx");
  a.rows = xr.rows;
  a.dim = xr.dim;
  a.x = xr.data;
  a.x_row_stride = xr.row_stride;
  a.dy = dyr.data;
  a.dy_row_stride = dyr.row_stride;
  a.dx = dxr.data;
}

// Parameter gradients are returned exactly for the parameters that were given.
inline void require_matching_gradient(const void* weight, const void* dweight, const char* module = "pynorm._core") {
  if ((weight == nullptr) != (dweight == nullptr))
    throw py::value_error(std::string(module) + ": dweight must be given exactly when weight is");
}

}  // namespace pynorm
