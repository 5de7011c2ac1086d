// pynorm._cuda's DyT calls: the binding of dyt_binding.h on the CUDA backend.
#include "cuda_common.h"
#include "dyt_binding.h"

namespace pynorm {

void register_cuda_dyt(py::module_& m) { bind_dyt<Cuda>(m); }

}  // namespace pynorm
