// optim_update.cu: the fused optimizer updates, Adam/AdamW and SGD (momentum, Nesterov).
//
// What: one elementwise pass over n elements replaces the ~14 separate array operations
// (and their temporaries) of the composable chain of gpudl/optim (torch.optim's rules):
//   adam_update   g' = g + wd * p                                  (flag L2: adam's L2)
//                 m' = m * b1 + g' * (1 - b1)
//                 v' = v * b2 + (g' * g') * (1 - b2)
//                 vmax' = max(vmax, v')                             (flag AMSGRAD)
//                 u = (m' / bc1) / (sqrt(v' or vmax') / sqrt(bc2) + eps)
//                 u = u + p * wd                                    (flag DECOUPLED: AdamW)
//                 u = u * (-lr) [* lr_scale]                        (flag SCALE)
//   sgd_update    g' = g + p * wd                                   (flag L2)
//                 buf' = g' (flag FIRST) or buf * mu + g' [* (1 - dampening), flag DAMP]
//                 d = g' + buf' * mu (NESTEROV) or buf' (MOMENTUM) or g'
//                 u = d * (-lr) [* lr_scale]
//   and writes out = p + u (flag WRITE_PARAMS: the new parameters, in place when out is p)
//   or out = u (the updates of opt.update). bc1 = 1 - b1^t, bc2 = 1 - b2^t: host scalars.
// Every product, sum, quotient and square root is an explicitly rounded intrinsic
// (__fmul_rn, __dadd_rn, ...) in the order the NumPy twin and the composable chain use,
// so no FMA contraction creeps in: the GPU, the twin and the chain agree bit for bit.
//
// Shapes: every array (n,), C-contiguous, one dtype T (float or double). In-place use
// passes the same array as input and output (p/out, m/m_out, v/v_out, vmax/vmax_out,
// buf/buf_out): those pointers are deliberately not __restrict__; each thread reads its
// element before writing it, and no two threads touch the same element. Arrays a flag
// leaves unused are still valid arrays of n elements (the host passes an input again).
//
// Launches: one thread per element, grid-stride (GPUDL_LOOP), 1-D grid from grid_1d.
// Multi-tensor, not per-leaf: inside gd.fit (gpudl/train/step.py) the parameters and the
// optimizer state live in flat buffers whose leaves are views (gpudl/optim/flat.py), so
// ONE launch updates every leaf of the model (a per-leaf launch would cost ~65 launches
// for ResNet-20's small tensors, each far below what fills a GPU). opt.update on ordinary
// trees launches once per leaf with fresh outputs (it must not write its inputs).
//
// Tested: tests/optim/test_fused_optim.py (GPU vs the NumPy twin bit for bit in float32
// and float64, every flag; the twin vs the composable chain bit for bit and vs
// torch.optim; in-place and fresh outputs; empty and odd-sized buffers).
// Without a GPU (every `make test`): that module's gpu tests run this file on the CPU
// emulator (tests/kernel_emulation: g++ + cuda_shim.h, CUDA threads as fibers) through
// gpudl's GPU code path, and again under AddressSanitizer (run_memcheck.py). Each
// instance the KernelSource in gpudl/optim/_optim_kernels.py declares must be launched
// by those tests (tests/kernel_emulation/kernel_coverage.py).
// Benchmarked: benchmarks/kernels_optim.py (Adam and SGD-momentum over the leaves of an
// MLP and of ResNet-20, vs torch.optim foreach=False/True).
#include "common.cuh"

// Flags (bit masks), shared by both kernels; gpudl/optim/_optim_kernels.py mirrors them.
#define OPTIM_L2 1
#define OPTIM_DECOUPLED 2
#define OPTIM_AMSGRAD 4
#define OPTIM_WRITE_PARAMS 8
#define OPTIM_SCALE 16
#define OPTIM_MOMENTUM 32
#define OPTIM_FIRST 64
#define OPTIM_NESTEROV 128
#define OPTIM_DAMP 256

