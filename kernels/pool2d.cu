// pool2d.cu: max and average 2-D pooling, forward and backward (NCHW).
//
// What:
//   max_pool2d_forward   x (NC, H, W) -> y (NC, Ho, Wo), argmax (NC, Ho, Wo) int32
//       y[p, oh, ow] = max over the window rows oh*sH - pH + [0, kH), cols ow*sW - pW + [0, kW)
//       that lie inside the input (padding counts as -inf, i.e. is skipped). argmax holds
//       h*W + w of the chosen element: the first maximum in (kh, kw) scan order on ties, as
//       torch; a NaN wins (the first NaN), as numpy.argmax and the NumPy twin.
//   max_pool2d_backward  dy (NC, Ho, Wo), argmax -> dx (NC, H, W)
//       dx[p, h, w] = sum of dy[p, oh, ow] over the windows that contain (h, w) and chose it.
//       Gather form: one thread per dx element visits only the ceil(k/s)^2 windows that
//       cover it, so overlapping windows (3x3 stride 2) need no atomics and the sum is
//       deterministic (windows in (oh, ow) order, as the twin's bincount).
//   avg_pool2d_forward   y = sum of the window's in-bounds elements / divisor, where the
//       divisor is kH*kW (count_include_pad: padding counts, as torch; windows never run
//       past the padded input without ceil_mode) or the number of in-bounds elements.
//   avg_pool2d_backward  dx[p, h, w] = sum over windows covering (h, w) of dy / divisor.
//
// Shapes: NC = N*C planes; all arrays C-contiguous, T = float or double. The host checks
// padding <= kernel/2 (as torch), so every window holds at least one input element.
//
// Tested: tests/functional/test_pooling.py (GPU vs the NumPy twin, float32 rtol 1e-4,
// float64 rtol 1e-10; the twin vs naive float64 loops incl. overlapping windows and
// padding; check_grad of every primitive with distinct values, away from ties).
// Without a GPU (every `make test`): that module's gpu tests run this file on the CPU
// emulator (tests/kernel_emulation: g++ + cuda_shim.h, CUDA threads as fibers, real
// barriers and shuffles) through gpudl's GPU code path, and again under AddressSanitizer
// (run_memcheck.py). Each instance the KernelSource in gpudl/functional/_pool_kernels.py
// declares must be launched by those tests (tests/kernel_emulation/kernel_coverage.py).
// Benchmarked: benchmarks/kernels_pool.py (max and avg, forward and forward+backward, at
// LeNet 2x2, ResNet-stem 3x3/2 pad 1 and VGG 2x2 layers, vs torch F.max_pool2d/avg_pool2d).
#include "common.cuh"

// First covering window index along one axis: the smallest o with o*s - p + k - 1 >= i.
__device__ __forceinline__ int pool_first_window(int i, int k, int s, int p) {
  const int num = i + p - k + 1;
  return num <= 0 ? 0 : (num + s - 1) / s;
}

// Last covering window index: the largest o with o*s - p <= i, clipped to n_out - 1.
__device__ __forceinline__ int pool_last_window(int i, int s, int p, int n_out) {
  const int o = (i + p) / s;  // i + p >= 0
  return o < n_out - 1 ? o : n_out - 1;
}

template <typename T>
__global__ void max_pool2d_forward(const T* __restrict__ x,   // (NC, H, W)
                                   T* __restrict__ y,         // (NC, Ho, Wo)
                                   int* __restrict__ argmax,  // (NC, Ho, Wo)
                                   int NC, int H, int W, int Ho, int Wo, int kH, int kW,
                                   int sH, int sW, int pH, int pW) {
  const int total = NC * Ho * Wo;
  GPUDL_LOOP(idx, total) {
    const int ow = idx % Wo;
    const int t = idx / Wo;
    const int oh = t % Ho;
    const int p = t / Ho;
    const T* plane = x + p * H * W;  // p*H*W < x.size
    const int h0 = oh * sH - pH;
    const int w0 = ow * sW - pW;
    T best = gpudl_neg_inf<T>();
    int best_i = -1;
    for (int kh = 0; kh < kH; ++kh) {
      const int h = h0 + kh;
      if (h < 0 || h >= H) continue;
      for (int kw = 0; kw < kW; ++kw) {
        const int w = w0 + kw;
        if (w < 0 || w >= W) continue;
        const T v = plane[h * W + w];
        // Strict '>' keeps the first maximum; the first NaN wins and then stays.
        if (best_i < 0 || v > best || (v != v && best == best)) {
          best = v;
          best_i = h * W + w;
        }
      }
    }
    y[idx] = best;
    argmax[idx] = best_i;
  }
}

