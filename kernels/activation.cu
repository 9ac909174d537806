// activation.cu: elementwise activations (forward and backward) and dropout's mask apply.
//
// What: one kernel family templated over the dtype T and the activation OP; each launch is
// one pass over n elements (grid-stride loop, one thread per element, no shared memory):
//   activation_forward<T, OP>   y[i]  = f(x[i])
//   activation_backward<T, OP>  dx[i] = g[i] * f'(x[i]), written with x and/or y = f(x)
//   dropout_apply<T>            y[i]  = (x[i] * keep[i]) * scale   (keep: bool, 0 or 1)
// The activations (p0, p1 are the scalar hyper-parameters, in T):
//   ACT_SIGMOID     (x >= 0 ? 1 : e) / (1 + e), e = exp(-|x|): no overflow, and full relative
//                   precision in both tails (sigmoid(-50) = 2e-22, not 0); dx = g*y*(1 - y)
//   ACT_TANH        tanh(x);                                 dx = g*(1 - y*y)
//   ACT_RELU        x > 0 ? x : 0 (NaN stays NaN);           dx = x > 0 ? g : 0  (0 at the kink)
//   ACT_LEAKY_RELU  x > 0 ? x : p0*x (p0 = slope);           dx = x > 0 ? g : g*p0
//   ACT_ELU         p1*(x > 0 ? x : p0*expm1(x)) (alpha, scale; SELU is the scaled one);
//                   dx = g*(x > 0 ? p1 : y + p0) with the BACKWARD's p0 = scale*alpha
//                   (formed on the host in double, as the NumPy twin forms it)
//   ACT_HARDTANH    clip(x, p0, p1) (NaN stays NaN);         dx = p0 < x < p1 ? g : 0
//   ACT_SILU        x*s, s = sigmoid(x);                     dx = g*s*(1 + x*(1 - s))
//   ACT_GELU        0.5x*(1 + erf(x/sqrt 2));                dx = g*(Phi(x) + x*phi(x))
//   ACT_GELU_TANH   0.5x*(1 + tanh(k(x + 0.044715 x^3))), k = sqrt(2/pi) (torch's "tanh")
// The derivative conventions at the kinks are torch's (relu'(0) = 0, leaky_relu'(0) = slope,
// elu'(0) = alpha*scale, hardtanh' = 0 at the bounds).
//
// Shapes: x, y, g, dx, keep are flat C-contiguous arrays of n elements (n < 2^31: the
// launcher checks every array's size); T = float or double. The host (gpudl/functional/
// _activation_kernels.py) copies non-contiguous inputs, computes float16 in float and
// integers in double, and launches grid_1d(n) blocks of 256.
//
// The NumPy twins (gpudl/functional/_activation_twins.py; sigmoid's and tanh's in
// gpudl/ops/elementwise.py) use the same formulas in the same operation order, so the two
// agree to rounding: CUDA's exp, expm1, tanh and erf differ from NumPy's in the last ulp
// (and float32 erf on the CPU is a shorter fit), and NVRTC may contract a*b + c into an
// FMA. dropout_apply has no such function: it matches the twin bit for bit (the keep mask
// itself comes from gd.random.bernoulli, identical on both devices).
//
// Tested: tests/functional/test_activation_kernels.py (GPU forward and backward vs the twin
// for every OP, float32 rtol 1e-5 (atol 5e-6: the tails of 1 + erf and 1 + tanh cancel) and
// float64 rtol 1e-11, with NaN, +-inf, the kinks and a size that crosses a block; float16
// and integer inputs; the twins vs math-module float64 derivatives and torch float32;
// check_grad of every primitive, second order included), tests/functional/test_activations.py
// (every registered activation's values on the GPU vs math-module references) and
// tests/functional/test_dropout.py (the GPU mask and values equal the CPU ones bit for bit).
// Without a GPU (every `make test`): those modules' gpu tests run this file on the CPU
// emulator (tests/kernel_emulation: g++ + cuda_shim.h, CUDA threads as fibers) through
// gpudl's GPU code path, and again under AddressSanitizer (run_memcheck.py). Each instance
// the KernelSource in gpudl/functional/_activation_kernels.py declares must be launched by
// those tests (tests/kernel_emulation/kernel_coverage.py).
// Benchmarked: benchmarks/kernels_activation.py (forward and forward+backward of sigmoid,
// tanh, relu, leaky_relu, elu, hardtanh, silu, gelu (both forms) and dropout at LeNet's
// (128, 6, 28, 28) and a (32, 16, 32, 32) layer, vs torch.nn.functional).
#include "common.cuh"

