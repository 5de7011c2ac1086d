// Bindings of the linear-attention kernels: argument checks, GIL release, dispatch.
#include "pynorm/linear_attention.h"

#include <string>

#include "arrays.h"
#include "pynorm/dispatch.h"

namespace pynorm {

namespace {

MatrixBatch batch_of(const Matrices& m) { return {m.data, m.problem_stride, m.row_stride}; }

void check_shape(const Matrices& m, int64_t problems, int64_t rows, int64_t cols, const char* name) {
  if (m.problems != problems || m.rows != rows || m.cols != cols)
    throw py::value_error(std::string("pynorm._core: ") + name + " has the wrong shape");
}

// q, k: [problems, n, dk]; v: [problems, n, dv] -> (problems, n, dk, dv), checked.
struct Sizes {
  int64_t problems, n, dk, dv;
};
Sizes sizes_of(const Matrices& q, const Matrices& k, const Matrices& v) {
  check_shape(k, q.problems, q.rows, q.cols, "k");
  check_shape(v, q.problems, q.rows, v.cols, "v");
  return {q.problems, q.rows, q.cols, v.cols};
}

}  // namespace

void register_linear_attention(py::module_& m) {
  m.def(
      "linear_attention_forward",
      [](py::array q, py::array k, py::array v, py::array out, int dtype_code, double scale, double eps, bool causal,
         bool normalize, int threads) {
        const DType dtype = dtype_from_code(dtype_code);
        const Matrices qm = matrices_of(q, dtype, "q"), km = matrices_of(k, dtype, "k"),
                       vm = matrices_of(v, dtype, "v"), om = matrices_of(out, dtype, "out");
        const Sizes s = sizes_of(qm, km, vm);
        check_shape(om, s.problems, s.n, s.dv, "out");
        require_writable_contiguous(out, "out");
        LinearAttentionForwardArgs a;
        a.problems = s.problems;
        a.n = s.n;
        a.dk = s.dk;
        a.dv = s.dv;
        a.q = batch_of(qm);
        a.k = batch_of(km);
        a.v = batch_of(vm);
        a.out = om.data;
        a.scale = scale;
        a.eps = eps;
        a.causal = causal;
        a.normalize = normalize;
        a.threads = threads_for(linear_attention_work(s.problems, s.n, s.dk, s.dv, causal), threads);
        py::gil_scoped_release release;
        kernels().linear_attention_forward[dtype_code](a);
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("dtype"), py::arg("scale"), py::arg("eps"),
      py::arg("causal"), py::arg("normalize"), py::arg("threads"));

  m.def(
      "linear_attention_backward",
      [](py::array dout, py::array q, py::array k, py::array v, py::array dq, py::array dk, py::array dv,
         int dtype_code, double scale, double eps, bool causal, bool normalize, int threads) {
        const DType dtype = dtype_from_code(dtype_code);
        const Matrices qm = matrices_of(q, dtype, "q"), km = matrices_of(k, dtype, "k"),
                       vm = matrices_of(v, dtype, "v"), dom = matrices_of(dout, dtype, "dout"),
                       dqm = matrices_of(dq, dtype, "dq"), dkm = matrices_of(dk, dtype, "dk"),
                       dvm = matrices_of(dv, dtype, "dv");
        const Sizes s = sizes_of(qm, km, vm);
        check_shape(dom, s.problems, s.n, s.dv, "dout");
        check_shape(dqm, s.problems, s.n, s.dk, "dq");
        check_shape(dkm, s.problems, s.n, s.dk, "dk");
        check_shape(dvm, s.problems, s.n, s.dv, "dv");
        require_writable_contiguous(dq, "dq");
        require_writable_contiguous(dk, "dk");
        require_writable_contiguous(dv, "dv");
        LinearAttentionBackwardArgs a;
        a.problems = s.problems;
        a.n = s.n;
        a.dk = s.dk;
        a.dv = s.dv;
        a.dout = batch_of(dom);
        a.q = batch_of(qm);
        a.k = batch_of(km);
        a.v = batch_of(vm);
        a.dq = dqm.data;
        a.dk_out = dkm.data;
        a.dv_out = dvm.data;
        a.scale = scale;
        a.eps = eps;
        a.causal = causal;
        a.normalize = normalize;
        a.threads = threads_for(3 * linear_attention_work(s.problems, s.n, s.dk, s.dv, causal), threads);
        py::gil_scoped_release release;
        kernels().linear_attention_backward[dtype_code](a);
      },
      py::arg("dout"), py::arg("q"), py::arg("k"), py::arg("v"), py::arg("dq"), py::arg("dk"), py::arg("dv"),
      py::arg("dtype"), py::arg("scale"), py::arg("eps"), py::arg("causal"), py::arg("normalize"),
      py::arg("threads"));
}

}  // namespace pynorm
