// pynorm._cuda's DyT calls: the binding of dyt_binding.h on the CUDA backend.
#include "cuda_common.h"
#include "registry.h"
#include "dyt_binding.h"

namespace pynorm {

PYNORM_BINDINGS(cuda_dyt) { bind_dyt<Cuda>(m); }

}  // namespace pynorm
