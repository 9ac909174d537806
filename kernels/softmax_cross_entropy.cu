// softmax_cross_entropy.cu: fused softmax + cross-entropy over the last axis, and its gradient.
//
// What: for each row n of logits x (N, C) with integer label y[n] and label smoothing eps,
//     lse[n]  = log(sum_c exp(x[n, c]))                         (online max/sum, one pass)
//     loss[n] = (1 - eps) * (lse[n] - x[n, y]) + eps * (lse[n] - mean_c x[n, c])
//             (evaluated as (m - x[n, y]) + log s with m the row max, s = sum exp(x - m))
//             = -sum_c target[n, c] * log_softmax(x)[n, c],  target = (1 - eps) onehot(y) + eps / C
//     dlogits[n, c] = coef[n] * (softmax(x)[n, c] - target[n, c])
// Rows whose label equals ignore_index have loss 0 and gradient 0 (torch semantics).
//
// Kernels (T = float or double; BLOCK = 32, 128 or 512 threads, picked by C on the host):
//   sce_forward<T, BLOCK>           loss (N,), lse (N,)
//   sce_forward_backward<T, BLOCK>  loss, lse and dlogits (N, C) with coef = grad_scale
//                                   (1/n_valid for 'mean', 1 for 'sum'): the gradient for a
//                                   unit upstream cotangent, written in the same launch. The
//                                   vjp multiplies it by the real upstream g (a scalar).
//   sce_backward<T, BLOCK>          dlogits (N, C) with coef[n] = g[n * g_stride] * scale,
//                                   recomputed from the saved lse (reduction='none': per-row g,
//                                   g_stride 1; also a scalar g with g_stride 0).
// Shapes: logits (N, C), dlogits (N, C) C-contiguous, labels (N,) int32, loss/lse (N,), g (N,)
// or (). One block per row (grid = N); each thread strides over the row. Loads/stores are
// 16-byte vectors (float4 / double2) when C is a multiple of 4 (float) or 2 (double) and the
// row pointers are 16-byte aligned (checked per row, so an offset view still works), else
// scalar. The fused kernel reads the row twice (the second read mostly hits L2).
//
// Safety: the host checks every label lies in [0, C) or equals ignore_index before any
// launch; the kernels still never index with a label outside [0, C) (such a row would get a
// NaN loss and a zero gradient), and the launcher checks contiguity, dtypes, int32 sizes.
// No fast-math: results match the NumPy twin in gpudl/functional/_cross_entropy_kernels.py
// to rounding.
//
// Tested: tests/functional/test_cross_entropy.py (GPU vs the NumPy twin, float32 rtol 1e-4,
// float64 rtol 1e-10; the twin vs a naive float64 per-row loop; gradient and grad-of-grad
// checks; label/dtype/shape errors).
// Without a GPU (every `make test`): that module's gpu tests run this file on the CPU
// emulator (tests/kernel_emulation: g++ + cuda_shim.h, CUDA threads as fibers, real
// barriers and shuffles) through gpudl's GPU code path, and again under AddressSanitizer
// (run_memcheck.py). Each instance the KernelSource in
// gpudl/functional/_cross_entropy_kernels.py declares must be launched by those tests
// (tests/kernel_emulation/kernel_coverage.py).
// Benchmarked: benchmarks/kernels_cross_entropy.py
// (fused fwd+bwd vs forward + recomputing backward vs a CuPy composite vs torch, GB/s).
#include "common.cuh"

// 16 bytes of T, loaded and stored as one int4 (a single 128-bit memory instruction).
template <typename T> struct alignas(16) SceVec {
  static constexpr int N = 16 / sizeof(T);
  T v[N];
};

template <typename T> __device__ __forceinline__ SceVec<T> sce_load16(const T* p) {
  SceVec<T> r;
  *reinterpret_cast<int4*>(&r) = *reinterpret_cast<const int4*>(p);
  return r;
}

template <typename T> __device__ __forceinline__ void sce_store16(T* p, const SceVec<T>& r) {
  *reinterpret_cast<int4*>(p) = *reinterpret_cast<const int4*>(&r);
}

__device__ __forceinline__ bool sce_aligned16(const void* p) {
  return (reinterpret_cast<unsigned long long>(p) & 15ull) == 0ull;
}

template <typename T> __device__ __forceinline__ T sce_nan();
template <> __device__ __forceinline__ float sce_nan<float>() { return __int_as_float(0x7fc00000); }
template <> __device__ __forceinline__ double sce_nan<double>() {
  return __longlong_as_double(0x7ff8000000000000ULL);
}

// Writes drow[c] = coef * (exp(x[c] - lse) - eps / C - (c == y) * (1 - eps)) for the row, or
// zeros (without reading x) when zero_row. Every thread of the block calls it.
template <typename T, int BLOCK>
__device__ __forceinline__ void sce_row_grad(const T* __restrict__ x, T* __restrict__ drow, int C,
                                             int y, T lse, T eps, T coef, bool zero_row) {
  constexpr int V = SceVec<T>::N;
  const bool vec = (C % V == 0) && sce_aligned16(x) && sce_aligned16(drow);
  const T off = eps / T(C);   // target of every class
  const T on = T(1) - eps;    // extra target of the labelled class
  if (vec) {
    const int nvec = C / V;
    for (int i = threadIdx.x; i < nvec; i += BLOCK) {
      SceVec<T> p;
      if (zero_row) {
#pragma unroll
        for (int k = 0; k < V; ++k) p.v[k] = T(0);
      } else {
        p = sce_load16<T>(x + i * V);
#pragma unroll
        for (int k = 0; k < V; ++k) {
          T d = gpudl_exp<T>(p.v[k] - lse) - off;
          if (i * V + k == y) d -= on;
          p.v[k] = coef * d;
        }
      }
      sce_store16<T>(drow + i * V, p);
    }
  } else {
    for (int c = threadIdx.x; c < C; c += BLOCK) {
      if (zero_row) {
        drow[c] = T(0);
      } else {
        T d = gpudl_exp<T>(x[c] - lse) - off;
        if (c == y) d -= on;
        drow[c] = coef * d;
      }
    }
  }
}

