// Vector wrappers, 16-bit float conversion, streaming stores, row loops, a vector tanh and exp.
//
// This header is included only by the kernel files, which are compiled once per instruction
// set with -DPYNORM_ISA=<level>. Everything here lives in namespace pynorm::<level> (and is
// header-only), so code generated for AVX2 can never be linked into the baseline path.
// Vectors are GCC/Clang vector extensions: the compiler lowers them to SSE2/NEON (16 bytes),
// AVX2 (32 bytes) or AVX-512 (64 bytes) according to the flags of the copy being built.
#pragma once
#include <omp.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "pynorm/common.h"

#ifndef PYNORM_ISA
#error "simd.h is for the per-ISA kernel files: compile with -DPYNORM_ISA=<level>"
#endif

#if defined(__AVX512F__)
#define PYNORM_VEC_BYTES 64
#elif defined(__AVX__)
#define PYNORM_VEC_BYTES 32
#else
#define PYNORM_VEC_BYTES 16
#endif

// Loops over the rows of a group (a compile-time count) are unrolled, and the functions
// holding them inlined, so that the rows' accumulators live in registers.
#define PYNORM_UNROLL _Pragma("GCC unroll 16")
#define PYNORM_INLINE inline __attribute__((always_inline))
#define PYNORM_INLINE_LAMBDA __attribute__((always_inline))  // [&](...) PYNORM_INLINE_LAMBDA { ... }

