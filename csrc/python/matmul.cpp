// pynorm._core's tall-by-small matrix products (CPU only; the call form of calls.h).
#include "pynorm/matmul.h"

#include "arrays.h"
#include "registry.h"

namespace pynorm {

namespace {

StridedMatrix strided_in(const py::object& o, int64_t rows, int64_t cols, int64_t row_stride, DType t,
                         const char* name) {
  return {Cpu::in(o, rows_region(rows, cols, row_stride), t, name), row_stride};
}

}  // namespace

PYNORM_BINDINGS(matmul) {
  def_call(
      m, "matmul",
      +[](const py::object& a, int64_t a_row_stride, const py::object& b, int64_t b_row_stride, const py::object& add,
         int64_t add_row_stride, const py::object& out, int64_t m, int64_t k, int64_t n, int dtype, int threads) {
        const DType t = dtype_from_code(dtype, Cpu::module);
        require_sizes({m, k, n}, Cpu::module);
        MatmulArgs args;
        args.m = m;
        args.k = k;
        args.n = n;
        args.a = strided_in(a, m, k, a_row_stride, t, "a");
        args.b = strided_in(b, k, n, b_row_stride, t, "b");
        if (!add.is_none()) args.add = strided_in(add, m, n, add_row_stride, t, "add");
        args.out = Cpu::out(out, rows_region(m, n, n), t, "out");
        Cpu::run(threads, args, t, matmul_work(m, k, n, itemsize(t)));
      },
      {"a", "a_row_stride", "b", "b_row_stride", "add", "add_row_stride", "out", "m", "k", "n", "dtype", "threads"},
      "out = a @ b (+ add) for a [m, k], b [k, n], add [m, n] or None (row strides in elements, last\n"
      "axes contiguous); out is contiguous [m, n].");

  def_call(
      m, "matmul_tn",
      +[](const py::object& a, int64_t a_row_stride, const py::object& b, int64_t b_row_stride, const py::object& out,
         int64_t rows, int64_t m, int64_t n, int dtype, int threads) {
        const DType t = dtype_from_code(dtype, Cpu::module);
        require_sizes({rows, m, n}, Cpu::module);
        MatmulTnArgs args;
        args.rows = rows;
        args.m = m;
        args.n = n;
        args.a = strided_in(a, rows, m, a_row_stride, t, "a");
        args.b = strided_in(b, rows, n, b_row_stride, t, "b");
        args.out = Cpu::out(out, rows_region(m, n, n), t, "out");
        Cpu::run(threads, args, t, matmul_work(rows, m, n, itemsize(t)));
      },
      {"a", "a_row_stride", "b", "b_row_stride", "out", "rows", "m", "n", "dtype", "threads"},
      "out = a^T @ b, the sum over the rows r of outer(a_r, b_r), for a [rows, m], b [rows, n]; out is\n"
      "contiguous [m, n]; the rows are summed in a fixed partition and order.");
}

}  // namespace pynorm
