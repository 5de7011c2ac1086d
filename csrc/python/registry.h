// Bindings register themselves where they are defined, as ATen's REGISTER_DISPATCH does: a
// binding file defines its functions in PYNORM_BINDINGS(name) { ... m.def(...) ... }, and the
// module's init (module.cpp, cuda_module.cpp) runs every registered block in name order, so
// adding an op edits no central list. Each extension module links its own binding files and
// has its own registry (pybind11 builds modules with hidden symbols).
#pragma once
#include <pybind11/pybind11.h>

#include <map>
#include <string>

namespace pynorm {

using BindFunction = void (*)(pybind11::module_&);

inline std::map<std::string, BindFunction>& registered_bindings() {
  static std::map<std::string, BindFunction> all;  // filled before main by the blocks' static objects
  return all;
}

struct RegisterBindings {
  RegisterBindings(const char* name, BindFunction f) { registered_bindings().emplace(name, f); }
};

inline void bind_registered(pybind11::module_& m) {
  for (const auto& entry : registered_bindings()) entry.second(m);
}

}  // namespace pynorm

#define PYNORM_BINDINGS(name)                                                                 \
  static void register_##name(pybind11::module_& m);                                          \
  static const ::pynorm::RegisterBindings register_##name##_at_load(#name, &register_##name); \
  static void register_##name(pybind11::module_& m)
