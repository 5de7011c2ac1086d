// pynorm._cuda: the CUDA kernels. One register_cuda_<op>() per op file; no math here.
#include <pybind11/pybind11.h>

#include "cuda_common.h"

namespace pynorm {
void register_cuda_norm(py::module_& m);
void register_cuda_dyt(py::module_& m);
void register_cuda_linear_attention(py::module_& m);
}  // namespace pynorm

PYBIND11_MODULE(_cuda, m) {
  namespace py = pybind11;
  m.doc() = "pynorm's compiled CUDA kernels (use the functions in the pynorm package instead)";
  m.attr("__version__") = PYNORM_VERSION;
  m.attr("architectures") = PYNORM_CUDA_ARCHITECTURES;  // what the module was compiled for
  m.def(
      "status",
      [] {
        const char* reason = nullptr;
        const bool ok = pynorm::cuda::available(&reason);
        return py::make_tuple(ok, ok ? std::string() : std::string(reason));
      },
      "(usable, reason): whether a CUDA device can run the kernels, and why not.");
  m.def("device_count", &pynorm::cuda::device_count, "The number of CUDA devices.");
  pynorm::register_cuda_norm(m);
  pynorm::register_cuda_dyt(m);
  pynorm::register_cuda_linear_attention(m);
}
