// conv2d_igemm.cu: implicit-GEMM 2-D convolution (conv2d version 2; no im2col matrix).
//
// What: the same products as conv2d.cu's im2col + GEMM path, but each block gathers its
// GEMM operand tile straight from the activation tensor into shared memory, so the
// (C*kH*kW, N*Ho*Wo) cols matrix is never written to or read from global memory.
//   conv2d_igemm_forward        y (N, O, Ho, Wo) = conv2d(x (N, C, H, W), w (O, C/G, kH, kW))
//                                 (+ bias[o] when has_bias), per group g (blockIdx.z):
//       Y_g (M x Og) = A_g (M x K) @ B_g (K x Og),  M = N*Ho*Wo, K = Cg*kH*kW
//       A_g[(n, oh, ow), (c, kh, kw)] = x[n, g*Cg + c, oh*sH - pT + kh*dH, ow*sW - pL + kw*dW]
//                                       (0 in the padding: the im2col map of conv2d.cu)
//       B_g[(c, kh, kw), o]           = w[g*Og + o, c, kh, kw]
//   conv2d_igemm_backward_data  dx (N, C, H, W) from dy (N, O, Ho, Wo) and w: the
//       transposed convolution as a GEMM over the input pixels,
//       DX_g (M x Cg) = A_g (M x K) @ B_g (K x Cg),  M = N*H*W, K = Og*kH*kW
//       A_g[(n, h, w), (o, kh, kw)] = dy[n, g*Og + o, oh, ow] where h + pT - kh*dH = oh*sH
//                                     and w + pL - kw*dW = ow*sW (0 where no such oh/ow:
//                                     the gather form of conv2d.cu's col2im)
//       B_g[(o, kh, kw), c]         = w[g*Og + o, c, kh, kw]
//   Backward-weight stays on version 1 (im2col + cuBLAS): its GEMM reduces over N*Ho*Wo
//   into a small (Og, K) output and needs split-K to fill a GPU; not written yet.
//
// Tiling: a block of 256 threads computes a 64 (M) x 64 (Og or Cg) tile of its group's
// output with K in steps of 16. Per step the block stages A (16 x 64, gathered, zero for
// padding and out-of-range rows) and B (16 x 64) in shared memory; every thread owns a
// 4 x 4 register micro-tile at rows tx + 16*i and columns ty + 16*j (tx = tid % 16,
// ty = tid / 16), so shared-memory reads are conflict-free or broadcasts and consecutive
// threads store consecutive output pixels. The next step's tile is loaded into registers
// while the current one is multiplied (one shared buffer, two barriers per step). Plain
// FMA in T (float or double): no tensor cores, no TF32, so float32 matches the NumPy twin
// to 1e-4; the summation order differs from cuBLAS (parity is to rounding, not bitwise).
//
// Shapes: all arrays C-contiguous, one dtype T; sizes < 2^31 (int32 indexing; the launcher
// checks). Padding top/left (pT, pL) only: bottom/right padding changes Ho, Wo, which the
// host computes as in conv2d.cu. Grid (ceil(M/64), ceil(cols/64), G); the host falls back
// to version 1 where that exceeds CUDA's grid limits.
//
// Tested: tests/functional/test_conv_igemm.py (GPU vs the NumPy twin over conv2d's shape
// grid: strides, paddings incl. asymmetric, dilations, groups, depthwise, 1x1, sizes not
// multiples of the tile; float32 rtol 1e-4, float64 rtol 1e-10) and, with
// GPUDL_CONV_IMPL=igemm, the whole of tests/functional/test_conv.py.
// Without a GPU (every `make test`): tests/kernel_emulation runs this file on a CPU
// emulator (g++ + cuda_shim.h, CUDA threads as fibers, real barriers and shuffles)
// through gpudl's GPU code path against the twin, and again under AddressSanitizer.
// Benchmarked: benchmarks/kernels_conv.py (rows "gpudl-igemm", forward+backward with
// GPUDL_CONV_IMPL=igemm, beside the version-1 rows); version 2 is selected by default
// only for shapes where it measured faster (gpudl/functional/conv_igemm.py).
// (No common.cuh helpers are needed: plain loads, FMAs and barriers.)

