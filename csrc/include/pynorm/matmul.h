// Products of a tall matrix (many rows) with a small one, on pynorm's threads: the
// projections and weight gradients of the trainer's attention layers, which NumPy's BLAS can
// only run on one thread there (its threads and pynorm's OpenMP threads fight for the cores).
//
//   matmul:    out[m x n] = a[m x k] b[k x n] (+ add[m x n])
//   matmul_tn: out[m x n] = a[r x m]^T b[r x n] = sum over rows i of a_i^T b_i
//
// The inputs' rows are strided (last axis contiguous), out is contiguous. Arithmetic is float32
// for float32/float16/bfloat16 storage and float64 for float64. Results do not depend on the
// thread count: matmul's rows are independent, matmul_tn sums a fixed partition of the rows.
#pragma once
#include "pynorm/common.h"

namespace pynorm {

struct StridedMatrix {
  const void* data = nullptr;
  int64_t row_stride = 0;  // in elements
};

struct MatmulArgs {
  int64_t m = 0, k = 0, n = 0;
  StridedMatrix a, b;  // [m x k], [k x n]
  StridedMatrix add;   // [m x n], or data == nullptr
  void* out = nullptr;
  int threads = 1;
};

struct MatmulTnArgs {
  int64_t rows = 0, m = 0, n = 0;
  StridedMatrix a, b;  // [rows x m], [rows x n]
  void* out = nullptr;
  int threads = 1;
};

inline int64_t matmul_work(int64_t rows, int64_t in_cols, int64_t out_cols, int64_t itemsize) {
  return rows * (in_cols + out_cols) * itemsize;
}

}  // namespace pynorm
