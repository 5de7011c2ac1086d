// Shared device code of the CUDA kernels: storage/accumulate types, 16-byte packs, reductions
// within a group of threads (a warp or a whole block), the sum of per-block partials in a fixed
// order, and the launch helpers.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "launch.h"
#include "pynorm/common.h"

namespace pynorm {
namespace cuda {

// float32 arithmetic for float32 / float16 / bfloat16 storage, float64 for float64.
template <class T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };
template <class T> using acc_t = typename Acc<T>::type;

__device__ __forceinline__ float widen(float v) { return v; }
__device__ __forceinline__ double widen(double v) { return v; }
__device__ __forceinline__ float widen(__half v) { return __half2float(v); }
__device__ __forceinline__ float widen(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T> __device__ __forceinline__ T narrow(acc_t<T> v);
template <> __device__ __forceinline__ float narrow<float>(float v) { return v; }
template <> __device__ __forceinline__ double narrow<double>(double v) { return v; }
template <> __device__ __forceinline__ __half narrow<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 narrow<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// V elements of T moved as one access: 16 bytes when V = 16 / sizeof(T), one element when V = 1.
template <class T, int V> struct alignas(sizeof(T) * V) Pack {
  T v[V];
};
template <class T, int V> __device__ __forceinline__ Pack<T, V> load_pack(const T* p, int64_t i) {
  return reinterpret_cast<const Pack<T, V>*>(p)[i];
}
template <class T, int V> __device__ __forceinline__ void store_pack(T* p, int64_t i, const Pack<T, V>& v) {
  reinterpret_cast<Pack<T, V>*>(p)[i] = v;
}
template <class T> constexpr int kVec = 16 / int(sizeof(T));

template <class A> struct Two {
  A a, b;
};
template <class A> __device__ __forceinline__ A warp_sum(A v) {
  // A butterfly: every lane adds the same two numbers (in either order), so all lanes end with
  // bitwise the same total.
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}
template <class A> __device__ __forceinline__ Two<A> warp_sum(Two<A> v) {
  return {warp_sum(v.a), warp_sum(v.b)};
}
template <class A> __device__ __forceinline__ Two<A> operator+(Two<A> x, Two<A> y) { return {x.a + y.a, x.b + y.b}; }

// The sum of v over the group of `group` threads (32, or a multiple of 32 dividing blockDim.x)
// that contains this thread; every thread of the group gets the same value. Every thread of the
// block must call it (it synchronises the block when group > 32). scratch: blockDim.x / 32
// elements of S in shared memory. The warps' totals are added in a fixed order.
template <class S> __device__ __forceinline__ S group_sum(S v, int group, S* scratch) {
  v = warp_sum(v);
  if (group == 32) return v;
  __syncthreads();  // the previous call's readers are done with scratch
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  const int first = int(threadIdx.x) / group * (group / 32);
  S total = scratch[first];
  for (int w = 1; w < group / 32; ++w) total = total + scratch[first + w];
  return total;
}

// Column sums of per-block partials [n_partials, width] (accumulate type), each column summed
// from the first partial to the last: the same bits on every run. Columns [0, head) go to
// head_out (accumulate type), the next `dim` to out0, the `dim` after to out1 (storage type).
template <class T>
__global__ void __launch_bounds__(256) sum_partials_kernel(const acc_t<T>* partials, int64_t n_partials, int64_t width, int64_t head,
                                    acc_t<T>* head_out, int64_t dim, T* out0, T* out1) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= width) return;
  acc_t<T> s = partials[c];
  for (int64_t p = 1; p < n_partials; ++p) s += partials[p * width + c];
  if (c < head)
    head_out[c] = s;
  else if (c - head < dim)
    out0[c - head] = narrow<T>(s);
  else
    out1[c - head - dim] = narrow<T>(s);
}

// The packs of a row each thread of a backward kernel holds in registers: 16 values (4 on the
// one-element path, where 16 separate loads spill registers), all loaded before the first use
// (several independent loads in flight per thread) and kept for every later pass; its column
// sums stay in registers too. The forwards give each thread about kForwardPacks packs and keep
// the row in shared memory (norm) or stream it (DyT): rows in registers raised their register
// count, lowered the occupancy and measured slower (an A/B on an H200, docs/cuda.md).
template <int V> constexpr int kRegPacks = V == 1 ? 4 : 16 / V;
constexpr int kForwardPacks = 4;

