// batch_norm.cu: batch normalization per channel (torch semantics), forward and backward.
//
// What: x is viewed as (N, C, L) (NCHW with L = H*W, (N, C, L) as is, (N, C) with L = 1);
// each channel c normalizes its n = N*L values. The host folds the (C,) vectors (gamma,
// beta, mean, invstd = 1/sqrt(var + eps), the batch sums) into per-channel coefficients
// with a few tiny array ops shared by both bodies, so the kernels only reduce and apply:
//   batch_norm_stats            x -> mean (C,), var (C,) biased: one block per channel, two
//                               passes over its values (sum; then the sum of squared
//                               deviations from the mean: no E[x^2] - E[x]^2 cancellation)
//   batch_norm_apply            y = x * scale[c] + shift[c]: training and evaluation
//                               (scale = gamma * invstd, shift = beta - mean * scale, as
//                               torch's CPU kernel) and evaluation's backward dx = g * scale
//   batch_norm_backward_reduce  g, x, mean -> sum_g (C,) = sum of g, sum_gd (C,) = sum of
//                               g * (x - mean): one block per channel, one pass
//   batch_norm_backward_apply   dx = k1[c] * g + k2[c] * (x - mean[c]) + k3[c], the fused
//                               training backward dx = gamma*invstd/n * (n*g - sum_g -
//                               xhat * sum(g*xhat)) plus the cotangents of the batch mean
//                               and variance (k1, k2, k3 from the host)
//
// Shapes: x, y, g, dx (N, C, L) C-contiguous, T = float or double; (C,) vectors of T.
// Reductions: grid (C,), BN_BLOCK threads per block, each thread strides over the
// channel's N*L values (index i -> x[(i / L) * C * L + c * L + i % L]) and gpudl_block_sum
// combines them; deterministic (fixed order for a given shape). Elementwise kernels: 1-D
// grid-stride loops over N*C*L. All indices fit int32: the launcher refuses arrays of
// 2^31 elements or more.
//
// Tested: tests/functional/test_normalization.py (GPU vs the NumPy twin in
// gpudl/functional/_normalization_kernels.py, float32 rtol 1e-4, float64 rtol 1e-10; the
// twin vs naive float64 per-channel loops and torch; check_grad of the train and eval
// primitives; shapes across the block size, L = 1, empty batches in evaluation).
// Without a GPU (every `make test`): that module's gpu tests run this file on the CPU
// emulator (tests/kernel_emulation: g++ + cuda_shim.h, CUDA threads as fibers, real
// barriers and shuffles) through gpudl's GPU code path, and again under AddressSanitizer
// (run_memcheck.py). Each instance the KernelSource in
// gpudl/functional/_normalization_kernels.py declares must be launched by those tests
// (tests/kernel_emulation/kernel_coverage.py).
// Benchmarked: benchmarks/kernels_norm.py (train forward+backward and evaluation forward
// at (32, 16, 32, 32) and (128, 64, 16, 16), vs torch F.batch_norm).
#include "common.cuh"

constexpr int BN_BLOCK = 256;

// Element i of channel c's N*L values.
__device__ __forceinline__ int bn_offset(int i, int c, int C, int L) {
  const int b = i / L;
  return (b * C + c) * L + (i - b * L);
}

template <typename T>
__global__ void batch_norm_stats(const T* __restrict__ x,  // (N, C, L)
                                 T* __restrict__ mean,     // (C,)
                                 T* __restrict__ var,      // (C,) biased
                                 int N, int C, int L) {
  const int c = blockIdx.x;
  const int n = N * L;
  T s = T(0);
  for (int i = threadIdx.x; i < n; i += BN_BLOCK) s += x[bn_offset(i, c, C, L)];
  const T mu = gpudl_block_sum<BN_BLOCK, T>(s) / T(n);
  T q = T(0);
  for (int i = threadIdx.x; i < n; i += BN_BLOCK) {
    const T d = x[bn_offset(i, c, C, L)] - mu;
    q += d * d;
  }
  q = gpudl_block_sum<BN_BLOCK, T>(q);
  if (threadIdx.x == 0) {
    mean[c] = mu;
    var[c] = q / T(n);
  }
}

template <typename T>
__global__ void batch_norm_apply(const T* __restrict__ x,      // (N, C, L)
                                 const T* __restrict__ scale,  // (C,)
                                 const T* __restrict__ shift,  // (C,)
                                 T* __restrict__ y,            // (N, C, L)
                                 int N, int C, int L) {
  const int total = N * C * L;
  GPUDL_LOOP(idx, total) {
    const int c = (idx / L) % C;
    y[idx] = x[idx] * scale[c] + shift[c];
  }
}

template <typename T>
__global__ void batch_norm_backward_reduce(const T* __restrict__ g,     // (N, C, L)
                                           const T* __restrict__ x,     // (N, C, L)
                                           const T* __restrict__ mean,  // (C,)
                                           T* __restrict__ sum_g,       // (C,)
                                           T* __restrict__ sum_gd,      // (C,)
                                           int N, int C, int L) {
  const int c = blockIdx.x;
  const int n = N * L;
  const T mu = mean[c];
  T s = T(0), sd = T(0);
  for (int i = threadIdx.x; i < n; i += BN_BLOCK) {
    const int o = bn_offset(i, c, C, L);
    const T gv = g[o];
    s += gv;
    sd += gv * (x[o] - mu);
  }
  s = gpudl_block_sum<BN_BLOCK, T>(s);
  sd = gpudl_block_sum<BN_BLOCK, T>(sd);
  if (threadIdx.x == 0) {
    sum_g[c] = s;
    sum_gd[c] = sd;
  }
}

template <typename T>
__global__ void batch_norm_backward_apply(const T* __restrict__ g,     // (N, C, L)
                                          const T* __restrict__ x,     // (N, C, L)
                                          const T* __restrict__ mean,  // (C,)
                                          const T* __restrict__ k1,    // (C,)
                                          const T* __restrict__ k2,    // (C,)
                                          const T* __restrict__ k3,    // (C,)
                                          T* __restrict__ dx,          // (N, C, L)
                                          int N, int C, int L) {
  const int total = N * C * L;
  GPUDL_LOOP(idx, total) {
    const int c = (idx / L) % C;
    // Same association as the twin: (k1 * g + k2 * (x - mean)) + k3.
    dx[idx] = (k1[c] * g[idx] + k2[c] * (x[idx] - mean[c])) + k3[c];
  }
}
