// LayerNorm / RMSNorm / projection-only / scaling-only: forward and backward, one kernel.
// Compiled once per ISA (see CMakeLists.txt); see pynorm/norm.h for the formulas.
//
// Per row the data is read from memory once: the statistics passes and the output pass run
// over a row that is still in L1/L2. Outputs larger than the last-level cache are written
// with streaming stores, so writing y costs no read of y.
//
// Rows of up to 16 KiB are processed a group of kGroupRows at a time, their loops
// interleaved: a row's sums are a chain of dependent adds ending in horizontal sums, a
// division and a square root, and on a 32-element row that latency, not the arithmetic, is
// what costs. Rows of up to 256 bytes go a vector's lane count at a time (16 float rows
// with AVX-512; half that in the backward, whose two sums per row would not otherwise fit in
// registers): their horizontal sums are one transposed tree (simd.h's hsums) and their
// square roots and divisions vector instructions. The backward's rows of one or two vectors
// (FixedVecs) go four (or eight) at a time with g = dy w and xhat kept in registers from the
// row sums to dx: x and dy are read once, and the dx pass waits on nothing but the sums.
// Grouping changes no result: each row is computed exactly as alone, and contributions to
// the column sums (dweight, dbias) are still added in row order.
#include "pynorm/norm.h"

#include <cmath>

#include "kernels.h"
#include "simd.h"

