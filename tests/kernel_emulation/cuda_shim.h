// cuda_shim.h: runs gpudl's CUDA kernels on the CPU, for tests on machines without a GPU.
//
// What: a CUDA-C++ subset mapped onto host C++ (g++ -std=c++17 -include cuda_shim.h).
// Every CUDA thread of a block is a fiber (ucontext) on one OS thread; blocks run one after
// another. __syncthreads() and the warp shuffles are real rendezvous points: a fiber that
// reaches one waits until every live thread of its block (or warp) has arrived, so a kernel
// that forgets a barrier reads stale shared memory here as it would on a GPU, and one that
// hangs on a GPU (a barrier not every thread reaches) is reported as a deadlock instead.
// __shared__ is `static`: one copy per kernel instance, which is per block because blocks
// run in turn. Atomics need no locking (one OS thread, fibers switch only at sync points).
//
// What it is not: a GPU. No memory model (no races between warps are possible here), no
// timing, host libm instead of CUDA's (expf etc. may differ by an ulp or two), no FMA
// contraction. Checked by tests/kernel_emulation/test_emulator.py; used by
// tests/kernel_emulation/test_emulated_kernels.py to compare every kernel with its NumPy
// twin; emulator.py compiles a kernel file with this header and launches it via ctypes.
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>
#include <ucontext.h>

#include <cstdio>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

// ---- qualifiers and attributes -------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __constant__
// __shared__ variables are function-local statics: one copy per kernel instance, which
// is per block because blocks run one at a time. kernel_emulator.py finds them in the
// built library's symbol table and registers them (gpudl_emu_add_shared), so every block
// starts with its shared memory poisoned (0xFF bytes: NaN for floats), as uninitialised
// shared memory would be on a GPU.
#define __shared__ static
#define __launch_bounds__(...)

