// Softmax (scaled dot-product) attention, causal or not, CPU only. For each problem (one
// (batch, head) pair; leading axes are flattened into `problems`) with rows q_i, k_i of length
// dk and v_i of length dv, i = 0..n-1, and j running over all tokens (non-causal) or j <= i
// (causal):
//
//   s_ij = scale * (q_i . k_j),   P_ij = exp(s_ij - max_j s_ij) / sum_j exp(s_ij - max_j s_ij)
//   out_i = sum_j P_ij v_j
//
// Backward (P recomputed from q and k, never saved), with dP_ij = dout_i . v_j and
// D_i = sum_j P_ij dP_ij:
//
//   dS_ij = scale * P_ij (dP_ij - D_i)
//   dq_i = sum_j dS_ij k_j,   dk_j = sum_i dS_ij q_i,   dv_j = sum_i P_ij dout_i
//
// Scratch is O(n) per thread (blocks of query rows), never kept between calls. Results do not
// depend on the thread count (problems are independent and run in parallel).
#pragma once
#include "pynorm/common.h"
#include "pynorm/linear_attention.h"  // MatrixBatch

namespace pynorm {

struct SoftmaxAttentionForwardArgs {
  int64_t problems = 0, n = 0, dk = 0, dv = 0;
  MatrixBatch q, k;     // [problems, n, dk]
  MatrixBatch v;        // [problems, n, dv]
  void* out = nullptr;  // contiguous [problems, n, dv]
  double scale = 1.0;
  bool causal = false;
  int threads = 1;
};

struct SoftmaxAttentionBackwardArgs {
  int64_t problems = 0, n = 0, dk = 0, dv = 0;
  MatrixBatch dout;                       // [problems, n, dv]
  MatrixBatch q, k;                       // [problems, n, dk]
  MatrixBatch v;                          // [problems, n, dv]
  void *dq = nullptr, *dk_out = nullptr;  // contiguous [problems, n, dk]
  void* dv_out = nullptr;                 // contiguous [problems, n, dv]
  double scale = 1.0;
  bool causal = false;
  int threads = 1;
};

// Multiply-adds of one forward call (about): what the bindings give threads_for, so that small
// calls stay on one thread.
inline int64_t softmax_attention_work(int64_t problems, int64_t n, int64_t dk, int64_t dv) {
  return problems * n * (n * (dk + dv + 4) + dk + dv);
}

}  // namespace pynorm
