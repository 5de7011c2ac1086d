// pynorm._core's softmax attention (CPU only; the call form of calls.h).
#include "pynorm/softmax_attention.h"

#include "arrays.h"
#include "registry.h"
#include "linear_attention_binding.h"  // set_attention_inputs, set_attention_gradients

namespace pynorm {

using Strides = std::array<int64_t, 2>;

PYNORM_BINDINGS(softmax_attention) {
  def_call(
      m, "softmax_attention_forward",
      +[](const py::object& q, const Strides& q_strides, const py::object& k, const Strides& k_strides,
          const py::object& v, const Strides& v_strides, const py::object& out, int64_t problems, int64_t n,
          int64_t key_dim, int64_t value_dim, int dtype, double scale, bool causal, int threads) {
        const DType t = dtype_from_code(dtype, Cpu::module);
        SoftmaxAttentionForwardArgs a;
        set_attention_inputs<Cpu>(a, q, q_strides, k, k_strides, v, v_strides, problems, n, key_dim, value_dim, t);
        a.scale = scale;
        a.causal = causal;
        a.out = contiguous_matrices<Cpu>(out, problems, n, value_dim, t, "out");
        Cpu::run(threads, a, t, softmax_attention_work(problems, n, key_dim, value_dim));
      },
      {"q", "q_strides", "k", "k_strides", "v", "v_strides", "out", "problems", "n", "key_dim", "value_dim", "dtype",
       "scale", "causal", "threads"},
      "out = softmax_j(scale * q_i . k_j) v_j (causal: j <= i) for q, k [problems, n, key_dim],\n"
      "v [problems, n, value_dim]; out is contiguous [problems, n, value_dim].");

  def_call(
      m, "softmax_attention_backward",
      +[](const py::object& dout, const Strides& dout_strides, const py::object& q, const Strides& q_strides,
          const py::object& k, const Strides& k_strides, const py::object& v, const Strides& v_strides,
          const py::object& dq, const py::object& dk, const py::object& dv, int64_t problems, int64_t n,
          int64_t key_dim, int64_t value_dim, int dtype, double scale, bool causal, int threads) {
        const DType t = dtype_from_code(dtype, Cpu::module);
        SoftmaxAttentionBackwardArgs a;
        set_attention_inputs<Cpu>(a, q, q_strides, k, k_strides, v, v_strides, problems, n, key_dim, value_dim, t);
        set_attention_gradients<Cpu>(a, dout, dout_strides, dq, dk, dv, t);
        a.scale = scale;
        a.causal = causal;
        Cpu::run(threads, a, t, 3 * softmax_attention_work(problems, n, key_dim, value_dim));
      },
      {"dout", "dout_strides", "q", "q_strides", "k", "k_strides", "v", "v_strides", "dq", "dk", "dv", "problems",
       "n", "key_dim", "value_dim", "dtype", "scale", "causal", "threads"},
      "dq, dk, dv (contiguous, the shapes of q, k, v) of softmax_attention_forward for the gradient\n"
      "dout [problems, n, value_dim]; the probabilities are recomputed from q and k.");
}

}  // namespace pynorm
