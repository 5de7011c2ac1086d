// pynorm._cuda's linear-attention calls: the binding of linear_attention_binding.h on the CUDA backend.
#include "cuda_common.h"
#include "linear_attention_binding.h"

namespace pynorm {

void register_cuda_linear_attention(py::module_& m) { bind_linear_attention<Cuda>(m); }

}  // namespace pynorm
