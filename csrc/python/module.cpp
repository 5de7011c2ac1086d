// pynorm._core: the CPU kernels. One register_<op>() per op file; no math here.
#include <omp.h>
#include <pybind11/stl.h>

#include <stdexcept>

#include "arrays.h"
#include "pynorm/dispatch.h"

namespace pynorm {
void register_norm(py::module_& m);
void register_dyt(py::module_& m);
void register_linear_attention(py::module_& m);
void register_matmul(py::module_& m);
void register_merged_attention(py::module_& m);
}  // namespace pynorm

PYBIND11_MODULE(_core, m) {
  namespace py = pybind11;
  m.doc() = "pynorm's compiled CPU kernels (use the functions in the pynorm package instead)";
  m.attr("__version__") = PYNORM_VERSION;
  m.attr("openmp_version") = _OPENMP;
  m.def("simd_level", &pynorm::simd_level, "The instruction set of the kernels in use.");
  m.def("compiled_simd_levels", &pynorm::compiled_simd_levels);
  m.def("supported_simd_levels", &pynorm::supported_simd_levels);
  m.def("set_simd_level", [](const std::string& name) {
    try {
      pynorm::set_simd_level(name);
    } catch (const std::invalid_argument& e) {
      throw py::value_error(e.what());
    }
  });
  m.def("set_num_threads", &pynorm::set_num_threads);
  m.def("get_num_threads", &pynorm::get_num_threads);
  m.def("omp_max_threads", [] { return omp_get_max_threads(); });
  pynorm::register_norm(m);
  pynorm::register_dyt(m);
  pynorm::register_linear_attention(m);
  pynorm::register_matmul(m);
  pynorm::register_merged_attention(m);
}
