// philox.cu: counter-based Philox4x32-10 random numbers for gpudl.random, in one launch each:
// the raw words, uniform floats and normal floats, bit-identical to the NumPy body.
//
// What: block i of a call is philox4x32_10(counter = (i, 0, 0, 0), key = (k0, k1)), four
// 32-bit words c0..c3 (Salmon et al., SC 2011; Random123's philox.h). One thread computes
// whole blocks (grid-stride loop over the nb blocks) and writes them in the plane layout of
// the stream format (specified in gpudl/random/_philox.py; fixed forever, because seeded
// results must never change):
//   philox_words32          out (n,) uint32, nb = ceil(n/4):  out[w*nb + i] = word w of block i
//   philox_words64          out (n,) uint64, nb = ceil(n/2):  out[i] = c0:c1, out[nb + i] = c2:c3
//   philox_uniform<float>   out (n,), nb = ceil(n/4): out[w*nb + i] = (word w >> 8) * 2^-24
//   philox_uniform<double>  out (n,), nb = ceil(n/2): out[i], out[nb + i] = (c0:c1, c2:c3 >> 11) * 2^-53
//       then, when `affine`: u * width + lo, clamped to top = nextafter(maxval, minval).
//   philox_normal<T>        out (n,), nb = ceil(n/2): Box-Muller in float64 with u1 = (c0:c1 >> 11
//       + 1) 2^-53, u2 = (c2:c3 >> 11) 2^-53: out[i] = r cos(2 pi u2), out[nb + i] = r sin(2 pi u2),
//       r = sqrt(-2 log u1); rounded to T, then * std (flags & 1) and + mean (flags & 2) in T.
// Elements past n (n not a multiple of 4 or 2) are computed and dropped. Indices: n < 2^31
// (the launcher checks array sizes); plane offsets w*nb + i can pass 2^31 when n is close to
// it, so they are formed in 64 bits before the bounds test.
//
// Host side: gpudl/random/_cuda.py (one launch per gd.random call, block 256, grid capped at
// 2^16 with the grid-stride loop doing the rest); float16 goes through the float kernel or
// the words kernel plus CuPy casts, as on the CPU.
//
// Exactness (why CPU and GPU agree bit for bit): Philox is integer arithmetic (__umulhi and
// the 32-bit multiply give the 64-bit product's halves). Floats use only IEEE-exact
// operations on the same operands in the same order as gpudl/random/_philox.py: log/sin/cos
// are the same exact-op series (atanh series for ln m, Taylor polynomials on [0, pi/4]),
// never CUDA's log/sin/cos, whose last ulp differs from glibc's. NVRTC contracts a * b + c
// into one FMA (a single rounding) by default, so EVERY float operation that must match
// NumPy is written with an explicit round-to-nearest intrinsic (__dmul_rn, __dadd_rn,
// __dsub_rn, __ddiv_rn, __dsqrt_rn, __double2float_rn, __ull2double_rn), which are never
// fused (the PTX has no fma instruction). CuPy also compiles with -ftz=true, which flushes
// float32 subnormal results of f32 instructions to zero where NumPy keeps them: float32
// results are therefore computed in double and rounded by philox_round<float> /
// philox_narrow<float>, which handle the subnormal range in integer-exact steps.
// Constants are the Python doubles written as hex literals (a CPU test parses them back).
// Plain CUDA C++ (templates, no inline PTX, no cooperative groups, no dynamic shared
// memory) so the CPU emulator (tests/kernel_emulation) can run it.
//
// Tested: tests/test_random_golden.py: on the CPU, the hex constants == the Python doubles;
// gpu-marked (also run by `GPUDL_EMULATE_GPU=1 pytest -m gpu` on the emulator): every
// kernel == the NumPy body bit for bit, uniform and normal float32/float64 at odd sizes
// 1..1_000_003 with minval/maxval and mean/std, grid-stride wraps (grid capped at 3),
// float32 subnormal results, and the golden hashes of the original implementation.
// tests/test_random.py (gpu): CPU == GPU bits for every gd.random function.
// Benchmarked: benchmarks/random_speed.py (numbers/s against numpy.random.Generator(Philox),
// cupy.random.Generator(Philox4x3210) and torch.rand/randn on the same device).
#include "common.cuh"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