// One row per block: online max/sum (and the row sum for label smoothing) in one pass, the
// loss and lse from thread 0, then (WITH_GRAD) the unit-cotangent gradient in a second pass.
template <typename T, int BLOCK, bool WITH_GRAD>
__device__ __forceinline__ void sce_forward_row(const T* __restrict__ logits,  // (N, C)
                                                const int* __restrict__ labels,  // (N,)
                                                T* __restrict__ loss,            // (N,)
                                                T* __restrict__ lse_out,         // (N,)
                                                T* __restrict__ dlogits,         // (N, C)
                                                int N, int C, int ignore_index, T eps,
                                                T grad_scale) {
  const int row = blockIdx.x;
  if (row >= N) return;  // grid == N exactly; kept so a wrong grid cannot write out of bounds
  const T* x = logits + (long long)row * C;
  const int y = labels[row];  // same address for all threads: one broadcast load
  const bool ignored = (y == ignore_index);
  const bool valid = !ignored && y >= 0 && y < C;

  constexpr int V = SceVec<T>::N;
  GpudlMaxSum<T> ms{gpudl_neg_inf<T>(), T(0)};
  T sum_x = T(0);
  if ((C % V == 0) && sce_aligned16(x)) {
    const int nvec = C / V;
    for (int i = threadIdx.x; i < nvec; i += BLOCK) {
      const SceVec<T> p = sce_load16<T>(x + i * V);
#pragma unroll
      for (int k = 0; k < V; ++k) {
        gpudl_maxsum_push<T>(ms, p.v[k]);
        sum_x += p.v[k];
      }
    }
  } else {
    for (int c = threadIdx.x; c < C; c += BLOCK) {
      const T v = x[c];
      gpudl_maxsum_push<T>(ms, v);
      sum_x += v;
    }
  }
  // Threads with no element (C < BLOCK) hold the empty {-inf, 0}, which the merge ignores.
  ms = gpudl_block_maxsum<BLOCK, T>(ms);
  if (eps != T(0)) sum_x = gpudl_block_sum<BLOCK, T>(sum_x);  // eps is uniform: legal barrier
  const T log_s = gpudl_log<T>(ms.s);
  const T lse = ms.m + log_s;

  if (threadIdx.x == 0) {
    T l;
    if (ignored) {
      l = T(0);
    } else if (!valid) {
      l = sce_nan<T>();  // unreachable: labels are range-checked on the host before launch
    } else {
      // (m - x_y) + log s, not lse - x_y: no rounding of lse when |logits| is large.
      const T nll = (ms.m - x[y]) + log_s;
      l = (eps == T(0)) ? nll : (T(1) - eps) * nll + eps * ((ms.m - sum_x / T(C)) + log_s);
    }
    loss[row] = l;
    lse_out[row] = lse;
  }
  if constexpr (WITH_GRAD) {
    sce_row_grad<T, BLOCK>(x, dlogits + (long long)row * C, C, y, lse, eps, grad_scale, !valid);
  }
}

template <typename T, int BLOCK>
__global__ void __launch_bounds__(BLOCK)
    sce_forward(const T* __restrict__ logits,   // (N, C)
                const int* __restrict__ labels,  // (N,)
                T* __restrict__ loss,            // (N,)
                T* __restrict__ lse,             // (N,)
                int N, int C, int ignore_index, T eps) {
  sce_forward_row<T, BLOCK, false>(logits, labels, loss, lse, nullptr, N, C, ignore_index, eps,
                                   T(0));
}

template <typename T, int BLOCK>
__global__ void __launch_bounds__(BLOCK)
    sce_forward_backward(const T* __restrict__ logits,   // (N, C)
                         const int* __restrict__ labels,  // (N,)
                         T* __restrict__ loss,            // (N,)
                         T* __restrict__ lse,             // (N,)
                         T* __restrict__ dlogits,         // (N, C)
                         int N, int C, int ignore_index, T eps, T grad_scale) {
  sce_forward_row<T, BLOCK, true>(logits, labels, loss, lse, dlogits, N, C, ignore_index, eps,
                                  grad_scale);
}

template <typename T, int BLOCK>
__global__ void __launch_bounds__(BLOCK)
    sce_backward(const T* __restrict__ logits,   // (N, C)
                 const int* __restrict__ labels,  // (N,)
                 const T* __restrict__ lse,       // (N,) saved by the forward
                 const T* __restrict__ g,         // (N,) with g_stride 1, or () with g_stride 0
                 T* __restrict__ dlogits,         // (N, C)
                 int N, int C, int ignore_index, T eps, T scale, int g_stride) {
  const int row = blockIdx.x;
  if (row >= N) return;
  const int y = labels[row];
  const bool valid = (y != ignore_index) && y >= 0 && y < C;
  const T coef = g[(long long)row * g_stride] * scale;
  sce_row_grad<T, BLOCK>(logits + (long long)row * C, dlogits + (long long)row * C, C, y,
                         lse[row], eps, coef, !valid);
}