namespace pynorm {
namespace PYNORM_ISA {

// ------------------------------------------------------------------ element types
struct Half { uint16_t bits; };      // IEEE binary16 storage
struct BFloat16 { uint16_t bits; };  // bfloat16 storage

template <class T> struct AccumulateOf { using type = float; };
template <> struct AccumulateOf<double> { using type = double; };
template <class T> using acc_t = typename AccumulateOf<T>::type;

typedef float vf32 __attribute__((vector_size(PYNORM_VEC_BYTES)));
typedef double vf64 __attribute__((vector_size(PYNORM_VEC_BYTES)));
typedef int64_t vi64 __attribute__((vector_size(PYNORM_VEC_BYTES)));
typedef uint32_t vu32 __attribute__((vector_size(PYNORM_VEC_BYTES)));
typedef int32_t vi32 __attribute__((vector_size(PYNORM_VEC_BYTES)));
typedef uint16_t vu16 __attribute__((vector_size(PYNORM_VEC_BYTES / 2)));  // one per float lane

template <class A> struct VecOf;
template <> struct VecOf<float> { using type = vf32; };
template <> struct VecOf<double> { using type = vf64; };
template <class A> using Vec = typename VecOf<A>::type;
template <class A> constexpr int kLanes = PYNORM_VEC_BYTES / sizeof(A);

// Every lane a: a - 0 is exactly a (-0 included; {} + a is not: 0 + -0 is +0), and compiles
// to one broadcast.
template <class A> inline Vec<A> splat(A a) { return a - Vec<A>{}; }
// The lower or upper half of a vector, as a vector of half the width (register shuffles; a
// copy through memory here kept every caller's accumulators on the stack).
template <bool Upper, class V, int... I> PYNORM_INLINE auto halves(V v, std::integer_sequence<int, I...>) {
  return __builtin_shufflevector(v, v, (I + (Upper ? int(sizeof...(I)) : 0))...);
}
template <bool Upper, class V> PYNORM_INLINE auto halves(V v) {
  return halves<Upper>(v, std::make_integer_sequence<int, int(sizeof(V) / sizeof(v[0]) / 2)>{});
}
// Sum of the lanes by halves (lower + upper half, recursively): a tree of log2(lanes) adds,
// in the same order every time.
template <class V> inline auto hsum(V v) {
  using E = decltype(v[0] + 0);
  if constexpr (sizeof(V) == sizeof(E)) {
    return E(v[0]);
  } else {
    return hsum(halves<false>(v) + halves<true>(v));
  }
}

// The horizontal sums of R vectors: out[j] = hsum(v[j]), bitwise. When R is a power of two up
// to the lane count, the R trees share their work: each level folds two vectors' halves into
// one vector (one add and two shuffles), so R sums cost R - 1 vector adds (plus log2(L/R)
// in-vector steps when R < L lanes) instead of R log2(L) lone ones, while every lane is still
// summed lower half + upper half, as hsum does.
template <class V, int W, bool Upper, int... I>
PYNORM_INLINE V segment_halves(V x, V y, std::integer_sequence<int, I...>) {
  // lane i of the result: segment g = i / (W/2) comes from x (g even) or y (g odd), from that
  // vector's segment g / 2 of width W; the lower or upper half of it
  constexpr int L = sizeof...(I), H = W / 2;
  return __builtin_shufflevector(x, y, ((I / H) % 2 * L + (I / H) / 2 * W + I % H + (Upper ? H : 0))...);
}
// N vectors of segments of width W (one per original vector) to N/2 vectors of segments of
// width W/2; pairing vector k with k + N/2 leaves the segments in the original vectors' order.
template <int N, int W, class V> PYNORM_INLINE void fold_segments(V* v) {
  if constexpr (N > 1) {
    using Lanes = std::make_integer_sequence<int, int(sizeof(V) / sizeof(v[0][0]))>;
    PYNORM_UNROLL for (int k = 0; k < N / 2; ++k)
      v[k] = segment_halves<V, W, false>(v[k], v[k + N / 2], Lanes{}) +
             segment_halves<V, W, true>(v[k], v[k + N / 2], Lanes{});
    fold_segments<N / 2, W / 2>(v);
  }
}
// Adds to each lane its partner W/2 lanes away within segments of width W, down to width 1:
// lane 0 of each segment then holds the segment's sum, in hsum's order.
template <int W, class V, int... I> PYNORM_INLINE V sum_segments(V v, std::integer_sequence<int, I...> lanes) {
  if constexpr (W == 1) {
    return v;
  } else {
    constexpr int H = W / 2;
    return sum_segments<H>(v + __builtin_shufflevector(v, v, (I % W < H ? I + H : I - H)...), lanes);
  }
}
// Whether R vectors of L lanes share one tree, and the tree: a vector whose lane j * (L / R)
// holds hsum(v[j]).
template <int R, int L> constexpr bool kSharedTree = R > 1 && R <= L && (R & (R - 1)) == 0;
template <int R, class V> PYNORM_INLINE V shared_hsums(const V* v) {
  constexpr int L = int(sizeof(V) / sizeof(v[0][0]));
  V t[R];
  PYNORM_UNROLL for (int j = 0; j < R; ++j) t[j] = v[j];
  fold_segments<R, L>(t);
  return sum_segments<L / R>(t[0], std::make_integer_sequence<int, L>{});
}
template <int R, class V, class E> PYNORM_INLINE void hsums(const V* v, E* out) {
  constexpr int L = int(sizeof(V) / sizeof(E));
  if constexpr (kSharedTree<R, L>) {
    const V sums = shared_hsums<R>(v);
    PYNORM_UNROLL for (int j = 0; j < R; ++j) out[j] = sums[j * (L / R)];
  } else {
    PYNORM_UNROLL for (int j = 0; j < R; ++j) out[j] = hsum(v[j]);
  }
}

// a * b + c, fused where the instruction set has FMA (the build otherwise keeps a*b+c unfused).
inline vf32 fmadd(vf32 a, vf32 b, vf32 c) {
#if defined(__AVX512F__)
  return (vf32)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif defined(__FMA__)
  return (vf32)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  return a * b + c;
#endif
}
inline vf64 fmadd(vf64 a, vf64 b, vf64 c) {
#if defined(__AVX512F__)
  return (vf64)_mm512_fmadd_pd((__m512d)a, (__m512d)b, (__m512d)c);
#elif defined(__FMA__)
  return (vf64)_mm256_fmadd_pd((__m256d)a, (__m256d)b, (__m256d)c);
#else
  return a * b + c;
#endif
}

// Lane-wise square root (IEEE, correctly rounded: the same as the scalar one in every lane).
inline vf32 sqrt_vec(vf32 v) {
#if defined(__AVX512F__)
  return (vf32)_mm512_sqrt_ps((__m512)v);
#elif defined(__AVX__)
  return (vf32)_mm256_sqrt_ps((__m256)v);
#elif defined(__SSE2__)
  return (vf32)_mm_sqrt_ps((__m128)v);
#else
  for (int i = 0; i < kLanes<float>; ++i) v[i] = __builtin_sqrtf(v[i]);
  return v;
#endif
}
inline vf64 sqrt_vec(vf64 v) {
#if defined(__AVX512F__)
  return (vf64)_mm512_sqrt_pd((__m512d)v);
#elif defined(__AVX__)
  return (vf64)_mm256_sqrt_pd((__m256d)v);
#elif defined(__SSE2__)
  return (vf64)_mm_sqrt_pd((__m128d)v);
#else
  for (int i = 0; i < kLanes<double>; ++i) v[i] = __builtin_sqrt(v[i]);
  return v;
#endif
}
inline float sqrt_vec(float v) { return __builtin_sqrtf(v); }

// v clamped to [lo, hi] lane-wise, NaN passing through: x86's min and max return their second
// operand when either is NaN, so min(hi, v) and max(lo, .) are one instruction each (the same
// lanes as a compare and a select, which AVX2 lowers to a compare and a blend of two or three).
template <class V> inline V clamp_vec(V v, V lo, V hi) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<V, vf32>) return (vf32)_mm512_max_ps((__m512)lo, _mm512_min_ps((__m512)hi, (__m512)v));
  if constexpr (std::is_same_v<V, vf64>) return (vf64)_mm512_max_pd((__m512d)lo, _mm512_min_pd((__m512d)hi, (__m512d)v));
#elif defined(__AVX__)
  if constexpr (std::is_same_v<V, vf32>) return (vf32)_mm256_max_ps((__m256)lo, _mm256_min_ps((__m256)hi, (__m256)v));
  if constexpr (std::is_same_v<V, vf64>) return (vf64)_mm256_max_pd((__m256d)lo, _mm256_min_pd((__m256d)hi, (__m256d)v));
#elif defined(__SSE2__)
  if constexpr (std::is_same_v<V, vf32>) return (vf32)_mm_max_ps((__m128)lo, _mm_min_ps((__m128)hi, (__m128)v));
  if constexpr (std::is_same_v<V, vf64>) return (vf64)_mm_max_pd((__m128d)lo, _mm_min_pd((__m128d)hi, (__m128d)v));
#endif
  const V below = hi < v ? hi : v;  // the compares pass NaN through
  return below < lo ? lo : below;
}
inline double sqrt_vec(double v) { return __builtin_sqrt(v); }

