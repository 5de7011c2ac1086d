// Bindings of P1's fused attention: argument checks, GIL release, dispatch.
#include "pynorm/merged_attention.h"

#include <string>

#include "arrays.h"
#include "pynorm/dispatch.h"

namespace pynorm {

namespace {

MatrixBatch batch_of(const Matrices& m) { return {m.data, m.problem_stride, m.row_stride}; }

void check_same(const Matrices& m, const Matrices& like, const char* name) {
  if (m.problems != like.problems || m.rows != like.rows || m.cols != like.cols)
    throw py::value_error(std::string("pynorm._core: ") + name + " has the wrong shape");
}

const void* weight_of(const py::array& a, int64_t d, DType dtype, const char* name) {
  if (a.ndim() != 2 || a.shape(0) != d || a.shape(1) != d || a.itemsize() != itemsize(dtype) ||
      !(a.flags() & py::array::c_style))
    throw py::value_error(std::string("pynorm._core: ") + name + " must be a contiguous d x d array");
  return a.data();
}

void* square_output(py::array& a, int64_t d, DType dtype, const char* name) {
  require_writable_contiguous(a, name);
  weight_of(a, d, dtype, name);
  return a.mutable_data();
}

// The fields forward and backward share: sizes, x, the weights, scale, residual, threads.
template <class Args>
void set_common(Args& a, const Matrices& xm, const py::array& w, const py::array& v, DType dtype, double scale,
                bool residual, int threads) {
  a.problems = xm.problems;
  a.n = xm.rows;
  a.d = xm.cols;
  a.x = batch_of(xm);
  a.w = weight_of(w, a.d, dtype, "W");
  a.v = weight_of(v, a.d, dtype, "V");
  a.scale = scale;
  a.residual = residual;
  a.threads = threads_for(merged_attention_work(a.problems, a.n, a.d, itemsize(dtype)), threads);
}

}  // namespace

void register_merged_attention(py::module_& m) {
  m.def(
      "merged_attention_forward",
      [](py::array x, py::array w, py::array v, py::array out, int dtype_code, double scale, bool residual,
         int threads) {
        const DType dtype = dtype_from_code(dtype_code);
        const Matrices xm = matrices_of(x, dtype, "x"), om = matrices_of(out, dtype, "out");
        check_same(om, xm, "out");
        require_writable_contiguous(out, "out");
        MergedAttentionArgs a;
        set_common(a, xm, w, v, dtype, scale, residual, threads);
        a.out = om.data;
        py::gil_scoped_release release;
        kernels().merged_attention_forward[dtype_code](a);
      },
      py::arg("x"), py::arg("w"), py::arg("v"), py::arg("out"), py::arg("dtype"), py::arg("scale"),
      py::arg("residual"), py::arg("threads"));

  m.def(
      "merged_attention_backward",
      [](py::array dout, py::array x, py::array w, py::array v, py::array dx, py::array dw, py::array dv,
         int dtype_code, double scale, bool residual, int threads) {
        const DType dtype = dtype_from_code(dtype_code);
        const Matrices xm = matrices_of(x, dtype, "x"), dom = matrices_of(dout, dtype, "dout"),
                       dxm = matrices_of(dx, dtype, "dx");
        check_same(dom, xm, "dout");
        check_same(dxm, xm, "dx");
        require_writable_contiguous(dx, "dx");
        MergedAttentionBackwardArgs a;
        set_common(a, xm, w, v, dtype, scale, residual, threads);
        a.dout = batch_of(dom);
        a.dx = dxm.data;
        a.dw = square_output(dw, a.d, dtype, "dW");
        a.dv = square_output(dv, a.d, dtype, "dV");
        py::gil_scoped_release release;
        kernels().merged_attention_backward[dtype_code](a);
      },
      py::arg("dout"), py::arg("x"), py::arg("w"), py::arg("v"), py::arg("dx"), py::arg("dw"), py::arg("dv"),
      py::arg("dtype"), py::arg("scale"), py::arg("residual"), py::arg("threads"));
}

}  // namespace pynorm
