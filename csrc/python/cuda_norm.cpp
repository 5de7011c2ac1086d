// pynorm._cuda's LayerNorm/RMSNorm calls: the binding of norm_binding.h on the CUDA backend.
#include "cuda_common.h"
#include "registry.h"
#include "norm_binding.h"

namespace pynorm {

PYNORM_BINDINGS(cuda_norm) { bind_norm<Cuda>(m); }

}  // namespace pynorm