// c[0] + c[1] r + ... + c[N-1] r^(N-1) by Estrin's scheme: pairs first, then combined with
// r^2, r^4, ...: a dependency chain of log2(N) steps instead of Horner's N.
template <class A, int N> inline Vec<A> polynomial(Vec<A> r, const A (&c)[N]) {
  Vec<A> terms[(N + 1) / 2];
  for (int i = 0; i < N / 2; ++i) terms[i] = fmadd(splat<A>(c[2 * i + 1]), r, splat<A>(c[2 * i]));
  if (N % 2) terms[N / 2] = splat<A>(c[N - 1]);
  Vec<A> power = r * r;
  for (int n = (N + 1) / 2; n > 1; n = (n + 1) / 2) {
    for (int i = 0; i < n / 2; ++i) terms[i] = fmadd(terms[2 * i + 1], power, terms[2 * i]);
    if (n % 2) terms[n / 2] = terms[n - 1];
    power = power * power;
  }
  return terms[0];
}

// A tag for "a whole vector": loads and stores take either Full or a lane count (the tail).
struct Full {};
template <class V> inline V keep(V v, Full) { return v; }
template <class V, int... I> inline V lane_indices(std::integer_sequence<int, I...>) { return V{decltype(V{}[0])(I)...}; }
template <class V> inline V keep(V v, int n) {  // zero the lanes >= n (a compare and a masked move)
  using E = decltype(V{}[0] + 0);
  const V lane = lane_indices<V>(std::make_integer_sequence<int, int(sizeof(V) / sizeof(E))>{});
  return lane < E(n) ? v : V{};
}

#if defined(__AVX512F__)
// The first n lanes of a 16- or 8-lane vector, for the masked loads and stores of row tails.
inline __mmask16 first_lanes16(int n) { return __mmask16((1u << n) - 1); }
inline __mmask8 first_lanes8(int n) { return __mmask8((1u << n) - 1); }
#elif defined(__AVX__)
inline __m256i first_lanes32(int n) { return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); }
inline __m256i first_lanes64(int n) { return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3)); }
#endif

