"""The CPU kernel emulator itself: barriers, shuffles, atomics, and the errors it reports.

These small kernels pin down the semantics the kernel tests rely on: a forgotten
``__syncthreads`` gives a wrong answer here (not a lucky right one), a barrier that not every
thread reaches is reported, and bad bindings or out-of-bounds writes raise.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from kernel_emulator import (
    EmulatedModule,
    EmulationError,
    asan_environment,
    asan_runtime,
    compiler_available,
)

pytestmark = pytest.mark.skipif(not compiler_available(), reason="needs a C++ compiler (g++)")

SOURCE = r"""
template <typename T, bool SYNC>
__global__ void reverse_block(const T* __restrict__ x, T* __restrict__ y) {
  __shared__ T tile[256];
  const int t = threadIdx.x + blockDim.x * threadIdx.y;
  const int nt = blockDim.x * blockDim.y;
  const int base = blockIdx.x * nt;
  tile[t] = x[base + t];
  if (SYNC) __syncthreads();
  y[base + t] = tile[nt - 1 - t];
}

__global__ void warp_sums(const float* x, float* xor_sum, float* down_sum) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  float v = x[i], d = x[i];
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  for (int off = 16; off > 0; off >>= 1) d += __shfl_down_sync(0xffffffffu, d, off);
  xor_sum[i] = v;
  if ((threadIdx.x & 31) == 0) down_sum[i / 32] = d;
}

__global__ void atomic_total(const int* x, int* total, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
    atomicAdd(total, x[i]);
}

__global__ void divergent_barrier(float* y) {
  const int lane = threadIdx.x & 31;
  float v = 1.0f;
  if (lane == 0) __syncthreads();
  else v = __shfl_xor_sync(0xffffffffu, v, 1);
  y[threadIdx.x] = v;
}

