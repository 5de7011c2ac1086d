// Linear attention on the GPU, causal and not, optionally normalised: forward and backward (see
// pynorm/linear_attention.h for the formulas; csrc/cpu/linear_attention.cpp is the CPU twin).
// Written for correctness first (it has not been timed): every pass is one generic chunked scan
//
//   out_i = scale * sum_{j in mask(i)} (a_i . b_j) c_j,   mask: all j, j <= i, or j >= i,
//
// run by one block per (problem, tile of TV columns of c). The running state S = sum b_j c_j^T
// (a x TV, at most 257 x 33) stays in shared memory; a chunk of C tokens of a, b, c is staged in
// shared memory, its masked C x C scores a_i . b_j give the intra-chunk term, S the inter-chunk
// one. Non-causal is two phases: S over all tokens, then out = scale * a S. Every sum has a fixed
// order: results are the same bits on every run.
//
// The passes, with the normalised variants written as dot products of augmented vectors
// (a trailing constant 1, or the per-token h):
//   forward  a = q,       b = k,       c = [v, 1]  (the last column is the denominator)
//   dq       a = [g, h],  b = [v, 1],  c = k       (j <= i)
//   dk       a = [v, 1],  b = [g, h],  c = q       (i >= j: the reverse scan)
//   dv       a = k,       b = q,       c = g       (reverse)
// with g_i = dout_i / den_i, h_i = -(dout_i . out_i) / den_i (normalised; g = dout, no h
// otherwise), from a forward pass that keeps out and den in the accumulate type.
#include "common.cuh"
#include "pynorm/linear_attention.h"