// ------------------------------------------------------------------ scalar 16-bit conversion
inline float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
    float f = float(mantissa) * 5.9604644775390625e-8f;
    std::memcpy(&bits, &f, 4);
    bits |= sign;
  } else {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t float_to_half(float f) {  // round to nearest even, NaN stays NaN
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) return sign | 0x7c00u | (x > 0x7f800000u ? 0x200u : 0u);
  if (x >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to infinity
  if (x < 0x38800000u) {                        // below 2^-14: subnormal half
    float a;
    std::memcpy(&a, &x, 4);
    a += 0.5f;  // the float unit at 0.5 is 2^-24, the half subnormal unit: the FPU rounds
    uint32_t b;
    std::memcpy(&b, &a, 4);
    return sign | uint16_t(b - 0x3f000000u);
  }
  x += 0xc8000fffu + ((x >> 13) & 1u);  // re-bias the exponent and round to nearest even
  return sign | uint16_t(x >> 13);
}

inline float to_acc(float v) { return v; }
inline double to_acc(double v) { return v; }
inline float to_acc(Half v) { return half_to_float(v.bits); }
inline float to_acc(BFloat16 v) {
  uint32_t bits = uint32_t(v.bits) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
template <class T> inline T from_acc(acc_t<T> v);
template <> inline float from_acc<float>(float v) { return v; }
template <> inline double from_acc<double>(double v) { return v; }
template <> inline Half from_acc<Half>(float v) { return Half{float_to_half(v)}; }
template <> inline BFloat16 from_acc<BFloat16>(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return BFloat16{uint16_t((u >> 16) | 0x40u)};
  return BFloat16{uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}

// ------------------------------------------------------------------ vector loads
template <class T> inline Vec<acc_t<T>> load(const T* p, Full) {  // float, double
  Vec<acc_t<T>> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
// The first n elements, zero-padded; the rest are not read (masked loads: row tails cost a
// vector instruction, not a call to memcpy).
template <class T> inline Vec<acc_t<T>> load(const T* p, int n) {
#if defined(__AVX512F__)
  if constexpr (sizeof(T) == 4) return (vf32)_mm512_maskz_loadu_ps(first_lanes16(n), p);
  if constexpr (sizeof(T) == 8) return (vf64)_mm512_maskz_loadu_pd(first_lanes8(n), p);
#elif defined(__AVX2__)
  if constexpr (sizeof(T) == 4) return (vf32)_mm256_maskload_ps(p, first_lanes32(n));
  if constexpr (sizeof(T) == 8) return (vf64)_mm256_maskload_pd(p, first_lanes64(n));
#endif
  Vec<acc_t<T>> v = {};
  std::memcpy(&v, p, sizeof(T) * n);
  return v;
}
// The first n 16-bit values, zero-padded.
inline vu16 load_bits16(const uint16_t* p, int n) {
#if defined(__AVX512F__)
  return (vu16)_mm256_maskz_loadu_epi16(first_lanes16(n), p);
#else
  vu16 h = {};
  std::memcpy(&h, p, 2 * n);
  return h;
#endif
}
template <> inline vf32 load(const BFloat16* p, Full) {
  vu16 h;
  std::memcpy(&h, p, sizeof h);
  return (vf32)(__builtin_convertvector(h, vu32) << 16);
}
template <> inline vf32 load(const BFloat16* p, int n) {
  const vu16 h = load_bits16(reinterpret_cast<const uint16_t*>(p), n);
  return (vf32)(__builtin_convertvector(h, vu32) << 16);
}
// Without F16C, the 16-bit float conversions are vector arithmetic, lane for lane the scalar
// half_to_float / float_to_half above (a loop of scalar calls, inlined into every kernel, made
// the baseline copy much slower to compile and to run).
inline vf32 halves_to_floats(vu16 h) {
  const vu32 u = __builtin_convertvector(h, vu32);
  const vu32 sign = (u & 0x8000u) << 16, exponent = (u >> 10) & 0x1fu, mantissa = u & 0x3ffu;
  const vu32 normal = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  const vu32 subnormal = sign | (vu32)(__builtin_convertvector(mantissa, vf32) * 5.9604644775390625e-8f);  // exact
  const vu32 special = sign | 0x7f800000u | (mantissa << 13);
  return (vf32)(exponent == 0u ? subnormal : exponent == 0x1fu ? special : normal);
}
inline vu16 floats_to_halves(vf32 v) {  // round to nearest even, NaN stays NaN
  vu32 x = (vu32)v;
  const vu32 sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  const vu32 special = 0x7c00u | (x > 0x7f800000u ? vu32{} + 0x200u : vu32{});
  const vu32 subnormal = (vu32)((vf32)x + 0.5f) - 0x3f000000u;  // the FPU rounds at 2^-24
  const vu32 normal = (x + 0xc8000fffu + ((x >> 13) & 1u)) >> 13;
  const vu32 bits = x >= 0x7f800000u ? special : x >= 0x477ff000u ? vu32{} + 0x7c00u
                                                : x < 0x38800000u ? subnormal : normal;
  return __builtin_convertvector(sign | bits, vu16);
}

template <> inline vf32 load(const Half* p, Full) {
#if defined(__F16C__) && PYNORM_VEC_BYTES == 64
  return (vf32)_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#elif defined(__F16C__) && PYNORM_VEC_BYTES == 32
  return (vf32)_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#else
  vu16 h;
  std::memcpy(&h, p, sizeof h);
  return halves_to_floats(h);
#endif
}
template <> inline vf32 load(const Half* p, int n) {
  const vu16 h = load_bits16(reinterpret_cast<const uint16_t*>(p), n);
  Half tmp[kLanes<float>];
  std::memcpy(tmp, &h, sizeof h);
  return load(tmp, Full{});
}

// ------------------------------------------------------------------ vector stores
template <class T> struct StoreBits { using type = Vec<acc_t<T>>; };  // the bytes a vector stores
template <> struct StoreBits<Half> { using type = vu16; };
template <> struct StoreBits<BFloat16> { using type = vu16; };

template <class T> inline typename StoreBits<T>::type pack(Vec<acc_t<T>> v) { return v; }
template <> inline vu16 pack<BFloat16>(vf32 v) {
  const vu32 u = (vu32)v;
  const vu32 rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const vu32 quiet = (u >> 16) | 0x40u;
  return __builtin_convertvector((v != v) ? quiet : rounded, vu16);
}
template <> inline vu16 pack<Half>(vf32 v) {
#if defined(__F16C__) && PYNORM_VEC_BYTES == 64
  return (vu16)_mm512_cvtps_ph((__m512)v, _MM_FROUND_TO_NEAREST_INT);
#elif defined(__F16C__) && PYNORM_VEC_BYTES == 32
  return (vu16)_mm256_cvtps_ph((__m256)v, _MM_FROUND_TO_NEAREST_INT);
#else
  return floats_to_halves(v);
#endif
}

// Writes a vector's bytes to p; with Stream=true it bypasses the caches (p must then be
// aligned to the vector's size).
template <bool Stream, class B> inline void store_bits(void* p, B bits) {
#if defined(__x86_64__) || defined(__i386__)
  if constexpr (Stream) {
    if constexpr (sizeof bits == 64) {
#if defined(__AVX512F__)
      _mm512_stream_si512(static_cast<__m512i*>(p), (__m512i)bits);
      return;
#endif
    } else if constexpr (sizeof bits == 32) {
#if defined(__AVX__)
      _mm256_stream_si256(static_cast<__m256i*>(p), (__m256i)bits);
      return;
#endif
    } else if constexpr (sizeof bits == 16) {
      _mm_stream_si128(static_cast<__m128i*>(p), (__m128i)bits);
      return;
    }
  }
#endif
  std::memcpy(p, &bits, sizeof bits);
}
// Stores a whole vector, rounded to the storage type.
template <bool Stream, class T> inline void store(T* p, Vec<acc_t<T>> v, Full) {
  store_bits<Stream>(p, pack<T>(v));
}
// Stores the first n lanes (masked stores where the instruction set has them).
template <bool Stream, class T> inline void store(T* p, Vec<acc_t<T>> v, int n) {
  const auto bits = pack<T>(v);
#if defined(__AVX512F__)
  if constexpr (sizeof(T) == 4) return _mm512_mask_storeu_ps(p, first_lanes16(n), (__m512)bits);
  if constexpr (sizeof(T) == 8) return _mm512_mask_storeu_pd(p, first_lanes8(n), (__m512d)bits);
  if constexpr (sizeof(T) == 2) return _mm256_mask_storeu_epi16(p, first_lanes16(n), (__m256i)bits);
#elif defined(__AVX2__)
  if constexpr (sizeof(T) == 4) return _mm256_maskstore_ps(reinterpret_cast<float*>(p), first_lanes32(n), (__m256)bits);
  if constexpr (sizeof(T) == 8) return _mm256_maskstore_pd(reinterpret_cast<double*>(p), first_lanes64(n), (__m256d)bits);
#endif
  std::memcpy(p, &bits, sizeof(T) * n);
}
// Orders this thread's streaming stores before whatever follows.
inline void stream_fence() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_sfence();
#endif
}

// ------------------------------------------------------------------ row loops
// Row shapes for the vector loops: any length (AnyVecs), or V vectors known at compile time,
// the last one a tail when Tail (FixedVecs: the loop is unrolled, so that arrays indexed by the
// vector, i / lanes, stay in registers).
struct AnyVecs {};
template <int V, bool Tail> struct FixedVecs {};

// Calls f(FixedVecs<V, Tail>{}) for rows of n elements when they span at most MaxV vectors,
// f(AnyVecs{}) otherwise.
template <class A, int MaxV, int V = 1, class F> inline void with_row_shape(int64_t n, F&& f) {
  constexpr int64_t L = kLanes<A>;
  if constexpr (V > MaxV) {
    f(AnyVecs{});
  } else {
    if (n == 0) f(AnyVecs{});
    else if (n > V * L) with_row_shape<A, MaxV, V + 1>(n, f);
    else if (n == V * L) f(FixedVecs<V, false>{});
    else f(FixedVecs<V, true>{});
  }
}

// Calls f(i, Full{}) for each whole vector of [0, n) and f(i, k) for a k-lane tail.
template <class A, class F> inline void for_each_vec(int64_t n, F&& f, AnyVecs = {}) {
  constexpr int L = kLanes<A>;
  int64_t i = 0;
  for (; i + L <= n; i += L) f(i, Full{});
  if (i < n) f(i, int(n - i));
}
template <class A, class F, int V, bool Tail> PYNORM_INLINE void for_each_vec(int64_t n, F&& f, FixedVecs<V, Tail>) {
  constexpr int L = kLanes<A>;
  PYNORM_UNROLL for (int v = 0; v < V - int(Tail); ++v) f(int64_t(v) * L, Full{});
  if constexpr (Tail) f(int64_t(V - 1) * L, int(n - int64_t(V - 1) * L));
}

// out[j * n + i] = value(i, k)(j) for R rows j and i in [0, n) (of the given Shape), a vector at a time, vectors
// always starting at element 0 of a row (so that reductions done inside value() group
// elements the same way whatever the address). The rows are visited together, a vector of
// each in turn: value(i, k) does the per-column work once (loading weights, say) and returns
// the per-row function, which is then called for j = 0, 1, ..., R - 1 in that order. With
// Stream=true the stores are streamed to memory: every row must start vector-aligned
// (stream_rows below decides).
//
// Where a vector is smaller than a cache line (AVX2, SSE2, 16-bit storage), rows of any length
// (AnyVecs) go a line at a time: value() for the line's vectors, then each row's whole line in
// turn, so that consecutive stores fill a line. Streamed, a line's stores otherwise lie a
// row's worth of arithmetic apart, and a write-combining buffer left half full is written out
// as a partial line. The order is the same whether or not the output is streamed, so results
// never depend on its address.
template <class T> constexpr int kLineVecs = 64 / sizeof(typename StoreBits<T>::type) < 4 ? 64 / sizeof(typename StoreBits<T>::type) : 4;
template <class Row, int C> struct Line { Row vec[C]; };
template <class F, int... c> PYNORM_INLINE auto line_values(F& value, int64_t i, int64_t lanes, std::integer_sequence<int, c...>) {
  return Line<decltype(value(i, Full{})), sizeof...(c)>{{value(i + c * lanes, Full{})...}};  // in order c = 0, 1, ...
}

template <bool Stream, int R, class T, class F, class Shape = AnyVecs>
PYNORM_INLINE void write_rows(T* out, int64_t n, F&& value, Shape shape = {}) {
  constexpr int C = std::is_same_v<Shape, AnyVecs> ? kLineVecs<T> : 1;
  constexpr int64_t L = kLanes<acc_t<T>>;
  int64_t i0 = 0;  // whole lines first, then the vectors left (and a tail) one at a time
  if constexpr (C > 1) {
    for (; i0 + C * L <= n; i0 += C * L) {
      auto line = line_values(value, i0, L, std::make_integer_sequence<int, C>{});
      PYNORM_UNROLL for (int j = 0; j < R; ++j)
        PYNORM_UNROLL for (int c = 0; c < C; ++c) store<Stream>(out + j * n + i0 + c * L, line.vec[c](j), Full{});
    }
  }
  for_each_vec<acc_t<T>>(n - i0, [&](int64_t at, auto k) {
    auto row = value(i0 + at, k);
    PYNORM_UNROLL for (int j = 0; j < R; ++j) store<Stream>(out + j * n + i0 + at, row(j), k);
  }, shape);
}
// write_rows for one row: out[i] = value(i, k).
template <bool Stream, class T, class F> inline void write_row(T* out, int64_t n, F&& value) {
  write_rows<Stream, 1>(out, n, [&](int64_t i, auto k) { return [&value, i, k](int) { return value(i, k); }; });
}

// Calls f(std::integral_constant<int, G>{}, r) for consecutive groups of G rows from r on while
// a whole group fits before r1; returns the first row left over. Kernels chain these, larger
// groups first, and finish with G = 1.
template <int G, class F> inline int64_t row_groups(int64_t r, int64_t r1, F&& f) {
  for (; r + G <= r1; r += G) f(std::integral_constant<int, G>{}, r);
  return r;
}

// Asks for the cache line holding p ahead of its use (a hint: never faults). The norm kernels
// fetch the next row while they finish the current one from cache, when the hardware
// prefetcher, seeing no misses, would otherwise stop streaming.
template <class T> inline void prefetch(const T* p) { __builtin_prefetch(p, 0, 3); }

// Outputs this large are written with streaming stores: they would not stay in cache anyway.
constexpr int64_t kStreamingBytes = int64_t(4) << 20;
inline bool stream_output(int64_t bytes) { return bytes >= kStreamingBytes; }
// Whether a kernel streams its contiguous [rows, dim] output: when it is that large and every
// row starts at a vector-aligned address (pynorm allocates outputs 64-byte aligned). Decided
// once per call, so that each loop comes in two variants, streamed or not.
template <class T> inline bool stream_rows(const T* out, int64_t rows, int64_t dim) {
  constexpr int64_t bytes = sizeof(typename StoreBits<T>::type);
  return stream_output(rows * dim * int64_t(sizeof(T))) && reinterpret_cast<uintptr_t>(out) % bytes == 0 &&
         dim * int64_t(sizeof(T)) % bytes == 0;
}

// ------------------------------------------------------------------ threads
// Splits [0, n) into one contiguous range per thread and calls f(begin, end) in each.
template <class F> inline void parallel_for(int64_t n, int threads, F&& f) {
  if (threads <= 1 || n <= 1) {
    f(int64_t(0), n);
    stream_fence();
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t begin = n * t / nt, end = n * (t + 1) / nt;
    if (begin < end) f(begin, end);
    stream_fence();
  }
}

// Calls f(std::bool_constant<b1>, std::bool_constant<b2>, ...) for the given runtime bools,
// so that each combination of options compiles to its own loop with no branches inside.
template <class F> inline void with_bools(F&& f) { f(); }
template <class F, class... B> inline void with_bools(F&& f, bool b, B... rest) {
  if (b)
    with_bools([&](auto... c) { f(std::true_type{}, c...); }, rest...);
  else
    with_bools([&](auto... c) { f(std::false_type{}, c...); }, rest...);
}

// A zero-initialised heap buffer (new[] / delete[]: nothing from the standard library that
// another ISA's copy could provide).
template <class A> struct Buffer {
  A* data;
  explicit Buffer(int64_t n) : data(new A[n > 0 ? n : 1]()) {}
  ~Buffer() { delete[] data; }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
};

// A kernel's weight and bias: the caller's, with ones in place of a missing weight and zeros
// in place of a missing bias when the other one is given, so that kernels compile two
// variants (affine or not) instead of four; multiplying by one and adding zero are exact.
template <class T> struct Affine {
  const T* weight;
  const T* bias;
  Buffer<T> fill;
  Affine(const void* w, const void* b, int64_t dim)
      : weight(static_cast<const T*>(w)), bias(static_cast<const T*>(b)), fill((w == nullptr) != (b == nullptr) ? dim : 0) {
    if (!weight && bias) {
      for (int64_t i = 0; i < dim; ++i) fill.data[i] = from_acc<T>(1);
      weight = fill.data;
    } else if (weight && !bias) {
      bias = fill.data;  // zeros
    }
  }
  bool any() const { return weight != nullptr; }
};

// Row reductions whose result does not depend on the thread count: rows are cut into a
// fixed number of blocks (a function of rows, dim and width only), each block adds its rows
// into its own `width` partial sums in row order, and the blocks are then added in block
// order (columns split among the threads). The partials hold at most a quarter as many
// values as the rows: long rows otherwise made a block per row, whose partials (zeroed,
// written, then summed) outweighed the rows themselves.
// block(r0, r1, partial) adds the contributions of rows [r0, r1), in row order, to
// `partial`; total receives the sums.
template <class A, class BlockFn>
inline void reduce_rows_in_blocks(int64_t rows, int64_t dim, int64_t width, int threads, BlockFn&& block,
                                  A* total) {
  int64_t blocks = rows * dim / 32768;
  if (width > 0 && blocks > rows * dim / (4 * width)) blocks = rows * dim / (4 * width);
  blocks = blocks < 1 ? 1 : (blocks > 64 ? 64 : blocks);
  if (blocks > rows) blocks = rows > 0 ? rows : 1;
  const int64_t rows_per_block = (rows + blocks - 1) / blocks;
  Buffer<A> partial(blocks * width);
  parallel_for(blocks, threads, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r1 = (b + 1) * rows_per_block < rows ? (b + 1) * rows_per_block : rows;
      if (b * rows_per_block < r1) block(b * rows_per_block, r1, partial.data + b * width);
    }
  });
  constexpr int64_t L = kLanes<A>;
  const int64_t vecs = (width + L - 1) / L;
  const bool large = width * blocks > (int64_t(1) << 16);
  parallel_for(vecs, large ? threads : 1, [&](int64_t v0, int64_t v1) {
    const int64_t j0 = v0 * L, n = (v1 * L < width ? v1 * L : width) - j0;
    for (int64_t j = j0; j < j0 + n; ++j) total[j] = 0;
    for (int64_t b = 0; b < blocks; ++b) {
      const A* p = partial.data + b * width + j0;
      for_each_vec<A>(n, [&](int64_t i, auto k) { store<false>(total + j0 + i, load(total + j0 + i, k) + load(p + i, k), k); });
    }
  });
}

// Rounds accumulated sums to the storage type.
template <class T> inline void store_totals(T* out, const acc_t<T>* totals, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] = from_acc<T>(totals[j]);
}

