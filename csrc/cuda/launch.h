// The CUDA kernels' host entry points, callable from plain C++ (the bindings include no CUDA
// header). Each launches on `stream` (a cudaStream_t as void*) on the current device and returns
// nullptr on success or CUDA's error string. The argument structs are the CPU kernels' own
// (pynorm/*.h); their `threads` field is ignored here. Pointers are device pointers.
#pragma once
#include "pynorm/dyt.h"
#include "pynorm/linear_attention.h"
#include "pynorm/norm.h"

namespace pynorm {
namespace cuda {

const char* norm_forward(const NormForwardArgs& a, DType dtype, void* stream);
const char* norm_backward(const NormBackwardArgs& a, DType dtype, void* stream);
const char* dyt_forward(const DytForwardArgs& a, DType dtype, void* stream);
const char* dyt_backward(const DytBackwardArgs& a, DType dtype, void* stream);
const char* linear_attention_forward(const LinearAttentionForwardArgs& a, DType dtype, void* stream);
const char* linear_attention_backward(const LinearAttentionBackwardArgs& a, DType dtype, void* stream);

// Runtime state (csrc/cuda/runtime.cu). available() checks once that a device can be used and
// otherwise gives the reason ("no CUDA-capable device is detected", a driver too old, ...).
bool available(const char** reason);
int device_count();
// Makes `device` current for the calling thread; restores the previous device when destroyed.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  const char* error() const { return error_; }
 private:
  int previous_ = -1;
  const char* error_ = nullptr;
};

}  // namespace cuda
}  // namespace pynorm