namespace pynorm {
namespace cuda {
namespace {

// One operand of the scan: [problems, n, cols] with strides (elements), any storage or
// accumulate dtype (read through a uniform branch), and an optional extra last column: a
// constant 1, or one value per token from `extra` ([problems, n], accumulate type).
struct Operand {
  const void* data = nullptr;
  int64_t problem_stride = 0, row_stride = 0;
  int cols = 0;
  int dtype = 0;           // DType code
  int extra_kind = 0;      // 0: none, 1: a column of ones, 2: the column `extra`
  const void* extra = nullptr;
  __host__ __device__ int width() const { return cols + (extra_kind ? 1 : 0); }
};

template <class A> __device__ __forceinline__ A load_as(const void* p, int dtype, int64_t i) {
  switch (dtype) {
    case 0: return A(static_cast<const float*>(p)[i]);
    case 1: return A(static_cast<const double*>(p)[i]);
    case 2: return A(__half2float(static_cast<const __half*>(p)[i]));
    default: return A(__bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]));
  }
}
template <class A> __device__ __forceinline__ void store_as(void* p, int dtype, int64_t i, A v) {
  switch (dtype) {
    case 0: static_cast<float*>(p)[i] = float(v); break;
    case 1: static_cast<double*>(p)[i] = double(v); break;
    case 2: static_cast<__half*>(p)[i] = __float2half_rn(float(v)); break;
    default: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(float(v)); break;
  }
}

template <class A>
__device__ __forceinline__ A operand_at(const Operand& o, int64_t p, int64_t n, int64_t token, int col, int acc_dtype) {
  if (col < o.cols) return load_as<A>(o.data, o.dtype, p * o.problem_stride + token * o.row_stride + col);
  if (o.extra_kind == 1) return A(1);
  return load_as<A>(o.extra, acc_dtype, p * n + token);
}

struct Scan {
  int64_t problems = 0, n = 0;
  Operand a, b, c;       // a, b of one width; c's columns are tiled over blockIdx.y
  int tile = 32;         // TV: real columns of c per block
  int chunk = 32;        // C: tokens per chunk
  int mask = 0;          // 0: all tokens, 1: j <= i, 2: j >= i
  bool normalize = false;  // c's extra column is the denominator: out = num / (den + eps)
  double scale = 1.0, eps = 0.0;
  void* out = nullptr;   // contiguous [problems, n, c.cols]
  int out_dtype = 0;
  void* den = nullptr;   // optional [problems, n] accumulate type: den + eps (normalize only)
};

template <class A> __global__ void __launch_bounds__(256) scan_kernel(Scan s) {
  extern __shared__ __align__(16) char smem_raw[];
  const int acc_dtype = sizeof(A) == 8 ? 1 : 0;
  const int64_t p = blockIdx.x;
  const int da = s.a.width(), C = s.chunk;
  const int col0 = blockIdx.y * s.tile;
  const int tv = min(s.tile, s.c.cols - col0);     // real columns of this tile
  const int tvx = tv + (s.normalize ? 1 : 0);      // plus the denominator column
  A* a_c = reinterpret_cast<A*>(smem_raw);         // [C][da]
  A* b_c = a_c + C * da;                           // [C][da]
  A* c_c = b_c + C * da;                           // [C][tvx]
  A* state = c_c + C * tvx;                        // [da][tvx]
  A* scores = state + da * tvx;                    // [C][C]
  A* o = scores + C * C;                           // [C][tvx]
  const int tid = threadIdx.x, nt = blockDim.x;
  const A scale = A(s.scale);
  auto c_col = [&](int t) { return t < tv ? col0 + t : s.c.cols; };  // tile column -> c column
  for (int i = tid; i < da * tvx; i += nt) state[i] = 0;
  const int64_t chunks = (s.n + C - 1) / C;
  const bool reverse = s.mask == 2;
  auto load_chunk = [&](int64_t t0, bool want_a, bool want_bc) {
    if (want_a)
      for (int i = tid; i < C * da; i += nt) {
        const int64_t token = t0 + i / da;
        a_c[i] = token < s.n ? operand_at<A>(s.a, p, s.n, token, i % da, acc_dtype) : A(0);
      }
    if (want_bc) {
      for (int i = tid; i < C * da; i += nt) {
        const int64_t token = t0 + i / da;
        b_c[i] = token < s.n ? operand_at<A>(s.b, p, s.n, token, i % da, acc_dtype) : A(0);
      }
      for (int i = tid; i < C * tvx; i += nt) {
        const int64_t token = t0 + i / tvx;
        c_c[i] = token < s.n ? operand_at<A>(s.c, p, s.n, token, c_col(i % tvx), acc_dtype) : A(0);
      }
    }
  };
  auto update_state = [&] {  // S += b_c^T c_c, tokens in order
    for (int i = tid; i < da * tvx; i += nt) {
      const int d = i / tvx, t = i % tvx;
      A sum = state[i];
      for (int j = 0; j < C; ++j) sum += b_c[j * da + d] * c_c[j * tvx + t];
      state[i] = sum;
    }
  };
  auto write_chunk = [&](int64_t t0) {
    for (int i = tid; i < C * tv; i += nt) {
      const int r = i / tv, t = i % tv;
      const int64_t token = t0 + r;
      if (token >= s.n) continue;
      A v = o[r * tvx + t];
      if (s.normalize) v = v / (o[r * tvx + tv] + A(s.eps));
      store_as<A>(s.out, s.out_dtype, (p * s.n + token) * s.c.cols + col0 + t, v);
    }
    if (s.den && blockIdx.y == 0)
      for (int r = tid; r < C; r += nt)
        if (t0 + r < s.n) static_cast<A*>(s.den)[p * s.n + t0 + r] = o[r * tvx + tv] + A(s.eps);
  };
  if (s.mask == 0) {
    // Phase 1: S over every token; phase 2: out = scale * a S.
    for (int64_t ch = 0; ch < chunks; ++ch) {
      load_chunk(ch * C, false, true);
      __syncthreads();
      update_state();
      __syncthreads();
    }
    for (int64_t ch = 0; ch < chunks; ++ch) {
      load_chunk(ch * C, true, false);
      __syncthreads();
      for (int i = tid; i < C * tvx; i += nt) {
        const int r = i / tvx, t = i % tvx;
        A sum = 0;
        for (int d = 0; d < da; ++d) sum += a_c[r * da + d] * state[d * tvx + t];
        o[i] = scale * sum;
      }
      __syncthreads();
      write_chunk(ch * C);
      __syncthreads();
    }
    return;
  }
  for (int64_t step = 0; step < chunks; ++step) {
    const int64_t ch = reverse ? chunks - 1 - step : step;
    const int64_t t0 = ch * C;
    load_chunk(t0, true, true);
    __syncthreads();
    for (int i = tid; i < C * C; i += nt) {  // masked intra-chunk scores
      const int r = i / C, j = i % C;
      A sum = 0;
      if (reverse ? j >= r : j <= r)
        for (int d = 0; d < da; ++d) sum += a_c[r * da + d] * b_c[j * da + d];
      scores[i] = sum;
    }
    __syncthreads();
    for (int i = tid; i < C * tvx; i += nt) {  // inter-chunk (S) + intra-chunk terms
      const int r = i / tvx, t = i % tvx;
      A sum = 0;
      for (int d = 0; d < da; ++d) sum += a_c[r * da + d] * state[d * tvx + t];
      for (int j = 0; j < C; ++j) sum += scores[r * C + j] * c_c[j * tvx + t];
      o[i] = scale * sum;
    }
    __syncthreads();
    update_state();
    write_chunk(t0);
    __syncthreads();
  }
}

// g = dout / den and h = -(dout . out) / den per token (normalised), or g = dout; accumulate type.
template <class A>
__global__ void gradient_prep_kernel(MatrixBatch dout, int dtype, int64_t problems, int64_t n, int64_t dv,
                                     const A* out, const A* den, A* g, A* h) {
  const int64_t row = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= problems * n) return;
  const int64_t p = row / n, token = row % n;
  const int64_t base = p * dout.problem_stride + token * dout.row_stride;
  if (!den) {
    for (int64_t t = 0; t < dv; ++t) g[row * dv + t] = load_as<A>(dout.data, dtype, base + t);
    return;
  }
  const A d = den[row];
  A dot = 0;
  for (int64_t t = 0; t < dv; ++t) {
    const A value = load_as<A>(dout.data, dtype, base + t);
    dot += value * out[row * dv + t];
    g[row * dv + t] = value / d;
  }
  h[row] = -dot / d;
}

