// Linear attention (no softmax), causal or not, optionally normalised. For each problem
// (one (batch, head) pair; leading axes are flattened into `problems`) with rows q_i, k_i of
// length dk and v_i of length dv, i = 0..n-1, and m_ij = 1 (non-causal) or [j <= i] (causal):
//
//   num_i = scale * sum_j m_ij (q_i . k_j) v_j
//   den_i = scale * sum_j m_ij (q_i . k_j) + eps                 (normalize only)
//   out_i = normalize ? num_i / den_i : num_i
//
// Backward, with g_i = dout_i / den_i and h_i = -(dout_i . out_i) / den_i when normalising
// (g_i = dout_i, h_i = 0 otherwise):
//
//   dq_i = scale * sum_j m_ij (g_i . v_j + h_i) k_j
//   dk_j = scale * sum_i m_ij (g_i . v_j + h_i) q_i
//   dv_j = scale * sum_i m_ij (q_i . k_j) g_i
//
// Never forms an n x n matrix: non-causal is out = Q (K^T V); causal is a chunked scan (see
// csrc/cpu/linear_attention.cpp). Results do not depend on the thread count.
#pragma once
#include "pynorm/common.h"

namespace pynorm {

// A batch of matrices: element (p, r, c) is at data[p * problem_stride + r * row_stride + c]
// (strides in elements; the last axis is contiguous).
struct MatrixBatch {
  const void* data = nullptr;
  int64_t problem_stride = 0, row_stride = 0;
};

struct LinearAttentionForwardArgs {
  int64_t problems = 0, n = 0, dk = 0, dv = 0;
  MatrixBatch q, k;                                    // [problems, n, dk]
  MatrixBatch v;                                       // [problems, n, dv]
  void* out = nullptr;                                 // contiguous [problems, n, dv]
  double scale = 1.0, eps = 1e-6;
  bool causal = false, normalize = false;
  int threads = 1;
};

struct LinearAttentionBackwardArgs {
  int64_t problems = 0, n = 0, dk = 0, dv = 0;
  MatrixBatch dout;                                    // [problems, n, dv]
  MatrixBatch q, k;                                    // [problems, n, dk]
  MatrixBatch v;                                       // [problems, n, dv]
  void* dq = nullptr, *dk_out = nullptr;               // contiguous [problems, n, dk]
  void* dv_out = nullptr;                              // contiguous [problems, n, dv]
  double scale = 1.0, eps = 1e-6;
  bool causal = false, normalize = false;
  int threads = 1;
};

// Multiply-adds of one forward call (the chunked algorithm's, about): what the bindings give
// threads_for, so that small calls stay on one thread.
inline int64_t linear_attention_work(int64_t problems, int64_t n, int64_t dk, int64_t dv, bool causal) {
  return problems * n * (2 * dk * dv + (causal ? 32 * (dk + dv) : 0) + dk + dv);
}

}  // namespace pynorm
