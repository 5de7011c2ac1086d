// Bindings of the DyT kernel: argument checks, GIL release, dispatch.
#include "pynorm/dyt.h"

#include "arrays.h"
#include "pynorm/dispatch.h"

namespace pynorm {

void register_dyt(py::module_& m) {
  m.def(
      "dyt_forward",
      [](py::array x, py::array y, py::object weight, py::object bias, int dtype_code, double alpha, int threads) {
        const DType dtype = dtype_from_code(dtype_code);
        DytForwardArgs a;
        set_forward_rows(a, x, y, dtype);
        a.weight = vector_or_null(weight, a.dim, dtype, "weight");
        a.bias = vector_or_null(bias, a.dim, dtype, "bias");
        a.alpha = alpha;
        a.threads = threads_for(2 * a.rows * a.dim * itemsize(dtype), threads);
        py::gil_scoped_release release;
        kernels().dyt_forward[dtype_code](a);
      },
      py::arg("x"), py::arg("y"), py::arg("weight"), py::arg("bias"), py::arg("dtype"), py::arg("alpha"),
      py::arg("threads"));

  m.def(
      "dyt_backward",
      [](py::array dy, py::array x, py::object weight, py::array dx, py::array dalpha, py::object dweight,
         py::object dbias, int dtype_code, double alpha, int threads) {
        const DType dtype = dtype_from_code(dtype_code);
        DytBackwardArgs a;
        set_backward_rows(a, dy, x, dx, dtype);
        a.weight = vector_or_null(weight, a.dim, dtype, "weight");
        a.dalpha = vector_or_null(dalpha, 1, accumulate_dtype(dtype), "dalpha", true);
        a.dweight = vector_or_null(dweight, a.dim, dtype, "dweight", true);
        a.dbias = vector_or_null(dbias, a.dim, dtype, "dbias", true);
        require_matching_gradient(a.weight, a.dweight);
        a.alpha = alpha;
        a.threads = threads_for(3 * a.rows * a.dim * itemsize(dtype), threads);
        py::gil_scoped_release release;
        kernels().dyt_backward[dtype_code](a);
      },
      py::arg("dy"), py::arg("x"), py::arg("weight"), py::arg("dx"), py::arg("dalpha"), py::arg("dweight"),
      py::arg("dbias"), py::arg("dtype"), py::arg("alpha"), py::arg("threads"));
}

}  // namespace pynorm
