// The form of a call description, shared by both modules' bindings.
//
// pynorm/_array.py checks a call once (shapes, dtypes, parameters, statistics, out=) and passes
// its description by keyword: for every array a pointer argument plus its strides in elements,
// the sizes, the dtype code, the op's parameters and flags. pynorm._core (CPU) and pynorm._cuda
// take the very same keywords; they differ only in what a pointer argument holds and in the one
// keyword that says where to run:
//
//   * _core: a pointer argument is the NumPy array itself (its data pointer; the region the
//     description says the kernel touches is checked to lie inside the array), `threads=` the
//     requested thread count (0: the global setting);
//   * _cuda: a pointer argument is the device address as an int, `stream=(device, stream)` the
//     device index and the cudaStream_t address.
//
// Optional arrays are None. Each op's binding is written once, as a template over the backend
// (Cpu in arrays.h, Cuda in cuda_common.h): <op>_binding.h.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "pynorm/common.h"

namespace pynorm {
namespace py = pybind11;
using namespace pybind11::literals;

// The dtype code of a description (an index into kDTypes).
inline DType dtype_from_code(int code, const char* module) {
  if (code < 0 || code >= kNumDTypes)
    throw py::value_error(std::string(module) + ": unknown dtype code " + std::to_string(code));
  return static_cast<DType>(code);
}

inline void require_sizes(std::initializer_list<int64_t> sizes, const char* module) {
  for (int64_t s : sizes)
    if (s < 0) throw py::value_error(std::string(module) + ": negative size");
}

// The elements a kernel touches in one array: up to three axes of (size, stride in elements).
struct Region {
  std::array<int64_t, 3> size{1, 1, 1}, stride{0, 0, 0};
  bool empty() const { return size[0] == 0 || size[1] == 0 || size[2] == 0; }
};
inline Region vector_region(int64_t n) { return {{n, 1, 1}, {1, 0, 0}}; }
inline Region rows_region(int64_t rows, int64_t dim, int64_t row_stride) { return {{rows, dim, 1}, {row_stride, 1, 0}}; }
inline Region matrices_region(int64_t problems, int64_t rows, int64_t cols, const std::array<int64_t, 2>& strides) {
  return {{problems, rows, cols}, {strides[0], strides[1], 1}};
}

// Parameter gradients are returned exactly for the parameters that were given.
inline void require_matching_gradient(const void* weight, const void* dweight, const char* module) {
  if ((weight == nullptr) != (dweight == nullptr))
    throw py::value_error(std::string(module) + ": dweight must be given exactly when weight is");
}

}  // namespace pynorm
