// Cross-entropy, forward and backward (formulas: pynorm/cross_entropy.h). Compiled once per
// ISA. A row's logits are read once for its maximum and once for its sum of exponentials (the
// backward once more for the gradient); short rows (a vocabulary of tens) stay in L1 between
// the passes, so the kernel runs at the speed of reading the logits (and writing dlogits).
#include "pynorm/cross_entropy.h"

#include "kernels.h"
#include "simd.h"

namespace pynorm {
namespace PYNORM_ISA {

namespace {

// v with the lanes past a k-lane tail set to fill (a whole vector, Full, is kept as it is).
template <class A> inline Vec<A> fill_tail(Vec<A> v, Full, A) { return v; }
template <class A> inline Vec<A> fill_tail(Vec<A> v, int lanes, A fill) { return fill_past<A>(v, lanes, fill); }

// log sum_c exp(x_c) of one row, shifted by the row's maximum (NaN anywhere gives NaN; a row
// of -inf, or one holding +inf, gives NaN, as torch's log_softmax).
template <class T> inline acc_t<T> log_sum_exp(const T* x, int64_t classes) {
  using A = acc_t<T>;
  const A inf = __builtin_inf();
  Vec<A> top = splat<A>(-inf);
  for_each_vec<A>(classes, [&](int64_t i, auto k) {
    const Vec<A> v = fill_tail<A>(load(x + i, k), k, -inf);
    top = top < v ? v : top;
  });
  const A m = hmax(top);
  Vec<A> sum{};
  for_each_vec<A>(classes, [&](int64_t i, auto k) { sum += keep(exp_vec<A>(load(x + i, k) - m), k); });
  const A total = hsum(sum);
  if constexpr (sizeof(A) == sizeof(float)) return m + __builtin_logf(total);
  return m + __builtin_log(total);
}

}  // namespace

template <class T> void cross_entropy_forward(const CrossEntropyForwardArgs& a) {
  parallel_for(a.rows, a.threads, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* x = static_cast<const T*>(a.logits) + r * a.logits_row_stride;
      static_cast<T*>(a.loss)[r] = from_acc<T>(log_sum_exp(x, a.classes) - to_acc(x[a.labels[r]]));
    }
  });
}

template <class T> void cross_entropy_backward(const CrossEntropyBackwardArgs& a) {
  using A = acc_t<T>;
  constexpr int L = kLanes<A>;
  const Vec<A> lanes = lane_indices<Vec<A>>(std::make_integer_sequence<int, L>{});
  parallel_for(a.rows, a.threads, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* x = static_cast<const T*>(a.logits) + r * a.logits_row_stride;
      const A lse = log_sum_exp(x, a.classes), g = to_acc(static_cast<const T*>(a.dloss)[r * a.dloss_stride]);
      const A label = A(a.labels[r]);
      write_row<false>(static_cast<T*>(a.dlogits) + r * a.classes, a.classes, [&](int64_t i, auto k) {
        const Vec<A> p = exp_vec<A>(load(x + i, k) - lse);
        return (p - (lanes + A(i) == label ? splat<A>(1) : Vec<A>{})) * g;
      });
    }
  });
}

PYNORM_INSTANTIATE(cross_entropy_forward, CrossEntropyForwardArgs)
PYNORM_INSTANTIATE(cross_entropy_backward, CrossEntropyBackwardArgs)

}  // namespace PYNORM_ISA
}  // namespace pynorm