// How many threads work on one row, and how many rows a block holds. A row of `units` packs
// gets a power of two from 32 (one warp: short rows) to kMaxThreads threads, enough that each
// holds at most `per_thread` packs when the row allows; blocks have at least 256 threads
// (several rows per block for short rows).
constexpr int kMaxThreads = 512;  // every row kernel is __launch_bounds__(kMaxThreads)
struct RowLayout {
  int group, rows_per_block, threads;
};
inline RowLayout row_layout(int64_t units, int per_thread) {
  int group = 32;
  while (group < kMaxThreads && int64_t(group) * per_thread < units) group *= 2;
  const int threads = group < 256 ? 256 : group;
  return {group, threads / group, threads};
}

// Calls head(j, i) for this thread's first N packs of a row, i = lane + j * group (the loop is
// unrolled, so arrays indexed by j stay in registers), and tail(i) for the packs past those
// (rows longer than kMaxThreads * N packs: one thread per row group then, read again from L2).
template <int N, class Head, class Tail>
__device__ __forceinline__ void for_packs(int lane, int group, int64_t packs, Head&& head, Tail&& tail) {
#pragma unroll
  for (int j = 0; j < N; ++j) {
    const int64_t i = lane + int64_t(j) * group;
    if (i < packs) head(j, i);
  }
  for (int64_t i = lane + int64_t(N) * group; i < packs; i += group) tail(i);
}

// The end of a backward kernel's row loop: this block's partial sums of the per-column
// gradients go to workspace row blockIdx.x (`width` columns). Each group holds the sums of its
// head packs in registers (sums[a][j * V + k] for gradient a, where present[a], at column
// offset[a] + i * V + k); sums of tail packs are already in the workspace row (only a group
// that fills the block has a tail). `first` (when has_first) goes to column 0, from the group's lane 0. With several
// groups per block, their rows are staged in shared memory (stage: rows_per_block * width)
// and added in group order: a fixed order, the same bits on every run.
template <class A, int N, int V>
__device__ __forceinline__ void write_block_partials(const A (&sums)[2][N * V], const int64_t (&offset)[2],
                                                     const bool (&present)[2], bool has_first, A first, int group,
                                                     int64_t packs, int64_t width, A* workspace, A* stage) {
  const int rows_per_block = blockDim.x / group;
  const int slot = threadIdx.x / group, lane = threadIdx.x % group;
  A* row = rows_per_block == 1 ? workspace + int64_t(blockIdx.x) * width : stage + int64_t(slot) * width;
  for_packs<N>(lane, group, packs, [&](int j, int64_t i) {
#pragma unroll
    for (int a = 0; a < 2; ++a)
      if (present[a])
#pragma unroll
        for (int k = 0; k < V; ++k) row[offset[a] + i * V + k] = sums[a][j * V + k];
  }, [](int64_t) {});
  if (has_first && lane == 0) row[0] = first;
  if (rows_per_block == 1) return;
  __syncthreads();
  for (int64_t c = threadIdx.x; c < width; c += blockDim.x) {
    A total = stage[c];
    for (int g = 1; g < rows_per_block; ++g) total += stage[int64_t(g) * width + c];
    workspace[int64_t(blockIdx.x) * width + c] = total;
  }
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// The largest dynamic shared memory a block of this kernel may use (raising the 48 KiB default
// when the device allows more); 0 on error.
template <class Kernel> inline int64_t shared_memory_limit(Kernel kernel, int64_t wanted) {
  int device = 0, optin = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 0;
  if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) return 0;
  const int64_t limit = wanted < optin ? wanted : optin;
  if (limit > 48 * 1024 &&
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(limit)) != cudaSuccess)
    return 48 * 1024;
  return limit;
}

inline const char* error_or_null(cudaError_t e) { return e == cudaSuccess ? nullptr : cudaGetErrorString(e); }
inline const char* last_launch_error() { return error_or_null(cudaGetLastError()); }

// Blocks for the backward's first kernel: a fixed number (not the device's), so that the
// partition of rows into per-block partial sums -- and with it every bit of dweight, dbias,
// dalpha -- depends on the shape only.
constexpr int64_t kPartialBlocks = 256;
constexpr int64_t kScratchBytes = 32 * sizeof(Two<double>);  // group_sum's scratch, 16-byte aligned size

