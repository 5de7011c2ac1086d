// The DyT binding, written once for both modules (B = Cpu or Cuda, calls.h).
#pragma once
#include "calls.h"
#include "pynorm/dyt.h"

namespace pynorm {

template <class B> void bind_dyt(py::module_& m) {
  def_call(
      m, "dyt_forward",
      +[](const py::object& x, int64_t x_row_stride, const py::object& y, int64_t rows, int64_t dim,
         const py::object& weight, const py::object& bias, int dtype, double alpha, const typename B::Context& where) {
        const DType t = dtype_from_code(dtype, B::module);
        DytForwardArgs a;
        set_forward_rows<B>(a, x, x_row_stride, y, rows, dim, t);
        a.weight = B::in_or_null(weight, vector_region(dim), t, "weight");
        a.bias = B::in_or_null(bias, vector_region(dim), t, "bias");
        a.alpha = alpha;
        B::run(where, a, t, 2 * rows * dim * itemsize(t));
      },
      {"x", "x_row_stride", "y", "rows", "dim", "weight", "bias", "dtype", "alpha", B::context},
      "y = weight * tanh(alpha * x) + bias over the rows of x ([rows, dim], last axis contiguous, row\n"
      "stride x_row_stride elements); y is contiguous [rows, dim]; weight, bias: [dim] or None.");

  def_call(
      m, "dyt_backward",
      +[](const py::object& dy, int64_t dy_row_stride, const py::object& x, int64_t x_row_stride,
         const py::object& weight, const py::object& dx, const py::object& dalpha, const py::object& dweight,
         const py::object& dbias, int64_t rows, int64_t dim, int dtype, double alpha,
         const typename B::Context& where) {
        const DType t = dtype_from_code(dtype, B::module);
        DytBackwardArgs a;
        set_backward_rows<B>(a, dy, dy_row_stride, x, x_row_stride, dx, rows, dim, t);
        a.weight = B::in_or_null(weight, vector_region(dim), t, "weight");
        a.dalpha = B::out(dalpha, vector_region(1), accumulate_dtype(t), "dalpha");
        a.dweight = B::out_or_null(dweight, vector_region(dim), t, "dweight");
        a.dbias = B::out_or_null(dbias, vector_region(dim), t, "dbias");
        require_matching_gradient(a.weight, a.dweight, B::module);
        a.alpha = alpha;
        B::run(where, a, t, 3 * rows * dim * itemsize(t));
      },
      {"dy", "dy_row_stride", "x", "x_row_stride", "weight", "dx", "dalpha", "dweight", "dbias", "rows", "dim",
       "dtype", "alpha", B::context},
      "dx (contiguous [rows, dim]), dalpha (one element of the accumulate dtype) and, when given,\n"
      "dweight and dbias ([dim]) of dyt_forward; sums over rows in a fixed order. dweight must be\n"
      "given exactly when weight is.");
}

}  // namespace pynorm
