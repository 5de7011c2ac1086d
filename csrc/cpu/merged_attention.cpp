// P1's attention with its projections fused in (formulas: pynorm/merged_attention.h).
// Compiled once per ISA.
//
// One problem at a time per thread, everything in padded accumulate-type scratch (rows of dp =
// d rounded up to whole vectors), every product gemm.h's micro-kernel:
//   forward:  X = x;  [Q Vv] = X [W^T V^T];  S = X^T Vv;  out = scale * Q S (+ x)
//   backward: dQ = G (scale S)^T;  T = scale Q^T G;  dVv = X T;  dX = Vv T^T + dQ W + dVv V (+ G);
//             dW += dQ^T X;  dV += dVv^T X        (G = dout)
// dW and dV are summed over a fixed partition of the problems into blocks
// (reduce_rows_in_blocks), problems in order inside a block and blocks in order, so they do
// not depend on the thread count; out and dx are per problem.
#include "pynorm/merged_attention.h"

#include "gemm.h"
#include "kernels.h"

namespace pynorm {
namespace PYNORM_ISA {

namespace {

template <class A> struct MergedScratch {
  int64_t n, d, dp;
  Buffer<A> memory;
  A *x, *qv, *s, *st, *g, *t, *tt, *dq, *dvv, *acc;
  MergedScratch(int64_t n_, int64_t d_, int64_t dp_, bool backward)
      : n(n_), d(d_), dp(dp_), memory(n_ * dp_ * (backward ? 7 : 4) + 4 * dp_ * dp_) {
    A* p = memory.data;
    auto take = [&](int64_t size) {
      A* start = p;
      p += size;
      return start;
    };
    x = take(n * dp);
    qv = take(n * 2 * dp);  // [Q Vv]
    acc = take(n * dp);
    s = take(dp * dp), st = take(dp * dp), t = take(dp * dp), tt = take(dp * dp);
    if (backward) g = take(n * dp), dq = take(n * dp), dvv = take(n * dp);
  }
};

// The packed weights: p = [W^T V^T] (d x 2dp) for the forward products, wb = W, vb = V (d x dp
// each) for dX.
template <class T, class A> struct MergedWeights {
  Buffer<A> p, wb, vb;
  MergedWeights(const T* w, const T* v, int64_t d, int64_t dp) : p(d * 2 * dp), wb(d * dp), vb(d * dp) {
    for (int64_t k = 0; k < d; ++k)
      for (int64_t j = 0; j < d; ++j) {
        p.data[k * 2 * dp + j] = to_acc(w[j * d + k]);
        p.data[k * 2 * dp + dp + j] = to_acc(v[j * d + k]);
      }
    pack(w, d, d, d, false, wb.data, dp);
    pack(v, d, d, d, false, vb.data, dp);
  }
};

// X, [Q Vv] and S of problem x (rows with stride `stride`) into the scratch.
template <class T, class A>
inline void merged_products(const T* x, int64_t stride, const MergedWeights<T, A>& mw, MergedScratch<A>& w) {
  constexpr int L = kLanes<A>;
  const int64_t n = w.n, d = w.d, dp = w.dp;
  pack(x, stride, n, d, false, w.x, dp);
  gemm<A, false, Mask::none>(n, 2 * dp / L, d, w.x, dp, 1, mw.p.data, 2 * dp, w.qv, 2 * dp, nullptr);
  gemm<A, false, Mask::none>(d, dp / L, n, w.x, 1, dp, w.qv + dp, 2 * dp, w.s, dp, nullptr);
}

template <class A> inline void scale_rows(A* m, int64_t rows, int64_t ld, A scale) {
  for (int64_t i = 0; i < rows * ld; ++i) m[i] *= scale;
}

}  // namespace

template <class T> void merged_attention_forward(const MergedAttentionArgs& a) {
  using A = acc_t<T>;
  constexpr int L = kLanes<A>;
  if (a.problems <= 0 || a.n <= 0 || a.d <= 0) return;
  const int64_t n = a.n, d = a.d, dp = round_up(d, L);
  const A scale = A(a.scale);
  const MergedWeights<T, A> mw(static_cast<const T*>(a.w), static_cast<const T*>(a.v), d, dp);
  parallel_for(a.problems, a.threads, [&](int64_t p0, int64_t p1) {
    MergedScratch<A> w(n, d, dp, false);
    for (int64_t p = p0; p < p1; ++p) {
      const T* x = static_cast<const T*>(a.x.data) + p * a.x.problem_stride;
      merged_products(x, a.x.row_stride, mw, w);
      gemm<A, false, Mask::none>(n, dp / L, d, w.qv, 2 * dp, 1, w.s, dp, w.acc, dp, nullptr);
      store_rows(w.acc, dp, n, d, scale, static_cast<T*>(a.out) + p * n * d, a.residual ? x : nullptr,
                 a.x.row_stride);
    }
  });
}

template <class T> void merged_attention_backward(const MergedAttentionBackwardArgs& a) {
  using A = acc_t<T>;
  constexpr int L = kLanes<A>;
  if (a.d <= 0) return;
  const int64_t n = a.n, d = a.d, dp = round_up(d, L), size = d * dp;
  const A scale = A(a.scale);
  const MergedWeights<T, A> mw(static_cast<const T*>(a.w), static_cast<const T*>(a.v), d, dp);
  Buffer<A> totals(2 * size);  // [dW; dV], rows of dp
  if (n > 0)
    reduce_rows_in_blocks<A>(a.problems, n * d, 2 * size, a.threads, [&](int64_t p0, int64_t p1, A* partial) {
      MergedScratch<A> w(n, d, dp, true);
      for (int64_t p = p0; p < p1; ++p) {
        const T* x = static_cast<const T*>(a.x.data) + p * a.x.problem_stride;
        const T* dout = static_cast<const T*>(a.dout.data) + p * a.dout.problem_stride;
        merged_products(x, a.x.row_stride, mw, w);
        pack(dout, a.dout.row_stride, n, d, false, w.g, dp);
        transpose(w.s, dp, d, d, w.st, dp);
        scale_rows(w.st, d, dp, scale);
        gemm<A, false, Mask::none>(n, dp / L, d, w.g, dp, 1, w.st, dp, w.dq, dp, nullptr);       // dQ
        gemm<A, false, Mask::none>(d, dp / L, n, w.qv, 1, 2 * dp, w.g, dp, w.t, dp, nullptr);    // Q^T G
        scale_rows(w.t, d, dp, scale);
        transpose(w.t, dp, d, d, w.tt, dp);
        gemm<A, false, Mask::none>(n, dp / L, d, w.x, dp, 1, w.t, dp, w.dvv, dp, nullptr);      // dVv
        gemm<A, false, Mask::none>(n, dp / L, d, w.qv + dp, 2 * dp, 1, w.tt, dp, w.acc, dp, nullptr);  // dK
        gemm<A, true, Mask::none>(n, dp / L, d, w.dq, dp, 1, mw.wb.data, dp, w.acc, dp, nullptr);
        gemm<A, true, Mask::none>(n, dp / L, d, w.dvv, dp, 1, mw.vb.data, dp, w.acc, dp, nullptr);
        gemm<A, true, Mask::none>(d, dp / L, n, w.dq, 1, dp, w.x, dp, partial, dp, nullptr);          // dW
        gemm<A, true, Mask::none>(d, dp / L, n, w.dvv, 1, dp, w.x, dp, partial + size, dp, nullptr);  // dV
        store_rows(w.acc, dp, n, d, A(1), static_cast<T*>(a.dx) + p * n * d, a.residual ? dout : nullptr,
                   a.dout.row_stride);
      }
    }, totals.data);
  store_rows(totals.data, dp, d, d, A(1), static_cast<T*>(a.dw));
  store_rows(totals.data + size, dp, d, d, A(1), static_cast<T*>(a.dv));
}

PYNORM_INSTANTIATE(merged_attention_forward, MergedAttentionArgs)
PYNORM_INSTANTIATE(merged_attention_backward, MergedAttentionBackwardArgs)

}  // namespace PYNORM_ISA
}  // namespace pynorm
