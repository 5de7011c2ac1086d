// The LayerNorm/RMSNorm binding, written once for both modules (B = Cpu or Cuda, calls.h).
#pragma once
#include "calls.h"
#include "pynorm/norm.h"

namespace pynorm {

template <class B> void bind_norm(py::module_& m) {
  def_call(
      m, "norm_forward",
      +[](const py::object& x, int64_t x_row_stride, const py::object& y, int64_t rows, int64_t dim,
         const py::object& weight, const py::object& bias, const py::object& mean, const py::object& rstd, int dtype,
         double eps, bool center, bool scale, const typename B::Context& where) {
        const DType t = dtype_from_code(dtype, B::module);
        const DType acc = accumulate_dtype(t);
        NormForwardArgs a;
        set_forward_rows<B>(a, x, x_row_stride, y, rows, dim, t);
        a.weight = B::in_or_null(weight, vector_region(dim), t, "weight");
        a.bias = B::in_or_null(bias, vector_region(dim), t, "bias");
        a.mean = B::out_or_null(mean, vector_region(rows), acc, "mean");
        a.rstd = B::out_or_null(rstd, vector_region(rows), acc, "rstd");
        a.eps = eps;
        a.center = center;
        a.scale = scale;
        B::run(where, a, t, 2 * rows * dim * itemsize(t));
      },
      {"x", "x_row_stride", "y", "rows", "dim", "weight", "bias", "mean", "rstd", "dtype", "eps", "center",
       "scale", B::context},
      "y = (x - mean) * rstd * weight + bias over the rows of x ([rows, dim], last axis contiguous,\n"
      "row stride x_row_stride elements); y is contiguous [rows, dim]. weight, bias: [dim] or None.\n"
      "mean, rstd: [rows] of the accumulate dtype, written when given. center=False: mean 0;\n"
      "scale=False: rstd 1. dtype: a code of pynorm._core.dtypes.");

  def_call(
      m, "norm_backward",
      +[](const py::object& dy, int64_t dy_row_stride, const py::object& x, int64_t x_row_stride,
         const py::object& weight, const py::object& mean, const py::object& rstd, const py::object& dx,
         const py::object& dweight, const py::object& dbias, int64_t rows, int64_t dim, int dtype, double eps,
         bool center, bool scale, const typename B::Context& where) {
        const DType t = dtype_from_code(dtype, B::module);
        const DType acc = accumulate_dtype(t);
        NormBackwardArgs a;
        set_backward_rows<B>(a, dy, dy_row_stride, x, x_row_stride, dx, rows, dim, t);
        a.weight = B::in_or_null(weight, vector_region(dim), t, "weight");
        a.mean = B::in_or_null(mean, vector_region(rows), acc, "mean");
        a.rstd = B::in_or_null(rstd, vector_region(rows), acc, "rstd");
        a.dweight = B::out_or_null(dweight, vector_region(dim), t, "dweight");
        a.dbias = B::out_or_null(dbias, vector_region(dim), t, "dbias");
        require_matching_gradient(a.weight, a.dweight, B::module);
        a.eps = eps;
        a.center = center;
        a.scale = scale;
        B::run(where, a, t, 3 * rows * dim * itemsize(t));
      },
      {"dy", "dy_row_stride", "x", "x_row_stride", "weight", "mean", "rstd", "dx", "dweight", "dbias", "rows",
       "dim", "dtype", "eps", "center", "scale", B::context},
      "dx (contiguous [rows, dim]) and, when given, dweight and dbias ([dim], summed over the rows in a\n"
      "fixed order) of norm_forward. mean, rstd: the forward's statistics, or None to recompute them.\n"
      "dweight must be given exactly when weight is.");
}

}  // namespace pynorm