enum ActivationOp : int {
  ACT_SIGMOID = 0,
  ACT_TANH = 1,
  ACT_RELU = 2,
  ACT_LEAKY_RELU = 3,
  ACT_ELU = 4,
  ACT_HARDTANH = 5,
  ACT_SILU = 6,
  ACT_GELU = 7,
  ACT_GELU_TANH = 8,
};

// The constants as the Python doubles the twins use (1/sqrt(2), sqrt(2/pi), 1/sqrt(2 pi)),
// rounded to T exactly as NumPy rounds a Python float against a float32 array.
#define ACT_SQRT1_2 0.7071067811865475
#define ACT_SQRT_2_OVER_PI 0.7978845608028654
#define ACT_INV_SQRT_2PI 0.3989422804014327
#define ACT_GELU_CUBIC 0.044715

template <typename T> __device__ __forceinline__ T act_abs(T x);
template <> __device__ __forceinline__ float act_abs<float>(float x) { return fabsf(x); }
template <> __device__ __forceinline__ double act_abs<double>(double x) { return fabs(x); }

template <typename T> __device__ __forceinline__ T act_expm1(T x);
template <> __device__ __forceinline__ float act_expm1<float>(float x) { return expm1f(x); }
template <> __device__ __forceinline__ double act_expm1<double>(double x) { return expm1(x); }

template <typename T> __device__ __forceinline__ T act_erf(T x);
template <> __device__ __forceinline__ float act_erf<float>(float x) { return erff(x); }
template <> __device__ __forceinline__ double act_erf<double>(double x) { return erf(x); }

// Not common.cuh's gpudl_sigmoid (0.5 tanh(x/2) + 0.5, which rounds sigmoid(-50) to 0):
// e = exp(-|x|) <= 1 never overflows, and e / (1 + e) keeps the lower tail's precision.
template <typename T> __device__ __forceinline__ T act_sigmoid(T x) {
  const T e = gpudl_exp<T>(-act_abs<T>(x));
  return (x >= T(0) ? T(1) : e) / (T(1) + e);
}

template <typename T, int OP> __device__ __forceinline__ T act_forward_value(T x, T p0, T p1) {
  if constexpr (OP == ACT_SIGMOID) {
    return act_sigmoid<T>(x);
  } else if constexpr (OP == ACT_TANH) {
    return gpudl_tanh<T>(x);
  } else if constexpr (OP == ACT_RELU) {
    return (x > T(0) || x != x) ? x : T(0);  // NaN propagates, as numpy.maximum
  } else if constexpr (OP == ACT_LEAKY_RELU) {
    return x > T(0) ? x : x * p0;
  } else if constexpr (OP == ACT_ELU) {
    return x > T(0) ? p1 * x : p1 * (p0 * act_expm1<T>(x));
  } else if constexpr (OP == ACT_HARDTANH) {
    return x < p0 ? p0 : (x > p1 ? p1 : x);  // NaN fails both tests: stays NaN
  } else if constexpr (OP == ACT_SILU) {
    return x * act_sigmoid<T>(x);
  } else if constexpr (OP == ACT_GELU) {
    return (T(1) + act_erf<T>(x * T(ACT_SQRT1_2))) * (T(0.5) * x);
  } else {
    static_assert(OP == ACT_GELU_TANH, "unknown activation");
    const T inner = T(ACT_SQRT_2_OVER_PI) * (((T(ACT_GELU_CUBIC) * x) * x) * x + x);
    return (T(1) + gpudl_tanh<T>(inner)) * (T(0.5) * x);
  }
}

