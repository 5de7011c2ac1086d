// P1's attention with its projections fused in: for each problem (tokens are rows of x),
//
//   out = scale * Q (K^T Vv) (+ x),   Q = x W^T, K = x, Vv = x V^T
//
// i.e. (V E E^T W E)^T for the paper's E = x^T, optionally plus the residual. The backward
// returns dx (plus dout with the residual) and dW, dV summed over all problems. One problem's
// rows, projections and products stay in cache: x is read once, out written once, instead of
// passing q, v and their gradients through memory. Non-causal, unnormalised.
#pragma once
#include "pynorm/common.h"
#include "pynorm/linear_attention.h"  // MatrixBatch

namespace pynorm {

struct MergedAttentionArgs {
  int64_t problems = 0, n = 0, d = 0;
  MatrixBatch x;                          // [problems, n, d]
  const void *w = nullptr, *v = nullptr;  // contiguous [d, d]
  void* out = nullptr;                    // contiguous [problems, n, d]
  double scale = 1.0;
  bool residual = false;
  int threads = 1;
};

struct MergedAttentionBackwardArgs {
  int64_t problems = 0, n = 0, d = 0;
  MatrixBatch dout, x;                    // [problems, n, d]
  const void *w = nullptr, *v = nullptr;  // contiguous [d, d]
  void* dx = nullptr;                     // contiguous [problems, n, d]
  void *dw = nullptr, *dv = nullptr;      // contiguous [d, d]
  double scale = 1.0;
  bool residual = false;
  int threads = 1;
};

inline int64_t merged_attention_work(int64_t problems, int64_t n, int64_t d, int64_t itemsize) {
  return problems * n * d * 4 * itemsize;
}

}  // namespace pynorm
