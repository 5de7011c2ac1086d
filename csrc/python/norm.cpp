// Bindings of the LayerNorm/RMSNorm kernel: argument checks, GIL release, dispatch.
#include "pynorm/norm.h"

#include "arrays.h"
#include "pynorm/dispatch.h"

namespace pynorm {

void register_norm(py::module_& m) {
  m.def(
      "norm_forward",
      [](py::array x, py::array y, py::object weight, py::object bias, py::object mean, py::object rstd, int dtype_code,
         double eps, bool center, bool scale, int threads) {
        const DType dtype = dtype_from_code(dtype_code);
        NormForwardArgs a;
        set_forward_rows(a, x, y, dtype);
        a.weight = vector_or_null(weight, a.dim, dtype, "weight");
        a.bias = vector_or_null(bias, a.dim, dtype, "bias");
        a.mean = vector_or_null(mean, a.rows, accumulate_dtype(dtype), "mean", true);
        a.rstd = vector_or_null(rstd, a.rows, accumulate_dtype(dtype), "rstd", true);
        a.eps = eps;
        a.center = center;
        a.scale = scale;
        a.threads = threads_for(2 * a.rows * a.dim * itemsize(dtype), threads);
        py::gil_scoped_release release;
        kernels().norm_forward[dtype_code](a);
      },
      py::arg("x"), py::arg("y"), py::arg("weight"), py::arg("bias"), py::arg("mean"), py::arg("rstd"),
      py::arg("dtype"), py::arg("eps"), py::arg("center"), py::arg("scale"), py::arg("threads"));

  m.def(
      "norm_backward",
      [](py::array dy, py::array x, py::object weight, py::object mean, py::object rstd, py::array dx,
         py::object dweight, py::object dbias, int dtype_code, double eps, bool center, bool scale, int threads) {
        const DType dtype = dtype_from_code(dtype_code);
        NormBackwardArgs a;
        set_backward_rows(a, dy, x, dx, dtype);
        a.weight = vector_or_null(weight, a.dim, dtype, "weight");
        a.mean = vector_or_null(mean, a.rows, accumulate_dtype(dtype), "mean");
        a.rstd = vector_or_null(rstd, a.rows, accumulate_dtype(dtype), "rstd");
        a.dweight = vector_or_null(dweight, a.dim, dtype, "dweight", true);
        a.dbias = vector_or_null(dbias, a.dim, dtype, "dbias", true);
        require_matching_gradient(a.weight, a.dweight);
        a.eps = eps;
        a.center = center;
        a.scale = scale;
        a.threads = threads_for(3 * a.rows * a.dim * itemsize(dtype), threads);
        py::gil_scoped_release release;
        kernels().norm_backward[dtype_code](a);
      },
      py::arg("dy"), py::arg("x"), py::arg("weight"), py::arg("mean"), py::arg("rstd"), py::arg("dx"),
      py::arg("dweight"), py::arg("dbias"), py::arg("dtype"), py::arg("eps"), py::arg("center"), py::arg("scale"),
      py::arg("threads"));
}

}  // namespace pynorm
