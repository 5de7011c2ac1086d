// pynorm._core's LayerNorm/RMSNorm calls: the binding of norm_binding.h on the CPU backend.
#include "arrays.h"
#include "registry.h"
#include "norm_binding.h"

namespace pynorm {

PYNORM_BINDINGS(norm) { bind_norm<Cpu>(m); }

}  // namespace pynorm
