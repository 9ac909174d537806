// lstm_cell.cu: the fused elementwise part of an LSTM cell (torch gate order i, f, g, o).
//
// What: given gate pre-activations gates = x @ W_ih^T + b_ih + h @ W_hh^T + b_hh and the
// previous cell state c, compute
//     i = sigmoid(gates[:, 0:H])      f = sigmoid(gates[:, H:2H])
//     g = tanh(gates[:, 2H:3H])       o = sigmoid(gates[:, 3H:4H])
//     c_new = f * c + i * g           h_new = o * tanh(c_new)
// The GEMMs stay ordinary matmuls; this kernel replaces ~15 elementwise launches per step.
// Launched by F.lstm_cell, and once per time step by the whole-sequence layer F.lstm (the
// rnn_scan primitive: gpudl/functional/_rnn_scan.py through LSTMKernelCell in
// _rnn_kernels.py, which transposes its feature-major (4H, N) gates to (N, 4H) for it).
//
// Shapes (all C-contiguous, one dtype T = float or double):
//     gates (N, 4H), c (N, H), h_new (N, H), c_new (N, H)
//     backward: dh, dc (N, H) -> dgates (N, 4H), dc_prev (N, H)
// One thread per (n, j), j < H, via a grid-stride loop over N*H. Thread (n, j) reads the
// four gate pre-activations gates[n, k*H + j] (k = 0..3) and owns every output element
// at (n, j) and (n, k*H + j), so no two threads write the same address.
// The backward recomputes the gate activations from the pre-activations (4 transcendental
// functions) instead of saving them: it keeps the forward's memory traffic minimal.
//
// Sigmoid is gpudl_sigmoid (0.5 * tanh(x / 2) + 0.5, never overflows); the NumPy twin in
// gpudl/functional/_rnn_kernels.py uses the same formula so the two agree to rounding.
//
// Tested: tests/functional/test_rnn.py (GPU vs twin, float32 rtol 1e-4, float64 rtol 1e-10;
// the twin vs a naive float64 per-element reference; check_grad of the primitive and cell)
// and tests/functional/test_recurrent.py (sequences with lengths and reverse, GPU vs CPU).
// Without a GPU (every `make test`): those modules' gpu tests run this file on the CPU
// emulator (tests/kernel_emulation: g++ + cuda_shim.h, CUDA threads as fibers, real
// barriers and shuffles) through gpudl's GPU code path, and again under AddressSanitizer
// (run_memcheck.py). Each instance the KernelSource in gpudl/functional/_rnn_kernels.py
// declares must be launched by those tests (tests/kernel_emulation/kernel_coverage.py).
// Benchmarked: benchmarks/kernels_rnn.py (sequence forward+backward vs a CuPy composite
// cell, torch nn.LSTM (cuDNN) and a torch LSTMCell loop).
#include "common.cuh"

template <typename T>
__global__ void lstm_pointwise_forward(const T* __restrict__ gates,  // (N, 4H)
                                       const T* __restrict__ c,      // (N, H)
                                       T* __restrict__ h_new,        // (N, H)
                                       T* __restrict__ c_new,        // (N, H)
                                       int N, int H) {
  const int total = N * H;  // < 2^31: the launcher checks every array's size
  GPUDL_LOOP(idx, total) {
    const int n = idx / H;
    const int j = idx - n * H;
    // Row n of gates starts at n * 4H; 4NH < 2^31 because gates passed the launcher's check.
    const T* row = gates + (long long)n * 4 * H;
    const T gi = gpudl_sigmoid<T>(row[j]);
    const T gf = gpudl_sigmoid<T>(row[H + j]);
    const T gg = gpudl_tanh<T>(row[2 * H + j]);
    const T go = gpudl_sigmoid<T>(row[3 * H + j]);
    const T cn = gf * c[idx] + gi * gg;
    c_new[idx] = cn;
    h_new[idx] = go * gpudl_tanh<T>(cn);
  }
}

// Cotangents of (h_new, c_new) -> cotangents of (gates, c).
//   dc_total = dc + dh * o * (1 - tanh(c_new)^2)
//   d i_pre = dc_total * g * i (1 - i)      d f_pre = dc_total * c * f (1 - f)
//   d g_pre = dc_total * i * (1 - g^2)      d o_pre = dh * tanh(c_new) * o (1 - o)
//   dc_prev = dc_total * f
template <typename T>
__global__ void lstm_pointwise_backward(const T* __restrict__ gates,   // (N, 4H)
                                        const T* __restrict__ c,       // (N, H)
                                        const T* __restrict__ c_new,   // (N, H) forward output
                                        const T* __restrict__ dh,      // (N, H)
                                        const T* __restrict__ dc,      // (N, H)
                                        T* __restrict__ dgates,        // (N, 4H)
                                        T* __restrict__ dc_prev,       // (N, H)
                                        int N, int H) {
  const int total = N * H;
  GPUDL_LOOP(idx, total) {
    const int n = idx / H;
    const int j = idx - n * H;
    const long long row_off = (long long)n * 4 * H;
    const T* row = gates + row_off;
    T* drow = dgates + row_off;
    const T gi = gpudl_sigmoid<T>(row[j]);
    const T gf = gpudl_sigmoid<T>(row[H + j]);
    const T gg = gpudl_tanh<T>(row[2 * H + j]);
    const T go = gpudl_sigmoid<T>(row[3 * H + j]);
    const T tc = gpudl_tanh<T>(c_new[idx]);
    const T dhv = dh[idx];
    const T dct = dc[idx] + dhv * go * (T(1) - tc * tc);
    drow[j] = dct * gg * gi * (T(1) - gi);
    drow[H + j] = dct * c[idx] * gf * (T(1) - gf);
    drow[2 * H + j] = dct * gi * (T(1) - gg * gg);
    drow[3 * H + j] = dhv * tc * go * (T(1) - go);
    dc_prev[idx] = dct * gf;
  }
}
