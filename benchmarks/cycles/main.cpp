// Cycles per 16 elements of the CPU norm and DyT kernels of several source revisions, built into one
// binary (each in its own namespace v0, v1, ...) and timed in turns, one thread, best of 60 (15 for the streamed shapes):
// a noisy neighbour then hits every revision alike. Built and run by ab.sh, which defines
// REVISIONS (V(0) V(1) ...) and declares the kernels.
#include <chrono>
#include <cstdlib>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <utility>
#include <vector>

#include "pynorm/dyt.h"
#include "pynorm/norm.h"

namespace pynorm {
#define V(i)                                                          \
  namespace v##i {                                                    \
  template <class T> void norm_forward(const NormForwardArgs&);       \
  template <class T> void norm_backward(const NormBackwardArgs&);     \
  template <class T> void dyt_forward(const DytForwardArgs&);         \
  template <class T> void dyt_backward(const DytBackwardArgs&);       \
  }
REVISIONS
#undef V
}  // namespace pynorm

using namespace pynorm;

// Cycles per second, from a chain of dependent integer adds (one per cycle).
static double clock_hz() {
  const int64_t n = 400000000;
  int64_t acc = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < n; ++i) __asm__ volatile("add $1, %0" : "+r"(acc));
  return n / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// 64-byte aligned storage (as pynorm allocates outputs), so that large outputs are streamed.
template <class T> struct Aligned {
  using value_type = T;
  Aligned() = default;
  template <class U> Aligned(const Aligned<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(std::aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64)); }
  void deallocate(T* p, size_t) { std::free(p); }
  bool operator==(const Aligned&) const { return true; }
  bool operator!=(const Aligned&) const { return false; }
};
template <class T> using Buffer = std::vector<T, Aligned<T>>;

int main() {
  const double hz = clock_hz();
  std::printf("clock ~%.2f GHz (dependent adds); cycles per 16 elements, 1 thread, float32\n", hz / 1e9);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{4224, 32}, {256, 32}, {4224, 33}, {16384, 8},
                                                           {1024, 128}, {64, 1024}, {64, 1023},
                                                           {8192, 1024}, {1024, 8192}};  // the last two streamed
  const char* names[] = {"LN fwd", "RMS fwd", "LN bwd", "RMS bwd", "LN bwd*", "DyT fwd", "DyT bwd"};
  constexpr int K = 7;
  for (auto [rows, dim] : shapes) {
    Buffer<float> x(rows * dim), dy(rows * dim), y(rows * dim), w(dim), b(dim), mean(rows), rstd(rows), dw(dim), db(dim);
    std::mt19937 gen(1);
    std::normal_distribution<float> normal;
    for (auto* v : {&x, &dy, &w, &b})
      for (float& e : *v) e = normal(gen);
    NormForwardArgs ln;
    ln.rows = rows, ln.dim = dim, ln.x = x.data(), ln.x_row_stride = dim, ln.y = y.data();
    ln.weight = w.data(), ln.bias = b.data(), ln.threads = 1;
    NormForwardArgs stats = ln;
    stats.mean = mean.data(), stats.rstd = rstd.data();
    NormForwardArgs rms = ln;
    rms.center = false, rms.bias = nullptr;
    NormBackwardArgs lnb;
    lnb.rows = rows, lnb.dim = dim, lnb.dy = dy.data(), lnb.dy_row_stride = dim, lnb.x = x.data();
    lnb.x_row_stride = dim, lnb.weight = w.data(), lnb.mean = mean.data(), lnb.rstd = rstd.data();
    lnb.dx = y.data(), lnb.dweight = dw.data(), lnb.dbias = db.data(), lnb.threads = 1;
    NormBackwardArgs rmsb = lnb;
    rmsb.center = false, rmsb.dbias = nullptr, rmsb.mean = nullptr;
    NormBackwardArgs recompute = lnb;  // LN bwd*: statistics recomputed
    recompute.mean = nullptr, recompute.rstd = nullptr;
    float dalpha = 0;
    DytForwardArgs dyt;
    dyt.rows = rows, dyt.dim = dim, dyt.x = x.data(), dyt.x_row_stride = dim, dyt.y = y.data();
    dyt.weight = w.data(), dyt.bias = b.data(), dyt.threads = 1;
    DytBackwardArgs dytb;
    dytb.rows = rows, dytb.dim = dim, dytb.dy = dy.data(), dytb.dy_row_stride = dim, dytb.x = x.data();
    dytb.x_row_stride = dim, dytb.weight = w.data(), dytb.dx = y.data(), dytb.dalpha = &dalpha;
    dytb.dweight = dw.data(), dytb.dbias = db.data(), dytb.threads = 1;
    std::vector<std::vector<std::function<void()>>> kernels;
#define V(i)                                                                                   \
  v##i::norm_forward<float>(stats);                                                          \
  kernels.push_back({[&] { v##i::norm_forward<float>(ln); }, [&] { v##i::norm_forward<float>(rms); }, \
                     [&] { v##i::norm_backward<float>(lnb); }, [&] { v##i::norm_backward<float>(rmsb); }, \
                     [&] { v##i::norm_backward<float>(recompute); }, [&] { v##i::dyt_forward<float>(dyt); }, \
                     [&] { v##i::dyt_backward<float>(dytb); }});
    REVISIONS
#undef V
    const int calls = int(1e6 / double(rows * dim)) + 1;
    std::vector<std::vector<double>> best(kernels.size(), std::vector<double>(K, 1e9));
    const int reps = rows * dim > (1 << 20) ? 15 : 60;
    for (int rep = 0; rep < reps; ++rep)
      for (int k = 0; k < K; ++k)
        for (size_t v = 0; v < kernels.size(); ++v) {
          const auto t0 = std::chrono::steady_clock::now();
          for (int c = 0; c < calls; ++c) kernels[v][k]();
          const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / calls;
          if (t < best[v][k]) best[v][k] = t;
        }
    for (size_t v = 0; v < kernels.size(); ++v) {
      std::printf("v%zu [%5lld x %5lld]", v, (long long)rows, (long long)dim);
      for (int k = 0; k < K; ++k) std::printf("  %s %5.1f", names[k], best[v][k] * hz / double(rows * dim) * 16);
      std::printf("\n");
    }
  }
}