struct PhiloxBlock {
  unsigned int c0, c1, c2, c3;
};

// Philox4x32-10 of the counter (i, 0, 0, 0). Unsigned arithmetic wraps mod 2^32 as in Random123.
__device__ __forceinline__ PhiloxBlock philox_block(unsigned int i, unsigned int k0, unsigned int k1) {
  unsigned int c0 = i, c1 = 0u, c2 = 0u, c3 = 0u;
#pragma unroll
  for (int r = 0; r < 10; ++r) {
    const unsigned int hi0 = __umulhi(PHILOX_M0, c0), lo0 = PHILOX_M0 * c0;
    const unsigned int hi1 = __umulhi(PHILOX_M1, c2), lo1 = PHILOX_M1 * c2;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += PHILOX_W0;
    k1 += PHILOX_W1;
  }
  return {c0, c1, c2, c3};
}

__device__ __forceinline__ unsigned long long philox_join(unsigned int hi, unsigned int lo) {
  return ((unsigned long long)hi << 32) | lo;
}

// ------------------------------------------------------------------------------ exact math
// Coefficients (gpudl/random/_philox.py): ATANH_COEF[j] = 1/(2j+1), SIN_COEF[j] = (-1)^j/(2j+1)!,
// COS_COEF[j] = (-1)^j/(2j)!, each the correctly rounded double.
__device__ __constant__ double philox_atanh_coef[12] = {
    0x1.0000000000000p+0, 0x1.5555555555555p-2, 0x1.999999999999ap-3, 0x1.2492492492492p-3,
    0x1.c71c71c71c71cp-4, 0x1.745d1745d1746p-4, 0x1.3b13b13b13b14p-4, 0x1.1111111111111p-4,
    0x1.e1e1e1e1e1e1ep-5, 0x1.af286bca1af28p-5, 0x1.8618618618618p-5, 0x1.642c8590b2164p-5};
__device__ __constant__ double philox_sin_coef[10] = {
    0x1.0000000000000p+0,  -0x1.5555555555555p-3, 0x1.1111111111111p-7,  -0x1.a01a01a01a01ap-13,
    0x1.71de3a556c734p-19, -0x1.ae64567f544e4p-26, 0x1.6124613a86d09p-33, -0x1.ae7f3e733b81fp-41,
    0x1.952c77030ad4ap-49, -0x1.2f49b46814157p-57};
__device__ __constant__ double philox_cos_coef[10] = {
    0x1.0000000000000p+0,  -0x1.0000000000000p-1, 0x1.5555555555555p-5,  -0x1.6c16c16c16c17p-10,
    0x1.a01a01a01a01ap-16, -0x1.27e4fb7789f5cp-22, 0x1.1eed8eff8d898p-29, -0x1.93974a8c07c9dp-37,
    0x1.ae7f3e733b81fp-45, -0x1.6827863b97d97p-53};
#define PHILOX_LN2_HI 0x1.62e42fee00000p-1    // _philox.LN2_HI
#define PHILOX_LN2_LO 0x1.a39ef35793c76p-33   // _philox.LN2_LO
#define PHILOX_SQRT_HALF 0x1.6a09e667f3bcdp-1 // sqrt(0.5)
#define PHILOX_HALF_PI 0x1.921fb54442d18p+0   // pi / 2

// horner(z, coef) of gpudl/random/_philox.py: acc = coef[N-1]; acc = acc * z + coef[j], two roundings.
template <int N> __device__ __forceinline__ double philox_horner(double z, const double* coef) {
  double acc = coef[N - 1];
#pragma unroll
  for (int j = N - 2; j >= 0; --j) acc = __dadd_rn(__dmul_rn(acc, z), coef[j]);
  return acc;
}

