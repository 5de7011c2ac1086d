// pynorm._core's linear-attention calls: the binding of linear_attention_binding.h on the CPU backend.
#include "arrays.h"
#include "linear_attention_binding.h"

namespace pynorm {

void register_linear_attention(py::module_& m) { bind_linear_attention<Cpu>(m); }

}  // namespace pynorm