__global__ void early_exit_then_shuffle(float* y) {
  if (threadIdx.x == 3) return;
  y[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}

__global__ void early_exit_then_barrier(float* y, int n) {
  if (threadIdx.x >= n) return;  // exited threads no longer count at barriers
  __syncthreads();
  y[threadIdx.x] = 2.0f;
}

__global__ void write_past_end(float* y, int n) { y[n] = 1.0f; }
__global__ void write_before_start(float* y) { y[-1] = 1.0f; }
__global__ void write_const(const float* x) { const_cast<float*>(x)[0] = 5.0f; }
__global__ void scaled_copy(const double* x, double* y, double a, int n) {
  for (int i = threadIdx.x; i < n; i += blockDim.x) y[i] = a * x[i];
}
"""
NAMES = ["reverse_block<float, true>", "reverse_block<float, false>",
         "reverse_block<double, true>", "warp_sums", "atomic_total", "divergent_barrier",
         "early_exit_then_shuffle", "early_exit_then_barrier", "write_past_end",
         "write_before_start", "write_const", "scaled_copy"]


@pytest.fixture(scope="module")
def mod():
    return EmulatedModule(SOURCE, (), NAMES)


@pytest.mark.parametrize("dtype, name", [(np.float32, "reverse_block<float, true>"),
                                         (np.float64, "reverse_block<double, true>")])
def test_syncthreads_orders_shared_memory(mod, dtype, name):
    x = np.arange(3 * 96, dtype=dtype)  # 3 blocks of (32, 3) threads: 2-D blocks
    y = np.zeros_like(x)
    mod.get_function(name)((3,), (32, 3), (x, y))
    np.testing.assert_array_equal(y, x.reshape(3, 96)[:, ::-1].ravel())


@pytest.mark.parametrize("order", ["forward", "reverse"])
def test_missing_syncthreads_gives_a_wrong_answer(mod, order):
    # Threads run until their next barrier: without one, thread 0 reads slot 95 before
    # thread 95 writes it (forward order), or thread 95 reads slot 0 before thread 0 writes
    # it (reverse). The emulator must expose the bug, not hide it.
    x = np.arange(96, dtype=np.float32) + 1
    y = np.zeros_like(x)
    mod.set_thread_order(order)
    try:
        mod.get_function("reverse_block<float, false>")((1,), (96,), (x, y))
        mod.get_function("reverse_block<float, true>")((1,), (96,), (x, y_ok := np.zeros_like(x)))
    finally:
        mod.set_thread_order("forward")
    assert not np.array_equal(y, x[::-1])
    np.testing.assert_array_equal(y_ok, x[::-1])
    with pytest.raises(ValueError, match="forward"):
        mod.set_thread_order("random")


def test_warp_shuffles_reduce(mod):
    rng = np.random.default_rng(0)
    x = rng.integers(-50, 50, 128).astype(np.float32)  # integers: sums exact in any order
    xor_sum, down_sum = np.zeros_like(x), np.zeros(4, np.float32)
    mod.get_function("warp_sums")((2,), (64,), (x, xor_sum, down_sum))
    warp_totals = x.reshape(4, 32).sum(axis=1)
    np.testing.assert_array_equal(xor_sum, np.repeat(warp_totals, 32))
    np.testing.assert_array_equal(down_sum, warp_totals)


def test_atomics_across_blocks(mod):
    x = np.arange(1000, dtype=np.int32)
    total = np.zeros(1, np.int32)
    mod.get_function("atomic_total")((3,), (64,), (x, total, np.int32(x.size)))
    assert total[0] == x.sum()


def test_exited_threads_do_not_block_barriers(mod):
    y = np.zeros(64, np.float32)
    mod.get_function("early_exit_then_barrier")((1,), (64,), (y, np.int32(40)))
    np.testing.assert_array_equal(y, np.r_[np.full(40, 2.0), np.zeros(24)])


def test_divergent_barrier_is_a_deadlock(mod):
    with pytest.raises(EmulationError, match="deadlock"):
        mod.get_function("divergent_barrier")((1,), (64,), (np.zeros(64, np.float32),))


def test_shuffle_with_an_exited_lane_is_reported(mod):
    with pytest.raises(EmulationError, match="exited"):
        mod.get_function("early_exit_then_shuffle")((1,), (32,), (np.zeros(32, np.float32),))


def test_full_mask_on_a_partial_warp_is_reported(mod):
    x = np.zeros(40, np.float32)
    with pytest.raises(EmulationError, match="does not have"):
        mod.get_function("warp_sums")((1,), (40,), (x, np.zeros(40, np.float32), np.zeros(2, np.float32)))


@pytest.mark.parametrize("name, args, side", [
    ("write_past_end", lambda y: (y, np.int32(y.size)), "past the end"),
    ("write_before_start", lambda y: (y,), "before the start"),
])
def test_out_of_bounds_writes_are_caught(mod, name, args, side):
    y = np.zeros(10, np.float32)
    with pytest.raises(EmulationError, match=side):
        mod.get_function(name)((1,), (1,), args(y))


def test_write_to_const_argument_is_caught(mod):
    x = np.ones(4, np.float32)
    with pytest.raises(EmulationError, match="const argument 0"):
        mod.get_function("write_const")((1,), (1,), (x,))
    assert x[0] == 1.0  # the caller's array is untouched


def test_bindings_are_checked(mod):
    k = mod.get_function("scaled_copy")
    x, y = np.arange(5.0), np.zeros(5)
    k((1,), (32,), (x, y, np.float64(3.0), np.int32(5)))
    np.testing.assert_array_equal(y, 3.0 * x)
    assert k.signature == ["Cd", "Pd", "d", "i"]
    with pytest.raises(EmulationError, match="the kernel parameter is int32"):
        k((1,), (32,), (x, y, np.float64(3.0), np.int64(5)))  # CuPy would pass 8 bytes
    with pytest.raises(EmulationError, match="the kernel parameter is int32"):
        k((1,), (32,), (x, y, np.float64(3.0), 5))
    with pytest.raises(EmulationError, match="pointer to float64"):
        k((1,), (32,), (x.astype(np.float32), y, np.float64(3.0), np.int32(5)))
    with pytest.raises(EmulationError, match="takes 4 arguments, got 3"):
        k((1,), (32,), (x, y, np.float64(3.0)))


def test_same_array_twice_shares_one_buffer(mod):
    x = np.arange(6.0)
    mod.get_function("scaled_copy")((1,), (4,), (x, x, np.float64(2.0), np.int32(6)))
    np.testing.assert_array_equal(x, 2.0 * np.arange(6.0))


def test_compile_errors_are_reported():
    with pytest.raises(EmulationError, match="could not compile"):
        EmulatedModule("__global__ void broken(float* y) { y[0] = undeclared; }", (), ["broken"])


ASAN_SNIPPET = r"""
import numpy as np
from kernel_emulator import EmulatedModule
src = "__global__ void read_one_past(const float* x, float* y, int n) { y[0] = x[n]; }"
k = EmulatedModule(src, (), ["read_one_past"]).get_function("read_one_past")
x = np.ones(10, np.float32)
y = np.zeros(1, np.float32)
k((1,), (1,), (x, y, np.int32(x.size - 1)))  # in bounds
print("in-bounds read ok", flush=True)
k((1,), (1,), (x, y, np.int32(x.size)))      # one past the end
print("NOT CAUGHT", flush=True)
"""


@pytest.mark.skipif(asan_runtime() is None, reason="needs g++'s AddressSanitizer runtime")
def test_memcheck_mode_catches_out_of_bounds_reads(tmp_path):
    # The guard bytes of the default mode only catch writes; memcheck mode (ASan) catches
    # a read one element past the end, as compute-sanitizer would on a GPU.
    env = {**asan_environment(), "GPUDL_EMU_CACHE": str(tmp_path),
           "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.run([sys.executable, "-c", ASAN_SNIPPET], env=env, capture_output=True,
                          text=True, timeout=300)
    assert "in-bounds read ok" in proc.stdout, proc.stderr[-3000:]
    assert "NOT CAUGHT" not in proc.stdout
    assert proc.returncode == 86 and "heap-buffer-overflow" in proc.stderr, proc.stderr[-3000:]
