// LayerNorm / RMSNorm / projection-only / scaling-only on the GPU: forward and backward, one
// kernel each (see pynorm/norm.h for the formulas; csrc/cpu/norm.cpp is the CPU twin).
//
// A group of threads -- one warp for short rows, up to a whole block -- owns a row. Each thread
// owns the same packs of columns in every row (pack i for i = lane, lane + group, ...), and keeps
// the packs it loaded in a shared-memory row cache that only it reads back, so x (and dy) are
// read from global memory once and no barrier guards the cache. Rows too long for shared memory
// are read again (from L2) instead. Loads are 16 bytes wide when every pointer and the row
// stride allow it, one element otherwise. Statistics are two-pass on the cached row (the mean,
// then the centred squares with the compensation term, as on the CPU).
//
// The backward writes dweight / dbias partials per block (kPartialBlocks blocks over a fixed
// partition of the rows, accumulated in shared memory when they fit, else in the workspace),
// and sum_partials_kernel adds them in a fixed order: no atomics, the same bits on every run.
#include "common.cuh"

namespace pynorm {
namespace cuda {
namespace {

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
__device__ __forceinline__ void norm_backward_rows(const NormBackwardArgs& a, int group, bool cache,
                                                   bool partials_in_smem, acc_t<T>* workspace, char* smem) {
  using A = acc_t<T>;
  using P = Pack<T, V>;
  const int rows_per_block = blockDim.x / group;
  const int slot = threadIdx.x / group, lane = threadIdx.x % group;
  const int64_t dim = a.dim, packs = dim / V;
  const T* weight = static_cast<const T*>(a.weight);
  const bool has_weight = weight != nullptr, has_dbias = a.dbias != nullptr;
  const int64_t width = (has_weight ? dim : 0) + (has_dbias ? dim : 0);
  auto* scratch = reinterpret_cast<Two<A>*>(smem);
  A* smem_partials = reinterpret_cast<A*>(smem + kScratchBytes);
  // This group's partial sums: [dweight (if weight) | dbias (if wanted)].
  A* partial = partials_in_smem ? smem_partials + int64_t(slot) * width
                                : workspace + (int64_t(blockIdx.x) * rows_per_block + slot) * width;
  T* x_cache = reinterpret_cast<T*>(reinterpret_cast<char*>(smem_partials) +
                                    (partials_in_smem ? int64_t(rows_per_block) * width * int64_t(sizeof(A)) : 0)) +
               int64_t(slot) * 2 * dim;
  T* dy_cache = x_cache + dim;
  A* partial_dweight = partial;
  A* partial_dbias = partial + (has_weight ? dim : 0);
  for (int64_t i = lane; i < packs; i += group)
#pragma unroll
    for (int k = 0; k < V; ++k) {
      if (has_weight) partial_dweight[i * V + k] = 0;
      if (has_dbias) partial_dbias[i * V + k] = 0;
    }
  const bool saved_stats = !((a.center && !a.mean) || (a.scale && !a.rstd));
  for (int64_t first = int64_t(blockIdx.x) * rows_per_block; first < a.rows;
       first += int64_t(gridDim.x) * rows_per_block) {
    const int64_t r = first + slot;
    const bool active = r < a.rows;
    const T* x = static_cast<const T*>(a.x) + (active ? r : 0) * a.x_row_stride;
    const T* dy = static_cast<const T*>(a.dy) + (active ? r : 0) * a.dy_row_stride;
    const T* x_row = cache ? x_cache : x;
    const T* dy_row = cache ? dy_cache : dy;
    A mean = 0, rstd = 1;
    bool x_cached = false;
    if (saved_stats) {
      if (active && a.center) mean = static_cast<const A*>(a.mean)[r];
      if (active && a.scale) rstd = static_cast<const A*>(a.rstd)[r];
    } else {  // recompute them exactly as the forward does
      A sum = 0;
      if (active)
        for (int64_t i = lane; i < packs; i += group) {
          const P p = load_pack<T, V>(x, i);
          if (cache) store_pack<T, V>(x_cache, i, p);
#pragma unroll
          for (int k = 0; k < V; ++k) sum += widen(p.v[k]);
        }
      x_cached = cache;
      if (a.center) mean = group_sum(Two<A>{sum, 0}, group, scratch).a / A(dim);
      if (a.scale) {
        Two<A> s = {0, 0};
        if (active)
          for (int64_t i = lane; i < packs; i += group) {
            const P p = load_pack<T, V>(x_row, i);
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
          squares -= s.a * s.a / A(dim);
          mean += s.a / A(dim);
          if (squares < 0) squares = 0;
        }
        rstd = A(1) / sqrt(squares / A(dim) + A(a.eps));
      }
    }
    // Pass 1: sums of g and g * xhat; the parameter partials.
    Two<A> s = {0, 0};
    if (active)
      for (int64_t i = lane; i < packs; i += group) {
        const P xp = load_pack<T, V>(x_cached ? x_cache : x, i);
        const P dyp = load_pack<T, V>(dy, i);
        if (cache) {
          if (!x_cached) store_pack<T, V>(x_cache, i, xp);
          store_pack<T, V>(dy_cache, i, dyp);
        }
        P w;
        if (has_weight) w = load_pack<T, V>(weight, i);
#pragma unroll
        for (int k = 0; k < V; ++k) {
          const A dyv = widen(dyp.v[k]);
          const A xhat = (widen(xp.v[k]) - mean) * rstd;
          const A g = has_weight ? dyv * widen(w.v[k]) : dyv;
          s.a += g;
          s.b += g * xhat;
          if (has_weight) partial_dweight[i * V + k] += dyv * xhat;
          if (has_dbias) partial_dbias[i * V + k] += dyv;
        }
      }
    s = group_sum(s, group, scratch);
    if (!active) continue;
    const A mean_g = a.center ? s.a / A(dim) : A(0);
    const A mean_gx = s.b / A(dim);
    // Pass 2: dx.
    T* dx = static_cast<T*>(a.dx) + r * dim;
    for (int64_t i = lane; i < packs; i += group) {
      const P xp = load_pack<T, V>(x_row, i);
      const P dyp = load_pack<T, V>(dy_row, i);
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
    }
  }
  if (partials_in_smem && width > 0) {  // this block's partial: its groups' sums, in order
    __syncthreads();
    for (int64_t c = threadIdx.x; c < width; c += blockDim.x) {
      A total = smem_partials[c];
      for (int g = 1; g < rows_per_block; ++g) total += smem_partials[int64_t(g) * width + c];
      workspace[int64_t(blockIdx.x) * width + c] = total;
    }
  }
}

template <class T>
__global__ void __launch_bounds__(kMaxThreads) norm_backward_kernel(NormBackwardArgs a, int group, bool vec, bool cache, bool partials_in_smem,
                                     acc_t<T>* workspace) {
  extern __shared__ __align__(16) char smem[];
  if (vec)
    norm_backward_rows<T, kVec<T>>(a, group, cache, partials_in_smem, workspace, smem);
  else
    norm_backward_rows<T, 1>(a, group, cache, partials_in_smem, workspace, smem);
}

constexpr int64_t kCacheBudget = 96 * 1024;  // shared memory per block worth spending on the row cache

template <class T> const char* forward(const NormForwardArgs& a, cudaStream_t stream) {
  if (a.rows == 0 || a.dim == 0) return nullptr;
  const bool vec = a.dim % kVec<T> == 0 && a.x_row_stride % kVec<T> == 0 && aligned16(a.x) && aligned16(a.y) &&
                   aligned16(a.weight) && aligned16(a.bias);
  const RowLayout layout = row_layout(vec ? a.dim / kVec<T> : a.dim);
  const int64_t cache_bytes = int64_t(layout.rows_per_block) * a.dim * int64_t(sizeof(T));
  const int64_t limit = shared_memory_limit(norm_forward_kernel<T>, kScratchBytes + kCacheBudget);
  const bool cache = kScratchBytes + cache_bytes <= limit;
  const int64_t smem = kScratchBytes + (cache ? cache_bytes : 0);
  const int64_t blocks = (a.rows + layout.rows_per_block - 1) / layout.rows_per_block;
  norm_forward_kernel<T><<<unsigned(blocks < (1 << 30) ? blocks : (1 << 30)), layout.threads, smem, stream>>>(
      a, layout.group, vec, cache);
  return last_launch_error();
}

template <class T> const char* backward(const NormBackwardArgs& a, cudaStream_t stream) {
  using A = acc_t<T>;
  if (a.rows == 0 || a.dim == 0) {  // empty: the parameter gradients are zero sums
    const char* e = nullptr;
    if (a.dweight) e = error_or_null(cudaMemsetAsync(a.dweight, 0, a.dim * sizeof(T), stream));
    if (!e && a.dbias) e = error_or_null(cudaMemsetAsync(a.dbias, 0, a.dim * sizeof(T), stream));
    return e;
  }
  const bool vec = a.dim % kVec<T> == 0 && a.x_row_stride % kVec<T> == 0 && a.dy_row_stride % kVec<T> == 0 &&
                   aligned16(a.x) && aligned16(a.dy) && aligned16(a.dx) && aligned16(a.weight);
  const RowLayout layout = row_layout(vec ? a.dim / kVec<T> : a.dim);
  const int64_t width = (a.weight ? a.dim : 0) + (a.dbias ? a.dim : 0);
  const int64_t partial_bytes = int64_t(layout.rows_per_block) * width * int64_t(sizeof(A));
  const int64_t cache_bytes = int64_t(layout.rows_per_block) * 2 * a.dim * int64_t(sizeof(T));
  const int64_t limit = shared_memory_limit(norm_backward_kernel<T>, kScratchBytes + 2 * kCacheBudget);
  const bool partials_in_smem = kScratchBytes + partial_bytes <= limit;
  const bool cache = partials_in_smem && kScratchBytes + partial_bytes + cache_bytes <= limit;
  const int64_t smem = kScratchBytes + (partials_in_smem ? partial_bytes : 0) + (cache ? cache_bytes : 0);
  int64_t blocks = (a.rows + layout.rows_per_block - 1) / layout.rows_per_block;
  if (blocks > kPartialBlocks) blocks = kPartialBlocks;
  const int64_t n_partials = partials_in_smem ? blocks : blocks * layout.rows_per_block;
  A* workspace = nullptr;
  if (width > 0) {
    if (const char* e = error_or_null(cudaMallocAsync(reinterpret_cast<void**>(&workspace),
                                                      n_partials * width * sizeof(A), stream)))
      return e;
  }
  norm_backward_kernel<T><<<unsigned(blocks), layout.threads, smem, stream>>>(a, layout.group, vec, cache,
                                                                                partials_in_smem, workspace);
  const char* e = last_launch_error();
  if (!e && width > 0) {
    T* first = static_cast<T*>(a.weight ? a.dweight : a.dbias);
    sum_partials_kernel<T><<<unsigned((width + 255) / 256), 256, 0, stream>>>(
        workspace, n_partials, width, 0, nullptr, a.dim, first, static_cast<T*>(a.dbias));
    e = last_launch_error();
  }
  if (workspace) {
    const char* free_error = error_or_null(cudaFreeAsync(workspace, stream));
    if (!e) e = free_error;
  }
  return e;
}

}  // namespace

const char* norm_forward(const NormForwardArgs& a, DType dtype, void* stream) {
  return with_storage_type(dtype, [&](auto t) { return forward<decltype(t)>(a, static_cast<cudaStream_t>(stream)); });
}

const char* norm_backward(const NormBackwardArgs& a, DType dtype, void* stream) {
  return with_storage_type(dtype, [&](auto t) { return backward<decltype(t)>(a, static_cast<cudaStream_t>(stream)); });
}

}  // namespace cuda
}  // namespace pynorm
