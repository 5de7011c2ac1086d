// Bindings of the CUDA DyT kernel: pointers, sizes, strides, dtype, device, stream.
#include "cuda_common.h"

namespace pynorm {

void register_cuda_dyt(py::module_& m) {
  m.def(
      "dyt_forward",
      [](uintptr_t x, int64_t x_row_stride, uintptr_t y, int64_t rows, int64_t dim, uintptr_t weight, uintptr_t bias,
         int dtype_code, double alpha, int device, uintptr_t stream) {
        const DType dtype = cuda_dtype(dtype_code);
        DytForwardArgs a;
        set_device_forward_rows(a, x, x_row_stride, y, rows, dim);
        a.weight = cptr(weight);
        a.bias = cptr(bias);
        a.alpha = alpha;
        run_on_device(device, [&] { return cuda::dyt_forward(a, dtype, mptr(stream)); });
      },
      py::arg("x"), py::arg("x_row_stride"), py::arg("y"), py::arg("rows"), py::arg("dim"), py::arg("weight"),
      py::arg("bias"), py::arg("dtype"), py::arg("alpha"), py::arg("device"), py::arg("stream"));

  m.def(
      "dyt_backward",
      [](uintptr_t dy, int64_t dy_row_stride, uintptr_t x, int64_t x_row_stride, uintptr_t weight, uintptr_t dx,
         uintptr_t dalpha, uintptr_t dweight, uintptr_t dbias, int64_t rows, int64_t dim, int dtype_code, double alpha,
         int device, uintptr_t stream) {
        const DType dtype = cuda_dtype(dtype_code);
        require_matching_gradient(cptr(weight), cptr(dweight), "pynorm._cuda");
        if (dalpha == 0) throw py::value_error("pynorm._cuda: dalpha is required");
        DytBackwardArgs a;
        set_device_backward_rows(a, dy, dy_row_stride, x, x_row_stride, dx, rows, dim);
        a.weight = cptr(weight);
        a.dalpha = mptr(dalpha);
        a.dweight = mptr(dweight);
        a.dbias = mptr(dbias);
        a.alpha = alpha;
        run_on_device(device, [&] { return cuda::dyt_backward(a, dtype, mptr(stream)); });
      },
      py::arg("dy"), py::arg("dy_row_stride"), py::arg("x"), py::arg("x_row_stride"), py::arg("weight"), py::arg("dx"),
      py::arg("dalpha"), py::arg("dweight"), py::arg("dbias"), py::arg("rows"), py::arg("dim"), py::arg("dtype"),
      py::arg("alpha"), py::arg("device"), py::arg("stream"));
}

}  // namespace pynorm
