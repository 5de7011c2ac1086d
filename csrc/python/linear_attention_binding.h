// The linear-attention binding, written once for both modules (B = Cpu or Cuda, calls.h).
// A matrix argument is [problems, n, cols] with strides (problem stride, row stride) in
// elements and a contiguous last axis; outputs are contiguous.
#pragma once
#include "calls.h"
#include "pynorm/linear_attention.h"

namespace pynorm {

template <class B>
MatrixBatch matrix_batch(const py::object& o, int64_t problems, int64_t n, int64_t cols,
                         const std::array<int64_t, 2>& strides, DType t, const char* name) {
  return {B::in(o, matrices_region(problems, n, cols, strides), t, name), strides[0], strides[1]};
}

template <class B>
void* contiguous_matrices(const py::object& o, int64_t problems, int64_t n, int64_t cols, DType t, const char* name) {
  return B::out(o, matrices_region(problems, n, cols, {n * cols, cols}), t, name);
}

// The fields every attention kernel's arguments share: the sizes and q, k, v.
template <class B, class Args>
void set_attention_inputs(Args& a, const py::object& q, const std::array<int64_t, 2>& q_strides, const py::object& k,
                          const std::array<int64_t, 2>& k_strides, const py::object& v,
                          const std::array<int64_t, 2>& v_strides, int64_t problems, int64_t n, int64_t key_dim,
                          int64_t value_dim, DType t) {
  require_sizes({problems, n, key_dim, value_dim}, B::module);
  a.problems = problems;
  a.n = n;
  a.dk = key_dim;
  a.dv = value_dim;
  a.q = matrix_batch<B>(q, problems, n, key_dim, q_strides, t, "q");
  a.k = matrix_batch<B>(k, problems, n, key_dim, k_strides, t, "k");
  a.v = matrix_batch<B>(v, problems, n, value_dim, v_strides, t, "v");
}

// The backward's gradient fields: dout in, dq, dk, dv (contiguous) out.
template <class B, class Args>
void set_attention_gradients(Args& a, const py::object& dout, const std::array<int64_t, 2>& dout_strides,
                             const py::object& dq, const py::object& dk, const py::object& dv, DType t) {
  a.dout = matrix_batch<B>(dout, a.problems, a.n, a.dv, dout_strides, t, "dout");
  a.dq = contiguous_matrices<B>(dq, a.problems, a.n, a.dk, t, "dq");
  a.dk_out = contiguous_matrices<B>(dk, a.problems, a.n, a.dk, t, "dk");
  a.dv_out = contiguous_matrices<B>(dv, a.problems, a.n, a.dv, t, "dv");
}

template <class B> void bind_linear_attention(py::module_& m) {
  using Strides = std::array<int64_t, 2>;
  def_call(
      m, "linear_attention_forward",
      +[](const py::object& q, const Strides& q_strides, const py::object& k, const Strides& k_strides,
         const py::object& v, const Strides& v_strides, const py::object& out, int64_t problems, int64_t n,
         int64_t key_dim, int64_t value_dim, int dtype, double scale, double eps, bool causal, bool normalize,
         const typename B::Context& where) {
        const DType t = dtype_from_code(dtype, B::module);
        LinearAttentionForwardArgs a;
        set_attention_inputs<B>(a, q, q_strides, k, k_strides, v, v_strides, problems, n, key_dim, value_dim, t);
        a.out = contiguous_matrices<B>(out, problems, n, value_dim, t, "out");
        a.scale = scale;
        a.eps = eps;
        a.causal = causal;
        a.normalize = normalize;
        B::run(where, a, t, linear_attention_work(problems, n, key_dim, value_dim, causal));
      },
      {"q", "q_strides", "k", "k_strides", "v", "v_strides", "out", "problems", "n", "key_dim", "value_dim",
       "dtype", "scale", "eps", "causal", "normalize", B::context},
      "out = scale * sum_j (q_i . k_j) v_j (causal: j <= i; normalize: divided by\n"
      "scale * sum_j (q_i . k_j) + eps) for q, k [problems, n, key_dim], v [problems, n, value_dim];\n"
      "out is contiguous [problems, n, value_dim].");

  def_call(
      m, "linear_attention_backward",
      +[](const py::object& dout, const Strides& dout_strides, const py::object& q, const Strides& q_strides,
         const py::object& k, const Strides& k_strides, const py::object& v, const Strides& v_strides,
         const py::object& dq, const py::object& dk, const py::object& dv, int64_t problems, int64_t n,
         int64_t key_dim, int64_t value_dim, int dtype, double scale, double eps, bool causal, bool normalize,
         const typename B::Context& where) {
        const DType t = dtype_from_code(dtype, B::module);
        LinearAttentionBackwardArgs a;
        set_attention_inputs<B>(a, q, q_strides, k, k_strides, v, v_strides, problems, n, key_dim, value_dim, t);
        set_attention_gradients<B>(a, dout, dout_strides, dq, dk, dv, t);
        a.scale = scale;
        a.eps = eps;
        a.causal = causal;
        a.normalize = normalize;
        B::run(where, a, t, 3 * linear_attention_work(problems, n, key_dim, value_dim, causal));
      },
      {"dout", "dout_strides", "q", "q_strides", "k", "k_strides", "v", "v_strides", "dq", "dk", "dv",
       "problems", "n", "key_dim", "value_dim", "dtype", "scale", "eps", "causal", "normalize", B::context},
      "dq, dk, dv (contiguous, the shapes of q, k, v) of linear_attention_forward for the gradient\n"
      "dout [problems, n, value_dim]; the backward recomputes what it needs from q, k, v.");
}

}  // namespace pynorm
