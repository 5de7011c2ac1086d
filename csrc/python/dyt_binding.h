// The DyT binding, written once for both modules (B = Cpu or Cuda, calls.h).
#pragma once
#include "calls.h"
#include "pynorm/dyt.h"

namespace pynorm {

template <class B> void bind_dyt(py::module_& m) {
  m.def(
      "dyt_forward",
      [](const py::object& x, int64_t x_row_stride, const py::object& y, int64_t rows, int64_t dim,
         const py::object& weight, const py::object& bias, int dtype, double alpha, const typename B::Context& where) {
        const DType t = dtype_from_code(dtype, B::module);
        require_sizes({rows, dim}, B::module);
        DytForwardArgs a;
        a.rows = rows;
        a.dim = dim;
        a.x = B::in(x, rows_region(rows, dim, x_row_stride), t, "x");
        a.x_row_stride = x_row_stride;
        a.y = B::out(y, rows_region(rows, dim, dim), t, "y");
        a.weight = B::in_or_null(weight, vector_region(dim), t, "weight");
        a.bias = B::in_or_null(bias, vector_region(dim), t, "bias");
        a.alpha = alpha;
        B::run(where, a, t, 2 * rows * dim * itemsize(t));
      },
      py::kw_only(), "x"_a, "x_row_stride"_a, "y"_a, "rows"_a, "dim"_a, "weight"_a, "bias"_a, "dtype"_a, "alpha"_a,
      py::arg(B::context),
      "y = weight * tanh(alpha * x) + bias over the rows of x ([rows, dim], last axis contiguous, row\n"
      "stride x_row_stride elements); y is contiguous [rows, dim]; weight, bias: [dim] or None.");

  m.def(
      "dyt_backward",
      [](const py::object& dy, int64_t dy_row_stride, const py::object& x, int64_t x_row_stride,
         const py::object& weight, const py::object& dx, const py::object& dalpha, const py::object& dweight,
         const py::object& dbias, int64_t rows, int64_t dim, int dtype, double alpha,
         const typename B::Context& where) {
        const DType t = dtype_from_code(dtype, B::module);
        require_sizes({rows, dim}, B::module);
        DytBackwardArgs a;
        a.rows = rows;
        a.dim = dim;
        a.dy = B::in(dy, rows_region(rows, dim, dy_row_stride), t, "dy");
        a.dy_row_stride = dy_row_stride;
        a.x = B::in(x, rows_region(rows, dim, x_row_stride), t, "x");
        a.x_row_stride = x_row_stride;
        a.weight = B::in_or_null(weight, vector_region(dim), t, "weight");
        a.dx = B::out(dx, rows_region(rows, dim, dim), t, "dx");
        a.dalpha = B::out(dalpha, vector_region(1), accumulate_dtype(t), "dalpha");
        a.dweight = B::out_or_null(dweight, vector_region(dim), t, "dweight");
        a.dbias = B::out_or_null(dbias, vector_region(dim), t, "dbias");
        require_matching_gradient(a.weight, a.dweight, B::module);
        a.alpha = alpha;
        B::run(where, a, t, 3 * rows * dim * itemsize(t));
      },
      py::kw_only(), "dy"_a, "dy_row_stride"_a, "x"_a, "x_row_stride"_a, "weight"_a, "dx"_a, "dalpha"_a,
      "dweight"_a, "dbias"_a, "rows"_a, "dim"_a, "dtype"_a, "alpha"_a, py::arg(B::context),
      "dx (contiguous [rows, dim]), dalpha (one element of the accumulate dtype) and, when given,\n"
      "dweight and dbias ([dim]) of dyt_forward; sums over rows in a fixed order. dweight must be\n"
      "given exactly when weight is.");
}

}  // namespace pynorm
