// pynorm._core's linear-attention calls: the binding of linear_attention_binding.h on the CPU backend.
#include "arrays.h"
#include "registry.h"
#include "linear_attention_binding.h"

namespace pynorm {

PYNORM_BINDINGS(linear_attention) { bind_linear_attention<Cpu>(m); }

}  // namespace pynorm
