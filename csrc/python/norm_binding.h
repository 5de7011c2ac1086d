// The LayerNorm/RMSNorm binding, written once for both modules (B = Cpu or Cuda, calls.h).
#pragma once
#include "calls.h"
#include "pynorm/norm.h"

namespace pynorm {

template <class B> void bind_norm(py::module_& m) {
  m.def(
      "norm_forward",
      [](const py::object& x, int64_t x_row_stride, const py::object& y, int64_t rows, int64_t dim,
         const py::object& weight, const py::object& bias, const py::object& mean, const py::object& rstd, int dtype,
         double eps, bool center, bool scale, const typename B::Context& where) {
        const DType t = dtype_from_code(dtype, B::module);
        require_sizes({rows, dim}, B::module);
        const DType acc = accumulate_dtype(t);
        NormForwardArgs a;
        a.rows = rows;
        a.dim = dim;
        a.x = B::in(x, rows_region(rows, dim, x_row_stride), t, "x");
        a.x_row_stride = x_row_stride;
        a.y = B::out(y, rows_region(rows, dim, dim), t, "y");
        a.weight = B::in_or_null(weight, vector_region(dim), t, "weight");
        a.bias = B::in_or_null(bias, vector_region(dim), t, "bias");
        a.mean = B::out_or_null(mean, vector_region(rows), acc, "mean");
        a.rstd = B::out_or_null(rstd, vector_region(rows), acc, "rstd");
        a.eps = eps;
        a.center = center;
        a.scale = scale;
        B::run(where, a, t, 2 * rows * dim * itemsize(t));
      },
      py::kw_only(), "x"_a, "x_row_stride"_a, "y"_a, "rows"_a, "dim"_a, "weight"_a, "bias"_a, "mean"_a, "rstd"_a,
      "dtype"_a, "eps"_a, "center"_a, "scale"_a, py::arg(B::context),
      "y = (x - mean) * rstd * weight + bias over the rows of x ([rows, dim], last axis contiguous,\n"
      "row stride x_row_stride elements); y is contiguous [rows, dim]. weight, bias: [dim] or None.\n"
      "mean, rstd: [rows] of the accumulate dtype, written when given. center=False: mean 0;\n"
      "scale=False: rstd 1. dtype: a code of pynorm._core.dtypes.");

  m.def(
      "norm_backward",
      [](const py::object& dy, int64_t dy_row_stride, const py::object& x, int64_t x_row_stride,
         const py::object& weight, const py::object& mean, const py::object& rstd, const py::object& dx,
         const py::object& dweight, const py::object& dbias, int64_t rows, int64_t dim, int dtype, double eps,
         bool center, bool scale, const typename B::Context& where) {
        const DType t = dtype_from_code(dtype, B::module);
        require_sizes({rows, dim}, B::module);
        const DType acc = accumulate_dtype(t);
        NormBackwardArgs a;
        a.rows = rows;
        a.dim = dim;
        a.dy = B::in(dy, rows_region(rows, dim, dy_row_stride), t, "dy");
        a.dy_row_stride = dy_row_stride;
        a.x = B::in(x, rows_region(rows, dim, x_row_stride), t, "x");
        a.x_row_stride = x_row_stride;
        a.weight = B::in_or_null(weight, vector_region(dim), t, "weight");
        a.mean = B::in_or_null(mean, vector_region(rows), acc, "mean");
        a.rstd = B::in_or_null(rstd, vector_region(rows), acc, "rstd");
        a.dx = B::out(dx, rows_region(rows, dim, dim), t, "dx");
        a.dweight = B::out_or_null(dweight, vector_region(dim), t, "dweight");
        a.dbias = B::out_or_null(dbias, vector_region(dim), t, "dbias");
        require_matching_gradient(a.weight, a.dweight, B::module);
        a.eps = eps;
        a.center = center;
        a.scale = scale;
        B::run(where, a, t, 3 * rows * dim * itemsize(t));
      },
      py::kw_only(), "dy"_a, "dy_row_stride"_a, "x"_a, "x_row_stride"_a, "weight"_a, "mean"_a, "rstd"_a, "dx"_a,
      "dweight"_a, "dbias"_a, "rows"_a, "dim"_a, "dtype"_a, "eps"_a, "center"_a, "scale"_a, py::arg(B::context),
      "dx (contiguous [rows, dim]) and, when given, dweight and dbias ([dim], summed over the rows in a\n"
      "fixed order) of norm_forward. mean, rstd: the forward's statistics, or None to recompute them.\n"
      "dweight must be given exactly when weight is.");
}

}  // namespace pynorm
