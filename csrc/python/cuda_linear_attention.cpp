// Bindings of the CUDA linear-attention kernels: pointers, sizes, strides, dtype, device, stream.
#include "cuda_common.h"
#include "pynorm/linear_attention.h"

namespace pynorm {

void register_cuda_linear_attention(py::module_& m) {
  // Each matrix argument is (pointer, problem stride, row stride) in elements; outputs are
  // contiguous [problems, n, cols].
  using Strided = std::tuple<uintptr_t, int64_t, int64_t>;
  auto batch = [](const Strided& s) {
    return MatrixBatch{cptr(std::get<0>(s)), std::get<1>(s), std::get<2>(s)};
  };
  m.def(
      "linear_attention_forward",
      [batch](Strided q, Strided k, Strided v, uintptr_t out, int64_t problems, int64_t n, int64_t dk, int64_t dv,
              int dtype_code, double scale, double eps, bool causal, bool normalize, int device, uintptr_t stream) {
        const DType dtype = cuda_dtype(dtype_code);
        if (problems < 0 || n < 0 || dk < 0 || dv < 0) throw py::value_error("pynorm._cuda: negative size");
        LinearAttentionForwardArgs a;
        a.problems = problems;
        a.n = n;
        a.dk = dk;
        a.dv = dv;
        a.q = batch(q);
        a.k = batch(k);
        a.v = batch(v);
        a.out = mptr(out);
        a.scale = scale;
        a.eps = eps;
        a.causal = causal;
        a.normalize = normalize;
        run_on_device(device, [&] { return cuda::linear_attention_forward(a, dtype, mptr(stream)); });
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("problems"), py::arg("n"), py::arg("dk"),
      py::arg("dv"), py::arg("dtype"), py::arg("scale"), py::arg("eps"), py::arg("causal"), py::arg("normalize"),
      py::arg("device"), py::arg("stream"));

  m.def(
      "linear_attention_backward",
      [batch](Strided dout, Strided q, Strided k, Strided v, uintptr_t dq, uintptr_t dk_out, uintptr_t dv_out,
              int64_t problems, int64_t n, int64_t dk, int64_t dv, int dtype_code, double scale, double eps,
              bool causal, bool normalize, int device, uintptr_t stream) {
        const DType dtype = cuda_dtype(dtype_code);
        if (problems < 0 || n < 0 || dk < 0 || dv < 0) throw py::value_error("pynorm._cuda: negative size");
        LinearAttentionBackwardArgs a;
        a.problems = problems;
        a.n = n;
        a.dk = dk;
        a.dv = dv;
        a.dout = batch(dout);
        a.q = batch(q);
        a.k = batch(k);
        a.v = batch(v);
        a.dq = mptr(dq);
        a.dk_out = mptr(dk_out);
        a.dv_out = mptr(dv_out);
        a.scale = scale;
        a.eps = eps;
        a.causal = causal;
        a.normalize = normalize;
        run_on_device(device, [&] { return cuda::linear_attention_backward(a, dtype, mptr(stream)); });
      },
      py::arg("dout"), py::arg("q"), py::arg("k"), py::arg("v"), py::arg("dq"), py::arg("dk"), py::arg("dv"),
      py::arg("problems"), py::arg("n"), py::arg("dk_size"), py::arg("dv_size"), py::arg("dtype"), py::arg("scale"),
      py::arg("eps"), py::arg("causal"), py::arg("normalize"), py::arg("device"), py::arg("stream"));
}

}  // namespace pynorm
