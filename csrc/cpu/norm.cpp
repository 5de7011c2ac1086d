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

// Two-pass statistics of R rows in cache: the mean, then the centred sum of squares with the
// classic correction term (which also refines the mean), never E[x^2] - E[x]^2. Without
// centring, one pass: the sum of squares.
template <int R, bool center, class T>
PYNORM_INLINE void row_stats(const T* const* x, int64_t n, bool scale, acc_t<T> eps, RowStats<acc_t<T>>* s) {
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
          auto group = [&](auto rows, int64_t r) {
            constexpr int R = decltype(rows)::value;
            const T* x[R];
            PYNORM_UNROLL for (int j = 0; j < R; ++j) x[j] = static_cast<const T*>(a.x) + (r + j) * stride;
            RowStats<A> s[R];
            row_stats<R, center>(x, dim, a.scale, A(a.eps), s);
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
            for_each_row_group<kLanes<A>>(r0, r1, dim * int64_t(sizeof(T)), group);
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
        auto group = [&](auto rows, int64_t r, A* partial, auto shape, Vec<A>* w_kept, Vec<A>* dw_kept,
                         Vec<A>* db_kept) PYNORM_INLINE_LAMBDA {
          constexpr int R = decltype(rows)::value;
          constexpr bool cached = !std::is_same_v<decltype(shape), AnyVecs>;
          constexpr int V = CachedRows<decltype(shape)>::vecs;
          const T *x[R], *dy[R];
          PYNORM_UNROLL for (int j = 0; j < R; ++j) {
            x[j] = static_cast<const T*>(a.x) + (r + j) * a.x_row_stride;
            dy[j] = static_cast<const T*>(a.dy) + (r + j) * a.dy_row_stride;
          }
          RowStats<A> s[R];
          if (recompute) {
            if (a.center)
              row_stats<R, true>(x, dim, a.scale, A(a.eps), s);
            else
              row_stats<R, false>(x, dim, a.scale, A(a.eps), s);
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
                  group(rows, r, partial, shape, w_kept, dw_kept, db_kept);
                });
                if constexpr (cached) for_each_vec<A>(dim, [&](int64_t i, auto k) {
                  if constexpr (has_params) store<false>(partial + i, dw_kept[i / kLanes<A>], k), store<false>(partial_dbias + i, db_kept[i / kLanes<A>], k);
                }, shape);
              });
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
