// pynorm._core's P1 fused attention (CPU only; the call form of calls.h).
#include "pynorm/merged_attention.h"

#include "arrays.h"
#include "registry.h"
#include "linear_attention_binding.h"  // matrix_batch, contiguous_matrices

namespace pynorm {

namespace {

// The fields forward and backward share: sizes, x, the weights, scale, residual.
template <class Args>
void set_common(Args& a, int64_t problems, int64_t n, int64_t d, const py::object& x,
                const std::array<int64_t, 2>& x_strides, const py::object& w, const py::object& v, DType t,
                double scale, bool residual) {
  require_sizes({problems, n, d}, Cpu::module);
  a.problems = problems;
  a.n = n;
  a.d = d;
  a.x = matrix_batch<Cpu>(x, problems, n, d, x_strides, t, "x");
  a.w = Cpu::in(w, rows_region(d, d, d), t, "W");
  a.v = Cpu::in(v, rows_region(d, d, d), t, "V");
  a.scale = scale;
  a.residual = residual;
}

}  // namespace

PYNORM_BINDINGS(merged_attention) {
  using Strides = std::array<int64_t, 2>;
  def_call(
      m, "merged_attention_forward",
      +[](const py::object& x, const Strides& x_strides, const py::object& w, const py::object& v,
         const py::object& out, int64_t problems, int64_t n, int64_t d, int dtype, double scale, bool residual,
         int threads) {
        const DType t = dtype_from_code(dtype, Cpu::module);
        MergedAttentionArgs a;
        set_common(a, problems, n, d, x, x_strides, w, v, t, scale, residual);
        a.out = contiguous_matrices<Cpu>(out, problems, n, d, t, "out");
        Cpu::run(threads, a, t, merged_attention_work(problems, n, d, itemsize(t)));
      },
      {"x", "x_strides", "w", "v", "out", "problems", "n", "d", "dtype", "scale", "residual", "threads"},
      "out = scale * (x W^T) (x^T (x V^T)) (+ x) per problem of x [problems, n, d]; W, V contiguous\n"
      "[d, d]; out contiguous [problems, n, d].");

  def_call(
      m, "merged_attention_backward",
      +[](const py::object& dout, const Strides& dout_strides, const py::object& x, const Strides& x_strides,
         const py::object& w, const py::object& v, const py::object& dx, const py::object& dw, const py::object& dv,
         int64_t problems, int64_t n, int64_t d, int dtype, double scale, bool residual, int threads) {
        const DType t = dtype_from_code(dtype, Cpu::module);
        MergedAttentionBackwardArgs a;
        set_common(a, problems, n, d, x, x_strides, w, v, t, scale, residual);
        a.dout = matrix_batch<Cpu>(dout, problems, n, d, dout_strides, t, "dout");
        a.dx = contiguous_matrices<Cpu>(dx, problems, n, d, t, "dx");
        a.dw = Cpu::out(dw, rows_region(d, d, d), t, "dW");
        a.dv = Cpu::out(dv, rows_region(d, d, d), t, "dV");
        Cpu::run(threads, a, t, merged_attention_work(problems, n, d, itemsize(t)));
      },
      {"dout", "dout_strides", "x", "x_strides", "w", "v", "dx", "dw", "dv", "problems", "n", "d", "dtype",
       "scale", "residual", "threads"},
      "dx (contiguous, x's shape), dW and dV (contiguous [d, d], summed over the problems in a fixed\n"
      "order) of merged_attention_forward for the gradient dout.");
}

}  // namespace pynorm