// Correctly rounded arithmetic, never contracted into an FMA (see the header).
__device__ __forceinline__ float optim_add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double optim_add(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float optim_mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double optim_mul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float optim_div(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double optim_div(double a, double b) { return __ddiv_rn(a, b); }
__device__ __forceinline__ float optim_sqrt(float a) { return __fsqrt_rn(a); }
__device__ __forceinline__ double optim_sqrt(double a) { return __dsqrt_rn(a); }

// numpy.maximum: a NaN in either operand gives NaN (fmax would drop it).
template <typename T> __device__ __forceinline__ T optim_nan_max(T a, T b) {
  if (a != a) return a;
  if (b != b) return b;
  return a > b ? a : b;
}

template <typename T>
__global__ void adam_update(const T* __restrict__ g,  // (n,) gradient (never an output)
                            const T* p,                // (n,) parameters
                            const T* m,                // (n,) first moment
                            const T* v,                // (n,) second moment
                            const T* vmax,             // (n,) running max of v (AMSGRAD)
                            T* out,                    // (n,) p + u, or u
                            T* m_out, T* v_out, T* vmax_out,  // (n,) new moments
                            int n, T b1, T one_minus_b1, T b2, T one_minus_b2, T bc1,
                            T bc2_sqrt, T eps, T weight_decay, T neg_lr, T lr_scale,
                            int flags) {
  GPUDL_LOOP(i, n) {
    const T pi = p[i];
    T gi = g[i];
    if (flags & OPTIM_L2) gi = optim_add(gi, optim_mul(pi, weight_decay));
    const T mi = optim_add(optim_mul(m[i], b1), optim_mul(gi, one_minus_b1));
    const T vi = optim_add(optim_mul(v[i], b2), optim_mul(optim_mul(gi, gi), one_minus_b2));
    T second = vi;
    if (flags & OPTIM_AMSGRAD) {
      second = optim_nan_max<T>(vmax[i], vi);
      vmax_out[i] = second;
    }
    const T denom = optim_add(optim_div(optim_sqrt(second), bc2_sqrt), eps);
    T u = optim_div(optim_div(mi, bc1), denom);
    if (flags & OPTIM_DECOUPLED) u = optim_add(u, optim_mul(pi, weight_decay));
    u = optim_mul(u, neg_lr);
    if (flags & OPTIM_SCALE) u = optim_mul(u, lr_scale);
    m_out[i] = mi;
    v_out[i] = vi;
    out[i] = (flags & OPTIM_WRITE_PARAMS) ? optim_add(pi, u) : u;
  }
}

template <typename T>
__global__ void sgd_update(const T* __restrict__ g,  // (n,) gradient (never an output)
                           const T* p,                // (n,) parameters
                           const T* buf,              // (n,) momentum buffer (MOMENTUM)
                           T* out,                    // (n,) p + u, or u
                           T* buf_out,                // (n,) new momentum buffer
                           int n, T weight_decay, T momentum, T one_minus_dampening,
                           T neg_lr, T lr_scale, int flags) {
  GPUDL_LOOP(i, n) {
    const T pi = p[i];
    T gi = g[i];
    if (flags & OPTIM_L2) gi = optim_add(gi, optim_mul(pi, weight_decay));
    T d = gi;
    if (flags & OPTIM_MOMENTUM) {
      T b;
      if (flags & OPTIM_FIRST) {
        b = gi;  // torch: the buffer starts as the first gradient (no dampening)
      } else {
        const T step = (flags & OPTIM_DAMP) ? optim_mul(gi, one_minus_dampening) : gi;
        b = optim_add(optim_mul(buf[i], momentum), step);
      }
      buf_out[i] = b;
      d = (flags & OPTIM_NESTEROV) ? optim_add(gi, optim_mul(b, momentum)) : b;
    }
    T u = optim_mul(d, neg_lr);
    if (flags & OPTIM_SCALE) u = optim_mul(u, lr_scale);
    out[i] = (flags & OPTIM_WRITE_PARAMS) ? optim_add(pi, u) : u;
  }
}
