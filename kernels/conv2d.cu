// conv2d.cu: im2col and col2im for 2-D convolution (version 1: im2col + cuBLAS GEMM).
//
// What: conv2d(x, w) for NCHW x and OIHW w is computed as GEMMs on an unrolled input.
//   conv2d_im2col  x (N, C, H, W) -> cols (C*kH*kW, N*Ho*Wo)
//       cols[(c*kH + kh)*kW + kw, (n*Ho + oh)*Wo + ow] = x[n, c, oh*sH - pT + kh*dH,
//                                                           ow*sW - pL + kw*dW]
//       (0 where that position falls into the zero padding).
//   conv2d_col2im  dcols (C*kH*kW, N*Ho*Wo) -> dx (N, C, H, W), the adjoint of im2col:
//       dx[n, c, h, w] = sum of dcols entries whose im2col source is (n, c, h, w).
//       Gather form: one thread per dx element loops over the kH*kW kernel offsets and
//       reads the (at most one) output position (oh, ow) each offset maps it to, so no
//       atomics are needed and the result is deterministic. Offsets are summed in (kh, kw)
//       order, the same order as the NumPy twin's col2im loop.
// The GEMMs run through cupy.matmul (cuBLAS), grouped as one batched product over groups:
//   forward          y[g]   = w[g] (Og, K) @ cols[g] (K, N*L)        K = Cg*kH*kW, L = Ho*Wo
//   backward-data    dcols  = w[g]^T (K, Og) @ dy[g] (Og, N*L)  then col2im
//   backward-weight  dw[g]  = dy[g] (Og, N*L) @ cols[g]^T (N*L, K)
// (rows of cols for group g are the contiguous block [g*K, (g+1)*K) because channels of a
// group are contiguous). The host code (gpudl/functional/_conv_kernels.py) splits the batch
// so that cols stays under 2^31 elements (int32 indexing here) and a memory budget.
//
// Shapes: all arrays C-contiguous, one dtype T (float or double). Padding is top/left
// (pT, pL) here; bottom/right padding only changes Ho, Wo, which the host computes:
//   Ho = (H + pT + pB - dH*(kH-1) - 1) / sH + 1 (floor), the same for Wo.
//
// Tested: tests/functional/test_conv.py (GPU vs the NumPy twin, float32 rtol 1e-4, float64
// rtol 1e-10; the twin vs a naive float64 loop reference over strides, paddings incl.
// asymmetric and "same", dilations, groups incl. depthwise, 1x1; check_grad of every
// primitive and of grad-of-grad) and tests/functional/test_conv_transpose.py
// (conv_transpose2d and conv1d, the same checks).
// Without a GPU (every `make test`): those modules' gpu tests run this file on the CPU
// emulator (tests/kernel_emulation: g++ + cuda_shim.h, CUDA threads as fibers, real
// barriers and shuffles) through gpudl's GPU code path, and again under AddressSanitizer
// (run_memcheck.py). Each instance the KernelSource in gpudl/functional/_conv_kernels.py
// declares must be launched by those tests (tests/kernel_emulation/kernel_coverage.py).
// Benchmarked: benchmarks/kernels_conv.py (VGG / LeNet / CIFAR layers, forward+backward,
// TFLOP/s, vs a CuPy composite and torch cuDNN).
//
// Version 2 (not written yet): an implicit-GEMM kernel that never materialises cols. Each
// block computes a (BM x BN) tile of the output matrix Y (O, N*L) with K = Cg*kH*kW as the
// reduction; the B-tile (BK x BN) is gathered from x on the fly with the im2col index map
// above into shared memory (double-buffered, cp.async on sm_80+), A-tiles from w; register
// tiling (e.g. 8x8 per thread) or WMMA/mma.sync for TF32/FP16. Backward-data is the same
// kernel on the flipped, transposed weight with the stride as a dilation of dy (or the
// gather form above fused into the GEMM), backward-weight a split-K reduction over N*L.
// It saves the cols round trip through memory (K*N*L elements written and read), which
// dominates for small channel counts (LeNet, the CIFAR stem).
#include "common.cuh"

template <typename T>
__global__ void conv2d_im2col(const T* __restrict__ x,  // (N, C, H, W)
                              T* __restrict__ cols,     // (C*kH*kW, N*Ho*Wo)
                              int N, int C, int H, int W, int Ho, int Wo, int kH, int kW,
                              int sH, int sW, int pT, int pL, int dH, int dW) {
  const int L = Ho * Wo;
  const int NL = N * L;
  const int total = C * kH * kW * NL;  // == cols.size < 2^31 (checked by the launcher)
  GPUDL_LOOP(idx, total) {
    // Column-fastest order: neighbouring threads write neighbouring cols entries.
    const int col = idx % NL;
    const int row = idx / NL;
    const int n = col / L;
    const int l = col - n * L;
    const int oh = l / Wo;
    const int ow = l - oh * Wo;
    const int kw = row % kW;
    const int t = row / kW;
    const int kh = t % kH;
    const int c = t / kH;
    const int h = oh * sH - pT + kh * dH;
    const int w = ow * sW - pL + kw * dW;
    T v = T(0);
    if (h >= 0 && h < H && w >= 0 && w < W) {
      v = x[((n * C + c) * H + h) * W + w];  // < x.size < 2^31
    }
    cols[idx] = v;
  }
}

template <typename T>
__global__ void conv2d_col2im(const T* __restrict__ dcols,  // (C*kH*kW, N*Ho*Wo)
                              T* __restrict__ dx,           // (N, C, H, W)
                              int N, int C, int H, int W, int Ho, int Wo, int kH, int kW,
                              int sH, int sW, int pT, int pL, int dH, int dW) {
  const int NL = N * Ho * Wo;
  const int total = N * C * H * W;  // == dx.size
  GPUDL_LOOP(idx, total) {
    const int w = idx % W;
    int t = idx / W;
    const int h = t % H;
    t /= H;
    const int c = t % C;
    const int n = t / C;
    const int hp = h + pT;  // row in the padded input
    const int wp = w + pL;
    T sum = T(0);
    for (int kh = 0; kh < kH; ++kh) {
      const int ht = hp - kh * dH;  // = oh * sH for the output row that reads (h, kh)
      if (ht < 0) break;            // ht only decreases with kh
      if (ht % sH != 0) continue;
      const int oh = ht / sH;
      if (oh >= Ho) continue;
      for (int kw = 0; kw < kW; ++kw) {
        const int wt = wp - kw * dW;
        if (wt < 0) break;
        if (wt % sW != 0) continue;
        const int ow = wt / sW;
        if (ow >= Wo) continue;
        const int row = (c * kH + kh) * kW + kw;
        const int col = (n * Ho + oh) * Wo + ow;
        sum += dcols[row * NL + col];  // < dcols.size < 2^31
      }
    }
    dx[idx] = sum;
  }
}