namespace gpudl_igemm {

constexpr int BM = 64;        // output rows (pixels) per block
constexpr int BN = 64;        // output columns (channels of one group) per block
constexpr int BK = 16;        // reduction step
constexpr int THREADS = 256;  // 16 x 16 threads, 4 x 4 outputs each
constexpr int TM = 4, TN = 4;
constexpr int A_PER_THREAD = BK * BM / THREADS;  // 4
constexpr int B_PER_THREAD = BK * BN / THREADS;  // 4
static_assert(THREADS % BM == 0 && THREADS % BK == 0, "loader mapping assumes this");

struct Geometry {
  int N, C, H, W, O, Ho, Wo, kH, kW, sH, sW, pT, pL, dH, dW, G;
};

// MODE 0: forward (rows = output pixels (n, oh, ow), columns = output channels of group g,
//         reduction (c, kh, kw)). MODE 1: backward-data (rows = input pixels (n, h, w),
//         columns = input channels of group g, reduction (o, kh, kw)).
template <typename T, int MODE>
__device__ __forceinline__ void igemm_body(const T* __restrict__ a_src,  // x or dy
                                           const T* __restrict__ wt,     // (O, Cg, kH, kW)
                                           const T* __restrict__ bias,   // (O,) if has_bias
                                           T* __restrict__ out,          // y or dx
                                           int has_bias, const Geometry& q) {
  __shared__ T As[BK][BM];
  __shared__ T Bs[BK][BN + 1];  // +1: the B loader writes down columns

  const int Cg = q.C / q.G, Og = q.O / q.G;
  const int kHW = q.kH * q.kW;
  // Rows span the output pixels (forward) or the input pixels (backward-data).
  const int rows_h = MODE == 0 ? q.Ho : q.H;
  const int rows_w = MODE == 0 ? q.Wo : q.W;
  const int rows_l = rows_h * rows_w;
  const int M = q.N * rows_l;
  const int NC = MODE == 0 ? Og : Cg;   // GEMM columns
  const int K = (MODE == 0 ? Cg : Og) * kHW;
  const int g = blockIdx.z;
  const int m0 = blockIdx.x * BM;
  const int n0 = blockIdx.y * BN;
  const int tid = threadIdx.x;

  // A loader: this thread always gathers row a_m = tid % BM, reduction slots a_k0 + 4*i.
  const int a_m = tid % BM;
  const int a_k0 = tid / BM;
  const int am = m0 + a_m;
  const bool a_row_ok = am < M;
  int a_base = 0, a_h = 0, a_w = 0;  // a_src offset of (n, group's channel 0); pixel anchor
  if (a_row_ok) {
    const int n = am / rows_l;
    const int l = am - n * rows_l;
    const int r = l / rows_w;
    const int s = l - r * rows_w;
    if (MODE == 0) {
      a_base = (n * q.C + g * Cg) * q.H * q.W;
      a_h = r * q.sH - q.pT;  // input row of tap kh = 0
      a_w = s * q.sW - q.pL;
    } else {
      a_base = (n * q.O + g * Og) * q.Ho * q.Wo;
      a_h = r + q.pT;  // padded input row; = oh*sH + kh*dH for the output rows it feeds
      a_w = s + q.pL;
    }
  }
  // B loader: reduction slot b_k = tid % BK, columns b_n0 + 16*j.
  const int b_k = tid % BK;
  const int b_n0 = tid / BK;

  T a_reg[A_PER_THREAD], b_reg[B_PER_THREAD];
  auto load_tiles = [&](int k0) {
#pragma unroll
    for (int i = 0; i < A_PER_THREAD; ++i) {
      const int k = k0 + a_k0 + i * (THREADS / BM);
      T v = T(0);
      if (a_row_ok && k < K) {
        const int ch = k / kHW;  // c (forward) or o (backward-data) within the group
        const int t = k - ch * kHW;
        const int kh = t / q.kW;
        const int kw = t - kh * q.kW;
        if (MODE == 0) {
          const int h = a_h + kh * q.dH;
          const int w = a_w + kw * q.dW;
          if (h >= 0 && h < q.H && w >= 0 && w < q.W) v = a_src[a_base + (ch * q.H + h) * q.W + w];
        } else {
          const int hs = a_h - kh * q.dH;  // = oh*sH if this tap reads output row oh
          const int ws = a_w - kw * q.dW;
          if (hs >= 0 && ws >= 0 && hs % q.sH == 0 && ws % q.sW == 0) {
            const int oh = hs / q.sH;
            const int ow = ws / q.sW;
            if (oh < q.Ho && ow < q.Wo) v = a_src[a_base + (ch * q.Ho + oh) * q.Wo + ow];
          }
        }
      }
      a_reg[i] = v;
    }
#pragma unroll
    for (int j = 0; j < B_PER_THREAD; ++j) {
      const int col = n0 + b_n0 + j * (THREADS / BK);
      const int k = k0 + b_k;
      T v = T(0);
      if (col < NC && k < K) {
        if (MODE == 0) {
          v = wt[(g * Og + col) * K + k];  // w[g*Og + o] is a contiguous row of K
        } else {
          const int o = k / kHW;
          const int t = k - o * kHW;
          v = wt[((g * Og + o) * Cg + col) * kHW + t];
        }
      }
      b_reg[j] = v;
    }
  };

  T acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = T(0);

  const int tx = tid % 16;
  const int ty = tid / 16;
  load_tiles(0);
  for (int k0 = 0; k0 < K; k0 += BK) {
#pragma unroll
    for (int i = 0; i < A_PER_THREAD; ++i) As[a_k0 + i * (THREADS / BM)][a_m] = a_reg[i];
#pragma unroll
    for (int j = 0; j < B_PER_THREAD; ++j) Bs[b_k][b_n0 + j * (THREADS / BK)] = b_reg[j];
    __syncthreads();
    if (k0 + BK < K) load_tiles(k0 + BK);  // global loads overlap the FMAs below
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      T a[TM], b[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) a[i] = As[kk][tx + 16 * i];
#pragma unroll
      for (int j = 0; j < TN; ++j) b[j] = Bs[kk][ty + 16 * j];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();  // everyone is done with As/Bs before the next store
  }

  // Epilogue: row m -> (n, pixel l), column -> channel; out is (N, channels, rows_l).
  const int out_ch = MODE == 0 ? q.O : q.C;
  const int ch0 = g * NC;
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int m = m0 + tx + 16 * i;
    if (m >= M) continue;
    const int n = m / rows_l;
    const int l = m - n * rows_l;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int col = n0 + ty + 16 * j;
      if (col >= NC) continue;
      T v = acc[i][j];
      if (has_bias) v += bias[ch0 + col];
      out[(n * out_ch + ch0 + col) * rows_l + l] = v;
    }
  }
}

}  // namespace gpudl_igemm

