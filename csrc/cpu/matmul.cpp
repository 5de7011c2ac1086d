// Tall-by-small matrix products (formulas: pynorm/matmul.h). Compiled once per ISA.
//
// matmul: b is packed once (accumulate type, rows padded to whole vectors); each chunk of kRows
// rows of a (read in place when it already has the accumulate type, else converted) goes
// through gemm.h's micro-kernel into a scratch block, which is rounded (plus add) into out.
// Rows are independent, so any thread count gives the same bits.
// matmul_tn: the rows are cut into a fixed number of blocks (reduce_rows_in_blocks); each block
// sums its rows' products in row order, chunk after chunk (a read transposed through the
// micro-kernel's strides), and the blocks' partials are added in block order.
#include "pynorm/matmul.h"

#include <type_traits>

#include "gemm.h"
#include "kernels.h"

namespace pynorm {
namespace PYNORM_ISA {

namespace {

constexpr int64_t kRows = 24;  // rows of a per chunk (a, b and the scratch block stay in L1)

// Rows [r0, r0 + rows) of a [.. x cols] strided matrix in the accumulate type: the matrix
// itself when it has that type (its stride returned in ld), else a copy in scratch.
template <class T, class A>
inline const A* chunk_rows(const StridedMatrix& m, int64_t r0, int64_t rows, int64_t cols, A* scratch,
                           int64_t& ld) {
  const T* src = static_cast<const T*>(m.data) + r0 * m.row_stride;
  if constexpr (std::is_same_v<T, A>) {
    ld = m.row_stride;
    return src;
  } else {
    ld = cols;
    pack(src, m.row_stride, rows, cols, false, scratch, cols);
    return scratch;
  }
}

}  // namespace

template <class T> void matmul(const MatmulArgs& a) {
  using A = acc_t<T>;
  constexpr int L = kLanes<A>;
  if (a.m <= 0 || a.n <= 0) return;
  const int64_t np = round_up(a.n, L);
  Buffer<A> b(a.k * np);
  pack(static_cast<const T*>(a.b.data), a.b.row_stride, a.k, a.n, false, b.data, np);
  parallel_for((a.m + kRows - 1) / kRows, a.threads, [&](int64_t c0, int64_t c1) {
    Buffer<A> rows_scratch(std::is_same_v<T, A> ? 0 : kRows * a.k), acc(kRows * np);
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t r0 = c * kRows, rows = min_of(kRows, a.m - r0);
      int64_t lda;
      const A* x = chunk_rows<T>(a.a, r0, rows, a.k, rows_scratch.data, lda);
      gemm<A, false, Mask::none>(rows, np / L, a.k, x, lda, 1, b.data, np, acc.data, np, nullptr);
      const T* add = a.add.data ? static_cast<const T*>(a.add.data) + r0 * a.add.row_stride : nullptr;
      store_rows(acc.data, np, rows, a.n, A(1), static_cast<T*>(a.out) + r0 * a.n, add, a.add.row_stride);
    }
  });
}

template <class T> void matmul_tn(const MatmulTnArgs& a) {
  using A = acc_t<T>;
  constexpr int L = kLanes<A>;
  if (a.m <= 0 || a.n <= 0) return;
  const int64_t np = round_up(a.n, L);
  Buffer<A> total(a.m * np);
  reduce_rows_in_blocks<A>(a.rows, a.m + a.n, a.m * np, a.threads, [&](int64_t r0, int64_t r1, A* partial) {
    Buffer<A> a_scratch(std::is_same_v<T, A> ? 0 : kRows * a.m), b_rows(kRows * np);
    for (int64_t s = r0; s < r1; s += kRows) {
      const int64_t rows = min_of(kRows, r1 - s);
      int64_t lda;
      const A* x = chunk_rows<T>(a.a, s, rows, a.m, a_scratch.data, lda);
      pack(static_cast<const T*>(a.b.data) + s * a.b.row_stride, a.b.row_stride, rows, a.n, false, b_rows.data, np);
      // partial(i, :) += sum over the chunk's rows t of a(t, i) b(t, :)
      gemm<A, true, Mask::none>(a.m, np / L, rows, x, 1, lda, b_rows.data, np, partial, np, nullptr);
    }
  }, total.data);
  store_rows(total.data, np, a.m, a.n, A(1), static_cast<T*>(a.out));
}

PYNORM_INSTANTIATE(matmul, MatmulArgs)
PYNORM_INSTANTIATE(matmul_tn, MatmulTnArgs)

}  // namespace PYNORM_ISA
}  // namespace pynorm