// _philox.log_reference (gpudl/random/_philox.py) for one positive, normal double.
__device__ __forceinline__ double philox_log(double x) {
  int e;
  double m = frexp(x, &e);  // exact: m in [0.5, 1)
  if (m < PHILOX_SQRT_HALF) {
    m = __dmul_rn(m, 2.0);  // exact
    e -= 1;
  }
  const double s = __ddiv_rn(__dsub_rn(m, 1.0), __dadd_rn(m, 1.0));
  const double series = philox_horner<12>(__dmul_rn(s, s), philox_atanh_coef);
  const double ln_m = __dmul_rn(__dmul_rn(s, series), 2.0);
  const double ef = (double)e;  // small integer: exact
  return __dadd_rn(__dmul_rn(ef, PHILOX_LN2_HI), __dadd_rn(__dmul_rn(ef, PHILOX_LN2_LO), ln_m));
}

// _philox.sincos_2pi_reference: sin(2 pi u), cos(2 pi u) for u in [0, 1).
__device__ __forceinline__ void philox_sincos_2pi(double u, double* sin_out, double* cos_out) {
  const double u4 = __dmul_rn(u, 4.0);  // exact
  const double q = floor(u4);           // exact
  const double f = __dsub_rn(u4, q);    // exact
  const bool upper = f > 0.5;
  const double g = upper ? __dsub_rn(1.0, f) : f;  // exact (Sterbenz)
  const double x = __dmul_rn(g, PHILOX_HALF_PI);
  const double z = __dmul_rn(x, x);
  const double s = __dmul_rn(x, philox_horner<10>(z, philox_sin_coef));
  const double c = philox_horner<10>(z, philox_cos_coef);
  const double sin_f = upper ? c : s, cos_f = upper ? s : c;
  const bool swap = (q == 1.0) || (q == 3.0);
  double so = swap ? cos_f : sin_f, co = swap ? sin_f : cos_f;
  if (q >= 2.0) so = -so;
  if (q == 1.0 || q == 2.0) co = -co;
  *sin_out = so;
  *cos_out = co;
}

// Rounding to the output type T, on values carried in double. CuPy compiles every kernel with
// -ftz=true, which makes each f32 instruction (__fmul_rn, __double2float_rn, ...) flush
// subnormal results to zero, while NumPy keeps them. So float arithmetic happens in double
// (a product of two floats is exact there; a sum rounded to double and then to float equals
// the float-rounded sum, as 53 >= 2 * 24 + 2) and is rounded to float here, subnormals
// included: below 2^-126 the float grid is the multiples of 2^-149, rounded half to even.
template <typename T> __device__ __forceinline__ double philox_round(double x);
template <> __device__ __forceinline__ double philox_round<double>(double x) { return x; }
template <> __device__ __forceinline__ double philox_round<float>(double x) {
  if (!(fabs(x) < 0x1p-126)) return (double)__double2float_rn(x);  // normal, inf or NaN
  return copysign(__dmul_rn(rint(__dmul_rn(fabs(x), 0x1p149)), 0x1p-149), x);  // all exact
}

// A T-representable double as T (exact; subnormal floats are assembled from their bits).
template <typename T> __device__ __forceinline__ T philox_narrow(double v);
template <> __device__ __forceinline__ double philox_narrow<double>(double v) { return v; }
template <> __device__ __forceinline__ float philox_narrow<float>(double v) {
  if (!(fabs(v) < 0x1p-126)) return __double2float_rn(v);
  const unsigned int mant = (unsigned int)__dmul_rn(fabs(v), 0x1p149);  // integer < 2^23
  return __uint_as_float(mant | (signbit(v) ? 0x80000000u : 0u));
}

// Plane-layout store: element `plane * nb + i`, dropped past n (64-bit offset, see header).
template <typename T>
__device__ __forceinline__ void philox_store(T* __restrict__ out, int n, int nb, int plane, int i, T v) {
  const long long j = (long long)plane * nb + i;
  if (j < n) out[j] = v;
}

