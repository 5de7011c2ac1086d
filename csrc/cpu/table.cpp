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
      PYNORM_PER_DTYPE(norm_forward),
      PYNORM_PER_DTYPE(norm_backward),
      PYNORM_PER_DTYPE(dyt_forward),
      PYNORM_PER_DTYPE(dyt_backward),
      PYNORM_PER_DTYPE(linear_attention_forward),
      PYNORM_PER_DTYPE(linear_attention_backward),
      PYNORM_PER_DTYPE(matmul),
      PYNORM_PER_DTYPE(matmul_tn),
      PYNORM_PER_DTYPE(merged_attention_forward),
      PYNORM_PER_DTYPE(merged_attention_backward),
      PYNORM_PER_DTYPE(softmax_attention_forward),
      PYNORM_PER_DTYPE(softmax_attention_backward),
      PYNORM_PER_DTYPE(cross_entropy_forward),
      PYNORM_PER_DTYPE(cross_entropy_backward),
  };
  return table;
}

}  // namespace PYNORM_ISA
}  // namespace pynorm
