// The CUDA runtime's state as the bindings see it: is a device usable (and if not, why),
// and a guard that makes the array's device current for one call.
#include <cuda_runtime.h>

#include "launch.h"

namespace pynorm {
namespace cuda {

bool available(const char** reason) {
  static cudaError_t status = [] {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e == cudaSuccess && count == 0) e = cudaErrorNoDevice;
    return e;
  }();
  if (reason) *reason = status == cudaSuccess ? nullptr : cudaGetErrorString(status);
  return status == cudaSuccess;
}

int device_count() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}

DeviceGuard::DeviceGuard(int device) {
  cudaError_t e = cudaGetDevice(&previous_);
  if (e == cudaSuccess && device >= 0 && device != previous_) e = cudaSetDevice(device);
  else if (e == cudaSuccess) previous_ = -1;  // nothing to restore
  if (e != cudaSuccess) {
    error_ = cudaGetErrorString(e);
    previous_ = -1;
  }
}

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0) cudaSetDevice(previous_);
}

}  // namespace cuda
}  // namespace pynorm
