// LayerNorm / RMSNorm / projection-only / scaling-only on the GPU: forward and backward, one
// kernel each (see pynorm/norm.h for the formulas; csrc/cpu/norm.cpp is the CPU twin).
//
// A group of threads -- one warp for short rows, up to kMaxThreads -- owns a row. Each thread
// owns the same packs of columns in every row (pack i = lane + j * group). Loads are 16 bytes
// wide when every pointer and the row stride allow it, one element otherwise. Statistics are
// two-pass (the mean, then the centred squares with the compensation term, as on the CPU), and
// every thread adds its packs in increasing i, so the backward's recompute gives the forward's
// bits.
//
// The forward keeps the packs a thread loaded in a shared-memory row cache that only it reads
// back (x is read from global memory once, no barrier guards the cache); rows too long for
// shared memory are read again (from L2).
//
// The backward holds each thread's first kRegPacks packs of x and dy in registers, loaded
// together, and its dweight / dbias sums in registers too (a long row's tail is read again and
// its sums kept in the block's workspace row). It writes one partial row per block
// (kPartialBlocks blocks over a fixed partition of the rows), and sum_partials_kernel adds them
// in a fixed order: no atomics, the same bits on every run.

#include "common.cuh"

namespace pynorm {
namespace cuda {
namespace {

template <class T, int V> __device__ __forceinline__ acc_t<T> pack_sum(const Pack<T, V>& p) {
  acc_t<T> s = 0;
#pragma unroll
  for (int k = 0; k < V; ++k) s += widen(p.v[k]);
  return s;
}

// mean and rstd of the row x (this thread's head packs already in xr); every thread of the
// block calls it (the group sums synchronise), inactive ones with active = false.
template <class T, int V, int N>
__device__ __forceinline__ Two<acc_t<T>> row_stats(const T* x, const Pack<T, V> (&xr)[N], bool active, int lane,
                                                   int group, int64_t dim, bool center, bool scale, double eps,
                                                   Two<acc_t<T>>* scratch) {
  using A = acc_t<T>;
  const int64_t packs = dim / V;
  A sum = 0;
  if (active)
    for_packs<N>(lane, group, packs, [&](int j, int64_t) { sum += pack_sum(xr[j]); },
                 [&](int64_t i) { sum += pack_sum(load_pack<T, V>(x, i)); });
  A mean = 0, rstd = 1;
  if (center) mean = group_sum(Two<A>{sum, 0}, group, scratch).a / A(dim);
  if (scale) {
    // Centred squares; sum(d) corrects the rounding of the mean (it is ~0).
    Two<A> s = {0, 0};
    auto add = [&](const Pack<T, V>& p) {
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const A d = widen(p.v[k]) - mean;
        s.a += d;
        s.b += d * d;
      }
    };
    if (active)
      for_packs<N>(lane, group, packs, [&](int j, int64_t) { add(xr[j]); },
                   [&](int64_t i) { add(load_pack<T, V>(x, i)); });
    s = group_sum(s, group, scratch);
    A squares = s.b;
    if (center) {
      squares -= s.a * s.a / A(dim);
      mean += s.a / A(dim);
      if (squares < 0) squares = 0;
    }
    rstd = A(1) / sqrt(squares / A(dim) + A(eps));
  }
  return {mean, rstd};
}

template <class T, int V>
__device__ __forceinline__ void norm_forward_rows(const NormForwardArgs& a, int group, bool cache, char* smem) {
  using A = acc_t<T>;
  using P = Pack<T, V>;
  const int rows_per_block = blockDim.x / group;
  const int slot = threadIdx.x / group, lane = threadIdx.x % group;
  auto* scratch = reinterpret_cast<Two<A>*>(smem);
  T* row_cache = reinterpret_cast<T*>(smem + kScratchBytes) + int64_t(slot) * a.dim;
  const int64_t packs = a.dim / V;
  const T* weight = static_cast<const T*>(a.weight);
  const T* bias = static_cast<const T*>(a.bias);
  const A eps = A(a.eps);
  for (int64_t first = int64_t(blockIdx.x) * rows_per_block; first < a.rows;
       first += int64_t(gridDim.x) * rows_per_block) {
    const int64_t r = first + slot;
    const bool active = r < a.rows;  // inactive threads still take part in the group sums
    const T* x = static_cast<const T*>(a.x) + (active ? r : 0) * a.x_row_stride;
    const T* row = cache ? row_cache : x;
    // Pass 1: read x once (into the cache), sum it.
    A sum = 0;
    if (active)
      for (int64_t i = lane; i < packs; i += group) {
        const P p = load_pack<T, V>(x, i);
        if (cache) store_pack<T, V>(row_cache, i, p);
#pragma unroll
        for (int k = 0; k < V; ++k) sum += widen(p.v[k]);
      }
    A mean = 0, rstd = 1;
    if (a.center) mean = group_sum(Two<A>{sum, 0}, group, scratch).a / A(a.dim);
    if (a.scale) {
      // Pass 2: centred squares; sum(d) corrects the rounding of the mean (it is ~0).
      Two<A> s = {0, 0};
      if (active)
        for (int64_t i = lane; i < packs; i += group) {
          const P p = load_pack<T, V>(row, i);
#pragma unroll
          for (int k = 0; k < V; ++k) {
            const A d = widen(p.v[k]) - mean;
            s.a += d;
            s.b += d * d;
          }
        }
      s = group_sum(s, group, scratch);
      A squares = s.b;
      if (a.center) {
        squares -= s.a * s.a / A(a.dim);
        mean += s.a / A(a.dim);
        if (squares < 0) squares = 0;
      }
      rstd = A(1) / sqrt(squares / A(a.dim) + eps);
    }
    if (!active) continue;
    if (lane == 0) {
      if (a.mean) static_cast<A*>(a.mean)[r] = mean;
      if (a.rstd) static_cast<A*>(a.rstd)[r] = rstd;
    }
    // Pass 3: y = (x - mean) * rstd * weight + bias.
    T* y = static_cast<T*>(a.y) + r * a.dim;
    for (int64_t i = lane; i < packs; i += group) {
      const P p = load_pack<T, V>(row, i);
      P w, b, out;
      if (weight) w = load_pack<T, V>(weight, i);
      if (bias) b = load_pack<T, V>(bias, i);
#pragma unroll
      for (int k = 0; k < V; ++k) {
        A v = (widen(p.v[k]) - mean) * rstd;
        if (weight) v *= widen(w.v[k]);
        if (bias) v += widen(b.v[k]);
        out.v[k] = narrow<T>(v);
      }
      store_pack<T, V>(y, i, out);
    }
  }
}

template <class T> __global__ void __launch_bounds__(kMaxThreads) norm_forward_kernel(NormForwardArgs a, int group, bool vec, bool cache) {
  extern __shared__ __align__(16) char smem[];
  if (vec)
    norm_forward_rows<T, kVec<T>>(a, group, cache, smem);
  else
    norm_forward_rows<T, 1>(a, group, cache, smem);
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * weight, xhat = (x - mu) * rstd;
// without centring mean(g) is dropped, without scaling rstd = 1 and the xhat term too.
template <class T, int V>
__device__ __forceinline__ void norm_backward_rows(const NormBackwardArgs& a, int group, acc_t<T>* workspace, char* smem) {
  using A = acc_t<T>;
  using P = Pack<T, V>;
  constexpr int N = kRegPacks<V>;
  const int rows_per_block = blockDim.x / group;
  const int slot = threadIdx.x / group, lane = threadIdx.x % group;
  const int64_t dim = a.dim, packs = dim / V;
  const T* weight = static_cast<const T*>(a.weight);
  const bool has_weight = weight != nullptr, has_dbias = a.dbias != nullptr;
  const int64_t width = (has_weight ? dim : 0) + (has_dbias ? dim : 0);
  auto* scratch = reinterpret_cast<Two<A>*>(smem);
  // This thread's column sums: [0] dweight (if weight), [1] dbias (if wanted); the tail's in
  // the block's workspace row [dweight | dbias].
  A sums[2][N * V] = {};
  const int64_t offset[2] = {0, has_weight ? dim : 0};
  const bool present[2] = {has_weight, has_dbias};
  A* tail_sums = workspace + int64_t(blockIdx.x) * width;
  for_packs<N>(lane, group, packs, [](int, int64_t) {}, [&](int64_t i) {
#pragma unroll
    for (int k = 0; k < V; ++k) {
      if (has_weight) tail_sums[offset[0] + i * V + k] = 0;
      if (has_dbias) tail_sums[offset[1] + i * V + k] = 0;
    }
  });
  const bool saved_stats = !((a.center && !a.mean) || (a.scale && !a.rstd));
  for (int64_t first = int64_t(blockIdx.x) * rows_per_block; first < a.rows;
       first += int64_t(gridDim.x) * rows_per_block) {
    const int64_t r = first + slot;
    const bool active = r < a.rows;
    const T* x = static_cast<const T*>(a.x) + (active ? r : 0) * a.x_row_stride;
    const T* dy = static_cast<const T*>(a.dy) + (active ? r : 0) * a.dy_row_stride;
    P xr[N], dyr[N];
    if (active)
      for_packs<N>(lane, group, packs, [&](int j, int64_t i) {
        xr[j] = load_pack<T, V>(x, i);
        dyr[j] = load_pack<T, V>(dy, i);
      }, [](int64_t) {});
    A mean = 0, rstd = 1;
    if (saved_stats) {
      if (active && a.center) mean = static_cast<const A*>(a.mean)[r];
      if (active && a.scale) rstd = static_cast<const A*>(a.rstd)[r];
    } else {  // recompute them exactly as the forward does
      const Two<A> stats = row_stats<T, V, N>(x, xr, active, lane, group, dim, a.center, a.scale, a.eps, scratch);
      mean = stats.a;
      rstd = stats.b;
    }
    // Sums of g and g * xhat; the parameter sums.
    Two<A> s = {0, 0};
    auto accumulate = [&](const P& xp, const P& dyp, const P& w, A* dweight, A* dbias) {
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const A dyv = widen(dyp.v[k]);
        const A xhat = (widen(xp.v[k]) - mean) * rstd;
        const A g = has_weight ? dyv * widen(w.v[k]) : dyv;
        s.a += g;
        s.b += g * xhat;
        if (has_weight) dweight[k] += dyv * xhat;
        if (has_dbias) dbias[k] += dyv;
      }
    };
    if (active)
      for_packs<N>(lane, group, packs, [&](int j, int64_t i) {
        P w;
        if (has_weight) w = load_pack<T, V>(weight, i);
        accumulate(xr[j], dyr[j], w, &sums[0][j * V], &sums[1][j * V]);
      }, [&](int64_t i) {
        P w;
        if (has_weight) w = load_pack<T, V>(weight, i);
        accumulate(load_pack<T, V>(x, i), load_pack<T, V>(dy, i), w, tail_sums + offset[0] + i * V,
                   tail_sums + offset[1] + i * V);
      });
    s = group_sum(s, group, scratch);
    if (!active) continue;
    const A mean_g = a.center ? s.a / A(dim) : A(0);
    const A mean_gx = s.b / A(dim);
    // dx.
    T* dx = static_cast<T*>(a.dx) + r * dim;
    auto write = [&](int64_t i, const P& xp, const P& dyp) {
      P w, out;
      if (has_weight) w = load_pack<T, V>(weight, i);
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const A dyv = widen(dyp.v[k]);
        const A g = has_weight ? dyv * widen(w.v[k]) : dyv;
        A v;
        if (!a.scale) {
          v = g - mean_g;  // x does not enter: NaN in x stays out, as on the CPU
        } else {
          const A xhat = (widen(xp.v[k]) - mean) * rstd;
          v = (g - mean_g - xhat * mean_gx) * rstd;
        }
        out.v[k] = narrow<T>(v);
      }
      store_pack<T, V>(dx, i, out);
    };
    for_packs<N>(lane, group, packs, [&](int j, int64_t i) { write(i, xr[j], dyr[j]); },
                 [&](int64_t i) { write(i, load_pack<T, V>(x, i), load_pack<T, V>(dy, i)); });
  }
  if (width > 0)
    write_block_partials<A, N, V>(sums, offset, present, false, A(0), group, packs, width,
                                  workspace, reinterpret_cast<A*>(smem + kScratchBytes));
}

template <class T>
__global__ void __launch_bounds__(kMaxThreads) norm_backward_kernel(NormBackwardArgs a, int group, bool vec, acc_t<T>* workspace) {
  extern __shared__ __align__(16) char smem[];
  if (vec)
    norm_backward_rows<T, kVec<T>>(a, group, workspace, smem);
  else
    norm_backward_rows<T, 1>(a, group, workspace, smem);
}

constexpr int64_t kCacheBudget = 96 * 1024;  // shared memory per block worth spending on the row cache

}  // namespace

