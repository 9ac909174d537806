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
//   conv2d_igemm_backward_weight  dw (O, C/G, kH, kW) from x and dy: a GEMM that reduces
//       over the output pixels into the small weight gradient,
//       DW_g (Og x K) = dY_g^T (Og x M) @ A_g (M x K),  M = N*Ho*Wo, K = Cg*kH*kW
//       dY_g[(n, oh, ow), o] = dy[n, g*Og + o, oh, ow];  A_g: the forward's gather from x
//   conv2d_igemm_sum_splits  dw = (dw if accumulate) + sum over s of ws[s]: the split-K
//       combine of backward-weight (below).
//
// Tiling (forward, backward-data): a block of 256 threads computes a 64 (M) x 64 (Og or Cg)
// tile of its group's output with K in steps of 16. Per step the block stages A (16 x 64,
// gathered, zero for padding and out-of-range rows) and B (16 x 64) in shared memory; every
// thread owns a 4 x 4 register micro-tile at rows tx + 16*i and columns ty + 16*j (tx = tid
// % 16, ty = tid / 16), so shared-memory reads are conflict-free or broadcasts and
// consecutive threads store consecutive output pixels. The next step's tile is loaded into
// registers while the current one is multiplied (one shared buffer, two barriers per step).
// Plain FMA in T (float or double): no tensor cores, no TF32, so float32 matches the NumPy
// twin to 1e-4; the summation order differs from cuBLAS (parity is to rounding, not
// bitwise).
//
// Backward-weight tiling and split-K: M is long (the whole batch's pixels) and the output
// small (Og x K), so output tiles alone would leave most of a GPU idle. The grid is
// (k tiles * splits, Og tiles, G): a block computes a 64 (o) x 64 (k) tile of DW_g over one
// split's slice of M (m_chunk consecutive pixels, a multiple of the step) in steps of 32
// pixels, staging dY (32 x 64) and the gathered A (32 x 64) in shared memory with the same
// register prefetch, two barriers per step and 4 x 4 micro-tiles (thread (tx, ty) owns
// o = ty + 16*i, k = tx + 16*j, so stores of a dW row coalesce). The loaders map a warp to 32
// consecutive pixels of one channel plane, so dy reads coalesce (x reads too when sW = 1);
// the column half of every address is decoded once per block, the pixel half once per step.
// Each split writes its partial tile to a workspace ws (splits, G, Og, K); then
// conv2d_igemm_sum_splits adds the splits in index order into dw (and adds to dw's running
// total across batch chunks). No atomics: the result is deterministic, bit-identical from
// run to run for a given split count (the host's heuristic depends only on the shapes). With
// one split and one batch chunk the kernel writes dw itself. The split count: enough
// blocks for about two waves of 132 SMs (H100), each split at least 8 steps long
// (_conv_igemm_kernels.weight_splits). The workspace costs
// splits * O * K elements, small next to the im2col matrix version 1 writes (K * N*Ho*Wo).
//
// Shapes: all arrays C-contiguous, one dtype T; sizes < 2^31 (int32 indexing; the launcher
// checks, the host splits the batch so x and dy slices stay below it and caps splits so
// splits * O * K does too). Padding top/left (pT, pL) only: bottom/right padding changes
// Ho, Wo, which the host computes as in conv2d.cu. Grid (ceil(M/64), ceil(cols/64), G) for
// forward and backward-data, (ceil(K/64) * splits, ceil(Og/64), G) for backward-weight; the
// host falls back to version 1 where that exceeds CUDA's grid limits.
//
// Tested: tests/functional/test_conv_igemm.py (GPU vs the NumPy twin over conv2d's shape
// grid: strides, paddings incl. asymmetric, dilations, groups, depthwise, 1x1, sizes not
// multiples of the tile; backward-weight with the heuristic split count and with forced
// splits that leave a short last slice, and across batch chunks; float32 rtol 1e-4,
// float64 rtol 1e-10) and, with GPUDL_CONV_IMPL=igemm, the whole of
// tests/functional/test_conv.py (tests/functional/test_conv_transpose.py runs
// conv_transpose2d and conv1d on this file too).
// Without a GPU (every `make test`): those modules' gpu tests run this file on the CPU
// emulator (tests/kernel_emulation: g++ + cuda_shim.h, CUDA threads as fibers, real
// barriers and shuffles) through gpudl's GPU code path, and again under AddressSanitizer
// (run_memcheck.py). Each instance the KernelSource in
// gpudl/functional/_conv_igemm_kernels.py declares must be launched by those tests
// (tests/kernel_emulation/kernel_coverage.py).
// Benchmarked: benchmarks/kernels_conv.py (row "gpudl-igemm": forward+backward with
// GPUDL_CONV_IMPL=igemm, all three products on this file; rows "fwd-*", "bwd-data-*" per
// product, beside the version-1 rows); version 2 is selected by default only for shapes
// where it measured faster (gpudl/functional/_conv_igemm_kernels.py). Backward-weight's
// speed is unmeasured so far.
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

