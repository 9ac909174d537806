// graph.cu: row sums and maxima over a CSR plan (message passing, segment sums, gathers).
//
// What: a plan is a sparse matrix S with R rows in CSR form, built once per graph
// (gpudl/functional/_graph_structure.py): indptr (R+1) and, for each nonzero k in row
// order, col[k] = the row of x it reads and wid[k] = the row of w that scales it.
//   csr_sum           out[r, j]    = sum_{k in row r} x[col[k], j]
//   csr_weighted_sum  out[r, h, c] = sum_{k in row r} w[wid[k], h] * x[col[k], h, c]
//   csr_max           out[r, j]    = max_{k in row r} x[col[k], j]; `fill` for an empty row
// GCN's propagation is csr_weighted_sum with one head (w = the normalised edge weights),
// GAT's is csr_weighted_sum with w = the attention (E, heads); a sum of edge values per
// target node is csr_sum with col = the edges in target order; a gather x[index] is
// csr_sum with one nonzero per row; a backward is the same kernel on the transposed plan.
// One thread per output element sums its row in k order, starting from 0: no atomics, so
// the result is deterministic and matches the NumPy twin (scipy's CSR product, the same
// order) to rounding. csr_max propagates NaN (the first NaN wins), as np.maximum.
//
// Shapes: indptr (R+1,), col (K,), wid (K,) int32 (the host checks sizes < 2^31);
// x (M, J) or (M, H, C), w (E, H), out (R, J) or (R, H, C); all C-contiguous, T = float
// or double. 0 <= col[k] < M and 0 <= wid[k] < E: the plan is built from index arrays
// whose range the host checked.
//
// Tested: tests/functional/test_graph_plans.py (GPU vs the NumPy twin, float32 rtol 1e-5,
// float64 rtol 1e-12, every instance; the twin (scipy and reduceat paths) vs naive float64
// loops; check_grad of the plan primitives, grad of grad; a 40-edge row, empty rows, no
// edges, NaN in csr_max; gradients of GCN/GAT/max/mean layers on the device vs the CPU)
// and tests/functional/test_graph.py (message passing, readouts, segment softmax, GAT
// and the self-loop rules on each device).
// Without a GPU (every `make test`): that module's gpu tests run this file on the CPU
// emulator (tests/kernel_emulation: g++ + cuda_shim.h, CUDA threads as fibers) through
// gpudl's GPU code path, and again under AddressSanitizer (run_memcheck.py). Each instance
// the KernelSource in gpudl/functional/_graph_kernels.py declares must be launched by
// those tests (tests/kernel_emulation/kernel_coverage.py).
// Benchmarked: benchmarks/kernels_graph.py (2-layer GCN and a GAT layer, forward and
// backward, 2,000 nodes / 20,000 edges, vs torch sparse CSR products and index_add_).
#include "common.cuh"

template <typename T>
__global__ void csr_sum(const int* __restrict__ indptr,  // (R+1,)
                        const int* __restrict__ col,     // (K,)
                        const T* __restrict__ x,         // (M, J)
                        T* __restrict__ out,             // (R, J)
                        int R, int J) {
  const int total = R * J;  // out.size < 2^31 (launcher)
  GPUDL_LOOP(i, total) {
    const int r = i / J;
    const int j = i - r * J;
    T acc = T(0);
    for (int k = indptr[r]; k < indptr[r + 1]; ++k) acc += x[col[k] * J + j];
    out[i] = acc;
  }
}

template <typename T>
__global__ void csr_weighted_sum(const int* __restrict__ indptr,  // (R+1,)
                                 const int* __restrict__ col,     // (K,)
                                 const int* __restrict__ wid,     // (K,)
                                 const T* __restrict__ x,         // (M, H, C)
                                 const T* __restrict__ w,         // (E, H)
                                 T* __restrict__ out,             // (R, H, C)
                                 int R, int H, int C) {
  const int HC = H * C;
  const int total = R * HC;
  GPUDL_LOOP(i, total) {
    const int r = i / HC;
    const int hc = i - r * HC;
    const int h = hc / C;
    T acc = T(0);
    for (int k = indptr[r]; k < indptr[r + 1]; ++k) acc += w[wid[k] * H + h] * x[col[k] * HC + hc];
    out[i] = acc;
  }
}

template <typename T>
__global__ void csr_max(const int* __restrict__ indptr,  // (R+1,)
                        const int* __restrict__ col,     // (K,)
                        const T* __restrict__ x,         // (M, J)
                        T* __restrict__ out,             // (R, J)
                        int R, int J, T fill) {
  const int total = R * J;
  GPUDL_LOOP(i, total) {
    const int r = i / J;
    const int j = i - r * J;
    const int begin = indptr[r];
    const int end = indptr[r + 1];
    T best = fill;
    if (begin < end) {
      best = x[col[begin] * J + j];
      for (int k = begin + 1; k < end; ++k) {
        const T v = x[col[k] * J + j];
        // A NaN is never replaced (v > NaN is false) and replaces any number.
        if (v > best || (v != v && best == best)) best = v;
      }
    }
    out[i] = best;
  }
}