Operand operand(const MatrixBatch& m, int cols, int dtype, int extra_kind = 0, const void* extra = nullptr) {
  Operand o;
  o.data = m.data;
  o.problem_stride = m.problem_stride;
  o.row_stride = m.row_stride;
  o.cols = cols;
  o.dtype = dtype;
  o.extra_kind = extra_kind;
  o.extra = extra;
  return o;
}

template <class A> const char* run_scan(Scan s, cudaStream_t stream) {
  if (s.problems == 0 || s.n == 0 || s.c.cols == 0) return nullptr;
  const int da = s.a.width();
  for (int tile : {32, 16, 8}) {
    for (int chunk : {32, 16, 8}) {
      const int tvx = tile + (s.normalize ? 1 : 0);
      const int64_t bytes = int64_t(sizeof(A)) * (2 * chunk * da + chunk * tvx + da * tvx + chunk * chunk + chunk * tvx);
      const int64_t limit = shared_memory_limit(scan_kernel<A>, bytes);
      if (bytes > limit) continue;
      s.tile = tile;
      s.chunk = chunk;
      const dim3 grid(unsigned(s.problems), unsigned((s.c.cols + tile - 1) / tile));
      scan_kernel<A><<<grid, 256, bytes, stream>>>(s);
      return last_launch_error();
    }
  }
  return "linear attention: the feature sizes need more shared memory than this device has";
}

template <class A> const char* forward_impl(const LinearAttentionForwardArgs& a, DType dtype, cudaStream_t stream,
                                            void* out, int out_dtype, void* den) {
  const int code = int(dtype);
  Scan s;
  s.problems = a.problems;
  s.n = a.n;
  s.a = operand(a.q, int(a.dk), code);
  s.b = operand(a.k, int(a.dk), code);
  s.c = operand(a.v, int(a.dv), code, a.normalize ? 1 : 0);
  s.mask = a.causal ? 1 : 0;
  s.normalize = a.normalize;
  s.scale = a.scale;
  s.eps = a.eps;
  s.out = out;
  s.out_dtype = out_dtype;
  s.den = den;
  return run_scan<A>(s, stream);
}