// ------------------------------------------------------------------ tanh
// float: tanh(z) = z P(z^2) / Q(z^2) for |z| <= 9.25, z clamped beyond. P and Q have degree 4
// and positive coefficients (no cancellation in Horner's rule); they are a minimax fit of
// tanh(z)/z on [0, 9] in relative error (0.45 ulp before rounding), with P(0) = Q(0) = 1 so
// that tanh(z) = z exactly for tiny z. Past 9 the fit climbs a few ulp above 1, so the result
// is clipped to [-1, 1]: tanh is exactly +-1 from |z| = 9.25 on (where it rounds to 1 in
// float) and never exceeds 1. Every float in [0.5, 9.25] and 200,000 below: relative error
// < 2.9 x 2^-23 with FMA, < 3.2 x 2^-23 without. About half the work of an exp-based tanh.
constexpr float kTanhClamp = 9.25f;
inline vf32 tanh_rational(vf32 z) {
  constexpr float p[] = {1.337091476e-01f, 3.483754583e-03f, 2.042215601e-05f, 1.311207143e-08f};
  constexpr float q[] = {4.670422077e-01f, 2.583150007e-02f, 3.266608401e-04f, 7.673701816e-07f};
  const vf32 clamp = splat<float>(kTanhClamp), one = splat<float>(1.0f);
  const vf32 zc = clamp_vec(z, -clamp, clamp);
  const vf32 u = zc * zc;
  vf32 num = splat<float>(p[3]), den = splat<float>(q[3]);
  for (int j = 2; j >= 0; --j) {
    num = fmadd(num, u, splat<float>(p[j]));
    den = fmadd(den, u, splat<float>(q[j]));
  }
  num = fmadd(num, u, one);
  den = fmadd(den, u, one);
  return clamp_vec(zc * num / den, -one, one);
}

