// pynorm._cuda: the CUDA kernels. Each op's binding file registers its functions (registry.h);
// no math here.
#include <pybind11/pybind11.h>

#include "cuda_common.h"
#include "registry.h"

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
  pynorm::bind_registered(m);
}
