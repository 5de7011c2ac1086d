// pynorm._cuda's linear-attention calls: the binding of linear_attention_binding.h on the CUDA backend.
#include "cuda_common.h"
#include "registry.h"
#include "linear_attention_binding.h"

namespace pynorm {

PYNORM_BINDINGS(cuda_linear_attention) { bind_linear_attention<Cuda>(m); }

}  // namespace pynorm
