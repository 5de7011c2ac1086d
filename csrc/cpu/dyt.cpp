// DyT: y = weight * tanh(alpha * x) + bias, forward and backward. Compiled once per ISA;
// see pynorm/dyt.h for the formulas. tanh and 1 - tanh^2 come from simd.h's tanh_vec,
// recomputed from x in the backward (nothing but x is saved).
#include "pynorm/dyt.h"

#include "kernels.h"
#include "simd.h"

namespace pynorm {
namespace PYNORM_ISA {

template <class T> void dyt_forward(const DytForwardArgs& a) {
  using A = acc_t<T>;
  const int64_t dim = a.dim;
  const T* weight = static_cast<const T*>(a.weight);
  const T* bias = static_cast<const T*>(a.bias);
  const A alpha = A(a.alpha);
  with_bools(
      [&](auto has_weight, auto has_bias, auto stream) {
        parallel_for(a.rows, a.threads, [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) {
            const T* x = static_cast<const T*>(a.x) + r * a.x_row_stride;
            write_row<stream>(static_cast<T*>(a.y) + r * dim, dim, [&](int64_t i, auto k) {
              Vec<A> v = tanh_vec<A, false>(load(x + i, k) * alpha, nullptr);
              if constexpr (has_weight) v *= load(weight + i, k);
              if constexpr (has_bias) v += load(bias + i, k);
              return v;
            });
          }
        });
      },
      weight != nullptr, bias != nullptr, stream_output(a.rows * dim * int64_t(sizeof(T))));
}

template <class T> void dyt_backward(const DytBackwardArgs& a) {
  using A = acc_t<T>;
  const int64_t dim = a.dim;
  const T* weight = static_cast<const T*>(a.weight);
  const bool want_dbias = a.dbias != nullptr;
  const A alpha = A(a.alpha);
  // Partial sums per block: [dalpha (one vector of lane sums), dweight (dim, if weight),
  // dbias (dim, if wanted)].
  constexpr int64_t L = kLanes<A>;
  const int64_t width = L + (weight ? dim : 0) + (want_dbias ? dim : 0);
  Buffer<A> totals(width);
  with_bools(
      [&](auto has_weight, auto has_dbias, auto stream) {
        reduce_rows_in_blocks<A>(
            a.rows, dim, width, a.threads,
            [&](int64_t r0, int64_t r1, A* partial) {
              A* partial_dweight = partial + L;
              A* partial_dbias = partial + L + (has_weight ? dim : 0);
              Vec<A> sum_dalpha = load(partial, Full{});
              for (int64_t r = r0; r < r1; ++r) {
                const T* x = static_cast<const T*>(a.x) + r * a.x_row_stride;
                const T* dy = static_cast<const T*>(a.dy) + r * a.dy_row_stride;
                write_row<stream>(static_cast<T*>(a.dx) + r * dim, dim, [&](int64_t i, auto k) {
                  const Vec<A> xv = load(x + i, k), dyv = load(dy + i, k);
                  Vec<A> s;
                  const Vec<A> t = tanh_vec<A, true>(xv * alpha, &s);
                  Vec<A> g = dyv;
                  if constexpr (has_weight) {
                    g *= load(weight + i, k);
                    store<false>(partial_dweight + i, load(partial_dweight + i, k) + dyv * t, k);
                  }
                  if constexpr (has_dbias)
                    store<false>(partial_dbias + i, load(partial_dbias + i, k) + dyv, k);
                  const Vec<A> gs = g * s;
                  sum_dalpha += keep(gs * xv, k);
                  return gs * alpha;
                });
              }
              store<false>(partial, sum_dalpha, Full{});
            },
            totals.data);
      },
      weight != nullptr, want_dbias, stream_output(a.rows * dim * int64_t(sizeof(T))));
  *static_cast<A*>(a.dalpha) = hsum(load(totals.data, Full{}));
  if (weight) store_totals(static_cast<T*>(a.dweight), totals.data + L, dim);
  if (want_dbias) store_totals(static_cast<T*>(a.dbias), totals.data + L + (weight ? dim : 0), dim);
}

template void dyt_forward<float>(const DytForwardArgs&);
template void dyt_forward<double>(const DytForwardArgs&);
template void dyt_forward<Half>(const DytForwardArgs&);
template void dyt_forward<BFloat16>(const DytForwardArgs&);
template void dyt_backward<float>(const DytBackwardArgs&);
template void dyt_backward<double>(const DytBackwardArgs&);
template void dyt_backward<Half>(const DytBackwardArgs&);
template void dyt_backward<BFloat16>(const DytBackwardArgs&);

}  // namespace PYNORM_ISA
}  // namespace pynorm
