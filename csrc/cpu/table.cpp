// This ISA's kernel table: one entry per op and storage type (order of pynorm::DType).
#include "pynorm/dispatch.h"

#include "kernels.h"

#define PYNORM_STRINGIFY2(x) #x
#define PYNORM_STRINGIFY(x) PYNORM_STRINGIFY2(x)
#define PYNORM_PER_DTYPE(op) {&op<float>, &op<double>, &op<Half>, &op<BFloat16>}

namespace pynorm {
namespace PYNORM_ISA {

const KernelTable& kernel_table() {
  static const KernelTable table = {
      PYNORM_STRINGIFY(PYNORM_ISA),
#define PYNORM_TABLE_ENTRY(op, Args) PYNORM_PER_DTYPE(op),
      PYNORM_CPU_KERNELS(PYNORM_TABLE_ENTRY)
#undef PYNORM_TABLE_ENTRY
  };
  return table;
}

}  // namespace PYNORM_ISA
}  // namespace pynorm