// ---- vector types ----------------------------------------------------------------------
struct uint3 { unsigned x, y, z; };
struct dim3 { unsigned x, y, z; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
struct alignas(16) double2 { double x, y; };
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline double2 make_double2(double x, double y) { return {x, y}; }

namespace gpudl_emu {

struct Fiber {
  ucontext_t ctx;
  uint3 tid;
  int linear = 0;
  int waiting = 0;          // 0 runnable, 1 block barrier, 2 warp barrier
  unsigned long wait_gen = 0;
  bool done = false;
};

struct Barrier {
  int arrived = 0;
  unsigned long gen = 0;
};

struct Warp {
  Barrier bar;
  int live = 0;
  int launched = 0;
  unsigned long long slot[32];
};

inline Fiber* g_cur = nullptr;
inline std::vector<Fiber> g_fibers;
inline std::vector<std::vector<char>> g_stacks;
inline std::vector<Warp> g_warps;
inline Barrier g_block_bar;
inline int g_block_live = 0;
inline ucontext_t g_sched;
inline uint3 g_block_idx, g_block_dim, g_grid_dim;
inline std::string g_error;
inline unsigned long g_progress = 0;
inline void (*g_body)(void*) = nullptr;
// Threads run between barriers in index order, or reversed: a missing barrier shows up as
// a stale read in one order or the other, so the tests run both (see kernel_emulator.py).
inline bool g_reverse = false;
inline void* g_body_arg = nullptr;

inline void fail(const std::string& msg) {
  if (g_error.empty()) g_error = msg;
}

// Suspend the current fiber until the scheduler resumes it.
inline void yield() { swapcontext(&g_cur->ctx, &g_sched); }

inline std::string where(const Fiber* f) {
  char buf[160];
  snprintf(buf, sizeof buf, "block (%u,%u,%u) thread (%u,%u,%u)", g_block_idx.x, g_block_idx.y,
           g_block_idx.z, f->tid.x, f->tid.y, f->tid.z);
  return buf;
}

inline void release(Barrier& b) {
  b.arrived = 0;
  ++b.gen;
  ++g_progress;
}

// Arrive at barrier b, which completes when `expected` fibers have arrived.
inline void arrive(Barrier& b, int expected, int kind) {
  if (!g_error.empty()) {  // an error elsewhere: park this fiber for good
    g_cur->waiting = 3;
    yield();
  }
  ++g_progress;
  const unsigned long gen = b.gen;
  if (++b.arrived >= expected) {
    release(b);
    return;
  }
  g_cur->waiting = kind;
  g_cur->wait_gen = gen;
  yield();
}

inline Warp& warp_of(const Fiber* f) { return g_warps[f->linear / 32]; }

inline void syncthreads() { arrive(g_block_bar, g_block_live, 1); }

inline void warp_sync(unsigned mask) {
  Warp& w = warp_of(g_cur);
  const int base = (g_cur->linear / 32) * 32;
  for (int lane = 0; lane < 32; ++lane) {
    if (!(mask >> lane & 1u)) continue;
    if (lane >= w.launched) {
      fail("warp shuffle at " + where(g_cur) + ": mask names lane " + std::to_string(lane) +
           ", which the block does not have (blockDim not a multiple of 32?)");
    } else if (g_fibers[base + lane].done) {
      fail("warp shuffle at " + where(g_cur) + ": mask names lane " + std::to_string(lane) +
           ", which has already exited");
    }
  }
  arrive(w.bar, __builtin_popcount(mask & (w.launched >= 32 ? 0xffffffffu : ((1u << w.launched) - 1u))), 2);
}

template <typename T> T shfl(unsigned mask, T v, int src_lane) {
  static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
  Warp& w = warp_of(g_cur);
  const int lane = g_cur->linear % 32;
  memcpy(&w.slot[lane], &v, sizeof(T));
  warp_sync(mask);
  T r = v;
  if (src_lane >= 0 && src_lane < 32 && (mask >> src_lane & 1u)) {
    memcpy(&r, &w.slot[src_lane], sizeof(T));
  } else if (src_lane >= 0 && src_lane < 32) {
    fail("warp shuffle at " + where(g_cur) + ": reads lane " + std::to_string(src_lane) +
         ", which is not in the mask");
  }
  warp_sync(mask);  // nobody overwrites a slot before every lane has read
  return r;
}

inline std::vector<std::pair<char*, size_t>> g_shared_regions;

inline void poison_shared() {
  for (auto& r : g_shared_regions) memset(r.first, 0xFF, r.second);
}

inline void fiber_main() {
  g_body(g_body_arg);
  Fiber* f = g_cur;
  f->done = true;
  ++g_progress;
  // An exited thread no longer counts at barriers (as on sm_70+ GPUs).
  --g_block_live;
  if (g_block_bar.arrived > 0 && g_block_bar.arrived >= g_block_live) release(g_block_bar);
  Warp& w = warp_of(f);
  --w.live;
  // Context returns to g_sched through uc_link.
}

// Run one block: every fiber until all are done, or report a deadlock.
inline bool run_block(unsigned nthreads) {
  poison_shared();
  g_block_bar = Barrier{};
  g_block_live = static_cast<int>(nthreads);
  const unsigned nwarps = (nthreads + 31) / 32;
  g_warps.assign(nwarps, Warp{});
  for (unsigned i = 0; i < nwarps; ++i) {
    const int launched = static_cast<int>(nthreads - 32 * i < 32 ? nthreads - 32 * i : 32);
    g_warps[i].live = g_warps[i].launched = launched;
  }
  for (unsigned i = 0; i < nthreads; ++i) {
    Fiber& f = g_fibers[i];
    f.linear = static_cast<int>(i);
    f.tid = {i % g_block_dim.x, (i / g_block_dim.x) % g_block_dim.y,
             i / (g_block_dim.x * g_block_dim.y)};
    f.waiting = 0;
    f.done = false;
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = g_stacks[i].data();
    f.ctx.uc_stack.ss_size = g_stacks[i].size();
    f.ctx.uc_link = &g_sched;
    makecontext(&f.ctx, fiber_main, 0);
  }
  unsigned remaining = nthreads;
  while (remaining > 0) {
    const unsigned long before = g_progress;
    bool ran = false;
    for (unsigned j = 0; j < nthreads; ++j) {
      Fiber& f = g_fibers[g_reverse ? nthreads - 1 - j : j];
      if (f.done || f.waiting == 3) continue;
      if (f.waiting == 1 && f.wait_gen == g_block_bar.gen) continue;
      if (f.waiting == 2 && f.wait_gen == warp_of(&f).bar.gen) continue;
      f.waiting = 0;
      g_cur = &f;
      swapcontext(&g_sched, &f.ctx);
      ran = true;
      if (f.done) --remaining;
    }
    if (!g_error.empty()) return false;
    if (!ran && g_progress == before) {
      std::string msg = "deadlock in block (" + std::to_string(g_block_idx.x) + "," +
                        std::to_string(g_block_idx.y) + "," + std::to_string(g_block_idx.z) +
                        "): ";
      int at_block = 0, at_warp = 0;
      for (unsigned i = 0; i < nthreads; ++i) {
        at_block += g_fibers[i].waiting == 1 && !g_fibers[i].done;
        at_warp += g_fibers[i].waiting == 2 && !g_fibers[i].done;
      }
      msg += std::to_string(at_block) + " threads wait at __syncthreads, " +
             std::to_string(at_warp) + " at a warp shuffle, none can proceed "
             "(a barrier that not every live thread reaches)";
      fail(msg);
      return false;
    }
  }
  return true;
}

// Launch: grid and block dims, the kernel body bound to its arguments.
inline int run_grid(const unsigned* grid, const unsigned* block, void (*body)(void*), void* arg,
                    char* err, int errlen) {
  g_error.clear();
  g_grid_dim = {grid[0], grid[1], grid[2]};
  g_block_dim = {block[0], block[1], block[2]};
  const unsigned nthreads = block[0] * block[1] * block[2];
  g_fibers.assign(nthreads, Fiber{});
  if (g_stacks.size() < nthreads) g_stacks.resize(nthreads);
  for (unsigned i = 0; i < nthreads; ++i) {
    if (g_stacks[i].size() < (1u << 16)) g_stacks[i].assign(1u << 16, 0);
  }
  g_body = body;
  g_body_arg = arg;
  for (unsigned z = 0; z < grid[2]; ++z)
    for (unsigned y = 0; y < grid[1]; ++y)
      for (unsigned x = 0; x < grid[0]; ++x) {
        g_block_idx = {x, y, z};
        if (!run_block(nthreads)) {
          snprintf(err, static_cast<size_t>(errlen), "%s", g_error.c_str());
          return 1;
        }
      }
  return 0;
}

// ---- argument binding: void** args as cuLaunchKernel takes them -------------------------
template <typename T> struct TypeCode { static constexpr const char* value = "?"; };
template <> struct TypeCode<float> { static constexpr const char* value = "f"; };
template <> struct TypeCode<double> { static constexpr const char* value = "d"; };
template <> struct TypeCode<int> { static constexpr const char* value = "i"; };
template <> struct TypeCode<unsigned> { static constexpr const char* value = "I"; };
template <> struct TypeCode<long long> { static constexpr const char* value = "l"; };
template <> struct TypeCode<unsigned long long> { static constexpr const char* value = "L"; };
template <> struct TypeCode<long> { static constexpr const char* value = "l"; };
template <> struct TypeCode<unsigned long> { static constexpr const char* value = "L"; };
template <> struct TypeCode<bool> { static constexpr const char* value = "b"; };
template <> struct TypeCode<signed char> { static constexpr const char* value = "c"; };
template <> struct TypeCode<unsigned char> { static constexpr const char* value = "B"; };

// One parameter's code: "f" for a float, "Pf" for float*, "Cf" for const float*.
template <typename A> std::string code_of() {
  using T = std::remove_cv_t<std::remove_reference_t<A>>;
  if constexpr (std::is_pointer_v<T>) {
    using E = std::remove_pointer_t<T>;
    return std::string(std::is_const_v<E> ? "C" : "P") + TypeCode<std::remove_cv_t<E>>::value;
  } else {
    return TypeCode<T>::value;
  }
}

template <typename... A> const char* signature(void (*)(A...)) {
  static const std::string sig = [] {
    std::string s;
    ((s += code_of<A>() + ","), ...);
    return s;
  }();
  return sig.c_str();
}

template <typename... A> struct Bound {
  void (*kernel)(A...);
  void** args;
};

template <typename... A, size_t... I>
void call_bound(Bound<A...>* b, std::index_sequence<I...>) {
  b->kernel(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(b->args[I])...);
}

template <typename... A> void body_of(void* p) {
  call_bound(static_cast<Bound<A...>*>(p), std::index_sequence_for<A...>{});
}

template <typename... A>
int launch(void (*kernel)(A...), const unsigned* grid, const unsigned* block, void** args,
           char* err, int errlen) {
  Bound<A...> b{kernel, args};
  return run_grid(grid, block, &body_of<A...>, &b, err, errlen);
}

}  // namespace gpudl_emu

// ---- built-in variables ----------------------------------------------------------------
#define threadIdx (gpudl_emu::g_cur->tid)
#define blockIdx (gpudl_emu::g_block_idx)
#define blockDim (gpudl_emu::g_block_dim)
#define gridDim (gpudl_emu::g_grid_dim)
#define warpSize 32

// ---- synchronisation and warp functions --------------------------------------------------
inline void __syncthreads() { gpudl_emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { gpudl_emu::warp_sync(mask); }
template <typename T> T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  const int lane = gpudl_emu::g_cur->linear % 32;
  return gpudl_emu::shfl(mask, v, (lane ^ lane_mask) % width + lane / width * width);
}
template <typename T> T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  const int lane = gpudl_emu::g_cur->linear % 32;
  return gpudl_emu::shfl(mask, v, lane / width * width + src % width);
}
template <typename T> T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = gpudl_emu::g_cur->linear % 32;
  const int src = lane % width + static_cast<int>(delta) < width ? lane + static_cast<int>(delta)
                                                                 : lane;
  return gpudl_emu::shfl(mask, v, src);
}

