// Bindings of the CUDA LayerNorm/RMSNorm kernel: pointers, sizes, strides, dtype, device, stream.
#include "cuda_common.h"

namespace pynorm {

void register_cuda_norm(py::module_& m) {
  m.def(
      "norm_forward",
      [](uintptr_t x, int64_t x_row_stride, uintptr_t y, int64_t rows, int64_t dim, uintptr_t weight, uintptr_t bias,
         uintptr_t mean, uintptr_t rstd, int dtype_code, double eps, bool center, bool scale, int device,
         uintptr_t stream) {
        const DType dtype = cuda_dtype(dtype_code);
        NormForwardArgs a;
        set_device_forward_rows(a, x, x_row_stride, y, rows, dim);
        a.weight = cptr(weight);
        a.bias = cptr(bias);
        a.mean = mptr(mean);
        a.rstd = mptr(rstd);
        a.eps = eps;
        a.center = center;
        a.scale = scale;
        run_on_device(device, [&] { return cuda::norm_forward(a, dtype, mptr(stream)); });
      },
      py::arg("x"), py::arg("x_row_stride"), py::arg("y"), py::arg("rows"), py::arg("dim"), py::arg("weight"),
      py::arg("bias"), py::arg("mean"), py::arg("rstd"), py::arg("dtype"), py::arg("eps"), py::arg("center"),
      py::arg("scale"), py::arg("device"), py::arg("stream"));

  m.def(
      "norm_backward",
      [](uintptr_t dy, int64_t dy_row_stride, uintptr_t x, int64_t x_row_stride, uintptr_t weight, uintptr_t mean,
         uintptr_t rstd, uintptr_t dx, uintptr_t dweight, uintptr_t dbias, int64_t rows, int64_t dim, int dtype_code,
         double eps, bool center, bool scale, int device, uintptr_t stream) {
        const DType dtype = cuda_dtype(dtype_code);
        require_matching_gradient(cptr(weight), cptr(dweight), "pynorm._cuda");
        NormBackwardArgs a;
        set_device_backward_rows(a, dy, dy_row_stride, x, x_row_stride, dx, rows, dim);
        a.weight = cptr(weight);
        a.mean = cptr(mean);
        a.rstd = cptr(rstd);
        a.dweight = mptr(dweight);
        a.dbias = mptr(dbias);
        a.eps = eps;
        a.center = center;
        a.scale = scale;
        run_on_device(device, [&] { return cuda::norm_backward(a, dtype, mptr(stream)); });
      },
      py::arg("dy"), py::arg("dy_row_stride"), py::arg("x"), py::arg("x_row_stride"), py::arg("weight"),
      py::arg("mean"), py::arg("rstd"), py::arg("dx"), py::arg("dweight"), py::arg("dbias"), py::arg("rows"),
      py::arg("dim"), py::arg("dtype"), py::arg("eps"), py::arg("center"), py::arg("scale"), py::arg("device"),
      py::arg("stream"));
}

}  // namespace pynorm