// double: expm1(y) for 0 <= y <= a few hundred, to a few ulp: y = k ln2 + r with
// |r| <= ln2/2, expm1(y) = 2^k expm1(r) + (2^k - 1), expm1(r) by its Taylor series through
// r^14 (truncation < 4e-19 relative).
inline vf64 expm1_nonnegative(vf64 y) {
  constexpr int kTerms = 14, kMantissa = 52, kBias = 1023;
  constexpr double kShifter = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds to an integer
  constexpr double kLn2Hi = 0.693145751953125, kLn2Lo = 1.42860682030941723212e-6;
  const vf64 shifted = y * 1.4426950408889634074 + kShifter;
  const vf64 k = shifted - kShifter;  // round(y / ln2)
  const vf64 r = fmadd(k, splat<double>(-kLn2Lo), fmadd(k, splat<double>(-kLn2Hi), y));
  // expm1(r) = r + r^2 (1/2! + r/3! + ... + r^(n-2)/n!)
  double coef[kTerms - 1];
  double factorial = 1;
  for (int j = 2; j <= kTerms; ++j) coef[j - 2] = 1.0 / (factorial *= j);
  const vf64 p = fmadd(r * r, polynomial<double>(r, coef), r);
  // 2^k from its bits: the shifted value's low bits hold k (|k| is small).
  const vi64 k_int = (vi64)shifted - (vi64)splat<double>(kShifter);
  const vf64 two_k = (vf64)((k_int + kBias) << kMantissa);
  return fmadd(two_k, p, two_k - 1.0);
}