// ------------------------------------------------------------------------------ kernels
__global__ void philox_words32(unsigned int* __restrict__ out,  // (n,)
                               int n, int nb, unsigned int k0, unsigned int k1) {
  GPUDL_LOOP(i, nb) {
    const PhiloxBlock b = philox_block((unsigned int)i, k0, k1);
    philox_store(out, n, nb, 0, i, b.c0);
    philox_store(out, n, nb, 1, i, b.c1);
    philox_store(out, n, nb, 2, i, b.c2);
    philox_store(out, n, nb, 3, i, b.c3);
  }
}

__global__ void philox_words64(unsigned long long* __restrict__ out,  // (n,)
                               int n, int nb, unsigned int k0, unsigned int k1) {
  GPUDL_LOOP(i, nb) {
    const PhiloxBlock b = philox_block((unsigned int)i, k0, k1);
    philox_store(out, n, nb, 0, i, philox_join(b.c0, b.c1));
    philox_store(out, n, nb, 1, i, philox_join(b.c2, b.c3));
  }
}

// u * width + lo, clamped below top = nextafter(maxval, minval), each op rounded to T (NumPy's
// separate array ops). lo, width, top hold T values (a float32 widened exactly on the host).
template <typename T>
__device__ __forceinline__ double philox_affine(double u, double lo, double width, double top) {
  const double v = philox_round<T>(__dadd_rn(philox_round<T>(__dmul_rn(u, width)), lo));
  return v < top ? v : top;
}

template <typename T>
__global__ void philox_uniform(T* __restrict__ out,  // (n,)
                               int n, int nb, unsigned int k0, unsigned int k1, double lo,
                               double width, double top, int affine) {
  GPUDL_LOOP(i, nb) {
    const PhiloxBlock b = philox_block((unsigned int)i, k0, k1);
    if constexpr (sizeof(T) == 4) {  // float: the top 24 bits of each 32-bit word
      const unsigned int w[4] = {b.c0, b.c1, b.c2, b.c3};
#pragma unroll
      for (int p = 0; p < 4; ++p) {
        double u = __dmul_rn(__ull2double_rn(w[p] >> 8), 0x1p-24);  // exact
        if (affine) u = philox_affine<T>(u, lo, width, top);
        philox_store(out, n, nb, p, i, philox_narrow<T>(u));
      }
    } else {  // double: the top 53 bits of each 64-bit word
      const unsigned long long w[2] = {philox_join(b.c0, b.c1), philox_join(b.c2, b.c3)};
#pragma unroll
      for (int p = 0; p < 2; ++p) {
        double u = __dmul_rn(__ull2double_rn(w[p] >> 11), 0x1p-53);  // exact
        if (affine) u = philox_affine<T>(u, lo, width, top);
        philox_store(out, n, nb, p, i, philox_narrow<T>(u));
      }
    }
  }
}

template <typename T>
__global__ void philox_normal(T* __restrict__ out,  // (n,)
                              int n, int nb, unsigned int k0, unsigned int k1, double mean,
                              double std, int flags) {
  GPUDL_LOOP(i, nb) {
    const PhiloxBlock b = philox_block((unsigned int)i, k0, k1);
    // u1 in (0, 1] (finite log), u2 in [0, 1); 53-bit integers convert exactly.
    const double u1 = __dmul_rn(__ull2double_rn((philox_join(b.c0, b.c1) >> 11) + 1ull), 0x1p-53);
    const double u2 = __dmul_rn(__ull2double_rn(philox_join(b.c2, b.c3) >> 11), 0x1p-53);
    const double r = __dsqrt_rn(__dmul_rn(philox_log(u1), -2.0));
    double sin_t, cos_t;
    philox_sincos_2pi(u2, &sin_t, &cos_t);
    double z[2] = {philox_round<T>(__dmul_rn(r, cos_t)), philox_round<T>(__dmul_rn(r, sin_t))};
#pragma unroll
    for (int p = 0; p < 2; ++p) {
      if (flags & 1) z[p] = philox_round<T>(__dmul_rn(z[p], std));  // std, mean: T values
      if (flags & 2) z[p] = philox_round<T>(__dadd_rn(z[p], mean));
      philox_store(out, n, nb, p, i, philox_narrow<T>(z[p]));
    }
  }
}
