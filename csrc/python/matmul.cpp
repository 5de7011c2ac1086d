// Bindings of the tall-by-small matrix products: argument checks, GIL release, dispatch.
#include "pynorm/matmul.h"

#include <string>

#include "arrays.h"
#include "pynorm/dispatch.h"

namespace pynorm {

namespace {

StridedMatrix strided(const Rows& r) { return {r.data, r.row_stride}; }

void check_shape(const Rows& r, int64_t rows, int64_t cols, const char* name) {
  if (r.rows != rows || r.dim != cols) throw py::value_error(std::string("pynorm._core: ") + name + " has the wrong shape");
}

}  // namespace

void register_matmul(py::module_& m) {
  m.def(
      "matmul",
      [](py::array a, py::array b, py::object add, py::array out, int dtype_code, int threads) {
        const DType dtype = dtype_from_code(dtype_code);
        const Rows ar = rows_of(a, dtype, "a"), br = rows_of(b, dtype, "b"), outr = rows_of(out, dtype, "out");
        check_shape(br, ar.dim, br.dim, "b");
        check_shape(outr, ar.rows, br.dim, "out");
        require_writable_contiguous(out, "out");
        MatmulArgs args;
        args.m = ar.rows;
        args.k = ar.dim;
        args.n = br.dim;
        args.a = strided(ar);
        args.b = strided(br);
        if (!add.is_none()) {
          const Rows addr = rows_of(py::reinterpret_borrow<py::array>(add), dtype, "add");
          check_shape(addr, ar.rows, br.dim, "add");
          args.add = strided(addr);
        }
        args.out = outr.data;
        args.threads = threads_for(matmul_work(args.m, args.k, args.n, itemsize(dtype)), threads);
        py::gil_scoped_release release;
        kernels().matmul[dtype_code](args);
      },
      py::arg("a"), py::arg("b"), py::arg("add"), py::arg("out"), py::arg("dtype"), py::arg("threads"));

  m.def(
      "matmul_tn",
      [](py::array a, py::array b, py::array out, int dtype_code, int threads) {
        const DType dtype = dtype_from_code(dtype_code);
        const Rows ar = rows_of(a, dtype, "a"), br = rows_of(b, dtype, "b"), outr = rows_of(out, dtype, "out");
        check_shape(br, ar.rows, br.dim, "b");
        check_shape(outr, ar.dim, br.dim, "out");
        require_writable_contiguous(out, "out");
        MatmulTnArgs args;
        args.rows = ar.rows;
        args.m = ar.dim;
        args.n = br.dim;
        args.a = strided(ar);
        args.b = strided(br);
        args.out = outr.data;
        args.threads = threads_for(matmul_work(args.rows, args.m, args.n, itemsize(dtype)), threads);
        py::gil_scoped_release release;
        kernels().matmul_tn[dtype_code](args);
      },
      py::arg("a"), py::arg("b"), py::arg("out"), py::arg("dtype"), py::arg("threads"));
}

}  // namespace pynorm
