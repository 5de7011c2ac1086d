// LayerNorm and its two halves (projection = centring, scaling = division by the RMS).
// RMSNorm is LayerNorm with center=false, scale=true: one kernel serves both.
//
//   mu   = center ? mean(x) : 0
//   rstd = scale  ? 1 / sqrt(mean((x - mu)^2) + eps) : 1
//   y    = (x - mu) * rstd * weight + bias            (weight, bias optional)
//
// Rows are the leading axes flattened; the last axis (dim) is contiguous.
#pragma once
#include "pynorm/common.h"

namespace pynorm {

struct NormForwardArgs {
  int64_t rows = 0, dim = 0;
  const void* x = nullptr;  int64_t x_row_stride = 0;  // in elements
  void* y = nullptr;                                   // contiguous [rows, dim]
  const void* weight = nullptr;                        // [dim] of the storage type, or null
  const void* bias = nullptr;                          // [dim] of the storage type, or null
  void* mean = nullptr;                                // [rows] of the accumulate type, or null
  void* rstd = nullptr;                                // [rows] of the accumulate type, or null
  double eps = 1e-5;
  bool center = true, scale = true;
  int threads = 1;
};

struct NormBackwardArgs {
  int64_t rows = 0, dim = 0;
  const void* dy = nullptr;  int64_t dy_row_stride = 0;
  const void* x = nullptr;   int64_t x_row_stride = 0;
  const void* weight = nullptr;                        // or null
  const void* mean = nullptr;                          // saved statistics, or null to recompute
  const void* rstd = nullptr;
  void* dx = nullptr;                                  // contiguous [rows, dim]
  void* dweight = nullptr;                             // [dim] of the storage type, or null
  void* dbias = nullptr;                               // [dim] of the storage type, or null
  double eps = 1e-5;
  bool center = true, scale = true;
  int threads = 1;
};

}  // namespace pynorm
