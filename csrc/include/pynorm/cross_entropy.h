// Cross-entropy of logits against integer labels, one row (one position) at a time, CPU only.
// For row r with logits x_r0 .. x_r(C-1) and label y_r in [0, C):
//
//   lse_r = m_r + log sum_c exp(x_rc - m_r),   m_r = max_c x_rc
//   loss_r = lse_r - x_r,y_r
//
// Backward (the softmax recomputed from the logits, nothing saved), for the gradient dloss_r:
//
//   dx_rc = dloss_r (exp(x_rc - lse_r) - [c == y_r])
//
// Rows are independent: results do not depend on the thread count.
#pragma once
#include "pynorm/common.h"

namespace pynorm {

struct CrossEntropyForwardArgs {
  int64_t rows = 0, classes = 0;
  const void* logits = nullptr;  // [rows, classes], last axis contiguous
  int64_t logits_row_stride = 0;  // elements
  const int64_t* labels = nullptr;  // [rows], each in [0, classes) (the caller checks)
  void* loss = nullptr;             // contiguous [rows], the logits' dtype
  int threads = 1;
};

struct CrossEntropyBackwardArgs {
  int64_t rows = 0, classes = 0;
  const void* dloss = nullptr;  // [rows], the logits' dtype
  int64_t dloss_stride = 0;     // elements; 0: one gradient for every row (a mean's 1/rows)
  const void* logits = nullptr;
  int64_t logits_row_stride = 0;
  const int64_t* labels = nullptr;
  void* dlogits = nullptr;  // contiguous [rows, classes]
  int threads = 1;
};

}  // namespace pynorm