template <typename T>
__global__ void max_pool2d_backward(const T* __restrict__ dy,       // (NC, Ho, Wo)
                                    const int* __restrict__ argmax,  // (NC, Ho, Wo)
                                    T* __restrict__ dx,              // (NC, H, W)
                                    int NC, int H, int W, int Ho, int Wo, int kH, int kW,
                                    int sH, int sW, int pH, int pW) {
  const int total = NC * H * W;
  GPUDL_LOOP(idx, total) {
    const int w = idx % W;
    const int t = idx / W;
    const int h = t % H;
    const int p = t / H;
    const int here = h * W + w;
    const int base = p * Ho * Wo;
    const int oh1 = pool_last_window(h, sH, pH, Ho);
    const int ow0 = pool_first_window(w, kW, sW, pW);
    const int ow1 = pool_last_window(w, sW, pW, Wo);
    T sum = T(0);
    for (int oh = pool_first_window(h, kH, sH, pH); oh <= oh1; ++oh) {
      for (int ow = ow0; ow <= ow1; ++ow) {
        const int o = base + oh * Wo + ow;
        if (argmax[o] == here) sum += dy[o];
      }
    }
    dx[idx] = sum;
  }
}

// Divisor of window (oh, ow), torch's formula without ceil_mode.
__device__ __forceinline__ int avg_pool_divisor(int oh, int ow, int H, int W, int kH, int kW,
                                                int sH, int sW, int pH, int pW,
                                                int count_include_pad) {
  int h0 = oh * sH - pH, w0 = ow * sW - pW;
  int h1 = min(h0 + kH, H + pH), w1 = min(w0 + kW, W + pW);
  if (count_include_pad) return (h1 - h0) * (w1 - w0);
  h0 = max(h0, 0);
  w0 = max(w0, 0);
  h1 = min(h1, H);
  w1 = min(w1, W);
  return (h1 - h0) * (w1 - w0);
}

template <typename T>
__global__ void avg_pool2d_forward(const T* __restrict__ x,  // (NC, H, W)
                                   T* __restrict__ y,        // (NC, Ho, Wo)
                                   int NC, int H, int W, int Ho, int Wo, int kH, int kW,
                                   int sH, int sW, int pH, int pW, int count_include_pad) {
  const int total = NC * Ho * Wo;
  GPUDL_LOOP(idx, total) {
    const int ow = idx % Wo;
    const int t = idx / Wo;
    const int oh = t % Ho;
    const int p = t / Ho;
    const T* plane = x + p * H * W;
    const int h0 = oh * sH - pH;
    const int w0 = ow * sW - pW;
    T sum = T(0);
    for (int kh = 0; kh < kH; ++kh) {
      const int h = h0 + kh;
      if (h < 0 || h >= H) continue;
      for (int kw = 0; kw < kW; ++kw) {
        const int w = w0 + kw;
        if (w < 0 || w >= W) continue;
        sum += plane[h * W + w];
      }
    }
    y[idx] = sum / T(avg_pool_divisor(oh, ow, H, W, kH, kW, sH, sW, pH, pW, count_include_pad));
  }
}

template <typename T>
__global__ void avg_pool2d_backward(const T* __restrict__ dy,  // (NC, Ho, Wo)
                                    T* __restrict__ dx,        // (NC, H, W)
                                    int NC, int H, int W, int Ho, int Wo, int kH, int kW,
                                    int sH, int sW, int pH, int pW, int count_include_pad) {
  const int total = NC * H * W;
  GPUDL_LOOP(idx, total) {
    const int w = idx % W;
    const int t = idx / W;
    const int h = t % H;
    const int p = t / H;
    const int base = p * Ho * Wo;
    const int oh1 = pool_last_window(h, sH, pH, Ho);
    const int ow0 = pool_first_window(w, kW, sW, pW);
    const int ow1 = pool_last_window(w, sW, pW, Wo);
    T sum = T(0);
    for (int oh = pool_first_window(h, kH, sH, pH); oh <= oh1; ++oh) {
      for (int ow = ow0; ow <= ow1; ++ow) {
        const int div = avg_pool_divisor(oh, ow, H, W, kH, kW, sH, sW, pH, pW, count_include_pad);
        sum += dy[base + oh * Wo + ow] / T(div);
      }
    }
    dx[idx] = sum;
  }
}