// ---- atomics (fibers switch only at sync points, so plain read-modify-write is atomic) --
template <typename T> T atomicAdd(T* p, T v) {
  T old = *p;
  *p = old + v;
  return old;
}
template <typename T> T atomicMax(T* p, T v) {
  T old = *p;
  *p = old > v ? old : v;
  return old;
}

// ---- math: CUDA's device overloads ------------------------------------------------------
inline float max(float a, float b) { return fmaxf(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }

inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
inline float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned i; memcpy(&i, &f, 4); return i; }
inline double __longlong_as_double(long long i) { double d; memcpy(&d, &i, 8); return d; }
inline long long __double_as_longlong(double d) { long long i; memcpy(&i, &d, 8); return i; }

// Round-to-nearest intrinsics: exactly the IEEE operation (the shim is compiled without
// FMA contraction, -ffp-contract=off).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __dsqrt_rn(double a) { return sqrt(a); }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
inline float __uint2float_rn(unsigned u) { return static_cast<float>(u); }
inline double __uint2double_rn(unsigned u) { return static_cast<double>(u); }
inline double __ull2double_rn(unsigned long long u) { return static_cast<double>(u); }
inline float __double2float_rn(double d) { return static_cast<float>(d); }
inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<unsigned long long>(a) * b) >> 32);
}
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}
template <typename T> T __ldg(const T* p) { return *p; }