const char* norm_forward(const NormForwardArgs& a, DType dtype, void* stream) {
  if (a.rows == 0 || a.dim == 0) return nullptr;
  return with_storage_type(dtype, [&](auto t) {
    using T = decltype(t);
    const ForwardLaunch l = forward_launch<T>(a);
    // The row cache, where it fits in the shared memory worth spending on it.
    const int64_t cache_bytes = int64_t(l.layout.rows_per_block) * a.dim * int64_t(sizeof(T));
    const int64_t limit = shared_memory_limit(norm_forward_kernel<T>, kScratchBytes + kCacheBudget);
    const bool cache = kScratchBytes + cache_bytes <= limit;
    const int64_t smem = kScratchBytes + (cache ? cache_bytes : 0);
    norm_forward_kernel<T><<<l.blocks, l.layout.threads, smem, static_cast<cudaStream_t>(stream)>>>(a, l.layout.group,
                                                                                                  l.vec, cache);
    return last_launch_error();
  });
}

const char* norm_backward(const NormBackwardArgs& a, DType dtype, void* stream) {
  return with_storage_type(dtype, [&](auto t) {
    using T = decltype(t);
    return backward_with_partials<T>(a, norm_backward_kernel<T>, 0, nullptr, static_cast<cudaStream_t>(stream));
  });
}

}  // namespace cuda
}  // namespace pynorm
