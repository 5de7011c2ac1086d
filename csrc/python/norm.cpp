// pynorm._core's LayerNorm/RMSNorm calls: the binding of norm_binding.h on the CPU backend.
#include "arrays.h"
#include "norm_binding.h"

namespace pynorm {

void register_norm(py::module_& m) { bind_norm<Cpu>(m); }

}  // namespace pynorm
