// pynorm._core's cross-entropy (CPU only; the call form of calls.h).
#include "pynorm/cross_entropy.h"

#include "arrays.h"
#include "registry.h"

namespace pynorm {

namespace {

// The labels: int64, one per row in [0, classes) (checked as 8-byte elements: the region check knows storage
// types only, and float64's itemsize is int64's).
// A label outside [0, classes) would make the kernel read outside its row: refused here too.
const int64_t* labels_of(const py::object& labels, int64_t rows, int64_t classes) {
  const auto* p = static_cast<const int64_t*>(Cpu::in(labels, vector_region(rows), DType::float64, "labels"));
  for (int64_t r = 0; r < rows; ++r)
    if (p[r] < 0 || p[r] >= classes) throw py::value_error(std::string(Cpu::module) + ": labels must lie in [0, classes)");
  return p;
}

}  // namespace

PYNORM_BINDINGS(cross_entropy) {
  def_call(
      m, "cross_entropy_forward",
      +[](const py::object& logits, int64_t logits_row_stride, const py::object& labels, const py::object& loss,
          int64_t rows, int64_t classes, int dtype, int threads) {
        const DType t = dtype_from_code(dtype, Cpu::module);
        require_sizes({rows, classes}, Cpu::module);
        CrossEntropyForwardArgs a;
        a.rows = rows;
        a.classes = classes;
        a.logits = Cpu::in(logits, rows_region(rows, classes, logits_row_stride), t, "logits");
        a.logits_row_stride = logits_row_stride;
        a.labels = labels_of(labels, rows, classes);
        a.loss = Cpu::out(loss, vector_region(rows), t, "loss");
        Cpu::run(threads, a, t, rows * classes * itemsize(t));
      },
      {"logits", "logits_row_stride", "labels", "loss", "rows", "classes", "dtype", "threads"},
      "loss[r] = logsumexp(logits[r]) - logits[r, labels[r]] for logits [rows, classes] (last axis\n"
      "contiguous, row stride logits_row_stride elements) and int64 labels [rows] in [0, classes).");

  def_call(
      m, "cross_entropy_backward",
      +[](const py::object& dloss, int64_t dloss_stride, const py::object& logits, int64_t logits_row_stride,
          const py::object& labels, const py::object& dlogits, int64_t rows, int64_t classes, int dtype, int threads) {
        const DType t = dtype_from_code(dtype, Cpu::module);
        require_sizes({rows, classes}, Cpu::module);
        CrossEntropyBackwardArgs a;
        a.rows = rows;
        a.classes = classes;
        a.dloss = Cpu::in(dloss, {{rows, 1, 1}, {dloss_stride, 0, 0}}, t, "dloss");
        a.dloss_stride = dloss_stride;
        a.logits = Cpu::in(logits, rows_region(rows, classes, logits_row_stride), t, "logits");
        a.logits_row_stride = logits_row_stride;
        a.labels = labels_of(labels, rows, classes);
        a.dlogits = Cpu::out(dlogits, rows_region(rows, classes, classes), t, "dlogits");
        Cpu::run(threads, a, t, 2 * rows * classes * itemsize(t));
      },
      {"dloss", "dloss_stride", "logits", "logits_row_stride", "labels", "dlogits", "rows", "classes", "dtype",
       "threads"},
      "dlogits[r, c] = dloss[r * dloss_stride] (softmax(logits[r])[c] - (c == labels[r])), dlogits\n"
      "contiguous [rows, classes]; dloss_stride 0 gives every row the same gradient.");
}

}  // namespace pynorm