template <class A> const char* backward_impl(const LinearAttentionBackwardArgs& a, DType dtype, cudaStream_t stream) {
  const int code = int(dtype), acc = sizeof(A) == 8 ? 1 : 0;
  const int64_t rows = a.problems * a.n;
  if (rows == 0) return nullptr;
  // Scratch: g [rows, dv]; normalised also out [rows, dv], den [rows], h [rows] (accumulate type).
  const int64_t scratch_elems = rows * a.dv + (a.normalize ? rows * a.dv + 2 * rows : 0);
  A* scratch = nullptr;
  if (const char* e = error_or_null(cudaMallocAsync(reinterpret_cast<void**>(&scratch), scratch_elems * sizeof(A), stream)))
    return e;
  A* g = scratch;
  A* out = a.normalize ? g + rows * a.dv : nullptr;
  A* den = a.normalize ? out + rows * a.dv : nullptr;
  A* h = a.normalize ? den + rows : nullptr;
  const char* e = nullptr;
  if (a.normalize) {
    LinearAttentionForwardArgs f;
    f.problems = a.problems;
    f.n = a.n;
    f.dk = a.dk;
    f.dv = a.dv;
    f.q = a.q;
    f.k = a.k;
    f.v = a.v;
    f.scale = a.scale;
    f.eps = a.eps;
    f.causal = a.causal;
    f.normalize = true;
    e = forward_impl<A>(f, dtype, stream, out, acc, den);
  }
  if (!e) {
    gradient_prep_kernel<A><<<unsigned((rows + 255) / 256), 256, 0, stream>>>(a.dout, code, a.problems, a.n, a.dv, out,
                                                                              den, g, h);
    e = last_launch_error();
  }
  const MatrixBatch g_batch{g, a.n * a.dv, a.dv};
  const int causal_forward = a.causal ? 1 : 0, causal_reverse = a.causal ? 2 : 0;
  const int h_kind = a.normalize ? 2 : 0, ones = a.normalize ? 1 : 0;
  Scan s;
  s.problems = a.problems;
  s.n = a.n;
  s.scale = a.scale;
  s.out_dtype = code;
  if (!e) {  // dq_i = scale * sum_{j<=i} ([g_i, h_i] . [v_j, 1]) k_j
    s.a = operand(g_batch, int(a.dv), acc, h_kind, h);
    s.b = operand(a.v, int(a.dv), code, ones);
    s.c = operand(a.k, int(a.dk), code);
    s.mask = causal_forward;
    s.out = a.dq;
    e = run_scan<A>(s, stream);
  }
  if (!e) {  // dk_j = scale * sum_{i>=j} ([v_j, 1] . [g_i, h_i]) q_i
    s.a = operand(a.v, int(a.dv), code, ones);
    s.b = operand(g_batch, int(a.dv), acc, h_kind, h);
    s.c = operand(a.q, int(a.dk), code);
    s.mask = causal_reverse;
    s.out = a.dk_out;
    e = run_scan<A>(s, stream);
  }
  if (!e) {  // dv_j = scale * sum_{i>=j} (k_j . q_i) g_i
    s.a = operand(a.k, int(a.dk), code);
    s.b = operand(a.q, int(a.dk), code);
    s.c = operand(g_batch, int(a.dv), acc);
    s.mask = causal_reverse;
    s.out = a.dv_out;
    e = run_scan<A>(s, stream);
  }
  const char* free_error = error_or_null(cudaFreeAsync(scratch, stream));
  return e ? e : free_error;
}

}  // namespace

const char* linear_attention_forward(const LinearAttentionForwardArgs& a, DType dtype, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  if (dtype == DType::float64) return forward_impl<double>(a, dtype, s, a.out, int(dtype), nullptr);
  return forward_impl<float>(a, dtype, s, a.out, int(dtype), nullptr);
}

const char* linear_attention_backward(const LinearAttentionBackwardArgs& a, DType dtype, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  if (dtype == DType::float64) return backward_impl<double>(a, dtype, s);
  return backward_impl<float>(a, dtype, s);
}

}  // namespace cuda
}  // namespace pynorm
