// The kernel templates each per-ISA copy defines (one per entry of PYNORM_CPU_KERNELS);
// each kernel's .cpp instantiates its own for the four storage types, table.cpp takes their
// addresses.
#pragma once
#include "pynorm/dispatch.h"  // the kernel list and the argument structs
#include "simd.h"

namespace pynorm {
namespace PYNORM_ISA {

#define PYNORM_DECLARE_KERNEL(op, Args) template <class T> void op(const Args&);
PYNORM_CPU_KERNELS(PYNORM_DECLARE_KERNEL)
#undef PYNORM_DECLARE_KERNEL

}  // namespace PYNORM_ISA
}  // namespace pynorm

// The explicit instantiations of one kernel for the four storage types (inside
// pynorm::PYNORM_ISA, at the end of the kernel's .cpp file).
#define PYNORM_INSTANTIATE(op, Args)     \
  template void op<float>(const Args&);  \
  template void op<double>(const Args&); \
  template void op<Half>(const Args&);   \
  template void op<BFloat16>(const Args&);