// t = tanh(z) and, if wanted, s = 1 - tanh(z)^2. float: the rational form above, and
// s = 1 - t^2 with one rounding (absolute error ~1e-7, as torch's float tanh backward; 0 where
// t is +-1, so dx is 0 and dalpha NaN at x = +-inf, as in torch). double: with
// e = expm1(2|z|), tanh|z| = e / (e + 2) and 1 - tanh^2 = 4 (e + 1) / (e + 2)^2, both to a
// few ulp (s keeps its relative accuracy in saturation). NaN in gives NaN out.
template <class A, bool WithDerivative>
inline Vec<A> tanh_vec(Vec<A> z, Vec<A>* derivative) {
  if constexpr (sizeof(A) == 4) {
    const vf32 t = tanh_rational(z);
    if constexpr (WithDerivative) *derivative = fmadd(-t, t, splat<float>(1.0f));
    return t;
  } else {
    const vi64 sign_mask = (vi64)splat<double>(-0.0);
    const vf64 abs_z = (vf64)((vi64)z & ~sign_mask);
    const vf64 y = abs_z + abs_z, clamp = splat<double>(80.0);  // tanh(40) == 1; exp(80) is finite
    const vf64 e = expm1_nonnegative(clamp < y ? clamp : y);    // the compare passes NaN through
    const vf64 sign = (vf64)((vi64)z & sign_mask);
    if constexpr (WithDerivative) {
      const vf64 inv = 1.0 / (e + 2.0);
      const vf64 s = (4.0 * inv) * ((e + 1.0) * inv);
      *derivative = abs_z == __builtin_inf() ? splat<double>(0) : s;  // exactly 0 at +-inf, as 1 - tanh^2 is
      return (vf64)((vi64)(e * inv) | (vi64)sign);
    } else {
      return (vf64)((vi64)(e / (e + 2.0)) | (vi64)sign);
    }
  }
}


