// Shared vocabulary of the kernels: element types and the thread-count convention.
#pragma once
#include <cstdint>

namespace pynorm {

// Storage types. Kernels accumulate in float for float32/float16/bfloat16 and in double for
// float64. The order is the index into the per-dtype function tables.
enum class DType : int { float32 = 0, float64 = 1, float16 = 2, bfloat16 = 3 };
constexpr int kNumDTypes = 4;

// The one table of the storage types: the CPU module exports it (pynorm._core.dtypes) and
// pynorm/_array.py builds its dtype codes from that export, so Python and C++ cannot disagree.
struct DTypeInfo {
  DType type;
  const char* name;   // NumPy's name (bfloat16: ml_dtypes')
  int itemsize;       // bytes
  DType accumulate;   // the type of the statistics and partial sums that go with it
};
constexpr DTypeInfo kDTypes[kNumDTypes] = {
    {DType::float32, "float32", 4, DType::float32},
    {DType::float64, "float64", 8, DType::float64},
    {DType::float16, "float16", 2, DType::float32},
    {DType::bfloat16, "bfloat16", 2, DType::float32},
};

constexpr bool dtype_table_in_enum_order() {
  for (int i = 0; i < kNumDTypes; ++i)
    if (static_cast<int>(kDTypes[i].type) != i) return false;
  return true;
}
static_assert(dtype_table_in_enum_order(), "kDTypes[i] must describe DType i");

inline int itemsize(DType t) { return kDTypes[static_cast<int>(t)].itemsize; }
inline DType accumulate_dtype(DType t) { return kDTypes[static_cast<int>(t)].accumulate; }

}  // namespace pynorm
