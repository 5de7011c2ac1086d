// The form of a call description, shared by both modules' bindings.
//
// pynorm/_array.py checks a call once (shapes, dtypes, parameters, statistics, out=) and passes
// its description by keyword: for every array a pointer argument plus its strides in elements,
// the sizes, the dtype code, the op's parameters and flags. pynorm._core (CPU) and pynorm._cuda
// take the very same keywords; they differ only in what a pointer argument holds and in the one
// keyword that says where to run:
//
//   * _core: a pointer argument is the NumPy array itself (its data pointer; the region the
//     description says the kernel touches is checked to lie inside the array), `threads=` the
//     requested thread count (0: the global setting);
//   * _cuda: a pointer argument is the device address as an int, `stream=(device, stream)` the
//     device index and the cudaStream_t address.
//
// Optional arrays are None. Each op's binding is written once, as a template over the backend
// (Cpu in arrays.h, Cuda in cuda_common.h): <op>_binding.h.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <exception>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "pynorm/common.h"

namespace pynorm {
namespace py = pybind11;

// The dtype code of a description (an index into kDTypes).
inline DType dtype_from_code(int code, const char* module) {
  if (code < 0 || code >= kNumDTypes)
    throw py::value_error(std::string(module) + ": unknown dtype code " + std::to_string(code));
  return static_cast<DType>(code);
}

inline void require_sizes(std::initializer_list<int64_t> sizes, const char* module) {
  for (int64_t s : sizes)
    if (s < 0) throw py::value_error(std::string(module) + ": negative size");
}

// The elements a kernel touches in one array: up to three axes of (size, stride in elements).
struct Region {
  std::array<int64_t, 3> size{1, 1, 1}, stride{0, 0, 0};
  bool empty() const { return size[0] == 0 || size[1] == 0 || size[2] == 0; }
};
inline Region vector_region(int64_t n) { return {{n, 1, 1}, {1, 0, 0}}; }
inline Region rows_region(int64_t rows, int64_t dim, int64_t row_stride) { return {{rows, dim, 1}, {row_stride, 1, 0}}; }
inline Region matrices_region(int64_t problems, int64_t rows, int64_t cols, const std::array<int64_t, 2>& strides) {
  return {{problems, rows, cols}, {strides[0], strides[1], 1}};
}

// The row fields every row-wise forward kernel takes (rows, dim, x, x_row_stride, y): x is
// [rows, dim] with a contiguous last axis, y contiguous.
template <class B, class Args>
void set_forward_rows(Args& a, const py::object& x, int64_t x_row_stride, const py::object& y, int64_t rows,
                      int64_t dim, DType t) {
  require_sizes({rows, dim}, B::module);
  a.rows = rows;
  a.dim = dim;
  a.x = B::in(x, rows_region(rows, dim, x_row_stride), t, "x");
  a.x_row_stride = x_row_stride;
  a.y = B::out(y, rows_region(rows, dim, dim), t, "y");
}

// The same for a row-wise backward kernel: dy and x in, dx (contiguous) out.
template <class B, class Args>
void set_backward_rows(Args& a, const py::object& dy, int64_t dy_row_stride, const py::object& x, int64_t x_row_stride,
                       const py::object& dx, int64_t rows, int64_t dim, DType t) {
  require_sizes({rows, dim}, B::module);
  a.rows = rows;
  a.dim = dim;
  a.dy = B::in(dy, rows_region(rows, dim, dy_row_stride), t, "dy");
  a.dy_row_stride = dy_row_stride;
  a.x = B::in(x, rows_region(rows, dim, x_row_stride), t, "x");
  a.x_row_stride = x_row_stride;
  a.dx = B::out(dx, rows_region(rows, dim, dim), t, "dx");
}

// Parameter gradients are returned exactly for the parameters that were given.
inline void require_matching_gradient(const void* weight, const void* dweight, const char* module) {
  if ((weight == nullptr) != (dweight == nullptr))
    throw py::value_error(std::string(module) + ": dweight must be given exactly when weight is");
}

// def_call: registers `f` as the keyword-only function `name` of the module, its arguments
// named by `names` (in f's parameter order) and documented by `doc` (help() shows the signature).
//
// Not pybind11's m.def(..., py::kw_only(), "x"_a, ...): pybind11 matches each keyword by
// interning the argument's name anew on every call, which for the 10-20 arguments of a call
// description costs more than the rest of a small call. Here the names are interned once and
// matched by pointer (CPython interns the keywords written in a call); values are converted with
// pybind11's casters, and errors become the same Python exceptions as under m.def.
template <class... Args> struct CallRecord {
  std::string name, doc;
  std::array<py::object, sizeof...(Args)> names;
  void (*f)(Args...);
  PyMethodDef def;
};

// values[i] as T; a TypeError naming the argument if it cannot be.
template <class T> T cast_argument(PyObject* value, const py::object& name, const std::string& function) {
  try {
    return py::handle(value).cast<T>();
  } catch (py::cast_error&) {
    throw py::type_error(function + "(): " + name.cast<std::string>() + " has the wrong type: " +
                         py::str(py::type::handle_of(py::handle(value))).cast<std::string>() + " (see help(" +
                         function + "))");
  }
}

template <class... Args, size_t... I>
void invoke(const CallRecord<Args...>& record, PyObject* const* values, std::index_sequence<I...>) {
  record.f(cast_argument<std::decay_t<Args>>(values[I], record.names[I], record.name)...);
}

template <class... Args>
PyObject* call_with_keywords(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  auto* record = static_cast<CallRecord<Args...>*>(PyCapsule_GetPointer(self, nullptr));
  constexpr size_t n = sizeof...(Args);
  PyObject* values[n > 0 ? n : 1] = {};
  const Py_ssize_t given = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  if (PyVectorcall_NARGS(nargs) != 0)
    return PyErr_Format(PyExc_TypeError, "%s() takes keyword arguments only", record->name.c_str());
  for (Py_ssize_t i = 0; i < given; ++i) {
    PyObject* key = PyTuple_GET_ITEM(kwnames, i);
    size_t j = 0;
    while (j < n && record->names[j].ptr() != key) ++j;
    if (j == n) {  // a keyword CPython did not intern: compare the text
      j = 0;
      while (j < n && PyUnicode_Compare(record->names[j].ptr(), key) != 0) ++j;
    }
    if (j == n) return PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", record->name.c_str(), key);
    values[j] = args[i];
  }
  for (size_t j = 0; j < n; ++j)
    if (!values[j])
      return PyErr_Format(PyExc_TypeError, "%s() missing keyword argument '%U'", record->name.c_str(), record->names[j].ptr());
  try {
    invoke(*record, values, std::index_sequence_for<Args...>{});
  } catch (py::error_already_set& e) {
    e.restore();
    return nullptr;
  } catch (py::builtin_exception& e) {
    e.set_error();
    return nullptr;
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
  Py_RETURN_NONE;
}

template <class... Args>
void def_call(py::module_& m, const char* name, void (*f)(Args...), const std::array<const char*, sizeof...(Args)>& names,
              const char* doc) {
  auto* record = new CallRecord<Args...>();  // lives as long as the function object (the capsule frees it)
  record->name = name;
  record->f = f;
  record->doc = std::string(name) + "($module, /, *";
  for (size_t j = 0; j < names.size(); ++j) {
    record->names[j] = py::reinterpret_steal<py::object>(PyUnicode_InternFromString(names[j]));
    record->doc += std::string(", ") + names[j];
  }
  record->doc += ")\n--\n\n" + std::string(doc);
  record->def = {record->name.c_str(), reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&call_with_keywords<Args...>)),
                 METH_FASTCALL | METH_KEYWORDS, record->doc.c_str()};
  py::capsule owner(record, [](void* p) { delete static_cast<CallRecord<Args...>*>(p); });
  PyObject* function = PyCFunction_NewEx(&record->def, owner.ptr(), m.attr("__name__").ptr());
  if (!function) throw py::error_already_set();
  m.add_object(name, py::reinterpret_steal<py::object>(function));
}

}  // namespace pynorm
