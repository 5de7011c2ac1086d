// Linear attention, forward and backward, causal and not (formulas: pynorm/linear_attention.h).
// Compiled once per ISA (see CMakeLists.txt).
//
// Chunks and packing. A problem's rows are processed in chunks of kChunk rows. Each chunk of
// q, k, v (and dout) is copied ("packed") into accumulate-type buffers whose rows are padded
// with zeros to whole vectors; when normalising, v gets a column of ones after its dv columns
// (v' = [v, 1]), so that the denominators come out of the same products as the numerators.
// Every product is gemm.h's register-blocked micro-kernel (`gemm`, optionally over the
// triangle of a masked score matrix only); `scores` builds a masked chunk x chunk score matrix.
//
// Forward.  Non-causal: S = K^T V' (dk x dv'), then out = Q S (never an n x n matrix).
//   Causal: chunk R (rows c0..c1) gets  acc_R = Q_R S + tril(Q_R K_R^T) V'_R,  then
//   S += K_R^T V'_R, where S holds the chunks before R. out = scale * acc[:, :dv]
//   (normalised: divided by scale * acc[:, dv] + eps).
//
// Backward, with g' = [g, h] per row (see the header; g' = dout unnormalised):
//   dq: a forward scan with the same state S = sum k_j v'_j^T, used as S^T:
//       dq_R = scale * (G'_R S^T + tril(G'_R V'_R^T) K_R).
//       Normalising, this pass first recomputes acc_R as in the forward to get den, out, g, h,
//       and keeps den and h of each row (2 numbers per row: the only O(n) scratch).
//   dk, dv: a reverse scan (last chunk first) with T = sum_{rows i after R} q_i g'_i^T:
//       dv_R = scale * (K_R T + triu(K_R Q_R^T) G'_R)[:, :dv],
//       dk_R = scale * (V'_R T^T + triu(V'_R G'_R^T) Q_R).
//   Non-causal: S as in the forward; dq = scale G' S^T; T = Q^T G'; dk = scale V' T^T,
//   dv = scale K T.
//
// Determinism. Rows are cut into segments of whole chunks, their number a function of n only
// (at most kMaxSegments). A scan holds its state as P + L: L sums the chunks of the current
// segment from zero, P the segments before (P_s = P_{s-1} + L_{s-1}); non-causal sums are
// ((L_0 + L_1) + L_2) + ... . (The tile shape of a product never matters: every element is
// the same chain of multiply-adds.) With at least as many problems as threads each thread runs whole
// problems, segment after segment. With fewer, a first pass computes every segment's L in
// parallel, the prefixes are added in segment order, and the segments are scanned in parallel
// from their P. Both orders do the same operations on the same numbers, so the results are
// bitwise the same whatever the thread count. The state scratch is O(dk * dv) per thread (and
// per segment of each problem in the second mode, where there are fewer problems than threads).
#include "pynorm/linear_attention.h"

#include <utility>

#include "gemm.h"
#include "kernels.h"

