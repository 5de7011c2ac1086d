// pynorm._core: the CPU kernels. Each op's binding file registers its functions (registry.h);
// no math here.
#include <pybind11/stl.h>

#include <stdexcept>

#include "arrays.h"
#include "registry.h"

namespace pynorm {

// kDTypes as ((name, code, itemsize, accumulate name), ...): pynorm/_array.py's dtype table.
py::tuple dtype_table() {
  py::tuple table(kNumDTypes);
  for (int i = 0; i < kNumDTypes; ++i)
    table[i] = py::make_tuple(kDTypes[i].name, i, kDTypes[i].itemsize, kDTypes[int(kDTypes[i].accumulate)].name);
  return table;
}
}  // namespace pynorm

PYBIND11_MODULE(_core, m) {
  namespace py = pybind11;
  using namespace pybind11::literals;
  m.doc() = "pynorm's compiled CPU kernels (use the functions in the pynorm package instead)";
  m.attr("__version__") = PYNORM_VERSION;
  m.attr("openmp_version") = _OPENMP;
  m.attr("dtypes") = pynorm::dtype_table();
  m.def("simd_level", &pynorm::simd_level, "The instruction set of the kernels in use.");
  m.def("compiled_simd_levels", &pynorm::compiled_simd_levels, "Every instruction set built into the module.");
  m.def("supported_simd_levels", &pynorm::supported_simd_levels, "The instruction sets this CPU can run.");
  m.def(
      "set_simd_level",
      [](const std::string& name) {
        try {
          pynorm::set_simd_level(name);
        } catch (const std::invalid_argument& e) {
          throw py::value_error(e.what());
        }
      },
      "name"_a, "Selects the kernels of an instruction set by name (ValueError if unknown or unsupported).");
  m.def("set_num_threads", &pynorm::set_num_threads, "n"_a,
        "Threads of a large kernel call (0: OpenMP's default); pynorm.set_num_threads checks n.");
  m.def("get_num_threads", &pynorm::get_num_threads, "The number of threads a large kernel call uses.");
  pynorm::bind_registered(m);
}
