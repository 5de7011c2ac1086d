// DyT on the GPU: y = weight * tanh(alpha * x) + bias, forward and backward (see pynorm/dyt.h;
// csrc/cpu/dyt.cpp is the CPU twin). Rows are laid out on threads as in norm.cu (a group of
// threads per row, each thread owning the same packs of columns in every row; the backward
// loads a thread's first kRegPacks packs together into registers and keeps its column sums
// there). The backward
// recomputes tanh from x and evaluates 1 - tanh^2 without cancellation; dalpha, dweight, dbias
// go through per-block partials summed in a fixed order (no atomics).
#include "common.cuh"

namespace pynorm {
namespace cuda {
namespace {

// tanh(z), and s = 1 - tanh(z)^2 when wanted, from e = expm1(2|z|):
//   tanh|z| = e / (e + 2),   1 - tanh^2 = 4 (e + 1) / (e + 2)^2,
// both without cancellation (1 - t^2 near saturation would lose every digit). 2|z| is clamped
// where tanh is 1 to the last bit (tanh(20) == 1 in float, tanh(40) in double), so e stays finite.
template <class A> __device__ __forceinline__ A tanh_with_derivative(A z, A* derivative) {
  const A abs_z = fabs(z);
  const A clamp = sizeof(A) == 8 ? A(80) : A(40);
  const A e = expm1(fmin(abs_z + abs_z, clamp));
  const A inv = A(1) / (e + A(2));
  A t = copysign(e * inv, z);
  if (z != z) t = z;
  if (derivative) {
    A s = (A(4) * inv) * ((e + A(1)) * inv);
    if (isinf(abs_z)) s = 0;  // exactly 0 at +-inf, as 1 - tanh^2 is
    *derivative = z != z ? z : s;
  }
  return t;
}

template <class T, int V> __device__ __forceinline__ void dyt_forward_rows(const DytForwardArgs& a, int group) {
  using A = acc_t<T>;
  using P = Pack<T, V>;
  const int rows_per_block = blockDim.x / group;
  const int slot = threadIdx.x / group, lane = threadIdx.x % group;
  const int64_t packs = a.dim / V;
  const T* weight = static_cast<const T*>(a.weight);
  const T* bias = static_cast<const T*>(a.bias);
  const A alpha = A(a.alpha);
  for (int64_t r = int64_t(blockIdx.x) * rows_per_block + slot; r < a.rows; r += int64_t(gridDim.x) * rows_per_block) {
    const T* x = static_cast<const T*>(a.x) + r * a.x_row_stride;
    T* y = static_cast<T*>(a.y) + r * a.dim;
    for (int64_t i = lane; i < packs; i += group) {
      const P p = load_pack<T, V>(x, i);
      P w, b, out;
      if (weight) w = load_pack<T, V>(weight, i);
      if (bias) b = load_pack<T, V>(bias, i);
#pragma unroll
      for (int k = 0; k < V; ++k) {
        A v = tanh_with_derivative<A>(widen(p.v[k]) * alpha, nullptr);
        if (weight) v *= widen(w.v[k]);
        if (bias) v += widen(b.v[k]);
        out.v[k] = narrow<T>(v);
      }
      store_pack<T, V>(y, i, out);
    }
  }
}

template <class T> __global__ void __launch_bounds__(kMaxThreads) dyt_forward_kernel(DytForwardArgs a, int group, bool vec) {
  if (vec)
    dyt_forward_rows<T, kVec<T>>(a, group);
  else
    dyt_forward_rows<T, 1>(a, group);
}

// Partial rows: [dalpha | dweight (if weight) | dbias (if wanted)], width 1 + ...
template <class T, int V>
__device__ __forceinline__ void dyt_backward_rows(const DytBackwardArgs& a, int group, acc_t<T>* workspace, char* smem) {
  using A = acc_t<T>;
  using P = Pack<T, V>;
  constexpr int N = kRegPacks<V>;
  const int rows_per_block = blockDim.x / group;
  const int slot = threadIdx.x / group, lane = threadIdx.x % group;
  const int64_t dim = a.dim, packs = dim / V;
  const T* weight = static_cast<const T*>(a.weight);
  const bool has_weight = weight != nullptr, has_dbias = a.dbias != nullptr;
  const int64_t width = 1 + (has_weight ? dim : 0) + (has_dbias ? dim : 0);
  auto* scratch = reinterpret_cast<Two<A>*>(smem);
  // This thread's column sums: [0] dweight, [1] dbias; the tail's in the block's workspace row.
  A sums[2][N * V] = {};
  const int64_t offset[2] = {1, 1 + (has_weight ? dim : 0)};
  const bool present[2] = {has_weight, has_dbias};
  A* tail_sums = workspace + int64_t(blockIdx.x) * width;
  for_packs<N>(lane, group, packs, [](int, int64_t) {}, [&](int64_t i) {
#pragma unroll
    for (int k = 0; k < V; ++k) {
      if (has_weight) tail_sums[offset[0] + i * V + k] = 0;
      if (has_dbias) tail_sums[offset[1] + i * V + k] = 0;
    }
  });
  const A alpha = A(a.alpha);
  A dalpha = 0;
  for (int64_t r = int64_t(blockIdx.x) * rows_per_block + slot; r < a.rows; r += int64_t(gridDim.x) * rows_per_block) {
    const T* x = static_cast<const T*>(a.x) + r * a.x_row_stride;
    const T* dy = static_cast<const T*>(a.dy) + r * a.dy_row_stride;
    T* dx = static_cast<T*>(a.dx) + r * dim;
    auto step = [&](int64_t i, const P& xp, const P& dyp, A* dweight, A* dbias) {
      P w, out;
      if (has_weight) w = load_pack<T, V>(weight, i);
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const A xv = widen(xp.v[k]), dyv = widen(dyp.v[k]);
        A s;
        const A t = tanh_with_derivative<A>(xv * alpha, &s);
        A g = dyv;
        if (has_weight) {
          g *= widen(w.v[k]);
          dweight[k] += dyv * t;
        }
        if (has_dbias) dbias[k] += dyv;
        const A gs = g * s;
        dalpha += gs * xv;
        out.v[k] = narrow<T>(gs * alpha);
      }
      store_pack<T, V>(dx, i, out);
    };
    P xr[N], dyr[N];  // every load of the row issued before the first use
    for_packs<N>(lane, group, packs, [&](int j, int64_t i) {
      xr[j] = load_pack<T, V>(x, i);
      dyr[j] = load_pack<T, V>(dy, i);
    }, [](int64_t) {});
    for_packs<N>(lane, group, packs, [&](int j, int64_t i) { step(i, xr[j], dyr[j], &sums[0][j * V], &sums[1][j * V]); },
                 [&](int64_t i) {
                   step(i, load_pack<T, V>(x, i), load_pack<T, V>(dy, i), tail_sums + offset[0] + i * V,
                        tail_sums + offset[1] + i * V);
                 });
  }
  dalpha = group_sum(Two<A>{dalpha, 0}, group, scratch).a;
  write_block_partials<A, N, V>(sums, offset, present, true, dalpha, group, packs, width, workspace,
                                reinterpret_cast<A*>(smem + kScratchBytes));
}

template <class T>
__global__ void __launch_bounds__(kMaxThreads) dyt_backward_kernel(DytBackwardArgs a, int group, bool vec, acc_t<T>* workspace) {
  extern __shared__ __align__(16) char smem[];
  if (vec)
    dyt_backward_rows<T, kVec<T>>(a, group, workspace, smem);
  else
    dyt_backward_rows<T, 1>(a, group, workspace, smem);
}

}  // namespace

const char* dyt_forward(const DytForwardArgs& a, DType dtype, void* stream) {
  if (a.rows == 0 || a.dim == 0) return nullptr;
  return with_storage_type(dtype, [&](auto t) {
    using T = decltype(t);
    const ForwardLaunch l = forward_launch<T>(a);
    dyt_forward_kernel<T><<<l.blocks, l.layout.threads, 0, static_cast<cudaStream_t>(stream)>>>(a, l.layout.group, l.vec);
    return last_launch_error();
  });
}

const char* dyt_backward(const DytBackwardArgs& a, DType dtype, void* stream) {
  return with_storage_type(dtype, [&](auto t) {
    using T = decltype(t);
    return backward_with_partials<T>(a, dyt_backward_kernel<T>, 1, a.dalpha, static_cast<cudaStream_t>(stream));
  });
}

}  // namespace cuda
}  // namespace pynorm
