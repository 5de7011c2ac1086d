// The register-blocked micro-kernel shared by the kernels built from small matrix products
// (linear attention, matmul), and the packing of their operands. Per-ISA, like simd.h.
//
//     c[MR rows x NV vectors] (+)= a[MR x depth] * b[depth x NV vectors]   (fused multiply-adds),
//
// with a read by broadcasts through two strides (so a transposed a costs nothing) and b by
// vector loads of rows. `gemm` runs it over a matrix (optionally over the triangle of a masked
// score matrix only). Every element of c is one chain of multiply-adds over the depth, in
// order, whatever the tile: results never depend on the tile shape or on where a product is
// cut into calls.
#pragma once
#include <utility>

#include "simd.h"

namespace pynorm {
namespace PYNORM_ISA {
namespace {

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
inline int64_t min_of(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max_of(int64_t a, int64_t b) { return a > b ? a : b; }

// Register tiles of the micro-kernel: MR rows x NV vectors of accumulators. 3 x 4, 4 x 3, 6 x 2
// and 12 x 1 all keep 12 accumulators + NV loads of b + 1 broadcast within the 16 vector
// registers of SSE/AVX2; `gemm` picks the one that covers a row of c without a narrow tail.
// Every element of c is the same chain of multiply-adds over k whatever the tile, so the tile
// choice never changes a result.
inline int tile_vecs(int64_t n_vecs) {
  if (n_vecs % 4 == 0) return 4;
  if (n_vecs % 3 == 0 || n_vecs > 4) return 3;
  return int(n_vecs);  // 1, 2
}
constexpr int tile_rows(int vecs) { return vecs == 4 ? 3 : vecs == 3 ? 4 : vecs == 2 ? 6 : 12; }

// ------------------------------------------------------------------ prefetching
// Asks for the next chunk's input rows a couple of rows at a time while the current chunk's
// products run (gemm and scores call step() after every tile), so that the memory latency of
// reading a chunk hides behind the arithmetic of the one before.
struct Prefetcher {
  static constexpr int kRowsPerTile = 2;
  struct Range {
    const char* base;
    int64_t stride, rows, bytes;  // in bytes: between rows, and of a row
  };
  Range ranges[4];
  int count = 0, range = 0;
  int64_t row = 0;
  void clear() { count = range = 0, row = 0; }
  template <class T> void add(const T* base, int64_t stride, int64_t rows, int64_t width) {
    if (count < 4 && rows > 0 && width > 0)
      ranges[count++] = {reinterpret_cast<const char*>(base), stride * int64_t(sizeof(T)), rows,
                         width * int64_t(sizeof(T))};
  }
  void step() {
    for (int n = 0; n < kRowsPerTile && range < count; ++n) {
      const Range& r = ranges[range];
      const char* p = r.base + row * r.stride;
      for (int64_t b = 0; b < r.bytes; b += 64) __builtin_prefetch(p + b, 0, 3);
      __builtin_prefetch(p + r.bytes - 1, 0, 3);  // rows need not start on a cache line
      if (++row == r.rows) row = 0, ++range;
    }
  }
};

// ------------------------------------------------------------------ micro-kernel
// Which part of a chunk x chunk score matrix s is kept: lower keeps s(i, t) for t <= i
// (causal, forward scan), upper keeps t >= i (reverse scan).
enum class Mask { none, lower, upper };

// c[MR x NV vectors] (+)= a[MR x depth] * b[depth x NV vectors], with a(i, k) at
// a[i * a_row + k * a_depth], b(k, :) at b + k * ldb and c(i, :) at c + i * ldc. With a mask,
// a is a tile of a masked score matrix on its diagonal: the last MR depths (lower) or the first
// MR (upper) are the triangle, and row i skips the depths outside it, so that a NaN or Inf in
// a masked row of b never meets the zero in a (0 * NaN would be NaN).
template <class A, int MR, int NV, bool Accumulate, Mask M = Mask::none>
inline void tile(int64_t depth, const A* a, int64_t a_row, int64_t a_depth, const A* b, int64_t ldb, A* c,
                 int64_t ldc) {
  constexpr int L = kLanes<A>;
  Vec<A> acc[MR][NV];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) {
      if constexpr (Accumulate)
        acc[i][j] = load(c + i * ldc + j * L, Full{});
      else
        acc[i][j] = Vec<A>{};
    }
  // acc(i, :) += a(i, k) b(k, :) for the rows i that keep depth k
  auto depth_step = [&](int64_t k, auto keeps) PYNORM_INLINE_LAMBDA {
    const A* bk = b + k * ldb;
    const A* ak = a + k * a_depth;
    Vec<A> bv[NV];
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) bv[j] = load(bk + j * L, Full{});
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
      if (!keeps(i)) continue;
      const Vec<A> ai = splat<A>(ak[i * a_row]);
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[i][j] = fmadd(ai, bv[j], acc[i][j]);
    }
  };
  const auto all = [](int) { return true; };
  if constexpr (M == Mask::upper)
#pragma GCC unroll 12
    for (int t = 0; t < MR; ++t) depth_step(t, [t](int i) { return t >= i; });
  for (int64_t k = M == Mask::upper ? MR : 0; k < (M == Mask::lower ? depth - MR : depth); ++k) depth_step(k, all);
  if constexpr (M == Mask::lower)
#pragma GCC unroll 12
    for (int t = 0; t < MR; ++t) depth_step(depth - MR + t, [t](int i) { return t <= i; });
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) store<false>(c + i * ldc + j * L, acc[i][j], Full{});
}