// A forward row kernel's launch shape: 16-byte packs when the dimension, x's row stride and
// every pointer allow them, about kForwardPacks packs per thread, a block per rows_per_block
// rows (grid-stride past 2^30 blocks).
struct ForwardLaunch {
  bool vec;
  RowLayout layout;
  unsigned blocks;
};
template <class T, class Args> inline ForwardLaunch forward_launch(const Args& a) {
  const bool vec = a.dim % kVec<T> == 0 && a.x_row_stride % kVec<T> == 0 && aligned16(a.x) && aligned16(a.y) &&
                   aligned16(a.weight) && aligned16(a.bias);
  const RowLayout layout = row_layout(vec ? a.dim / kVec<T> : a.dim, kForwardPacks);
  const int64_t blocks = (a.rows + layout.rows_per_block - 1) / layout.rows_per_block;
  return {vec, layout, unsigned(blocks < (1 << 30) ? blocks : (1 << 30))};
}

// The host side of a backward row kernel with column sums (norm.cu, dyt.cu): `a` has rows,
// dim, x, dy, dx, weight, dweight, dbias and the row strides; `kernel(a, group, vec, workspace)`
// writes one partial row per block, [head columns | dweight (if weight) | dbias (if wanted)],
// and sum_partials_kernel adds them in order into head_out (head accumulate-type values, e.g.
// DyT's dalpha), dweight and dbias. Blocks: at most kPartialBlocks, over a fixed partition of
// the rows. An empty input zeroes what it would have summed.
template <class T, class Args, class Kernel>
const char* backward_with_partials(const Args& a, Kernel kernel, int64_t head, void* head_out, cudaStream_t stream) {
  using A = acc_t<T>;
  if (a.rows == 0 || a.dim == 0) {
    const char* e = head ? error_or_null(cudaMemsetAsync(head_out, 0, head * sizeof(A), stream)) : nullptr;
    if (!e && a.dweight) e = error_or_null(cudaMemsetAsync(a.dweight, 0, a.dim * sizeof(T), stream));
    if (!e && a.dbias) e = error_or_null(cudaMemsetAsync(a.dbias, 0, a.dim * sizeof(T), stream));
    return e;
  }
  const bool vec = a.dim % kVec<T> == 0 && a.x_row_stride % kVec<T> == 0 && a.dy_row_stride % kVec<T> == 0 &&
                   aligned16(a.x) && aligned16(a.dy) && aligned16(a.dx) && aligned16(a.weight);
  const RowLayout layout = vec ? row_layout(a.dim / kVec<T>, kRegPacks<kVec<T>>) : row_layout(a.dim, kRegPacks<1>);
  const int64_t width = head + (a.weight ? a.dim : 0) + (a.dbias ? a.dim : 0);
  const int64_t stage_bytes = layout.rows_per_block > 1 ? int64_t(layout.rows_per_block) * width * int64_t(sizeof(A)) : 0;
  const int64_t smem = kScratchBytes + stage_bytes;
  if (shared_memory_limit(kernel, smem) < smem) return "not enough shared memory for the backward's partial sums";
  int64_t blocks = (a.rows + layout.rows_per_block - 1) / layout.rows_per_block;
  if (blocks > kPartialBlocks) blocks = kPartialBlocks;
  A* workspace = nullptr;  // none when nothing is summed (a norm without weight and dbias)
  if (width > 0)
    if (const char* e = error_or_null(cudaMallocAsync(reinterpret_cast<void**>(&workspace), blocks * width * sizeof(A), stream)))
      return e;
  kernel<<<unsigned(blocks), layout.threads, smem, stream>>>(a, layout.group, vec, workspace);
  const char* e = last_launch_error();
  if (!e && width > 0) {
    T* first = static_cast<T*>(a.weight ? a.dweight : a.dbias);
    sum_partials_kernel<T><<<unsigned((width + 255) / 256), 256, 0, stream>>>(
        workspace, blocks, width, head, static_cast<A*>(head_out), a.dim, first, static_cast<T*>(a.dbias));
    e = last_launch_error();
  }
  if (workspace) {
    const char* free_error = error_or_null(cudaFreeAsync(workspace, stream));
    if (!e) e = free_error;
  }
  return e;
}

// Calls launch(T{}) with the CUDA storage type of `dtype`; returns its error message (or null).
template <class Launch> inline const char* with_storage_type(DType dtype, Launch&& launch) {
  switch (dtype) {
    case DType::float32: return launch(float{});
    case DType::float64: return launch(double{});
    case DType::float16: return launch(__half{});
    case DType::bfloat16: return launch(__nv_bfloat16{});
  }
  return "unknown dtype";
}

}  // namespace cuda
}  // namespace pynorm