template <typename T>
__global__ void __launch_bounds__(256)
conv2d_igemm_forward(const T* __restrict__ x,     // (N, C, H, W)
                     const T* __restrict__ w,     // (O, C/G, kH, kW)
                     const T* __restrict__ bias,  // (O,); read only if has_bias
                     T* __restrict__ y,           // (N, O, Ho, Wo)
                     int has_bias, int N, int C, int H, int W, int O, int Ho, int Wo, int kH,
                     int kW, int sH, int sW, int pT, int pL, int dH, int dW, int G) {
  const gpudl_igemm::Geometry q{N, C, H, W, O, Ho, Wo, kH, kW, sH, sW, pT, pL, dH, dW, G};
  gpudl_igemm::igemm_body<T, 0>(x, w, bias, y, has_bias, q);
}

template <typename T>
__global__ void __launch_bounds__(256)
conv2d_igemm_backward_data(const T* __restrict__ dy,  // (N, O, Ho, Wo)
                           const T* __restrict__ w,   // (O, C/G, kH, kW)
                           T* __restrict__ dx,        // (N, C, H, W)
                           int N, int C, int H, int W, int O, int Ho, int Wo, int kH, int kW,
                           int sH, int sW, int pT, int pL, int dH, int dW, int G) {
  const gpudl_igemm::Geometry q{N, C, H, W, O, Ho, Wo, kH, kW, sH, sW, pT, pL, dH, dW, G};
  gpudl_igemm::igemm_body<T, 1>(dy, w, w, dx, 0, q);
}