// The tile for mr <= MR rows and nv <= NV vectors (edges of a matrix).
template <class A, bool Accumulate, int MR, int NV, Mask M = Mask::none>
inline void tile_any(int mr, int nv, int64_t depth, const A* a, int64_t a_row, int64_t a_depth, const A* b,
                     int64_t ldb, A* c, int64_t ldc) {
  if (nv < NV) {
    if constexpr (NV > 1) tile_any<A, Accumulate, MR, NV - 1, M>(mr, nv, depth, a, a_row, a_depth, b, ldb, c, ldc);
  } else if (mr < MR) {
    if constexpr (MR > 1) tile_any<A, Accumulate, MR - 1, NV, M>(mr, nv, depth, a, a_row, a_depth, b, ldb, c, ldc);
  } else {
    tile<A, MR, NV, Accumulate, M>(depth, a, a_row, a_depth, b, ldb, c, ldc);
  }
}

// c[m x n_vecs vectors] (+)= a * b over the rows [0, m) and vectors [v0(r0), v1(r0)) of each
// block of MR rows starting at r0, with depths [k0(r0), k1(r0)) (k0 is applied to a and b).
template <class A, bool Accumulate, int MR, int NV, Mask M = Mask::none, class Range>
inline void tiles(int64_t m, const A* a, int64_t a_row, int64_t a_depth, const A* b, int64_t ldb, A* c,
                  int64_t ldc, Range range, Prefetcher* ahead) {
  constexpr int L = kLanes<A>;
  for (int64_t r0 = 0; r0 < m; r0 += MR) {
    const int mr = int(min_of(MR, m - r0));
    const auto [v0, v1, k0, k1] = range(r0, r0 + mr);
    for (int64_t j = v0; j < v1; j += NV) {
      const int nv = int(min_of(NV, v1 - j));
      tile_any<A, Accumulate, MR, NV, M>(mr, nv, k1 - k0, a + r0 * a_row + k0 * a_depth, a_row, a_depth,
                                      b + k0 * ldb + j * L, ldb, c + r0 * ldc + j * L, ldc);
      if (ahead) ahead->step();
    }
  }
}

