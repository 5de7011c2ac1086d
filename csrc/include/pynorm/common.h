// Shared vocabulary of the kernels: element types and the thread-count convention.
#pragma once
#include <cstdint>

namespace pynorm {

// Storage types. Kernels accumulate in float for float32/float16/bfloat16 and in double for
// float64. The order is the index into the per-dtype function tables.
enum class DType : int { float32 = 0, float64 = 1, float16 = 2, bfloat16 = 3 };
constexpr int kNumDTypes = 4;

inline int itemsize(DType t) {
  switch (t) {
    case DType::float32: return 4;
    case DType::float64: return 8;
    default: return 2;
  }
}
// The type of the statistics and partial sums that go with a storage type.
inline DType accumulate_dtype(DType t) { return t == DType::float64 ? DType::float64 : DType::float32; }

}  // namespace pynorm
