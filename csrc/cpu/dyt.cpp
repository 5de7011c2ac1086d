// DyT: y = weight * tanh(alpha * x) + bias, forward and backward. Compiled once per ISA;
// see pynorm/dyt.h for the formulas. tanh and 1 - tanh^2 come from simd.h's tanh_vec,
// recomputed from x in the backward (nothing but x is saved).
#include "pynorm/dyt.h"

#include "kernels.h"
#include "simd.h"

namespace pynorm {
namespace PYNORM_ISA {

// Rows longer than this (with weight and bias, or the backward's column partials, beside them
// more than L1 holds) go kRowsAtOnce at a time, a vector of each in turn, so that those are
// read once per group from L2, not once per row (with AVX-512 8 rows beat 2 and 4 and matched
// 16; with AVX2's 16 registers 4 and 8 are alike). Rows of up to kShortRowBytes go
// kShortRowsAtOnce at a time when the output stays in cache: the backward's column partials
// then pass from row to row in registers, not through a store and a reload per row (8 rows
// gained nothing more); streamed, four rows' interleaved outputs are slower. Rows in between
// go one at a time (grouped, rows 4 KiB apart contend for L1 sets). The figures behind these
// choices are in the commit messages (benchmarks/cycles/ab.sh).
constexpr int64_t kLongRowBytes = 8192;
constexpr int kRowsAtOnce = 8;
constexpr int64_t kShortRowBytes = 1024;
constexpr int kShortRowsAtOnce = 4;
// Vectors per row up to which the backward keeps the weight and the column partials in
// registers for the whole block (groups of 2, 4 or 8 such rows gained nothing more; rows of up
// to 8 vectors gained a little more for eight times the compile time).
constexpr int kKeptRowVecs = 2;

// Calls f(std::integral_constant<int, R>{}, r) for groups of R rows covering [r0, r1): groups
// of kRowsAtOnce for long rows, of kShortRowsAtOnce for short ones (unless the output is
// streamed), then single rows.
template <class F> inline void for_each_row_group(int64_t r0, int64_t r1, int64_t row_bytes, bool stream, F&& f) {
  int64_t r = r0;
  if (row_bytes > kLongRowBytes) r = row_groups<kRowsAtOnce>(r, r1, f);
  if (row_bytes <= kShortRowBytes && !stream) r = row_groups<kShortRowsAtOnce>(r, r1, f);
  row_groups<1>(r, r1, f);
}

template <class T> void dyt_forward(const DytForwardArgs& a) {
  using A = acc_t<T>;
  const int64_t dim = a.dim;
  const Affine<T> params(a.weight, a.bias, dim);
  const A alpha = A(a.alpha);
  with_bools(
      [&](auto affine, auto stream) {
        parallel_for(a.rows, a.threads, [&](int64_t r0, int64_t r1) {
          auto rows = [&](auto count, int64_t r) {
            constexpr int R = decltype(count)::value;
            const T* x = static_cast<const T*>(a.x) + r * a.x_row_stride;
            write_rows<stream, R>(static_cast<T*>(a.y) + r * dim, dim, [&](int64_t i, auto k) {
              Vec<A> w = {}, b = {};
              if constexpr (affine) w = load(params.weight + i, k), b = load(params.bias + i, k);
              return [&, i, k, w, b](int j) {
                const Vec<A> t = tanh_vec<A, false>(load(x + j * a.x_row_stride + i, k) * alpha, nullptr);
                if constexpr (affine) return fmadd(t, w, b);
                return t;
              };
            });
          };
          for_each_row_group(r0, r1, dim * int64_t(sizeof(T)), stream, rows);
        });
      },
      params.any(), stream_rows(static_cast<T*>(a.y), a.rows, dim));
}

template <class T> void dyt_backward(const DytBackwardArgs& a) {
  using A = acc_t<T>;
  const int64_t dim = a.dim;
  // With a weight or a dbias, both column sums are formed (a missing weight is ones) and the
  // ones asked for are returned: one variant instead of three.
  const Affine<T> params(a.weight, a.dbias, dim);  // dbias stands for the bias: its partner is a weight of ones
  const T* weight = params.weight;
  const A alpha = A(a.alpha);
  // Partial sums per block: [dalpha (one vector of lane sums), dweight (dim), dbias (dim)],
  // the last two with a weight or a dbias.
  constexpr int64_t L = kLanes<A>;
  const int64_t width = L + (params.any() ? 2 * dim : 0);
  Buffer<A> totals(width);
  with_bools(
      [&](auto has_params, auto stream) {
        reduce_rows_in_blocks<A>(
            a.rows, dim, width, a.threads,
            [&](int64_t r0, int64_t r1, A* partial) {
              A* partial_dweight = partial + L;
              A* partial_dbias = partial + L + dim;
              Vec<A> sum_dalpha = load(partial, Full{});
              // Rows of at most kKeptRowVecs vectors (FixedVecs) keep the weight and the column
              // partials in registers for the whole block; other rows load and store the
              // partials once per group.
              with_row_shape<A, kKeptRowVecs>(dim, [&](auto shape) {
                constexpr bool kept = !std::is_same_v<decltype(shape), AnyVecs>;
                constexpr int V = kept ? kKeptRowVecs : 1;
                Vec<A> w_kept[V] = {}, dw_kept[V] = {}, db_kept[V] = {};
                if constexpr (kept) for_each_vec<A>(dim, [&](int64_t i, auto k) {
                  if constexpr (has_params)
                    w_kept[i / L] = load(weight + i, k), dw_kept[i / L] = load(partial_dweight + i, k),
                    db_kept[i / L] = load(partial_dbias + i, k);
                }, shape);
                auto rows = [&](auto count, int64_t r) PYNORM_INLINE_LAMBDA {
                  constexpr int R = decltype(count)::value;
                  const T* x = static_cast<const T*>(a.x) + r * a.x_row_stride;
                  const T* dy = static_cast<const T*>(a.dy) + r * a.dy_row_stride;
                  write_rows<stream, R>(static_cast<T*>(a.dx) + r * dim, dim, [&](int64_t i, auto k) {
                    // each row in turn adds to the column partials (in row order); R row functions
                    // share one load and one store of them
                    struct Column { Vec<A> w, dw, db; } col = {};
                    if constexpr (kept) {
                      col = {w_kept[i / L], dw_kept[i / L], db_kept[i / L]};
                    } else {
                      if constexpr (has_params)
                        col = {load(weight + i, k), load(partial_dweight + i, k), load(partial_dbias + i, k)};
                    }
                    return [&, i, k, col](int j) mutable {
                      const Vec<A> xv = load(x + j * a.x_row_stride + i, k), dyv = load(dy + j * a.dy_row_stride + i, k);
                      Vec<A> s;
                      const Vec<A> t = tanh_vec<A, true>(xv * alpha, &s);
                      Vec<A> g = dyv;
                      if constexpr (has_params) g *= col.w, col.dw += dyv * t, col.db += dyv;
                      if (j == R - 1) {
                        if constexpr (kept) {
                          dw_kept[i / L] = col.dw, db_kept[i / L] = col.db;
                        } else {
                          if constexpr (has_params) store<false>(partial_dweight + i, col.dw, k), store<false>(partial_dbias + i, col.db, k);
                        }
                      }
                      const Vec<A> gs = g * s;
                      sum_dalpha += keep(gs * xv, k);
                      return gs * alpha;
                    };
                  }, shape);
                };
                for_each_row_group(r0, r1, dim * int64_t(sizeof(T)), stream, rows);
                if constexpr (kept) for_each_vec<A>(dim, [&](int64_t i, auto k) {
                  if constexpr (has_params) store<false>(partial_dweight + i, dw_kept[i / L], k), store<false>(partial_dbias + i, db_kept[i / L], k);
                }, shape);
              });
              store<false>(partial, sum_dalpha, Full{});
            },
            totals.data);
      },
      params.any(), stream_rows(static_cast<T*>(a.dx), a.rows, dim));
  *static_cast<A*>(a.dalpha) = hsum(load(totals.data, Full{}));
  if (a.weight) store_totals(static_cast<T*>(a.dweight), totals.data + L, dim);
  if (a.dbias) store_totals(static_cast<T*>(a.dbias), totals.data + L + dim, dim);
}

PYNORM_INSTANTIATE(dyt_forward, DytForwardArgs)
PYNORM_INSTANTIATE(dyt_backward, DytBackwardArgs)

}  // namespace PYNORM_ISA
}  // namespace pynorm
