// LayerNorm / RMSNorm / projection-only / scaling-only: forward and backward, one kernel.
// Compiled once per ISA (see CMakeLists.txt); see pynorm/norm.h for the formulas.
//
// Per row the data is read from memory once: the statistics passes and the output pass run
// over a row that is still in L1/L2. Outputs larger than the last-level cache are written
// with streaming stores, so writing y costs no read of y.
#include "pynorm/norm.h"

#include "kernels.h"
#include "simd.h"

namespace pynorm {
namespace PYNORM_ISA {

namespace {

template <class A> struct RowStats { A mean, rstd; };

// Two-pass statistics on a row in cache: the mean, then the centred sum of squares with the
// classic correction term (which also refines the mean), never E[x^2] - E[x]^2.
template <class T>
inline RowStats<acc_t<T>> row_stats(const T* x, int64_t n, bool center, bool scale, acc_t<T> eps) {
  using A = acc_t<T>;
  A mean = 0;
  if (center) {
    Vec<A> sum = {};
    for_each_vec<A>(n, [&](int64_t i, auto k) { sum += load(x + i, k); });
    mean = hsum(sum) / A(n);
  }
  A rstd = 1;
  if (scale) {
    Vec<A> sum_d = {}, sum_d2 = {};
    for_each_vec<A>(n, [&](int64_t i, auto k) {
      const Vec<A> d = keep(load(x + i, k) - mean, k);
      sum_d += d;
      sum_d2 += d * d;
    });
    A squares = hsum(sum_d2);
    if (center) {
      const A c = hsum(sum_d);
      squares -= c * c / A(n);
      mean += c / A(n);
      if (squares < 0) squares = 0;
    }
    const A var = squares / A(n);
    if constexpr (sizeof(A) == 8)
      rstd = 1.0 / __builtin_sqrt(var + eps);
    else
      rstd = 1.0f / __builtin_sqrtf(var + eps);
  }
  return {mean, rstd};
}

template <class T> inline RowStats<acc_t<T>> saved_or_computed_stats(const NormBackwardArgs& a, int64_t r,
                                                                      const T* x) {
  using A = acc_t<T>;
  if ((a.center && !a.mean) || (a.scale && !a.rstd)) return row_stats(x, a.dim, a.center, a.scale, A(a.eps));
  return {a.center ? static_cast<const A*>(a.mean)[r] : A(0), a.scale ? static_cast<const A*>(a.rstd)[r] : A(1)};
}

}  // namespace

template <class T> void norm_forward(const NormForwardArgs& a) {
  using A = acc_t<T>;
  const int64_t dim = a.dim;
  const T* weight = static_cast<const T*>(a.weight);
  const T* bias = static_cast<const T*>(a.bias);
  with_bools(
      [&](auto has_weight, auto has_bias, auto stream) {
        parallel_for(a.rows, a.threads, [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) {
            const T* x = static_cast<const T*>(a.x) + r * a.x_row_stride;
            T* y = static_cast<T*>(a.y) + r * dim;
            const RowStats<A> s = row_stats(x, dim, a.center, a.scale, A(a.eps));
            if (a.mean) static_cast<A*>(a.mean)[r] = s.mean;
            if (a.rstd) static_cast<A*>(a.rstd)[r] = s.rstd;
            write_row<stream>(y, dim, [&](int64_t i, auto k) {
              prefetch(x + a.x_row_stride + i);
              Vec<A> v = (load(x + i, k) - s.mean) * s.rstd;
              if constexpr (has_weight) v *= load(weight + i, k);
              if constexpr (has_bias) v += load(bias + i, k);
              return v;
            });
          }
        });
      },
      weight != nullptr, bias != nullptr, stream_output(a.rows * dim * int64_t(sizeof(T))));
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * weight, xhat = (x - mu) * rstd;
// without centring mean(g) is dropped, without scaling the xhat term is (rstd = 1).
template <class T> void norm_backward(const NormBackwardArgs& a) {
  using A = acc_t<T>;
  const int64_t dim = a.dim;
  const T* weight = static_cast<const T*>(a.weight);
  const bool want_dbias = a.dbias != nullptr;
  const int64_t width = (weight ? dim : 0) + (want_dbias ? dim : 0);
  Buffer<A> totals(width);
  with_bools(
      [&](auto has_weight, auto has_dbias, auto scale, auto stream) {
        reduce_rows_in_blocks<A>(
            a.rows, dim, width, a.threads,
            [&](int64_t r, A* partial) {
              const T* x = static_cast<const T*>(a.x) + r * a.x_row_stride;
              const T* dy = static_cast<const T*>(a.dy) + r * a.dy_row_stride;
              T* dx = static_cast<T*>(a.dx) + r * dim;
              A* partial_dweight = partial;
              A* partial_dbias = partial + (has_weight ? dim : 0);
              const RowStats<A> s = saved_or_computed_stats(a, r, x);
              auto g_of = [&](int64_t i, auto k) {
                Vec<A> g = load(dy + i, k);
                if constexpr (has_weight) g *= load(weight + i, k);
                return g;
              };
              Vec<A> sum_g = {}, sum_gx = {};
              for_each_vec<A>(dim, [&](int64_t i, auto k) {
                const Vec<A> g = g_of(i, k);
                const Vec<A> xhat = keep((load(x + i, k) - s.mean) * s.rstd, k);
                sum_g += g;
                sum_gx += g * xhat;
                if constexpr (has_weight) {
                  const Vec<A> dw = load(partial_dweight + i, k) + load(dy + i, k) * xhat;
                  store<false>(partial_dweight + i, dw, k);
                }
                if constexpr (has_dbias) {
                  const Vec<A> db = load(partial_dbias + i, k) + load(dy + i, k);
                  store<false>(partial_dbias + i, db, k);
                }
              });
              const A mean_g = a.center ? hsum(sum_g) / A(dim) : A(0);
              const A mean_gx = hsum(sum_gx) / A(dim);
              write_row<stream>(dx, dim, [&](int64_t i, auto k) {
                prefetch(x + a.x_row_stride + i);
                prefetch(dy + a.dy_row_stride + i);
                if constexpr (!scale) return g_of(i, k) - mean_g;  // x does not enter: NaN in x stays out
                const Vec<A> xhat = (load(x + i, k) - s.mean) * s.rstd;
                return (g_of(i, k) - mean_g - xhat * mean_gx) * s.rstd;
              });
            },
            totals.data);
      },
      weight != nullptr, want_dbias, a.scale, stream_output(a.rows * dim * int64_t(sizeof(T))));
  if (weight) store_totals(static_cast<T*>(a.dweight), totals.data, dim);
  if (want_dbias) store_totals(static_cast<T*>(a.dbias), totals.data + (weight ? dim : 0), dim);
}

template void norm_forward<float>(const NormForwardArgs&);
template void norm_forward<double>(const NormForwardArgs&);
template void norm_forward<Half>(const NormForwardArgs&);
template void norm_forward<BFloat16>(const NormForwardArgs&);
template void norm_backward<float>(const NormBackwardArgs&);
template void norm_backward<double>(const NormBackwardArgs&);
template void norm_backward<Half>(const NormBackwardArgs&);
template void norm_backward<BFloat16>(const NormBackwardArgs&);

}  // namespace PYNORM_ISA
}  // namespace pynorm