// ---- backward-weight: dW_g (Og x K) = dY_g^T (Og x M) @ A_g (M x K), split-K over M ----
constexpr int WK = 32;                              // pixels (reduction) per step
constexpr int W_PER_THREAD = WK * BN / THREADS;     // 8 elements of each operand per step
static_assert(BM == BN && THREADS % WK == 0, "the weight loader shares one mapping");

// One block: the (64 o x 64 k) tile (blockIdx.y, kt) of group blockIdx.z, reduced over the
// pixels [m_begin, m_end) of split `split`, written to ws[split] (G, Og, K).
template <typename T>
__device__ __forceinline__ void weight_body(const T* __restrict__ x,   // (N, C, H, W)
                                            const T* __restrict__ dy,  // (N, O, Ho, Wo)
                                            T* __restrict__ ws,        // (splits, G, Og, K)
                                            int m_chunk, const Geometry& q) {
  __shared__ T Ds[WK][BM + 1];  // dY tile, [pixel][o]; +1: the loaders write down columns
  __shared__ T Xs[WK][BN + 1];  // A tile,  [pixel][k]

  const int Cg = q.C / q.G, Og = q.O / q.G;
  const int kHW = q.kH * q.kW;
  const int K = Cg * kHW;
  const int L = q.Ho * q.Wo;
  const int M = q.N * L;
  const int k_tiles = (K + BN - 1) / BN;
  const int split = blockIdx.x / k_tiles;
  const int k0 = (blockIdx.x - split * k_tiles) * BN;
  const int o0 = blockIdx.y * BM;
  const int g = blockIdx.z;
  const int tid = threadIdx.x;
  // This split's pixels; written so nothing overflows when M is close to 2^31.
  const int m_begin = split * m_chunk;  // < M: the host launches ceil(M / m_chunk) splits
  const int m_len = m_chunk < M - m_begin ? m_chunk : M - m_begin;
  const int steps = m_len > 0 ? (m_len - 1) / WK + 1 : 0;

  // Loader: pixel slot p = tid % WK (a warp reads 32 consecutive pixels of one channel
  // plane: coalesced for dY, and for x when sW = 1), columns c0 + 8*j of both tiles. The
  // column part of each address is fixed for the block, so it is decoded once here.
  const int p = tid % WK;
  const int c0 = tid / WK;
  int d_off[W_PER_THREAD];             // (g*Og + o) * L, or -1 past Og
  int x_off[W_PER_THREAD];             // (g*Cg + c) * H * W, or -1 past K
  int x_dh[W_PER_THREAD], x_dw[W_PER_THREAD];  // kh*dH, kw*dW
#pragma unroll
  for (int j = 0; j < W_PER_THREAD; ++j) {
    const int o = o0 + c0 + j * (THREADS / WK);
    d_off[j] = o < Og ? (g * Og + o) * L : -1;
    const int k = k0 + c0 + j * (THREADS / WK);
    x_off[j] = -1;
    x_dh[j] = x_dw[j] = 0;
    if (k < K) {
      const int c = k / kHW;
      const int t = k - c * kHW;
      const int kh = t / q.kW;
      x_off[j] = (g * Cg + c) * q.H * q.W;
      x_dh[j] = kh * q.dH;
      x_dw[j] = (t - kh * q.kW) * q.dW;
    }
  }

  T d_reg[W_PER_THREAD], x_reg[W_PER_THREAD];
  auto load_tiles = [&](int step) {
    const int ms = m_begin + step * WK;
    const bool ok = p < m_len - step * WK;  // this slot's pixel is inside the split
    int d_base = 0, x_base = 0, h0 = 0, w0 = 0;
    if (ok) {
      const int m = ms + p;
      const int n = m / L;
      const int l = m - n * L;
      const int oh = l / q.Wo;
      const int ow = l - oh * q.Wo;
      d_base = n * q.O * L + l;
      x_base = n * q.C * q.H * q.W;
      h0 = oh * q.sH - q.pT;  // input row of tap kh = 0
      w0 = ow * q.sW - q.pL;
    }
#pragma unroll
    for (int j = 0; j < W_PER_THREAD; ++j) {
      T v = T(0);
      if (ok && d_off[j] >= 0) v = dy[d_base + d_off[j]];
      d_reg[j] = v;
      T u = T(0);
      if (ok && x_off[j] >= 0) {
        const int h = h0 + x_dh[j];
        const int w = w0 + x_dw[j];
        if (h >= 0 && h < q.H && w >= 0 && w < q.W) u = x[x_base + x_off[j] + h * q.W + w];
      }
      x_reg[j] = u;
    }
  };

  T acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = T(0);

  // Thread (tx, ty) owns o = o0 + ty + 16*i, k = k0 + tx + 16*j: consecutive threads write
  // consecutive k of a dW row, and read consecutive Xs entries (Ds reads are broadcasts).
  const int tx = tid % 16;
  const int ty = tid / 16;
  if (steps > 0) load_tiles(0);
  for (int s = 0; s < steps; ++s) {
#pragma unroll
    for (int j = 0; j < W_PER_THREAD; ++j) {
      Ds[p][c0 + j * (THREADS / WK)] = d_reg[j];
      Xs[p][c0 + j * (THREADS / WK)] = x_reg[j];
    }
    __syncthreads();
    if (s + 1 < steps) load_tiles(s + 1);  // global loads overlap the FMAs below
#pragma unroll
    for (int kk = 0; kk < WK; ++kk) {
      T a[TM], b[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) a[i] = Ds[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < TN; ++j) b[j] = Xs[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();  // everyone is done with Ds/Xs before the next store
  }

  // ws[split, g, o, k]: (split*G + g)*Og = split*O + g*Og, and splits*O*K < 2^31 (host).
  T* out = ws + (split * q.O + g * Og) * K;
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int o = o0 + ty + 16 * i;
    if (o >= Og) continue;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int k = k0 + tx + 16 * j;
      if (k < K) out[o * K + k] = acc[i][j];
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

template <typename T>
__global__ void __launch_bounds__(256)
conv2d_igemm_backward_weight(const T* __restrict__ x,   // (N, C, H, W)
                             const T* __restrict__ dy,  // (N, O, Ho, Wo)
                             T* __restrict__ ws,        // (splits, O, C/G*kH*kW)
                             int m_chunk, int N, int C, int H, int W, int O, int Ho, int Wo,
                             int kH, int kW, int sH, int sW, int pT, int pL, int dH, int dW,
                             int G) {
  const gpudl_igemm::Geometry q{N, C, H, W, O, Ho, Wo, kH, kW, sH, sW, pT, pL, dH, dW, G};
  gpudl_igemm::weight_body<T>(x, dy, ws, m_chunk, q);
}

// dw[i] = (accumulate ? dw[i] : 0) + ws[0, i] + ws[1, i] + ... in that order: the split-K
// partials (and, across batch chunks, the running total) combined deterministically.
template <typename T>
__global__ void __launch_bounds__(256)
conv2d_igemm_sum_splits(const T* __restrict__ ws,  // (splits, size)
                        T* __restrict__ dw,        // (size,)
                        int splits, int size, int accumulate) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;  // grid: ceil(size / 256) blocks
  if (i >= size) return;
  T v = accumulate ? dw[i] : T(0);
  for (int s = 0; s < splits; ++s) v += ws[s * size + i];  // < splits*size < 2^31 (host)
  dw[i] = v;
}
