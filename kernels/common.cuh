// common.cuh: small helpers shared by gpudl's kernels.
// Included with -I<kernels dir>; every kernel file starts with a header saying what it
// computes, its shapes, and how it is tested and benchmarked.
#pragma once

// Grid-stride loop over n elements (n fits in int32: the launcher checks array sizes; the
// host caps grid * block below 2^31). The step is clamped so that i never overflows int32
// when n is close to 2^31 (i + step past INT32_MAX would wrap negative and pass i < n).
#define GPUDL_LOOP(i, n)                                                                    \
  for (int i = blockIdx.x * blockDim.x + threadIdx.x, gpudl_step_##i = blockDim.x * gridDim.x; \
       i < (n); i = ((n) - i > gpudl_step_##i) ? i + gpudl_step_##i : (n))

template <typename T> __device__ __forceinline__ T gpudl_exp(T x);
template <> __device__ __forceinline__ float gpudl_exp<float>(float x) { return expf(x); }
template <> __device__ __forceinline__ double gpudl_exp<double>(double x) { return exp(x); }

template <typename T> __device__ __forceinline__ T gpudl_log(T x);
template <> __device__ __forceinline__ float gpudl_log<float>(float x) { return logf(x); }
template <> __device__ __forceinline__ double gpudl_log<double>(double x) { return log(x); }

template <typename T> __device__ __forceinline__ T gpudl_tanh(T x);
template <> __device__ __forceinline__ float gpudl_tanh<float>(float x) { return tanhf(x); }
template <> __device__ __forceinline__ double gpudl_tanh<double>(double x) { return tanh(x); }

// Numerically safe logistic: never overflows for large |x|.
template <typename T> __device__ __forceinline__ T gpudl_sigmoid(T x) {
  return T(0.5) * gpudl_tanh<T>(T(0.5) * x) + T(0.5);
}

// Warp-level reductions (full warp participates).
template <typename T> __device__ __forceinline__ T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}
template <typename T> __device__ __forceinline__ T warp_max(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// ---- added for softmax_cross_entropy.cu (usable by any row-softmax kernel) ----

// -infinity without <cmath>/<limits> (NVRTC has neither by default).
template <typename T> __device__ __forceinline__ T gpudl_neg_inf();
template <> __device__ __forceinline__ float gpudl_neg_inf<float>() { return __int_as_float(0xff800000); }
template <> __device__ __forceinline__ double gpudl_neg_inf<double>() {
  return __longlong_as_double(0xfff0000000000000ULL);
}

// Online softmax statistics of a set of values: running max m and s = sum(exp(x - m)).
// The empty set is {-inf, 0}. Merging is exact up to rounding and commutative.
template <typename T> struct GpudlMaxSum {
  T m;
  T s;
};

// Add one value x to (m, s). Only one exp per value; -inf values add nothing (no inf - inf).
template <typename T> __device__ __forceinline__ void gpudl_maxsum_push(GpudlMaxSum<T>& a, T x) {
  if (x > a.m) {
    a.s = a.s * gpudl_exp<T>(a.m - x) + T(1);  // exp(-inf) = 0 when a was empty
    a.m = x;
  } else if (a.m != gpudl_neg_inf<T>() || x != x) {
    // NaN x makes s NaN (also when it is the first value a thread sees: NaN > -inf is
    // false, so without the x != x test it would be dropped), as in the NumPy twin.
    a.s += gpudl_exp<T>(x - a.m);
  }
}

template <typename T>
__device__ __forceinline__ GpudlMaxSum<T> gpudl_maxsum_merge(GpudlMaxSum<T> a, GpudlMaxSum<T> b) {
  const T m = max(a.m, b.m);
  // Both max -inf: avoid exp(-inf - -inf) = NaN. a.s + b.s is 0 for two empty sets and
  // keeps a NaN that a set of only NaN values carries in s.
  if (m == gpudl_neg_inf<T>()) return {m, a.s + b.s};
  return {m, a.s * gpudl_exp<T>(a.m - m) + b.s * gpudl_exp<T>(b.m - m)};
}

// Butterfly (xor) reduction: every lane ends with the same merged value, because the
// merge is commutative in floating point (max, + and * are).
template <typename T> __device__ __forceinline__ GpudlMaxSum<T> gpudl_warp_maxsum(GpudlMaxSum<T> v) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    GpudlMaxSum<T> o{__shfl_xor_sync(0xffffffffu, v.m, offset),
                     __shfl_xor_sync(0xffffffffu, v.s, offset)};
    v = gpudl_maxsum_merge<T>(v, o);
  }
  return v;
}

// Block-wide reductions for a 1-D block of exactly BLOCK threads (BLOCK a multiple of 32,
// at most 1024); every thread of the block must call them (they __syncthreads) and every
// thread gets the result. The leading barrier lets a kernel call one twice in a row: no
// thread can overwrite the shared slots while another still reads the previous result.
template <int BLOCK, typename T> __device__ __forceinline__ T gpudl_block_sum(T v) {
  static_assert(BLOCK % 32 == 0 && BLOCK >= 32 && BLOCK <= 1024, "BLOCK: 32..1024, multiple of 32");
  constexpr int NWARPS = BLOCK / 32;
  v = warp_sum<T>(v);
  if constexpr (NWARPS == 1) return v;
  __shared__ T partial[NWARPS];
  __shared__ T result;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T w = lane < NWARPS ? partial[lane] : T(0);
    w = warp_sum<T>(w);
    if (lane == 0) result = w;
  }
  __syncthreads();
  return result;
}

template <int BLOCK, typename T>
__device__ __forceinline__ GpudlMaxSum<T> gpudl_block_maxsum(GpudlMaxSum<T> v) {
  static_assert(BLOCK % 32 == 0 && BLOCK >= 32 && BLOCK <= 1024, "BLOCK: 32..1024, multiple of 32");
  constexpr int NWARPS = BLOCK / 32;
  v = gpudl_warp_maxsum<T>(v);
  if constexpr (NWARPS == 1) return v;
  __shared__ T partial_m[NWARPS];
  __shared__ T partial_s[NWARPS];
  __shared__ T result_m, result_s;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) {
    partial_m[warp] = v.m;
    partial_s[warp] = v.s;
  }
  __syncthreads();
  if (warp == 0) {
    GpudlMaxSum<T> w{gpudl_neg_inf<T>(), T(0)};
    if (lane < NWARPS) w = GpudlMaxSum<T>{partial_m[lane], partial_s[lane]};
    w = gpudl_warp_maxsum<T>(w);
    if (lane == 0) {
      result_m = w.m;
      result_s = w.s;
    }
  }
  __syncthreads();
  return {result_m, result_s};
}
