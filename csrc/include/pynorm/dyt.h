// Dynamic Tanh (Zhu et al. 2025): y = weight * tanh(alpha * x) + bias, alpha one scalar.
// Backward, with t = tanh(alpha x) and s = 1 - t^2:
//   dx = dy * weight * alpha * s,  dalpha = sum(dy * weight * s * x),
//   dweight = sum_rows(dy * t),    dbias = sum_rows(dy).
#pragma once
#include "pynorm/common.h"

namespace pynorm {

struct DytForwardArgs {
  int64_t rows = 0, dim = 0;
  const void* x = nullptr;  int64_t x_row_stride = 0;
  void* y = nullptr;                                   // contiguous [rows, dim]
  const void* weight = nullptr, *bias = nullptr;       // [dim] of the storage type, or null
  double alpha = 0.5;
  int threads = 1;
};

struct DytBackwardArgs {
  int64_t rows = 0, dim = 0;
  const void* dy = nullptr;  int64_t dy_row_stride = 0;
  const void* x = nullptr;   int64_t x_row_stride = 0;
  const void* weight = nullptr;                        // or null
  double alpha = 0.5;
  void* dx = nullptr;                                  // contiguous [rows, dim]
  void* dalpha = nullptr;                              // one element of the accumulate type
  void* dweight = nullptr, *dbias = nullptr;           // [dim] of the storage type, or null
  int threads = 1;
};

}  // namespace pynorm