namespace pynorm {
namespace PYNORM_ISA {

namespace {

constexpr int64_t kChunk = 64;           // rows per chunk (a multiple of every vector width)
constexpr int64_t kMaxSegments = 8;      // the most segments a problem is cut into
constexpr int64_t kMinSegmentChunks = 4; // the fewest chunks in a segment

// s(i, t) = a_i . b_t for i, t < rows inside the mask, 0 outside it (for t < rows rounded up to
// whole vectors); a is [rows x depth] with row stride lda, b is given transposed, bt[k * kChunk + t]
// (zero for t >= rows), and s has row stride kChunk.
template <class A, Mask M>
__attribute__((noinline)) void scores(int64_t rows, int64_t depth, const A* a, int64_t lda, const A* bt, A* s,
                                      Prefetcher* ahead) {
  constexpr int L = kLanes<A>;
  const int64_t vecs = (rows + L - 1) / L;
  with_tile_vecs(vecs, [&](auto nv) {
    constexpr int NV = decltype(nv)::value, MR = tile_rows(NV);
    tiles<A, false, MR, NV>(rows, a, lda, 1, bt, kChunk, s, kChunk, [&](int64_t r0, int64_t r1) {
      return TileRange{M == Mask::upper ? r0 / L : 0, M == Mask::lower ? (r1 + L - 1) / L : vecs, 0, depth};
    }, ahead);
  });
  for (int64_t i = 0; i < rows; ++i) {  // zero everything outside the mask (computed or not)
    A* si = s + i * kChunk;
    if constexpr (M == Mask::lower)
      for (int64_t t = i + 1; t < vecs * L; ++t) si[t] = 0;
    if constexpr (M == Mask::upper)
      for (int64_t t = 0; t < i; ++t) si[t] = 0;
  }
}

// ------------------------------------------------------------------ small helpers
// out = x + y, elementwise.
template <class A> inline void add(const A* x, const A* y, A* out, int64_t n) {
  for_each_vec<A>(n, [&](int64_t i, auto k) { store<false>(out + i, load(x + i, k) + load(y + i, k), k); });
}
template <class A> inline void zero(A* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = 0;
}

// ------------------------------------------------------------------ sizes and scratch
struct Dims {
  int64_t n, dk, dv;
  int64_t dv1;       // columns of v' = [v, 1]: dv + 1 when normalising
  int64_t dkp, dvp;  // dk and dv1 rounded up to whole vectors (packed row lengths)
  int64_t chunks, segment_chunks, segments;
  Dims(int64_t n_, int64_t dk_, int64_t dv_, bool normalize, int lanes)
      : n(n_), dk(dk_), dv(dv_), dv1(dv_ + (normalize ? 1 : 0)) {
    dkp = round_up(dk, lanes);
    dvp = round_up(dv1, lanes);
    chunks = (n + kChunk - 1) / kChunk;
    segment_chunks = max_of(kMinSegmentChunks, (chunks + kMaxSegments - 1) / kMaxSegments);
    segments = (chunks + segment_chunks - 1) / segment_chunks;
  }
  int64_t state_size() const { return dk * dvp; }  // S, T: dk x dv1, rows of dvp
  int64_t chunk_begin(int64_t c) const { return c * kChunk; }
  int64_t chunk_rows(int64_t c) const { return min_of(kChunk, n - c * kChunk); }
  int64_t first_chunk(int64_t s) const { return s * segment_chunks; }
  int64_t end_chunk(int64_t s) const { return min_of(chunks, (s + 1) * segment_chunks); }
};

// One thread's scratch: packed chunks, scores, products and states.
template <class A> struct Workspace {
  A *q, *k, *v, *g;  // packed chunk rows: q, k [kChunk x dkp]; v', g' [kChunk x dvp]
  A* xt;             // a transposed chunk operand [max(dkp, dvp) x kChunk]
  A* scores;         // [kChunk x kChunk]
  A* acc;            // products [kChunk x acc_ld]
  int64_t acc_ld;
  A *state, *local, *prefix;  // [dk x dvp]: state = prefix + local, see the top of the file
  A* state_t;                 // a state transposed [dvp x dkp]
  Prefetcher ahead;           // the next chunk's inputs
  Buffer<A> memory;
  explicit Workspace(const Dims& d)
      : acc_ld(max_of(d.dkp, d.dvp)),
        memory(2 * kChunk * d.dkp + 2 * kChunk * d.dvp + max_of(d.dkp, d.dvp) * kChunk + kChunk * kChunk +
               kChunk * max_of(d.dkp, d.dvp) + 3 * d.state_size() + d.dvp * d.dkp) {
    A* p = memory.data;
    auto take = [&](int64_t size) {
      A* start = p;
      p += size;
      return start;
    };
    q = take(kChunk * d.dkp);
    k = take(kChunk * d.dkp);
    v = take(kChunk * d.dvp);
    g = take(kChunk * d.dvp);
    xt = take(max_of(d.dkp, d.dvp) * kChunk);
    scores = take(kChunk * kChunk);
    acc = take(kChunk * acc_ld);
    state = take(d.state_size());
    local = take(d.state_size());
    prefix = take(d.state_size());
    state_t = take(d.dvp * d.dkp);
  }
};

// One problem's matrices (the inputs strided, the outputs contiguous).
template <class T> struct Problem {
  const T *q = nullptr, *k = nullptr, *v = nullptr, *dout = nullptr;
  int64_t q_stride = 0, k_stride = 0, v_stride = 0, dout_stride = 0;  // between rows
  T *out = nullptr, *dq = nullptr, *dk = nullptr, *dv = nullptr;
  acc_t<T>*den = nullptr, *h = nullptr;  // normalised causal backward: one per row
};

template <class T> inline const T* matrix(const MatrixBatch& m, int64_t p) {
  return static_cast<const T*>(m.data) + p * m.problem_stride;
}

// Calls f(item, workspace) for items [0, n), with one workspace per thread.
template <class A, class F> inline void for_items(int64_t n, int threads, const Dims& d, F&& f) {
  parallel_for(n, threads, [&](int64_t i0, int64_t i1) {
    Workspace<A> w(d);
    for (int64_t i = i0; i < i1; ++i) f(i, w);
  });
}

// Whether to parallelise inside problems (segments, chunks) rather than over problems.
inline bool split_problems(int64_t problems, int threads, const Dims& d) {
  return threads > 1 && problems < threads && d.chunks > 1;
}

// ------------------------------------------------------------------ the algorithm
template <class T> struct LinearAttention {
  using A = acc_t<T>;
  static constexpr int L = kLanes<A>;
  const Dims& d;
  A scale, eps;
  bool normalize;

  // The inputs of chunk c (the next one in the scan) for w.ahead to prefetch; none if c is
  // not a chunk.
  void expect(const Problem<T>& p, int64_t c, bool q, bool k, bool v, bool dout, Workspace<A>& w) const {
    w.ahead.clear();
    if (c < 0 || c >= d.chunks) return;
    const int64_t c0 = d.chunk_begin(c), rows = d.chunk_rows(c);
    if (q) w.ahead.add(p.q + c0 * p.q_stride, p.q_stride, rows, d.dk);
    if (k) w.ahead.add(p.k + c0 * p.k_stride, p.k_stride, rows, d.dk);
    if (v) w.ahead.add(p.v + c0 * p.v_stride, p.v_stride, rows, d.dv);
    if (dout) w.ahead.add(p.dout + c0 * p.dout_stride, p.dout_stride, rows, d.dv);
  }

  // --- packing of one chunk (rows c0 .. c0 + rows of problem p)
  void pack_q(const Problem<T>& p, int64_t c0, int64_t rows, Workspace<A>& w) const {
    pack(p.q + c0 * p.q_stride, p.q_stride, rows, d.dk, false, w.q, d.dkp);
  }
  void pack_k(const Problem<T>& p, int64_t c0, int64_t rows, Workspace<A>& w) const {
    pack(p.k + c0 * p.k_stride, p.k_stride, rows, d.dk, false, w.k, d.dkp);
  }
  void pack_v(const Problem<T>& p, int64_t c0, int64_t rows, Workspace<A>& w) const {
    pack(p.v + c0 * p.v_stride, p.v_stride, rows, d.dv, normalize, w.v, d.dvp);
  }
  // g' from dout and the saved den, h (normalised) or g' = dout.
  void pack_g(const Problem<T>& p, int64_t c0, int64_t rows, Workspace<A>& w) const {
    if (!normalize) return pack(p.dout + c0 * p.dout_stride, p.dout_stride, rows, d.dv, false, w.g, d.dvp);
    for (int64_t r = 0; r < rows; ++r) {
      const T* dout = p.dout + (c0 + r) * p.dout_stride;
      A* g = w.g + r * d.dvp;
      const A den = p.den[c0 + r];
      for_each_vec<A>(d.dv, [&](int64_t i, auto k) { store<false>(g + i, load(dout + i, k) / den, k); });
      g[d.dv] = p.h[c0 + r];
      for (int64_t c = d.dv + 1; c < d.dvp; ++c) g[c] = 0;
    }
  }
  // From acc = [num, den] / scale of the chunk's rows (the forward's products): den, out,
  // then g' = [dout / den, -(dout . out) / den] into w.g; den and h kept in p.den, p.h if given.
  void make_g(const Problem<T>& p, int64_t c0, int64_t rows, Workspace<A>& w) const {
    for (int64_t r = 0; r < rows; ++r) {
      const T* dout = p.dout + (c0 + r) * p.dout_stride;
      const A* acc = w.acc + r * w.acc_ld;
      A* g = w.g + r * d.dvp;
      const A den = scale * acc[d.dv] + eps;
      Vec<A> dot = {};
      for_each_vec<A>(d.dv, [&](int64_t i, auto k) {
        const Vec<A> dout_i = load(dout + i, k), out_i = load(acc + i, k) * scale / den;
        dot += dout_i * out_i;
        store<false>(g + i, dout_i / den, k);
      });
      const A h = -hsum(dot) / den;
      g[d.dv] = h;
      for (int64_t c = d.dv + 1; c < d.dvp; ++c) g[c] = 0;
      if (p.den) p.den[c0 + r] = den;
      if (p.h) p.h[c0 + r] = h;
    }
  }

  // --- products on packed chunks
  // state += k^T v' over the chunk's rows (the forward state S).
  void add_kv(A* state, int64_t rows, Workspace<A>& w) const {
    gemm<A, true, Mask::none>(d.dk, d.dvp / L, rows, w.k, 1, d.dkp, w.v, d.dvp, state, d.dvp, &w.ahead);
  }
  // state += q^T g' over the chunk's rows (the reverse state T).
  void add_qg(A* state, int64_t rows, Workspace<A>& w) const {
    gemm<A, true, Mask::none>(d.dk, d.dvp / L, rows, w.q, 1, d.dkp, w.g, d.dvp, state, d.dvp, &w.ahead);
  }
  // acc = q S (+ tril(q k^T) v' when causal): the forward's [num, den] / scale. Needs w.q, and
  // w.k, w.v when causal.
  void forward_products(const A* state, int64_t rows, bool causal, Workspace<A>& w) const {
    gemm<A, false, Mask::none>(rows, d.dvp / L, d.dk, w.q, d.dkp, 1, state, d.dvp, w.acc, w.acc_ld, &w.ahead);
    if (!causal) return;
    transpose(w.k, d.dkp, rows, d.dk, w.xt, kChunk);
    scores<A, Mask::lower>(rows, d.dk, w.q, d.dkp, w.xt, w.scores, &w.ahead);
    gemm<A, true, Mask::lower>(rows, d.dvp / L, rows, w.scores, kChunk, 1, w.v, d.dvp, w.acc, w.acc_ld, &w.ahead);
  }
  void store_forward(const Problem<T>& p, int64_t c0, int64_t rows, const Workspace<A>& w) const {
    if (!normalize) return store_rows(w.acc, w.acc_ld, rows, d.dv, scale, p.out + c0 * d.dv);
    for (int64_t r = 0; r < rows; ++r) {
      const A* acc = w.acc + r * w.acc_ld;
      const A den = scale * acc[d.dv] + eps;
      write_row<false>(p.out + (c0 + r) * d.dv, d.dv,
                       [&](int64_t i, auto k) { return load(acc + i, k) * scale / den; });
    }
  }

  // --- forward
  // local = the sum over the chunks of segment s of k^T v' (from zero, in chunk order).
  void forward_state_segment(const Problem<T>& p, int64_t s, A* local, Workspace<A>& w) const {
    zero(local, d.state_size());
    for (int64_t c = d.first_chunk(s); c < d.end_chunk(s); ++c) {
      const int64_t c0 = d.chunk_begin(c), rows = d.chunk_rows(c);
      expect(p, c + 1, false, true, true, false, w);
      pack_k(p, c0, rows, w);
      pack_v(p, c0, rows, w);
      add_kv(local, rows, w);
    }
  }
  // The causal forward of segment s, whose earlier segments sum to prefix.
  void forward_causal_segment(const Problem<T>& p, int64_t s, const A* prefix, Workspace<A>& w) const {
    zero(w.local, d.state_size());
    for (int64_t c = d.first_chunk(s); c < d.end_chunk(s); ++c) {
      const int64_t c0 = d.chunk_begin(c), rows = d.chunk_rows(c);
      expect(p, c + 1, true, true, true, false, w);
      add(prefix, w.local, w.state, d.state_size());
      pack_q(p, c0, rows, w);
      pack_k(p, c0, rows, w);
      pack_v(p, c0, rows, w);
      forward_products(w.state, rows, true, w);
      store_forward(p, c0, rows, w);
      add_kv(w.local, rows, w);
    }
  }
  void forward_noncausal_chunk(const Problem<T>& p, int64_t c, const A* state, Workspace<A>& w) const {
    const int64_t c0 = d.chunk_begin(c), rows = d.chunk_rows(c);
    expect(p, c + 1, true, false, false, false, w);
    pack_q(p, c0, rows, w);
    forward_products(state, rows, false, w);
    store_forward(p, c0, rows, w);
  }

  // --- backward
  // dq of segment s (causal: prefix = the earlier segments' S; non-causal: state = S and
  // state_t = S^T of the whole problem, and reverse_local receives this segment's q^T g').
  void dq_causal_segment(const Problem<T>& p, int64_t s, const A* prefix, Workspace<A>& w) const {
    zero(w.local, d.state_size());
    for (int64_t c = d.first_chunk(s); c < d.end_chunk(s); ++c) {
      const int64_t c0 = d.chunk_begin(c), rows = d.chunk_rows(c);
      expect(p, c + 1, normalize, true, true, true, w);
      add(prefix, w.local, w.state, d.state_size());
      pack_k(p, c0, rows, w);
      pack_v(p, c0, rows, w);
      if (normalize) {
        pack_q(p, c0, rows, w);
        forward_products(w.state, rows, true, w);
        make_g(p, c0, rows, w);
      } else {
        pack_g(p, c0, rows, w);
      }
      transpose(w.state, d.dvp, d.dk, d.dv1, w.state_t, d.dkp);
      // acc = g' S^T + tril(g' v'^T) k
      gemm<A, false, Mask::none>(rows, d.dkp / L, d.dv1, w.g, d.dvp, 1, w.state_t, d.dkp, w.acc, w.acc_ld, &w.ahead);
      transpose(w.v, d.dvp, rows, d.dv1, w.xt, kChunk);
      scores<A, Mask::lower>(rows, d.dv1, w.g, d.dvp, w.xt, w.scores, &w.ahead);
      gemm<A, true, Mask::lower>(rows, d.dkp / L, rows, w.scores, kChunk, 1, w.k, d.dkp, w.acc, w.acc_ld, &w.ahead);
      store_rows(w.acc, w.acc_ld, rows, d.dk, scale, p.dq + c0 * d.dk);
      add_kv(w.local, rows, w);
    }
  }
  void dq_noncausal_segment(const Problem<T>& p, int64_t s, const A* state, const A* state_t, A* reverse_local,
                            Workspace<A>& w) const {
    zero(reverse_local, d.state_size());
    for (int64_t c = d.first_chunk(s); c < d.end_chunk(s); ++c) {
      const int64_t c0 = d.chunk_begin(c), rows = d.chunk_rows(c);
      expect(p, c + 1, true, false, false, true, w);
      pack_q(p, c0, rows, w);
      if (normalize) {
        forward_products(state, rows, false, w);
        make_g(p, c0, rows, w);
      } else {
        pack_g(p, c0, rows, w);
      }
      gemm<A, false, Mask::none>(rows, d.dkp / L, d.dv1, w.g, d.dvp, 1, state_t, d.dkp, w.acc, w.acc_ld, &w.ahead);
      store_rows(w.acc, w.acc_ld, rows, d.dk, scale, p.dq + c0 * d.dk);
      add_qg(reverse_local, rows, w);
    }
  }
  // local = the sum over the chunks of segment s, last chunk first, of q^T g' (needs den, h).
  void reverse_state_segment(const Problem<T>& p, int64_t s, A* local, Workspace<A>& w) const {
    zero(local, d.state_size());
    for (int64_t c = d.end_chunk(s) - 1; c >= d.first_chunk(s); --c) {
      const int64_t c0 = d.chunk_begin(c), rows = d.chunk_rows(c);
      expect(p, c - 1, true, false, false, true, w);
      pack_q(p, c0, rows, w);
      pack_g(p, c0, rows, w);
      add_qg(local, rows, w);
    }
  }
  // dk, dv from packed w.k, w.v (and w.q, w.g when causal) given T = state, T^T = state_t.
  void dkdv_products(const Problem<T>& p, int64_t c0, int64_t rows, const A* state, const A* state_t, bool causal,
                     Workspace<A>& w) const {
    // dv: acc = k T (+ triu(k q^T) g')
    gemm<A, false, Mask::none>(rows, d.dvp / L, d.dk, w.k, d.dkp, 1, state, d.dvp, w.acc, w.acc_ld, &w.ahead);
    if (causal) {
      transpose(w.q, d.dkp, rows, d.dk, w.xt, kChunk);
      scores<A, Mask::upper>(rows, d.dk, w.k, d.dkp, w.xt, w.scores, &w.ahead);
      gemm<A, true, Mask::upper>(rows, d.dvp / L, rows, w.scores, kChunk, 1, w.g, d.dvp, w.acc, w.acc_ld, &w.ahead);
    }
    store_rows(w.acc, w.acc_ld, rows, d.dv, scale, p.dv + c0 * d.dv);
    // dk: acc = v' T^T (+ triu(v' g'^T) q)
    gemm<A, false, Mask::none>(rows, d.dkp / L, d.dv1, w.v, d.dvp, 1, state_t, d.dkp, w.acc, w.acc_ld, &w.ahead);
    if (causal) {
      transpose(w.g, d.dvp, rows, d.dv1, w.xt, kChunk);
      scores<A, Mask::upper>(rows, d.dv1, w.v, d.dvp, w.xt, w.scores, &w.ahead);
      gemm<A, true, Mask::upper>(rows, d.dkp / L, rows, w.scores, kChunk, 1, w.q, d.dkp, w.acc, w.acc_ld, &w.ahead);
    }
    store_rows(w.acc, w.acc_ld, rows, d.dk, scale, p.dk + c0 * d.dk);
  }
  // The causal dk, dv of segment s, whose later segments sum to prefix (of q^T g').
  void dkdv_causal_segment(const Problem<T>& p, int64_t s, const A* prefix, Workspace<A>& w) const {
    zero(w.local, d.state_size());
    for (int64_t c = d.end_chunk(s) - 1; c >= d.first_chunk(s); --c) {
      const int64_t c0 = d.chunk_begin(c), rows = d.chunk_rows(c);
      expect(p, c - 1, true, true, true, true, w);
      add(prefix, w.local, w.state, d.state_size());
      transpose(w.state, d.dvp, d.dk, d.dv1, w.state_t, d.dkp);
      pack_q(p, c0, rows, w);
      pack_k(p, c0, rows, w);
      pack_v(p, c0, rows, w);
      pack_g(p, c0, rows, w);
      dkdv_products(p, c0, rows, w.state, w.state_t, true, w);
      add_qg(w.local, rows, w);
    }
  }
  void dkdv_noncausal_chunk(const Problem<T>& p, int64_t c, const A* state, const A* state_t,
                            Workspace<A>& w) const {
    const int64_t c0 = d.chunk_begin(c), rows = d.chunk_rows(c);
    expect(p, c + 1, false, true, true, false, w);
    pack_k(p, c0, rows, w);
    pack_v(p, c0, rows, w);
    dkdv_products(p, c0, rows, state, state_t, false, w);
  }
};

// Per-problem state buffers of the split mode: [problems x segments] states.
template <class A> struct SegmentStates {
  const Dims& d;
  Buffer<A> memory;
  SegmentStates(const Dims& d_, int64_t problems) : d(d_), memory(problems * d_.segments * d_.state_size()) {}
  A* at(int64_t p, int64_t s) { return memory.data + (p * d.segments + s) * d.state_size(); }
  // states(p, s) = states(p, s - 1) + states(p, s) for s = 1, 2, ...: L_s -> prefix P_{s+1}.
  void prefix_forward(int64_t problems) {
    for (int64_t p = 0; p < problems; ++p)
      for (int64_t s = 1; s < d.segments; ++s) add(at(p, s - 1), at(p, s), at(p, s), d.state_size());
  }
  void prefix_reverse(int64_t problems) {
    for (int64_t p = 0; p < problems; ++p)
      for (int64_t s = d.segments - 2; s >= 0; --s) add(at(p, s + 1), at(p, s), at(p, s), d.state_size());
  }
  // total(p) = (states(p, 0) + states(p, 1)) + ...
  void total(int64_t p, A* out) {
    for (int64_t i = 0; i < d.state_size(); ++i) out[i] = at(p, 0)[i];
    for (int64_t s = 1; s < d.segments; ++s) add(out, at(p, s), out, d.state_size());
  }
};

template <class T> Problem<T> forward_problem(const LinearAttentionForwardArgs& a, int64_t p) {
  Problem<T> r;
  r.q = matrix<T>(a.q, p);
  r.k = matrix<T>(a.k, p);
  r.v = matrix<T>(a.v, p);
  r.q_stride = a.q.row_stride;
  r.k_stride = a.k.row_stride;
  r.v_stride = a.v.row_stride;
  r.out = static_cast<T*>(a.out) + p * a.n * a.dv;
  return r;
}

template <class T> Problem<T> backward_problem(const LinearAttentionBackwardArgs& a, int64_t p) {
  Problem<T> r;
  r.q = matrix<T>(a.q, p);
  r.k = matrix<T>(a.k, p);
  r.v = matrix<T>(a.v, p);
  r.dout = matrix<T>(a.dout, p);
  r.q_stride = a.q.row_stride;
  r.k_stride = a.k.row_stride;
  r.v_stride = a.v.row_stride;
  r.dout_stride = a.dout.row_stride;
  r.dq = static_cast<T*>(a.dq) + p * a.n * a.dk;
  r.dk = static_cast<T*>(a.dk_out) + p * a.n * a.dk;
  r.dv = static_cast<T*>(a.dv_out) + p * a.n * a.dv;
  return r;
}

}  // namespace

template <class T> void linear_attention_forward(const LinearAttentionForwardArgs& a) {
  using A = acc_t<T>;
  if (a.problems <= 0 || a.n <= 0 || a.dv <= 0) return;
  const Dims d(a.n, a.dk, a.dv, a.normalize, kLanes<A>);
  const LinearAttention<T> la{d, A(a.scale), A(a.eps), a.normalize};
  const int64_t problems = a.problems, segments = d.segments, chunks = d.chunks;
  auto problem = [&](int64_t p) { return forward_problem<T>(a, p); };

  if (!split_problems(problems, a.threads, d)) {
    for_items<A>(problems, a.threads, d, [&](int64_t p, Workspace<A>& w) {
      const Problem<T> pr = problem(p);
      if (a.causal) {
        zero(w.prefix, d.state_size());
        for (int64_t s = 0; s < segments; ++s) {
          la.forward_causal_segment(pr, s, w.prefix, w);
          if (s + 1 < segments) add(w.prefix, w.local, w.prefix, d.state_size());
        }
        return;
      }
      // S in prefix: segment 0's sum, then + each further segment's (as SegmentStates::total)
      la.forward_state_segment(pr, 0, w.prefix, w);
      for (int64_t s = 1; s < segments; ++s) {
        la.forward_state_segment(pr, s, w.local, w);
        add(w.prefix, w.local, w.prefix, d.state_size());
      }
      for (int64_t c = 0; c < chunks; ++c) la.forward_noncausal_chunk(pr, c, w.prefix, w);
    });
    return;
  }

  SegmentStates<A> states(d, problems);
  if (a.causal) {
    // L of every segment but the last, into the slot of the next one; then prefixes.
    for_items<A>(problems * (segments - 1), a.threads, d, [&](int64_t i, Workspace<A>& w) {
      const int64_t p = i / (segments - 1), s = i % (segments - 1);
      la.forward_state_segment(problem(p), s, states.at(p, s + 1), w);
    });
    states.prefix_forward(problems);
    for_items<A>(problems * segments, a.threads, d, [&](int64_t i, Workspace<A>& w) {
      const int64_t p = i / segments, s = i % segments;
      la.forward_causal_segment(problem(p), s, states.at(p, s), w);
    });
  } else {
    for_items<A>(problems * segments, a.threads, d, [&](int64_t i, Workspace<A>& w) {
      const int64_t p = i / segments, s = i % segments;
      la.forward_state_segment(problem(p), s, states.at(p, s), w);
    });
    Buffer<A> totals(problems * d.state_size());
    for (int64_t p = 0; p < problems; ++p) states.total(p, totals.data + p * d.state_size());
    for_items<A>(problems * chunks, a.threads, d, [&](int64_t i, Workspace<A>& w) {
      const int64_t p = i / chunks, c = i % chunks;
      la.forward_noncausal_chunk(problem(p), c, totals.data + p * d.state_size(), w);
    });
  }
}

template <class T> void linear_attention_backward(const LinearAttentionBackwardArgs& a) {
  using A = acc_t<T>;
  if (a.problems <= 0 || a.n <= 0) return;
  const Dims d(a.n, a.dk, a.dv, a.normalize, kLanes<A>);
  const LinearAttention<T> la{d, A(a.scale), A(a.eps), a.normalize};
  const int64_t problems = a.problems, segments = d.segments, chunks = d.chunks, size = d.state_size();
  const bool keep_rows = a.causal && a.normalize;  // den and h of every row
  auto problem = [&](int64_t p, A* rows) {
    Problem<T> pr = backward_problem<T>(a, p);
    if (keep_rows) {
      pr.den = rows;
      pr.h = rows + a.n;
    }
    return pr;
  };

  if (!split_problems(problems, a.threads, d)) {
    for_items<A>(problems, a.threads, d, [&](int64_t p, Workspace<A>& w) {
      Buffer<A> rows(keep_rows ? 2 * a.n : 0);
      const Problem<T> pr = problem(p, rows.data);
      if (a.causal) {
        zero(w.prefix, size);
        for (int64_t s = 0; s < segments; ++s) {
          la.dq_causal_segment(pr, s, w.prefix, w);
          if (s + 1 < segments) add(w.prefix, w.local, w.prefix, size);
        }
        zero(w.prefix, size);
        for (int64_t s = segments - 1; s >= 0; --s) {
          la.dkdv_causal_segment(pr, s, w.prefix, w);
          if (s > 0) add(w.prefix, w.local, w.prefix, size);
        }
        return;
      }
      // Non-causal: S in prefix (S^T in state_t), then T in state (T^T in state_t), each summed
      // over segments as SegmentStates::total does.
      la.forward_state_segment(pr, 0, w.prefix, w);
      for (int64_t s = 1; s < segments; ++s) {
        la.forward_state_segment(pr, s, w.local, w);
        add(w.prefix, w.local, w.prefix, size);
      }
      transpose(w.prefix, d.dvp, d.dk, d.dv1, w.state_t, d.dkp);
      la.dq_noncausal_segment(pr, 0, w.prefix, w.state_t, w.state, w);
      for (int64_t s = 1; s < segments; ++s) {
        la.dq_noncausal_segment(pr, s, w.prefix, w.state_t, w.local, w);
        add(w.state, w.local, w.state, size);
      }
      transpose(w.state, d.dvp, d.dk, d.dv1, w.state_t, d.dkp);
      for (int64_t c = 0; c < chunks; ++c) la.dkdv_noncausal_chunk(pr, c, w.state, w.state_t, w);
    });
    return;
  }

  Buffer<A> rows(keep_rows ? problems * 2 * a.n : 0);
  auto problem_at = [&](int64_t p) { return problem(p, keep_rows ? rows.data + p * 2 * a.n : nullptr); };
  SegmentStates<A> states(d, problems);
  if (a.causal) {
    for_items<A>(problems * (segments - 1), a.threads, d, [&](int64_t i, Workspace<A>& w) {
      const int64_t p = i / (segments - 1), s = i % (segments - 1);
      la.forward_state_segment(problem_at(p), s, states.at(p, s + 1), w);
    });
    states.prefix_forward(problems);
    for_items<A>(problems * segments, a.threads, d, [&](int64_t i, Workspace<A>& w) {
      const int64_t p = i / segments, s = i % segments;
      la.dq_causal_segment(problem_at(p), s, states.at(p, s), w);
    });
    // Reverse: L of every segment but the first, into the slot of the one before; prefixes
    // from the last segment down.
    SegmentStates<A> reverse(d, problems);
    for_items<A>(problems * (segments - 1), a.threads, d, [&](int64_t i, Workspace<A>& w) {
      const int64_t p = i / (segments - 1), s = i % (segments - 1) + 1;
      la.reverse_state_segment(problem_at(p), s, reverse.at(p, s - 1), w);
    });
    reverse.prefix_reverse(problems);
    for_items<A>(problems * segments, a.threads, d, [&](int64_t i, Workspace<A>& w) {
      const int64_t p = i / segments, s = i % segments;
      la.dkdv_causal_segment(problem_at(p), s, reverse.at(p, s), w);
    });
    return;
  }
  // Non-causal: S = sum of segment states; dq and the segments' T partials; T; dk, dv.
  for_items<A>(problems * segments, a.threads, d, [&](int64_t i, Workspace<A>& w) {
    const int64_t p = i / segments, s = i % segments;
    la.forward_state_segment(problem_at(p), s, states.at(p, s), w);
  });
  const int64_t tsize = d.dvp * d.dkp;
  Buffer<A> totals(problems * size), totals_t(problems * tsize);
  for (int64_t p = 0; p < problems; ++p) {
    states.total(p, totals.data + p * size);
    transpose(totals.data + p * size, d.dvp, d.dk, d.dv1, totals_t.data + p * tsize, d.dkp);
  }
  for_items<A>(problems * segments, a.threads, d, [&](int64_t i, Workspace<A>& w) {
    const int64_t p = i / segments, s = i % segments;
    la.dq_noncausal_segment(problem_at(p), s, totals.data + p * size, totals_t.data + p * tsize, states.at(p, s), w);
  });
  for (int64_t p = 0; p < problems; ++p) {
    states.total(p, totals.data + p * size);
    transpose(totals.data + p * size, d.dvp, d.dk, d.dv1, totals_t.data + p * tsize, d.dkp);
  }
  for_items<A>(problems * chunks, a.threads, d, [&](int64_t i, Workspace<A>& w) {
    const int64_t p = i / chunks, c = i % chunks;
    la.dkdv_noncausal_chunk(problem_at(p), c, totals.data + p * size, totals_t.data + p * tsize, w);
  });
}

PYNORM_INSTANTIATE(linear_attention_forward, LinearAttentionForwardArgs)
PYNORM_INSTANTIATE(linear_attention_backward, LinearAttentionBackwardArgs)

}  // namespace PYNORM_ISA
}  // namespace pynorm