// Calls f(std::integral_constant<int, NV>) for the tile width chosen for n_vecs.
template <class F> inline void with_tile_vecs(int64_t n_vecs, F&& f) {
  switch (tile_vecs(n_vecs)) {
    case 4: return f(std::integral_constant<int, 4>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 2: return f(std::integral_constant<int, 2>{});
    default: return f(std::integral_constant<int, 1>{});
  }
}

struct TileRange {
  int64_t v0, v1, k0, k1;
};

// c[m x n_vecs vectors] (+)= a * b, a(i, k) = a[i * a_row + k * a_depth], k < depth. With a
// mask, a is a square masked score matrix (m = depth) and row block [r0, r1) only runs over the
// depths its triangle reaches: lower [0, r1), upper [r0, depth), each row within the block
// only over its own (see tile). Not inlined: every caller runs the very same code, so the same
// inputs give the same bits wherever it is called from.
template <class A, bool Accumulate, Mask M>
__attribute__((noinline)) void gemm(int64_t m, int64_t n_vecs, int64_t depth, const A* a, int64_t a_row,
                                    int64_t a_depth, const A* b, int64_t ldb, A* c, int64_t ldc,
                                    Prefetcher* ahead) {
  with_tile_vecs(n_vecs, [&](auto nv) {
    constexpr int NV = decltype(nv)::value, MR = tile_rows(NV);
    tiles<A, Accumulate, MR, NV, M>(m, a, a_row, a_depth, b, ldb, c, ldc, [&](int64_t r0, int64_t r1) {
      return TileRange{0, n_vecs, M == Mask::upper ? r0 : 0, M == Mask::lower ? min_of(r1, depth) : depth};
    }, ahead);
  });
}

// dst(r, :) = [src(r, 0..width), 1 if ones, zeros up to ld] in the accumulate type.
template <class T, class A>
inline void pack(const T* src, int64_t stride, int64_t rows, int64_t width, bool ones, A* dst, int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* s = src + r * stride;
    A* d = dst + r * ld;
    for_each_vec<A>(width, [&](int64_t i, auto k) { store<false>(d + i, load(s + i, k), k); });
    for (int64_t c = width; c < ld; ++c) d[c] = 0;
    if (ones) d[width] = 1;
  }
}

// out(r, :) = scale * acc(r, 0..width) (+ add(r, :) when add is given, its rows add_stride
// apart), rounded to the storage type; out is contiguous.
template <class T, class A>
inline void store_rows(const A* acc, int64_t ld, int64_t rows, int64_t width, A scale, T* out,
                       const T* add = nullptr, int64_t add_stride = 0) {
  for (int64_t r = 0; r < rows; ++r) {
    const A* sum = acc + r * ld;
    T* o = out + r * width;
    if (add) {
      const T* plus = add + r * add_stride;
      write_row<false>(o, width, [&](int64_t i, auto k) { return load(sum + i, k) * scale + load(plus + i, k); });
    } else {
      write_row<false>(o, width, [&](int64_t i, auto k) { return load(sum + i, k) * scale; });
    }
  }
}

// In-register transpose of an L x L block held as L vectors: for each bit h of the lane index,
// rows i and i + h (i without bit h) exchange the lanes whose bit h differs from the row's, so
// that after every bit element (r, c) has moved to (c, r).
template <class A, int H, int... l>
inline void transpose_stage(Vec<A>* rows, std::integer_sequence<int, l...>) {
  constexpr int L = kLanes<A>;
  for (int i = 0; i < L; ++i) {
    if (i & H) continue;
    const Vec<A> a = rows[i], b = rows[i + H];
    rows[i] = __builtin_shufflevector(a, b, ((l & H) ? L + l - H : l)...);
    rows[i + H] = __builtin_shufflevector(a, b, ((l & H) ? L + l : l + H)...);
  }
}
template <class A, int H = kLanes<A> / 2> inline void transpose_block(Vec<A>* rows) {
  if constexpr (H >= 1) {
    transpose_stage<A, H>(rows, std::make_integer_sequence<int, kLanes<A>>{});
    transpose_block<A, H / 2>(rows);
  }
}

// dst(c, r) = src(r, c) for r < rows, c < cols; dst(c, r) = 0 for rows <= r < rows rounded up
// to whole vectors (ld_dst must hold that many). Whole L x L blocks in registers.
template <class A>
inline void transpose(const A* src, int64_t ld_src, int64_t rows, int64_t cols, A* dst, int64_t ld_dst) {
  constexpr int L = kLanes<A>;
  for (int64_t c0 = 0; c0 < cols; c0 += L) {
    const int nc = int(min_of(L, cols - c0));
    for (int64_t r0 = 0; r0 < rows; r0 += L) {
      const int nr = int(min_of(L, rows - r0));
      Vec<A> block[L];
      for (int i = 0; i < L; ++i) {
        const A* row = src + (r0 + i) * ld_src + c0;
        block[i] = i >= nr ? Vec<A>{} : nc == L ? load(row, Full{}) : load(row, nc);
      }
      transpose_block<A>(block);
      for (int j = 0; j < nc; ++j) store<false>(dst + (c0 + j) * ld_dst + r0, block[j], Full{});
    }
  }
}

}  // namespace
}  // namespace PYNORM_ISA
}  // namespace pynorm