namespace pynorm {
namespace PYNORM_ISA {

namespace {

template <class A> struct RowStats { A mean, rstd; };

constexpr int kGroupRows = 4;
constexpr int64_t kGroupedRowBytes = 16384;  // rows up to this size are grouped (a group stays in L2)
constexpr int64_t kShortRowBytes = 256;      // rows up to this size go in bigger groups (S below)

// Calls f(std::integral_constant<int, R>{}, r) for consecutive groups of R rows covering
// [r0, r1): groups of S for rows up to kShortRowBytes, of kGroupRows for rows up to
// kGroupedRowBytes, then single rows.
template <int S, class F> inline void for_each_row_group(int64_t r0, int64_t r1, int64_t row_bytes, F&& f) {
  int64_t r = r0;
  if (row_bytes <= kShortRowBytes) r = row_groups<S>(r, r1, f);
  if (row_bytes <= kGroupedRowBytes) r = row_groups<kGroupRows>(r, r1, f);
  row_groups<1>(r, r1, f);
}

// Two sums per row for R rows, times factor: pass(a, b) adds row j's terms into a[j] and b[j],
// and out_a[j], out_b[j] receive their horizontal sums times factor. When 2R vectors fit one
// transposed tree (simd.h's hsums), the 2R accumulators share it, and one vector multiply
// scales all the sums.
template <int R, class A, class Pass> PYNORM_INLINE void paired_row_sums(Pass&& pass, A factor, A* out_a, A* out_b) {
  Vec<A> acc[2 * R] = {};
  pass(acc, acc + R);
  if constexpr (kSharedTree<2 * R, kLanes<A>>) {
    constexpr int S = kLanes<A> / (2 * R);
    const Vec<A> sums = shared_hsums<2 * R>(acc) * factor;
    PYNORM_UNROLL for (int j = 0; j < R; ++j) out_a[j] = sums[j * S], out_b[j] = sums[(R + j) * S];
  } else {
    hsums<R>(acc, out_a);
    hsums<R>(acc + R, out_b);
    PYNORM_UNROLL for (int j = 0; j < R; ++j) out_a[j] *= factor, out_b[j] *= factor;
  }
}

constexpr float kTinySquares = 1e-30f;  // with eps = 0, float32 squares below it lose digits

// One row's statistics in float64, for the rare float32-accumulated rows whose float32 sum of
// squares is out of reach (row_stats returns true): it overflows (|x - mean| beyond ~1e19) or
// is NaN (a mean that overflowed; a NaN row stays NaN), or with eps = 0 it is below
// kTinySquares (|x - mean| below ~1e-15), where the normalised row is still representable.
template <class T>
__attribute__((noinline, cold)) RowStats<acc_t<T>> row_stats_float64(const T* x, int64_t n, bool center, double eps) {
  double mean = 0, squares = 0, c = 0;
  if (center) {
    for (int64_t i = 0; i < n; ++i) mean += double(to_acc(x[i]));
    mean /= double(n);
  }
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(to_acc(x[i])) - mean;
    c += d;
    squares += d * d;
  }
  if (center) {
    squares -= c * c / double(n);
    mean += c / double(n);
    squares = squares < 0 ? 0 : squares;  // NaN stays NaN
  }
  return {acc_t<T>(mean), acc_t<T>(1.0 / std::sqrt(squares / double(n) + eps))};
}

// Whether some row's float32 sum of squares was out of float32's reach (see
// row_stats_float64): row_stats adds each group's sums (a vector compare and an or, no
// horizontal step), and the row loop asks any() once, after its rows.
template <class A> struct OutOfReach {
  using Mask = decltype(Vec<A>{} < Vec<A>{});
  static constexpr A kMax = A(3.4028234663852886e38);  // float32's largest finite value
  Mask lanes{};
  bool row = false;
  A tiny;  // kTinySquares with eps = 0, else 0
  explicit OutOfReach(A eps) : tiny(eps == 0 ? A(kTinySquares) : A(0)) {}
  PYNORM_INLINE void add(Vec<A> squares) { lanes |= ~(squares <= kMax) | (squares < tiny); }
  PYNORM_INLINE void add(A squares) { row |= !(squares <= kMax) || squares < tiny; }
  bool any() const {
    bool found = row;
    for (int j = 0; j < kLanes<A>; ++j) found |= lanes[j] != 0;
    return found;
  }
};

// Two-pass statistics of R rows in cache: the mean, then the centred sum of squares with the
// classic correction term (which also refines the mean), never E[x^2] - E[x]^2. Without
// centring, one pass: the sum of squares. With float32 accumulation, the sums of squares go
// to `reach`: rows out of float32's reach get wrong statistics here and are redone after the
// row loop (exact_row_stats), which keeps the loop as fast.
template <int R, bool center, class T>
PYNORM_INLINE void row_stats(const T* const* x, int64_t n, bool scale, acc_t<T> eps, RowStats<acc_t<T>>* s,
                             OutOfReach<acc_t<T>>& reach) {
  using A = acc_t<T>;
  const A inv_n = A(1) / A(n);  // one division per group, not one per statistic
  A mean[R] = {}, rstd[R];
  if constexpr (center) {
    Vec<A> sum[R] = {};
    for_each_vec<A>(n, [&](int64_t i, auto k) {
      PYNORM_UNROLL for (int j = 0; j < R; ++j) sum[j] += load(x[j] + i, k);
    });
    hsums<R>(sum, mean);
    PYNORM_UNROLL for (int j = 0; j < R; ++j) mean[j] *= inv_n;
  }
  if (scale) {
    Vec<A> sum_d[R] = {}, sum_d2[R] = {};
    for_each_vec<A>(n, [&](int64_t i, auto k) {
      PYNORM_UNROLL for (int j = 0; j < R; ++j) {
        Vec<A> d = load(x[j] + i, k);  // zero-padded tail
        if constexpr (center) {
          d = keep(d - mean[j], k);
          sum_d[j] += d;
        }
        sum_d2[j] = fmadd(d, d, sum_d2[j]);
      }
    });
    A squares[R], c[R] = {};
    hsums<R>(sum_d2, squares);
    if constexpr (center) hsums<R>(sum_d, c);
    // The per-row tail, a vector of rows at a time when the group is a lane count (IEEE square
    // roots and divisions round the same in a vector as alone).
    auto finish = [&](auto mean_, auto squares_, auto c_, auto* mean_out, auto* rstd_out) {
      using V = decltype(mean_);
      if constexpr (center) {
        c_ *= inv_n;
        squares_ -= c_ * c_ * A(n);
        mean_ += c_;
        squares_ = squares_ < 0 ? V{} : squares_;  // NaN stays NaN
      }
      *mean_out = mean_;
      *rstd_out = A(1) / sqrt_vec(squares_ * inv_n + eps);
      if constexpr (std::is_same_v<A, float>) reach.add(squares_);
    };
    if constexpr (R == kLanes<A>) {
      Vec<A> m, sq, cc, rs;
      std::memcpy(&m, mean, sizeof m), std::memcpy(&sq, squares, sizeof sq), std::memcpy(&cc, c, sizeof cc);
      finish(m, sq, cc, &m, &rs);
      std::memcpy(mean, &m, sizeof m), std::memcpy(rstd, &rs, sizeof rs);
    } else {
      PYNORM_UNROLL for (int j = 0; j < R; ++j) finish(mean[j], squares[j], c[j], &mean[j], &rstd[j]);
    }
  } else {
    PYNORM_UNROLL for (int j = 0; j < R; ++j) rstd[j] = A(1);
  }
  PYNORM_UNROLL for (int j = 0; j < R; ++j) s[j] = {mean[j], rstd[j]};
}

// Row x's statistics into s as row_stats gives them, or row_stats_float64's where those are
// out of float32's reach (then returns true): for the row loops that found such a row. Each
// row's own sums decide, so no result depends on the other rows or on the threads.
template <bool center, class T>
__attribute__((cold)) bool exact_row_stats(const T* x, int64_t n, bool scale, acc_t<T> eps, RowStats<acc_t<T>>* s) {
  OutOfReach<acc_t<T>> reach(eps);
  row_stats<1, center>(&x, n, scale, eps, s, reach);
  if (!reach.any()) return false;
  *s = row_stats_float64(x, n, center, double(eps));
  return true;
}

// Whether a group's output pass asks for the next group's rows (simd.h's prefetch): always
// for long rows; for groups of short rows (more than kGroupRows, or FixedVecs rows) only when
// the data is too large for the cache (the outputs are streamed), since in cache the
// prefetches cost more than they save.
template <int R, bool Stream, class Shape = AnyVecs>
constexpr bool fetch_ahead = Stream || (R <= kGroupRows && std::is_same_v<Shape, AnyVecs>);

// Writes the outputs of a group of R rows (simd.h's write_rows): short rows a vector of each
// row in turn, in one loop for the group; longer rows one after the other (rows whose
// addresses differ by a multiple of 4 KiB would otherwise contend for the same L1 sets).
template <bool Stream, int R, class T, class F, class Shape>
PYNORM_INLINE void write_group(T* out, int64_t n, F&& value, Shape shape) {
  if constexpr (R > kGroupRows || !std::is_same_v<Shape, AnyVecs>) {
    write_rows<Stream, R>(out, n, value, shape);
  } else {
    PYNORM_UNROLL for (int j = 0; j < R; ++j)
      write_rows<Stream, 1>(out + j * n, n, [&](int64_t i, auto k) { return [row = value(i, k), j](int) { return row(j); }; });
  }
}

// Vectors per row up to which the backward keeps a group's g and xhat in registers (FixedVecs
// rows), and how many of each a group may hold: with AVX-512's 32 registers, 4 rows of 2
// vectors, 8 of 1; with 16 registers, 4 rows of 1 vector (groups of 4 rows beat 8 and 2).
// Rows of 16-bit floats take the generic path: the extra instantiations would double
// norm.cpp's build time for types used as storage.
constexpr int kCachedVecs = PYNORM_VEC_BYTES == 64 ? 8 : 4;
constexpr int kCachedRowVecs = kCachedVecs / 4;
template <class Shape> struct CachedRows { static constexpr int vecs = 1, rows = 1; };
template <int V, bool Tail> struct CachedRows<FixedVecs<V, Tail>> { static constexpr int vecs = V, rows = kCachedVecs / V; };

}  // namespace

template <class T> void norm_forward(const NormForwardArgs& a) {
  using A = acc_t<T>;
  const int64_t dim = a.dim, stride = a.x_row_stride;
  const Affine<T> params(a.weight, a.bias, dim);
  with_bools(
      [&](auto affine, auto has_bias, auto center, auto stream) {
        if constexpr (has_bias && !affine) {  // never: a bias comes with a weight (of ones)
        } else {
          // The outputs of the R rows from r on, given their statistics s.
          auto write = [&](auto rows, int64_t r, const T* const* x, const RowStats<A>* s) {
            constexpr int R = decltype(rows)::value;
            if (a.mean) PYNORM_UNROLL for (int j = 0; j < R; ++j) static_cast<A*>(a.mean)[r + j] = s[j].mean;
            if (a.rstd) PYNORM_UNROLL for (int j = 0; j < R; ++j) static_cast<A*>(a.rstd)[r + j] = s[j].rstd;
            write_group<stream, R>(static_cast<T*>(a.y) + r * dim, dim, [&](int64_t i, auto k) {
              Vec<A> w = {}, b = {};
              if constexpr (affine) w = load(params.weight + i, k);
              if constexpr (has_bias) b = load(params.bias + i, k);
              return [&, i, k, w, b](int j) {
                if constexpr (fetch_ahead<R, stream>) prefetch(x[j] + R * stride + i);  // the next group's row
                Vec<A> v = load(x[j] + i, k);
                if constexpr (center) v -= s[j].mean;
                // ((x - mean) rstd) w + b: rstd w alone can underflow or overflow (a huge row's
                // rstd times a tiny weight) where the result is representable
                if constexpr (has_bias) return fmadd(v * s[j].rstd, w, b);
                if constexpr (affine) return (v * s[j].rstd) * w;
                return v * s[j].rstd;
              };
            }, AnyVecs{});
          };
          parallel_for(a.rows, a.threads, [&](int64_t r0, int64_t r1) {
            OutOfReach<A> reach(A(a.eps));
            for_each_row_group<kLanes<A>>(r0, r1, dim * int64_t(sizeof(T)), [&](auto rows, int64_t r) {
              constexpr int R = decltype(rows)::value;
              const T* x[R];
              PYNORM_UNROLL for (int j = 0; j < R; ++j) x[j] = static_cast<const T*>(a.x) + (r + j) * stride;
              RowStats<A> s[R];
              row_stats<R, center>(x, dim, a.scale, A(a.eps), s, reach);
              write(rows, r, x, s);
            });
            if (__builtin_expect(reach.any(), 0))  // rare: the rows out of float32's reach, again
              for (int64_t r = r0; r < r1; ++r) {
                const T* x = static_cast<const T*>(a.x) + r * stride;
                RowStats<A> s;
                if (exact_row_stats<center>(x, dim, a.scale, A(a.eps), &s)) write(std::integral_constant<int, 1>{}, r, &x, &s);
              }
          });
        }
      },
      params.any(), a.bias != nullptr, a.center, stream_rows(static_cast<T*>(a.y), a.rows, dim));
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * weight, xhat = (x - mu) * rstd;
// without centring mean(g) is dropped, without scaling the xhat term is (rstd = 1). The sums
// of g xhat and dy xhat and dx's xhat term are fused multiply-adds (one rounding fewer, and
// fewer instructions).
template <class T> void norm_backward(const NormBackwardArgs& a) {
  using A = acc_t<T>;
  const int64_t dim = a.dim;
  // With a weight or a dbias, both column sums are formed (a missing weight is ones) and the
  // ones asked for are returned: one variant instead of three.
  const Affine<T> params(a.weight, a.dbias, dim);  // dbias stands for the bias: its partner is a weight of ones
  const T* weight = params.weight;
  const bool recompute = (a.center && !a.mean) || (a.scale && !a.rstd);
  const int64_t width = params.any() ? 2 * dim : 0;
  const A inv_dim = A(1) / A(dim);
  Buffer<A> totals(width);
  with_bools(
      [&](auto has_params, auto scale, auto stream) {
        // A group of R rows. With FixedVecs rows (shape), the sums pass keeps g and xhat in
        // registers for the dx pass, which then reads neither x nor dy again, and the block's
        // weight and dweight and dbias partials stay in registers too (w_kept, dw_kept,
        // db_kept: a vector per vector of the row); other rows read and write the partials in
        // memory.
        // Recomputed statistics go to reach; redo (when not null) holds the statistics of the
        // block's rows from `first` on, for a block that is computed again (see below).
        auto group = [&](auto rows, int64_t r, A* partial, auto shape, Vec<A>* w_kept, Vec<A>* dw_kept,
                         Vec<A>* db_kept, OutOfReach<A>& reach, const RowStats<A>* redo,
                         int64_t first) PYNORM_INLINE_LAMBDA {
          constexpr int R = decltype(rows)::value;
          constexpr bool cached = !std::is_same_v<decltype(shape), AnyVecs>;
          constexpr int V = CachedRows<decltype(shape)>::vecs;
          const T *x[R], *dy[R];
          PYNORM_UNROLL for (int j = 0; j < R; ++j) {
            x[j] = static_cast<const T*>(a.x) + (r + j) * a.x_row_stride;
            dy[j] = static_cast<const T*>(a.dy) + (r + j) * a.dy_row_stride;
          }
          RowStats<A> s[R];
          if (redo) {
            PYNORM_UNROLL for (int j = 0; j < R; ++j) s[j] = redo[r + j - first];
          } else if (recompute) {
            if (a.center)
              row_stats<R, true>(x, dim, a.scale, A(a.eps), s, reach);
            else
              row_stats<R, false>(x, dim, a.scale, A(a.eps), s, reach);
          } else {
            PYNORM_UNROLL for (int j = 0; j < R; ++j)
              s[j] = {a.center ? static_cast<const A*>(a.mean)[r + j] : A(0),
                      a.scale ? static_cast<const A*>(a.rstd)[r + j] : A(1)};
          }
          A* partial_dweight = partial;
          A* partial_dbias = partial + (has_params ? dim : 0);
          A mean_g[R], mean_gx[R];
          Vec<A> g_kept[cached ? R : 1][V], xhat_kept[cached ? R : 1][V];
          paired_row_sums<R>(
              [&](Vec<A>* sum_g, Vec<A>* sum_gx) {
                for_each_vec<A>(dim, [&](int64_t i, auto k) {
                  Vec<A> w = {}, dw = {}, db = {};
                  if constexpr (cached) {
                    w = w_kept[i / kLanes<A>], dw = dw_kept[i / kLanes<A>], db = db_kept[i / kLanes<A>];
                  } else {
                    if constexpr (has_params) w = load(weight + i, k), dw = load(partial_dweight + i, k), db = load(partial_dbias + i, k);
                  }
                  PYNORM_UNROLL for (int j = 0; j < R; ++j) {
                    const Vec<A> dyv = load(dy[j] + i, k);
                    const Vec<A> g = has_params ? dyv * w : dyv;
                    const Vec<A> xhat = keep((load(x[j] + i, k) - s[j].mean) * s[j].rstd, k);
                    if constexpr (cached) g_kept[j][i / kLanes<A>] = g, xhat_kept[j][i / kLanes<A>] = xhat;
                    sum_g[j] += g;
                    sum_gx[j] = fmadd(g, xhat, sum_gx[j]);
                    if constexpr (has_params) dw = fmadd(dyv, xhat, dw), db += dyv;
                  }
                  if constexpr (cached) {
                    dw_kept[i / kLanes<A>] = dw, db_kept[i / kLanes<A>] = db;
                  } else {
                    if constexpr (has_params) store<false>(partial_dweight + i, dw, k), store<false>(partial_dbias + i, db, k);
                  }
                }, shape);
              },
              inv_dim, mean_g, mean_gx);
          if (!a.center) PYNORM_UNROLL for (int j = 0; j < R; ++j) mean_g[j] = A(0);
          write_group<stream, R>(static_cast<T*>(a.dx) + r * dim, dim, [&](int64_t i, auto k) {
            Vec<A> w = {};
            if constexpr (has_params && !cached) w = load(weight + i, k);
            return [&, i, k, w](int j) {
              if constexpr (fetch_ahead<R, stream, decltype(shape)>) {
                prefetch(x[j] + R * a.x_row_stride + i);
                prefetch(dy[j] + R * a.dy_row_stride + i);
              }
              Vec<A> g, xhat;
              if constexpr (cached) {
                g = g_kept[j][i / kLanes<A>], xhat = xhat_kept[j][i / kLanes<A>];
              } else {
                g = load(dy[j] + i, k);
                if constexpr (has_params) g *= w;
                if constexpr (scale) xhat = (load(x[j] + i, k) - s[j].mean) * s[j].rstd;
              }
              if constexpr (!scale) return g - mean_g[j];  // x does not enter: NaN in x stays out
              return fmadd(xhat, splat(-mean_gx[j]), g - mean_g[j]) * s[j].rstd;
            };
          }, shape);
        };
        reduce_rows_in_blocks<A>(
            a.rows, dim, width, a.threads,
            [&](int64_t r0, int64_t r1, A* partial) {
              // The block's rows into its partial sums; returns whether a recomputed row was out
              // of float32's reach.
              auto block = [&](const RowStats<A>* redo) {
              OutOfReach<A> reach(A(a.eps));
              with_row_shape<A, std::is_same_v<T, A> ? kCachedRowVecs : 0>(dim, [&](auto shape) {
                constexpr int S = std::is_same_v<decltype(shape), AnyVecs> ? kLanes<A> / 2 : CachedRows<decltype(shape)>::rows;
                constexpr bool cached = !std::is_same_v<decltype(shape), AnyVecs>;
                constexpr int V = CachedRows<decltype(shape)>::vecs;
                // three arrays, not one: GCC keeps small arrays in registers, not a [3][V] one
                Vec<A> w_kept[V] = {}, dw_kept[V] = {}, db_kept[V] = {};
                A* const partial_dbias = partial + (has_params ? dim : 0);
                if constexpr (cached) for_each_vec<A>(dim, [&](int64_t i, auto k) {
                  if constexpr (has_params)
                    w_kept[i / kLanes<A>] = load(weight + i, k), dw_kept[i / kLanes<A>] = load(partial + i, k),
                    db_kept[i / kLanes<A>] = load(partial_dbias + i, k);
                }, shape);
                for_each_row_group<S>(r0, r1, dim * int64_t(sizeof(T)), [&](auto rows, int64_t r) PYNORM_INLINE_LAMBDA {
                  group(rows, r, partial, shape, w_kept, dw_kept, db_kept, reach, redo, r0);
                });
                if constexpr (cached) for_each_vec<A>(dim, [&](int64_t i, auto k) {
                  if constexpr (has_params) store<false>(partial + i, dw_kept[i / kLanes<A>], k), store<false>(partial_dbias + i, db_kept[i / kLanes<A>], k);
                }, shape);
              });
              return reach.any();
              };
              if (__builtin_expect(block(nullptr), 0)) {
                // rare: the whole block again (its partials from zero), every row with the
                // statistics of exact_row_stats (the same as before where they were in reach)
                Buffer<RowStats<A>> redo(r1 - r0);
                for (int64_t r = r0; r < r1; ++r) {
                  const T* x = static_cast<const T*>(a.x) + r * a.x_row_stride;
                  if (a.center)
                    exact_row_stats<true>(x, dim, a.scale, A(a.eps), &redo.data[r - r0]);
                  else
                    exact_row_stats<false>(x, dim, a.scale, A(a.eps), &redo.data[r - r0]);
                }
                for (int64_t i = 0; i < width; ++i) partial[i] = 0;
                block(redo.data);
              }
            },
            totals.data);
      },
      params.any(), a.scale, stream_rows(static_cast<T*>(a.dx), a.rows, dim));
  if (a.weight) store_totals(static_cast<T*>(a.dweight), totals.data, dim);
  if (a.dbias) store_totals(static_cast<T*>(a.dbias), totals.data + dim, dim);
}

PYNORM_INSTANTIATE(norm_forward, NormForwardArgs)
PYNORM_INSTANTIATE(norm_backward, NormBackwardArgs)

}  // namespace PYNORM_ISA
}  // namespace pynorm
