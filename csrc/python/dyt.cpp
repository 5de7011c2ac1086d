// pynorm._core's DyT calls: the binding of dyt_binding.h on the CPU backend.
#include "arrays.h"
#include "dyt_binding.h"

namespace pynorm {

void register_dyt(py::module_& m) { bind_dyt<Cpu>(m); }

}  // namespace pynorm