// ------------------------------------------------------------------ exp
// exp(x) lane-wise over the whole range, to about an ulp: Cody-Waite reduction x = k ln2 + r
// with |r| <= ln2/2 (ln2 split into a short high part, whose products with k are exact, and a
// low part), exp(r) by its Taylor series by Estrin's scheme (float through r^7: truncation
// < 1.1e-8 relative; double through r^13: < 5e-18), and 2^k applied as the two factors
// 2^(k >> 1) 2^(k - (k >> 1)), each a normal number, so that results in the subnormal range
// are rounded once. x is first clamped to [kLo, kHi]: below kLo (and at -inf) the result rounds
// to exactly 0, above kHi it is +inf; NaN passes the clamp and gives NaN.
template <class A> struct ExpConstants;
template <> struct ExpConstants<float> {
  using Int = vi32;
  static constexpr int kTerms = 8, kMantissa = 23, kBias = 127;
  static constexpr float kShifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  static constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  static constexpr float kLo = -104.0f, kHi = 89.0f;  // exp(-104) < 2^-150, exp(89) > FLT_MAX
};
template <> struct ExpConstants<double> {
  using Int = vi64;
  static constexpr int kTerms = 14, kMantissa = 52, kBias = 1023;
  static constexpr double kShifter = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double kLn2Hi = 0.693145751953125, kLn2Lo = 1.42860682030941723212e-6;
  static constexpr double kLo = -750.0, kHi = 710.0;  // exp(-750) < 2^-1075, exp(710) > DBL_MAX
};

template <class V> inline auto hmax(V v) {  // the largest lane (NaN lanes may be skipped)
  if constexpr (sizeof(V) == sizeof(v[0])) {
    return v[0];
  } else {
    const auto lo = halves<false>(v), hi = halves<true>(v);
    return hmax(lo < hi ? hi : lo);
  }
}

// Vector lanes at or past n (of a vector starting at element 0) take `fill`.
template <class A> inline Vec<A> fill_past(Vec<A> v, int64_t n, A fill) {
  constexpr int L = kLanes<A>;
  if (n >= L) return v;
  const Vec<A> lane = lane_indices<Vec<A>>(std::make_integer_sequence<int, L>{});
  return lane < A(n) ? v : splat<A>(fill);
}

template <class A> inline Vec<A> exp_vec(Vec<A> x) {
  using C = ExpConstants<A>;
  using Int = typename C::Int;
  const Vec<A> xc = clamp_vec(x, splat<A>(C::kLo), splat<A>(C::kHi));
  const Vec<A> shifted = xc * A(1.4426950408889634074) + C::kShifter;
  const Vec<A> k = shifted - C::kShifter;  // round(x / ln2)
  const Vec<A> r = fmadd(k, splat<A>(-C::kLn2Lo), fmadd(k, splat<A>(-C::kLn2Hi), xc));
  A coef[C::kTerms];
  A factorial = 1;
  coef[0] = 1;
  for (int j = 1; j < C::kTerms; ++j) coef[j] = A(1) / (factorial *= A(j));
  const Vec<A> p = polynomial<A>(r, coef);
  // 2^k from its bits: the shifted value's low bits hold k (|k| is small).
  const Int k_int = (Int)shifted - (Int)splat<A>(C::kShifter);
  const Int k_half = k_int >> 1;
  const Vec<A> scale1 = (Vec<A>)((k_half + C::kBias) << C::kMantissa);
  const Vec<A> scale2 = (Vec<A>)((k_int - k_half + C::kBias) << C::kMantissa);
  return (p * scale1) * scale2;
}

}  // namespace PYNORM_ISA
}  // namespace pynorm
