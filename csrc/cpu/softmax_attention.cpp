// Softmax attention, forward and backward (formulas: pynorm/softmax_attention.h). Compiled
// once per ISA; CPU only.
//
// One problem at a time per thread. q, k, v (and dout) are packed into padded accumulate-type
// rows, k and v also transposed (columns = tokens), and the query rows go in blocks of
// kRowBlock: the block's scores S = Q K^T, softmax row by row (in place: P), then
//   forward:  out = P V
//   backward: dP = dO V^T;  dS = scale P (dP - D);  dQ = dS K;  dK += dS^T Q;  dV += P^T dO
// with every product gemm.h's micro-kernel. Causal blocks only compute the columns up to the
// block's last row; masked entries of P and dS are exact zeros. dK and dV are summed over the
// blocks in order, so nothing depends on the thread count (problems run in parallel).
#include "pynorm/softmax_attention.h"

#include "gemm.h"
#include "kernels.h"

namespace pynorm {
namespace PYNORM_ISA {

namespace {

constexpr int64_t kRowBlock = 64;  // query rows per block: the block's scores stay in L1/L2

// row[0, jn) = softmax(scale * row[0, jn)); row[jn, width) = 0 (width: whole vectors). A row whose
// scores are all -inf gets weights 0.
template <class A> inline void softmax_row(A* row, int64_t jn, int64_t width, A scale) {
  constexpr int L = kLanes<A>;
  const A inf = __builtin_inf();
  Vec<A> top = splat<A>(-inf);
  for (int64_t j = 0; j < jn; j += L) {
    const Vec<A> x = fill_past<A>(load(row + j, Full{}) * scale, jn - j, -inf);
    store<false>(row + j, x, Full{});
    top = top < x ? x : top;
  }
  A m = hmax(top);
  if (m == -inf) {  // every score -inf or NaN: weights 0 (as torch's scaled_dot_product_attention), unless a NaN
    for (int64_t j = 0; j < jn; ++j)
      if (row[j] != row[j]) m = row[j];  // a NaN score: the whole row NaN, as below when some score is finite
    if (m == -inf) jn = 0;
  }
  Vec<A> sum{};
  for (int64_t j = 0; j < jn; j += L) {
    const Vec<A> e = fill_past<A>(exp_vec<A>(load(row + j, Full{}) - m), jn - j, 0);
    store<false>(row + j, e, Full{});
    sum += e;
  }
  const A inv = A(1) / hsum(sum);
  int64_t j = 0;
  for (; j < jn; j += L) store<false>(row + j, fill_past<A>(load(row + j, Full{}) * inv, jn - j, 0), Full{});  // 0, not 0 * NaN
  for (; j < width; j += L) store<false>(row + j, Vec<A>{}, Full{});
}

// ds[0, jn) = scale * p (dp - sum_j p dp) over [0, jn); ds[jn, width) = 0. ds may be dp.
template <class A> inline void softmax_row_backward(const A* p, const A* dp, A* ds, int64_t jn, int64_t width, A scale) {
  constexpr int L = kLanes<A>;
  Vec<A> dot{};
  for (int64_t j = 0; j < jn; j += L)
    dot += fill_past<A>(load(p + j, Full{}) * load(dp + j, Full{}), jn - j, 0);
  const A d = hsum(dot);
  int64_t j = 0;
  for (; j < jn; j += L) {
    const Vec<A> g = load(p + j, Full{}) * (load(dp + j, Full{}) - d) * scale;
    store<false>(ds + j, fill_past<A>(g, jn - j, 0), Full{});
  }
  for (; j < width; j += L) store<false>(ds + j, Vec<A>{}, Full{});
}

// One thread's packed problem: q, k, v (and dout) as padded rows, k and v transposed, a
// block's scores (and their gradient), the block's output rows and the dk / dv sums.
template <class A> struct SoftmaxScratch {
  int64_t n, dk, dv, dkp, dvp, np;
  Buffer<A> memory;
  A *q, *k, *kt, *v, *vt = nullptr, *g = nullptr, *s, *ds = nullptr, *acc, *dk_sum = nullptr, *dv_sum = nullptr;
  SoftmaxScratch(int64_t n_, int64_t dk_, int64_t dv_, bool backward)
      : n(n_), dk(dk_), dv(dv_), dkp(round_up(dk_, kLanes<A>)), dvp(round_up(dv_, kLanes<A>)),
        np(round_up(n_, kLanes<A>)),
        memory(n * (2 * dkp + dvp) + dk * np + min_of(n, kRowBlock) * (np + max_of(dkp, dvp)) +
               (backward ? n * (2 * dvp + dkp) + dv * np + min_of(n, kRowBlock) * np : 0)) {
    A* p = memory.data;
    auto take = [&](int64_t size) {
      A* start = p;
      p += size;
      return start;
    };
    const int64_t rows = min_of(n, kRowBlock);
    q = take(n * dkp), k = take(n * dkp), v = take(n * dvp), kt = take(dk * np);
    s = take(rows * np), acc = take(rows * max_of(dkp, dvp));
    if (backward) g = take(n * dvp), vt = take(dv * np), ds = take(rows * np), dk_sum = take(n * dkp), dv_sum = take(n * dvp);
  }

  template <class T> void pack_inputs(const MatrixBatch& qb, const MatrixBatch& kb, const MatrixBatch& vb, int64_t p) {
    pack(static_cast<const T*>(qb.data) + p * qb.problem_stride, qb.row_stride, n, dk, false, q, dkp);
    pack(static_cast<const T*>(kb.data) + p * kb.problem_stride, kb.row_stride, n, dk, false, k, dkp);
    pack(static_cast<const T*>(vb.data) + p * vb.problem_stride, vb.row_stride, n, dv, false, v, dvp);
    transpose(k, dkp, n, dk, kt, np);
  }

  // The softmax of the rows [r0, r1) of the scores into s; returns the columns they reach.
  int64_t probabilities(int64_t r0, int64_t r1, bool causal, A scale) {
    constexpr int L = kLanes<A>;
    const int64_t cols = causal ? r1 : n, width = round_up(cols, L);
    gemm<A, false, Mask::none>(r1 - r0, width / L, dk, q + r0 * dkp, dkp, 1, kt, np, s, np, nullptr);
    for (int64_t i = r0; i < r1; ++i) softmax_row(s + (i - r0) * np, causal ? i + 1 : n, width, scale);
    return cols;
  }
};

}  // namespace

template <class T> void softmax_attention_forward(const SoftmaxAttentionForwardArgs& a) {
  using A = acc_t<T>;
  constexpr int L = kLanes<A>;
  if (a.problems <= 0 || a.n <= 0 || a.dk <= 0 || a.dv <= 0) return;
  const int64_t n = a.n, dv = a.dv;
  parallel_for(a.problems, a.threads, [&](int64_t p0, int64_t p1) {
    SoftmaxScratch<A> w(n, a.dk, dv, false);
    for (int64_t p = p0; p < p1; ++p) {
      w.template pack_inputs<T>(a.q, a.k, a.v, p);
      for (int64_t r0 = 0; r0 < n; r0 += kRowBlock) {
        const int64_t r1 = min_of(n, r0 + kRowBlock);
        const int64_t cols = w.probabilities(r0, r1, a.causal, A(a.scale));
        gemm<A, false, Mask::none>(r1 - r0, w.dvp / L, cols, w.s, w.np, 1, w.v, w.dvp, w.acc, w.dvp, nullptr);
        store_rows(w.acc, w.dvp, r1 - r0, dv, A(1), static_cast<T*>(a.out) + (p * n + r0) * dv);
      }
    }
  });
}

template <class T> void softmax_attention_backward(const SoftmaxAttentionBackwardArgs& a) {
  using A = acc_t<T>;
  constexpr int L = kLanes<A>;
  if (a.problems <= 0 || a.n <= 0 || a.dk <= 0 || a.dv <= 0) return;
  const int64_t n = a.n, dk = a.dk, dv = a.dv;
  const A scale = A(a.scale);
  parallel_for(a.problems, a.threads, [&](int64_t p0, int64_t p1) {
    SoftmaxScratch<A> w(n, dk, dv, true);
    const int64_t dkp = w.dkp, dvp = w.dvp, np = w.np;
    for (int64_t p = p0; p < p1; ++p) {
      w.template pack_inputs<T>(a.q, a.k, a.v, p);
      pack(static_cast<const T*>(a.dout.data) + p * a.dout.problem_stride, a.dout.row_stride, n, dv, false, w.g, dvp);
      transpose(w.v, dvp, n, dv, w.vt, np);
      for (int64_t i = 0; i < n * dkp; ++i) w.dk_sum[i] = 0;
      for (int64_t i = 0; i < n * dvp; ++i) w.dv_sum[i] = 0;
      for (int64_t r0 = 0; r0 < n; r0 += kRowBlock) {
        const int64_t r1 = min_of(n, r0 + kRowBlock), m = r1 - r0;
        const int64_t cols = w.probabilities(r0, r1, a.causal, scale), width = round_up(cols, L);
        gemm<A, false, Mask::none>(m, width / L, dv, w.g + r0 * dvp, dvp, 1, w.vt, np, w.ds, np, nullptr);  // dP
        for (int64_t i = r0; i < r1; ++i) {
          const int64_t row = (i - r0) * np;
          softmax_row_backward(w.s + row, w.ds + row, w.ds + row, a.causal ? i + 1 : n, width, scale);
        }
        gemm<A, false, Mask::none>(m, dkp / L, cols, w.ds, np, 1, w.k, dkp, w.acc, dkp, nullptr);  // dQ
        store_rows(w.acc, dkp, m, dk, A(1), static_cast<T*>(a.dq) + (p * n + r0) * dk);
        gemm<A, true, Mask::none>(cols, dkp / L, m, w.ds, 1, np, w.q + r0 * dkp, dkp, w.dk_sum, dkp, nullptr);  // dK
        gemm<A, true, Mask::none>(cols, dvp / L, m, w.s, 1, np, w.g + r0 * dvp, dvp, w.dv_sum, dvp, nullptr);   // dV
      }
      store_rows(w.dk_sum, dkp, n, dk, A(1), static_cast<T*>(a.dk_out) + p * n * dk);
      store_rows(w.dv_sum, dvp, n, dv, A(1), static_cast<T*>(a.dv_out) + p * n * dv);
    }
  });
}

PYNORM_INSTANTIATE(softmax_attention_forward, SoftmaxAttentionForwardArgs)
PYNORM_INSTANTIATE(softmax_attention_backward, SoftmaxAttentionBackwardArgs)

}  // namespace PYNORM_ISA
}  // namespace pynorm
