// pynorm._core's DyT calls: the binding of dyt_binding.h on the CPU backend.
#include "arrays.h"
#include "registry.h"
#include "dyt_binding.h"

namespace pynorm {

PYNORM_BINDINGS(dyt) { bind_dyt<Cpu>(m); }

}  // namespace pynorm
