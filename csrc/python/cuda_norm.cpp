// pynorm._cuda's LayerNorm/RMSNorm calls: the binding of norm_binding.h on the CUDA backend.
#include "cuda_common.h"
#include "norm_binding.h"

namespace pynorm {

void register_cuda_norm(py::module_& m) { bind_norm<Cuda>(m); }

}  // namespace pynorm