// g * f'(x), in the twin's operation order. y is the forward output f(x).
template <typename T, int OP>
__device__ __forceinline__ T act_backward_value(T g, T x, T y, T p0, T p1) {
  if constexpr (OP == ACT_SIGMOID) {
    return (g * y) * (T(1) - y);
  } else if constexpr (OP == ACT_TANH) {
    return g * (T(1) - y * y);
  } else if constexpr (OP == ACT_RELU) {
    return x > T(0) ? g : T(0);  // a select, not g * 0: an inf/NaN g of a dead unit gives 0
  } else if constexpr (OP == ACT_LEAKY_RELU) {
    return g * (x > T(0) ? T(1) : p0);
  } else if constexpr (OP == ACT_ELU) {
    return g * (x > T(0) ? p1 : y + p0);  // exp(x)*alpha*scale = y + scale*alpha for x <= 0
  } else if constexpr (OP == ACT_HARDTANH) {
    return (x > p0 && x < p1) ? g : T(0);
  } else if constexpr (OP == ACT_SILU) {
    const T s = act_sigmoid<T>(x);
    return ((((T(1) - s) * x) + T(1)) * s) * g;
  } else if constexpr (OP == ACT_GELU) {
    const T cdf = (T(1) + act_erf<T>(x * T(ACT_SQRT1_2))) * T(0.5);
    const T pdf = gpudl_exp<T>((x * x) * T(-0.5)) * T(ACT_INV_SQRT_2PI);
    return (pdf * x + cdf) * g;
  } else {
    static_assert(OP == ACT_GELU_TANH, "unknown activation");
    // torch's gelu_backward (approximate="tanh"), in the twin's order.
    const T xx = x * x;
    const T t = gpudl_tanh<T>(T(ACT_SQRT_2_OVER_PI) * ((T(ACT_GELU_CUBIC) * xx) * x + x));
    const T inner_d = T(ACT_SQRT_2_OVER_PI) * ((T(3.0 * ACT_GELU_CUBIC) * xx) + T(1));
    const T right_d = ((T(1) - t * t) * inner_d) * (x * T(0.5));
    return ((T(1) + t) * T(0.5) + right_d) * g;
  }
}

template <typename T, int OP>
__global__ void activation_forward(const T* __restrict__ x,  // (n,)
                                   T* __restrict__ y,        // (n,)
                                   int n, T p0, T p1) {
  GPUDL_LOOP(i, n) { y[i] = act_forward_value<T, OP>(x[i], p0, p1); }
}

template <typename T, int OP>
__global__ void activation_backward(const T* __restrict__ g,  // (n,) cotangent of y
                                    const T* __restrict__ x,  // (n,) forward input
                                    const T* __restrict__ y,  // (n,) forward output
                                    T* __restrict__ dx,       // (n,)
                                    int n, T p0, T p1) {
  GPUDL_LOOP(i, n) { dx[i] = act_backward_value<T, OP>(g[i], x[i], y[i], p0, p1); }
}

// Inverted dropout's one pass: keep is gd.random.bernoulli's mask; x * 0 keeps x's sign and
// turns inf/NaN into NaN, exactly as the twin's (x * keep) * scale.
template <typename T>
__global__ void dropout_apply(const T* __restrict__ x,        // (n,)
                              const bool* __restrict__ keep,  // (n,)
                              T* __restrict__ y,              // (n,)
                              int n, T scale) {
  GPUDL_LOOP(i, n) { y[i] = (x[i] * (keep[i] ? T(1) : T(0))) * scale; }
}
