// gru_cell.cu: the fused elementwise part of a GRU cell (torch gate order r, z, n).
//
// What: given the input projection gi = x @ W_ih^T + b_ih and the hidden projection
// gh = h @ W_hh^T + b_hh (kept apart because r multiplies only the hidden part of n):
//     r = sigmoid(gi_r + gh_r)        z = sigmoid(gi_z + gh_z)
//     n = tanh(gi_n + r * gh_n)       h_new = (1 - z) * n + z * h
// where x_r = x[:, 0:H], x_z = x[:, H:2H], x_n = x[:, 2H:3H].
//
// Shapes (all C-contiguous, one dtype T = float or double):
//     gi (N, 3H), gh (N, 3H), h (N, H), h_new (N, H)
//     backward: dh_new (N, H) -> dgi (N, 3H), dgh (N, 3H), dh_prev (N, H)
// One thread per (n, j), j < H, via a grid-stride loop over N*H. Thread (n, j) reads
// gi/gh[n, k*H + j] (k = 0..2) and owns every output element at (n, j) and (n, k*H + j).
// The backward recomputes r, z, n from the pre-activations instead of saving them.
// Launched by F.gru_cell, and once per time step by the whole-sequence layer F.gru (the
// rnn_scan primitive: gpudl/functional/_rnn_scan.py through GRUKernelCell in
// _rnn_kernels.py); there b_hr and b_hz ride in gi, so gh holds W_hh h + [0; 0; b_hn].
//
// Sigmoid is gpudl_sigmoid (0.5 * tanh(x / 2) + 0.5); the NumPy twin in
// gpudl/functional/_rnn_kernels.py uses the same formula.
//
// Tested: tests/functional/test_rnn.py (GPU vs twin, float32 rtol 1e-4, float64 rtol 1e-10;
// the twin vs a naive float64 per-element reference; check_grad of the primitive and cell)
// and tests/functional/test_recurrent.py (sequences with lengths and reverse, GPU vs CPU).
// Without a GPU (every `make test`): those modules' gpu tests run this file on the CPU
// emulator (tests/kernel_emulation: g++ + cuda_shim.h, CUDA threads as fibers, real
// barriers and shuffles) through gpudl's GPU code path, and again under AddressSanitizer
// (run_memcheck.py). Each instance the KernelSource in gpudl/functional/_rnn_kernels.py
// declares must be launched by those tests (tests/kernel_emulation/kernel_coverage.py).
// Benchmarked: benchmarks/kernels_rnn.py (LSTM rows; the GRU kernel has the same shape of
// work with three gates instead of four).
#include "common.cuh"

template <typename T>
__global__ void gru_pointwise_forward(const T* __restrict__ gi,  // (N, 3H)
                                      const T* __restrict__ gh,  // (N, 3H)
                                      const T* __restrict__ h,   // (N, H)
                                      T* __restrict__ h_new,     // (N, H)
                                      int N, int H) {
  const int total = N * H;  // < 2^31: the launcher checks every array's size
  GPUDL_LOOP(idx, total) {
    const int n = idx / H;
    const int j = idx - n * H;
    // 3NH < 2^31 because gi and gh passed the launcher's size check.
    const long long row_off = (long long)n * 3 * H;
    const T* xi = gi + row_off;
    const T* xh = gh + row_off;
    const T r = gpudl_sigmoid<T>(xi[j] + xh[j]);
    const T z = gpudl_sigmoid<T>(xi[H + j] + xh[H + j]);
    const T nn = gpudl_tanh<T>(xi[2 * H + j] + r * xh[2 * H + j]);
    h_new[idx] = (T(1) - z) * nn + z * h[idx];
  }
}

// Cotangent of h_new -> cotangents of (gi, gh, h).
//   dn_pre = dh_new * (1 - z) * (1 - n^2)      dz_pre = dh_new * (h - n) * z (1 - z)
//   dr_pre = dn_pre * gh_n * r (1 - r)         dh_prev = dh_new * z
//   dgi = [dr_pre, dz_pre, dn_pre]             dgh = [dr_pre, dz_pre, dn_pre * r]
template <typename T>
__global__ void gru_pointwise_backward(const T* __restrict__ gi,      // (N, 3H)
                                       const T* __restrict__ gh,      // (N, 3H)
                                       const T* __restrict__ h,       // (N, H)
                                       const T* __restrict__ dh_new,  // (N, H)
                                       T* __restrict__ dgi,           // (N, 3H)
                                       T* __restrict__ dgh,           // (N, 3H)
                                       T* __restrict__ dh_prev,       // (N, H)
                                       int N, int H) {
  const int total = N * H;
  GPUDL_LOOP(idx, total) {
    const int n = idx / H;
    const int j = idx - n * H;
    const long long row_off = (long long)n * 3 * H;
    const T* xi = gi + row_off;
    const T* xh = gh + row_off;
    const T ghn = xh[2 * H + j];
    const T r = gpudl_sigmoid<T>(xi[j] + xh[j]);
    const T z = gpudl_sigmoid<T>(xi[H + j] + xh[H + j]);
    const T nn = gpudl_tanh<T>(xi[2 * H + j] + r * ghn);
    const T g = dh_new[idx];
    const T hv = h[idx];
    const T dn_pre = g * (T(1) - z) * (T(1) - nn * nn);
    const T dz_pre = g * (hv - nn) * z * (T(1) - z);
    const T dr_pre = dn_pre * ghn * r * (T(1) - r);
    T* dxi = dgi + row_off;
    T* dxh = dgh + row_off;
    dxi[j] = dr_pre;
    dxi[H + j] = dz_pre;
    dxi[2 * H + j] = dn_pre;
    dxh[j] = dr_pre;
    dxh[H + j] = dz_pre;
    dxh[2 * H + j] = dn_pre * r;
    dh_prev[idx] = g * z;
  }
}
