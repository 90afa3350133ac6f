// A SIMT emulator for csrc/cuda/ops.cu on the CPU (tests only; see tests/cuda_sim.py).
//
// ops.cu compiled with FASTSPLINE_CUDA_SIM includes this header instead of the CUDA ones,
// and tests/cuda_sim.py rewrites its `kernel<<<grid, block, smem, stream>>>(args)` launches
// into sim::launch(grid, block, smem, stream)(kernel, args). Each block then runs as one
// fiber per CUDA thread (one OS thread; on x86-64 a six-register stack switch, elsewhere
// ucontext, which costs a signal-mask system call per switch); a fiber runs until it reaches a
// collective and waits there until every thread it needs has arrived:
//   __syncthreads        all threads of the block (a thread that has exited is an error);
//   __shfl_*_sync, __ballot_sync, __syncwarp, mma.sync, ldmatrix
//                        all 32 lanes of the warp (full masks only; lanes at different
//                        collectives are an error: divergence);
//   cluster_sync         all threads of the cluster (as __syncthreads).
// cp.async copies are deferred to the cp.async.wait_group that covers them (or done at
// issue, FASTSPLINE_SIM_CP_ASYNC=early), so a read before the wait, or a write that lands
// too early, shows up. mma.sync b1 and ldmatrix follow the fragment layouts of the PTX ISA;
// wgmma (b1 m64n128k256 / m64n256k256) reads shared memory through its descriptors with the
// 128-byte swizzle of shared-address bits, at issue and again at its wait_group (operands
// changed in between fail), with the same descriptors across its warpgroup.
// Clusters (sim::launch_cluster, along x): the CTAs of one cluster run together, in one
// schedule, each with its own shared memory; clusters run one after another. mbarriers
// (arrival count, transaction bytes, phase) live in a side table keyed by CTA and shared
// address, not in shared memory; a thread waiting on one blocks until its phase completes.
// Bulk copies (cp.async.bulk, multicast to a CTA mask) land at issue under
// FASTSPLINE_SIM_CP_ASYNC=early, else only when a thread waits on their barrier's
// incomplete phase, or when no thread can run; left unlanded at the cluster's exit is an error.
// __shared__ variables are function statics, shared by all CTAs of a cluster: kernels
// launched in clusters must use dynamic shared memory only.
// Shared memory (dynamic) is poisoned at each block's start, and starts at shared address
// 528 (FASTSPLINE_SIM_SMEM_BASE): 16-byte aligned, nothing more is promised. The order in which threads
// run between collectives is FASTSPLINE_SIM_SCHEDULE=forward|reverse|random:<seed> (over the
// whole cluster), so a missing barrier changes results under some order; stall:<seed> is
// random with half the warps, drawn anew each round, sitting it out (warps drift apart). Errors (deadlock,
// divergence, out-of-range shared addresses, a launch over its shared-memory limit) are
// thrown as std::runtime_error from the launch. One launch at a time (a global lock).
#pragma once

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define FASTSPLINE_SIM_ASAN 1
#endif

#define __CUDA_ARCH__ 900
#define CUDART_VERSION 13000
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static  // one block (cluster) runs at a time: function statics are its shared memory
#define __restrict__ __restrict

// ------------------------------------------------------------------ vector and float types

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(8) int2 {
  int x, y;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }

struct __half {
  unsigned short bits;
};
struct __nv_bfloat16 {
  unsigned short bits;
};
inline __half __ushort_as_half(unsigned short b) { return {b}; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short b) { return {b}; }
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline double __hiloint2double(int hi, int lo) {
  const uint64_t u = ((uint64_t)(unsigned)hi << 32) | (unsigned)lo;
  double d;
  std::memcpy(&d, &u, 8);
  return d;
}
inline float __half2float(__half h) {  // IEEE binary16 -> binary32, exact
  const unsigned sign = (h.bits >> 15) & 1u, exp = (h.bits >> 10) & 0x1fu, frac = h.bits & 0x3ffu;
  float mag;
  if (exp == 0) mag = std::ldexp((float)frac, -24);
  else if (exp == 31) mag = frac ? __builtin_nanf("") : __builtin_inff();
  else mag = std::ldexp((float)(frac | 0x400u), (int)exp - 25);
  return sign ? -mag : mag;
}
inline float __bfloat162float(__nv_bfloat16 h) { return __uint_as_float((unsigned)h.bits << 16); }

inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __popcll(unsigned long long v) { return __builtin_popcountll(v); }
template <typename T>
inline T __ldg(const T* p) { return *p; }
template <typename T>
inline T __ldcs(const T* p) { return *p; }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {  // one thread runs at a time
  const unsigned long long old = *p;
  *p = old + v;
  return old;
}
using std::max;
using std::min;

// ------------------------------------------------------------------ runtime API (one fake device)

using cudaError_t = int;
using cudaStream_t = void*;
constexpr cudaError_t cudaSuccess = 0;
enum cudaDeviceAttr {
  cudaDevAttrMultiProcessorCount,
  cudaDevAttrComputeCapabilityMajor,
  cudaDevAttrComputeCapabilityMinor,
  cudaDevAttrMaxSharedMemoryPerBlockOptin
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };

namespace sim {

inline int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}
inline int sm_count() { return std::max(1, env_int("FASTSPLINE_SIM_SMS", 2)); }
// cudaOccupancyMaxActiveClusters: one CTA per SM.
inline int max_active_clusters(unsigned cluster) { return std::max(1, sm_count() / (int)std::max(1u, cluster)); }
constexpr int kOptinSmem = 232448;  // H100 / H200: 227 KB per block
constexpr int kDefaultSmem = 48 * 1024;
inline std::map<const void*, int>& smem_optin() {
  static std::map<const void*, int> m;
  return m;
}

}  // namespace sim

// Each FASTSPLINE_SIM_SMS value is a device of its own, so ops.cu's per-device caches
// (SM count, resident grids) follow the variable.
inline cudaError_t cudaGetDevice(int* d) { return *d = sim::sm_count() % 64, cudaSuccess; }
inline cudaError_t cudaGetDeviceCount(int* c) { return *c = 1, cudaSuccess; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorName(cudaError_t) { return "cudaErrorSim"; }
inline const char* cudaGetErrorString(cudaError_t) { return "simulator error"; }
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr attr, int) {
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *v = sim::sm_count(); break;
    case cudaDevAttrComputeCapabilityMajor: *v = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *v = 0; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = sim::kOptinSmem; break;
  }
  return cudaSuccess;
}
enum cudaMemcpyKind { cudaMemcpyDeviceToHost = 2 };
inline cudaError_t cudaMalloc(void* p, size_t n) { return *static_cast<void**>(p) = std::malloc(n), cudaSuccess; }
inline cudaError_t cudaFree(void* p) { return std::free(p), cudaSuccess; }
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t) { return std::memset(p, v, n), cudaSuccess; }
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind, cudaStream_t) {
  return std::memcpy(dst, src, n), cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaFuncSetAttribute(const void* kernel, cudaFuncAttribute, int bytes) {
  if (bytes > sim::kOptinSmem) throw std::runtime_error("sim: cudaFuncSetAttribute over the opt-in shared memory");
  sim::smem_optin()[kernel] = bytes;
  return cudaSuccess;
}
template <typename K>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, K, int, size_t) {
  return *n = 1, cudaSuccess;
}

// ------------------------------------------------------------------ fibers

namespace sim {

#if defined(__x86_64__)
// switch_stack(&from_sp, to_sp): saves the callee-saved registers on this stack, stores
// the stack pointer in *from_sp, and resumes the stack to_sp saved the same way (or
// prepared by start_stack).
extern "C" void fastspline_sim_switch(void** from_sp, void* to_sp);
asm(R"(
  .text
  .globl fastspline_sim_switch
  .hidden fastspline_sim_switch
  .type fastspline_sim_switch, @function
fastspline_sim_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size fastspline_sim_switch, .-fastspline_sim_switch
)");

// A stack whose first switch "returns" into entry() as if called (rsp = 8 mod 16).
inline void* start_stack(char* base, size_t size, void (*entry)()) {
  uintptr_t top = ((uintptr_t)(base + size)) & ~(uintptr_t)15;
  void** sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;                            // entry's return address: never used
  *--sp = reinterpret_cast<void*>(entry);     // popped by ret
  for (int i = 0; i < 6; ++i) *--sp = nullptr;  // rbp rbx r12 r13 r14 r15
  return sp;
}

struct Context {
  void* sp = nullptr;
};
inline void switch_to(Context& from, Context& to) { fastspline_sim_switch(&from.sp, to.sp); }
inline void start(Context& c, char* base, size_t size, void (*entry)()) { c.sp = start_stack(base, size, entry); }
#else
struct Context {
  ucontext_t uc;
};
inline void switch_to(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
inline void start(Context& c, char* base, size_t size, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = base;
  c.uc.uc_stack.ss_size = size;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}
#endif

constexpr int kWarp = 32;
constexpr size_t kStack = 256 * 1024;

enum class State { Ready, Barrier, Cluster, Mbarrier, Warp, Done };
enum class Op { None, Shfl, Ballot, SyncWarp, Mma, Ldmatrix };

struct Copy {
  uint32_t dst;
  const void* src;
  bool valid;
};

// One issued wgmma of a thread: its accumulators (n of them: a 64 x 2n tile), descriptors,
// commit group (-1: not committed yet), and the values the accumulators will get (computed
// at issue; its completion checks that the operands have not changed since).
struct Wgmma {
  int* d;
  int n;
  uint64_t da, db;
  long group;
  std::vector<int> init, result;  // accumulators before (the previous pending one's result, chained) and after
};

struct Fiber {
  Context ctx;
  dim3 tid;
  int linear = 0;  // thread index within its block
  int cta = 0;     // its block's rank in the cluster
  State state = State::Ready;
  uint32_t wait_bar = 0;     // State::Mbarrier: the barrier (own CTA) and the parity of the phase it waits for
  unsigned wait_parity = 0;
  Op op = Op::None;
  void* record = nullptr;
  std::vector<Copy> pending;
  std::deque<std::vector<Copy>> groups;
  std::vector<Wgmma> wgmma_pending;  // issued wgmma not yet completed, in issue order
  long wgmma_groups = 0;             // commit groups made so far
  long wgmma_issued = 0;             // wgmma issued so far
  void* fake_stack = nullptr;
};

// One CTA of the running cluster.
struct Cta {
  dim3 block_idx;
  std::vector<unsigned char> dyn;  // dynamic shared memory
  int barrier_arrived = 0;
  std::vector<int> warp_arrived;
};

// An mbarrier: arrivals still pending in the current phase (of count), transaction bytes
// expected minus landed (may dip below 0 until the expect_tx), and the phase number.
struct Mbarrier {
  unsigned count = 0, pending = 0;
  long long tx = 0, phase = 0;
};

// A bulk copy into one CTA, not landed yet (its barrier's tx not completed either).
struct Bulk {
  int cta;
  uint32_t dst, mbar;
  const void* src;
  unsigned bytes;
};

struct Runtime {
  std::mutex lock;
  std::vector<char> stacks;
  std::vector<Fiber> fibers;  // CTA rank-major: fibers[cta * block.x + linear]
  Fiber* current = nullptr;
  Context sched;
  dim3 grid, block;
  unsigned cluster = 1;   // CTAs per cluster
  std::vector<Cta> ctas;  // the running cluster's, by rank
  size_t dyn_bytes = 0;
  uint32_t dyn_base = 0;  // its shared address (FASTSPLINE_SIM_SMEM_BASE)
  // The descriptors of each (CTA, warpgroup)'s n-th wgmma, and how many of its threads issued it.
  std::map<std::tuple<int, int, long>, std::pair<std::pair<uint64_t, uint64_t>, int>> wgmma_issues;
  int cluster_arrived = 0;
  std::map<std::pair<int, uint32_t>, Mbarrier> mbars;  // by (CTA rank, shared address)
  std::vector<Bulk> bulk;                              // unlanded bulk copies, in issue order
  std::function<void()> body;
  std::string error;
  bool early_copies = false;
  // ASan fiber bookkeeping
  const void* sched_bottom = nullptr;
  size_t sched_size = 0;
  void* sched_fake = nullptr;
};

inline Runtime& rt() {
  static Runtime r;
  return r;
}

[[noreturn]] inline void fail(const std::string& what) { throw std::runtime_error("sim: " + what); }

inline char* stack_of(const Fiber& f) {
  return rt().stacks.data() + ((size_t)f.cta * rt().block.x + (size_t)f.linear) * kStack;
}

inline Cta& own_cta() {
  Runtime& r = rt();
  return r.ctas[r.current->cta];
}

// Fiber -> scheduler.
inline void yield() {
  Runtime& r = rt();
  Fiber* f = r.current;
#ifdef FASTSPLINE_SIM_ASAN
  __sanitizer_start_switch_fiber(f->state == State::Done ? nullptr : &f->fake_stack, r.sched_bottom, r.sched_size);
#endif
  switch_to(f->ctx, r.sched);
#ifdef FASTSPLINE_SIM_ASAN
  __sanitizer_finish_switch_fiber(f->fake_stack, &r.sched_bottom, &r.sched_size);
#endif
}

inline void entry() {
  Runtime& r = rt();
#ifdef FASTSPLINE_SIM_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &r.sched_bottom, &r.sched_size);
#endif
  try {
    r.body();
  } catch (const std::exception& e) {
    if (r.error.empty()) r.error = e.what();
  }
  r.current->state = State::Done;
  yield();  // never resumed
}

// Scheduler -> fiber f.
inline void resume(Fiber& f) {
  Runtime& r = rt();
  r.current = &f;
#ifdef FASTSPLINE_SIM_ASAN
  __sanitizer_start_switch_fiber(&r.sched_fake, stack_of(f), kStack);
#endif
  switch_to(r.sched, f.ctx);
#ifdef FASTSPLINE_SIM_ASAN
  __sanitizer_finish_switch_fiber(r.sched_fake, nullptr, nullptr);
#endif
  r.current = nullptr;
}

inline std::string where(const Fiber& f) {
  const dim3& b = rt().ctas[f.cta].block_idx;
  return "block (" + std::to_string(b.x) + "," + std::to_string(b.y) + ") thread " + std::to_string(f.linear);
}

// The index into the dynamic shared memory of `bytes` at shared address addr (16-byte
// aligned), or a failure naming `what`.
inline size_t smem_index(uint64_t addr, size_t bytes, const char* what) {
  const Runtime& r = rt();
  if ((addr & 15u) != 0 || addr < r.dyn_base || addr - r.dyn_base + bytes > r.dyn_bytes)
    fail(std::string(what) + " at shared address " + std::to_string(addr) + ": unaligned or outside dynamic shared memory");
  return (size_t)(addr - r.dyn_base);
}

inline void perform(const Copy& c) {
  const size_t at = smem_index(c.dst, 16, "cp.async");
  unsigned char* dyn = own_cta().dyn.data();
  if (c.valid) std::memcpy(dyn + at, c.src, 16);
  else std::memset(dyn + at, 0, 16);
}

// ------------------------------------------------------------------ mbarriers and bulk copies

inline std::string mbarrier_name(int cta, uint32_t addr) {
  return "mbarrier at shared address " + std::to_string(addr) + " of CTA rank " + std::to_string(cta);
}

inline std::string mbarrier_state(const Mbarrier& b) {
  return "(phase " + std::to_string(b.phase) + ", " + std::to_string(b.pending) + " of " + std::to_string(b.count) +
         " arrivals pending, tx " + std::to_string(b.tx) + ")";
}

inline Mbarrier& mbarrier(int cta, uint32_t addr, const char* what) {
  Runtime& r = rt();
  const auto it = r.mbars.find({cta, addr});
  if (it == r.mbars.end())
    fail(std::string(what) + " on the " + mbarrier_name(cta, addr) + " before its mbarrier_init");
  return it->second;
}

// Completes the current phase once its arrivals are all in and its bytes all landed: the
// next phase starts and the threads waiting on the barrier run again.
inline void mbarrier_check(int cta, uint32_t addr, Mbarrier& b) {
  if (b.pending != 0) return;
  if (b.tx < 0)
    fail("the " + mbarrier_name(cta, addr) + " " + mbarrier_state(b) + " received more bytes than expected");
  if (b.tx > 0) return;
  ++b.phase;
  b.pending = b.count;
  for (Fiber& f : rt().fibers)
    if (f.state == State::Mbarrier && f.cta == cta && f.wait_bar == addr) f.state = State::Ready;
}

// A bulk copy lands: its bytes, then complete_tx on its barrier.
inline void deliver(const Bulk& c) {
  Runtime& r = rt();
  std::memcpy(r.ctas[c.cta].dyn.data() + (c.dst - r.dyn_base), c.src, c.bytes);
  Mbarrier& b = mbarrier(c.cta, c.mbar, "a bulk copy's complete_tx");
  b.tx -= c.bytes;
  mbarrier_check(c.cta, c.mbar, b);
}

// Lands the queued copies to CTA cta's barrier at addr (all of them: -1), in issue order;
// false when there were none.
inline bool land(int cta, uint32_t addr) {
  Runtime& r = rt();
  bool any = false;
  for (size_t i = 0; i < r.bulk.size();) {
    if (cta >= 0 && (r.bulk[i].cta != cta || r.bulk[i].mbar != addr)) {
      ++i;
      continue;
    }
    const Bulk c = r.bulk[i];
    r.bulk.erase(r.bulk.begin() + (long)i);
    deliver(c);
    any = true;
  }
  return any;
}

// mbarrier.init on this CTA's barrier at addr: count arrivals a phase, phase 0, tx 0.
inline void mbarrier_init(uint32_t addr, unsigned count) {
  Runtime& r = rt();
  const int cta = r.current->cta;
  if (addr % 8 != 0 || addr < r.dyn_base || addr - r.dyn_base + 8 > r.dyn_bytes)
    fail("mbarrier_init at shared address " + std::to_string(addr) + ": unaligned or outside dynamic shared memory");
  if (count == 0 || count >= (1u << 20)) fail("mbarrier_init with count " + std::to_string(count) + " (1 .. 2^20 - 1)");
  for (const Bulk& c : r.bulk)
    if (c.cta == cta && c.mbar == addr)
      fail("mbarrier_init on the " + mbarrier_name(cta, addr) + " with bulk copies outstanding");
  Mbarrier& b = r.mbars[{cta, addr}];
  b.count = b.pending = count;
  b.tx = b.phase = 0;
}

// mbarrier.arrive.expect_tx on CTA rank's barrier at addr (mapa for another CTA): tx += tx,
// then one arrival.
inline void mbarrier_arrive(uint32_t addr, unsigned rank, unsigned tx = 0) {
  Runtime& r = rt();
  if (rank >= r.cluster)
    fail("mbarrier_arrive on CTA rank " + std::to_string(rank) + " of a cluster of " + std::to_string(r.cluster));
  Mbarrier& b = mbarrier((int)rank, addr, "mbarrier_arrive");
  if (b.pending == 0)  // all in, the phase waits for bytes
    fail("mbarrier_arrive on the " + mbarrier_name((int)rank, addr) + " " + mbarrier_state(b) +
         ": more arrivals than its count in one phase");
  b.tx += tx;
  --b.pending;
  mbarrier_check((int)rank, addr, b);
}

// mbarrier.try_wait.parity in a loop on this CTA's barrier: until the phase of this parity
// has completed (the current phase's parity differs). Late bulk copies to it land first.
inline void mbarrier_wait(uint32_t addr, unsigned parity) {
  Runtime& r = rt();
  Fiber* f = r.current;
  if (parity > 1) fail("mbarrier_wait with parity " + std::to_string(parity));
  for (;;) {
    const Mbarrier& b = mbarrier(f->cta, addr, "mbarrier_wait");
    if ((unsigned)(b.phase & 1) != parity) return;
    if (land(f->cta, addr)) continue;
    f->state = State::Mbarrier;
    f->wait_bar = addr;
    f->wait_parity = parity;
    yield();
  }
}

// cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes[.multicast::cluster]:
// for each CTA rank in cta_mask, bytes from src to its shared address dst, then
// complete_tx(bytes) on its barrier at mbar.
inline void bulk_copy(uint32_t dst, const void* src, unsigned bytes, uint32_t mbar, unsigned cta_mask) {
  Runtime& r = rt();
  const std::string what = "bulk copy of " + std::to_string(bytes) + " bytes to shared address " + std::to_string(dst);
  if (bytes == 0 || bytes % 16 != 0) fail(what + ": the size is not a positive multiple of 16");
  if (dst % 16 != 0 || reinterpret_cast<uintptr_t>(src) % 16 != 0)
    fail(what + ": source or destination not 16-byte aligned");
  if (dst < r.dyn_base || dst - r.dyn_base + (size_t)bytes > r.dyn_bytes)
    fail(what + ": outside dynamic shared memory");
  if (cta_mask == 0 || (uint64_t)cta_mask >> r.cluster != 0)
    fail(what + ": CTA mask " + std::to_string(cta_mask) + " empty or outside the cluster of " +
         std::to_string(r.cluster));
  for (int c = 0; c < (int)r.cluster; ++c)
    if (cta_mask >> c & 1) {
      mbarrier(c, mbar, what.c_str());
      for (const auto& [key, b] : r.mbars)  // a barrier is not data
        if (key.first == c && key.second + 8 > dst && key.second < dst + bytes)
          fail(what + " of CTA rank " + std::to_string(c) + ": overwrites the " + mbarrier_name(c, key.second));
    }
  for (int c = 0; c < (int)r.cluster; ++c)
    if (cta_mask >> c & 1) {
      const Bulk copy{c, dst, mbar, src, bytes};
      if (r.early_copies) deliver(copy);
      else r.bulk.push_back(copy);
    }
}

// ------------------------------------------------------------------ scheduler

// Why no thread can run: each distinct wait (per CTA) with the first thread at it.
inline std::string deadlock() {
  const Runtime& r = rt();
  struct Wait {
    int cta;
    std::string what, first;
    int count;
  };
  std::vector<Wait> waits;
  int exited = 0;
  for (const Fiber& f : r.fibers) {
    std::string what;
    const std::string unreached = " that other threads never reach (divergence or an exited thread)";
    switch (f.state) {
      case State::Barrier: what = "waits at __syncthreads" + unreached; break;
      case State::Cluster: what = "waits at cluster_sync" + unreached; break;
      case State::Warp: what = "waits at a warp collective" + unreached; break;
      case State::Mbarrier:
        what = "waits for the phase of parity " + std::to_string(f.wait_parity) + " of the " +
               mbarrier_name(f.cta, f.wait_bar) + " " + mbarrier_state(r.mbars.at({f.cta, f.wait_bar}));
        break;
      case State::Done: ++exited; continue;
      default: continue;
    }
    const auto it =
        std::find_if(waits.begin(), waits.end(), [&](const Wait& w) { return w.cta == f.cta && w.what == what; });
    if (it != waits.end()) ++it->count;
    else waits.push_back({f.cta, what, where(f), 1});
  }
  std::string out = "deadlock:";
  for (size_t i = 0; i < waits.size(); ++i)
    out += std::string(i ? ";" : "") + " " + waits[i].first + " " + waits[i].what +
           (waits[i].count > 1 ? " (and " + std::to_string(waits[i].count - 1) + " more threads)" : "");
  if (exited > 0) out += "; " + std::to_string(exited) + " threads exited";
  return out;
}

// Runs the cluster's fibers until all have exited. With none runnable, late bulk copies
// land (all of them) before it is a deadlock. stall: each round a random half of the warps
// sits out (a round where that stops everything runs them all), so warps drift apart
// between the points that order them, as on a GPU.
inline void run_cluster(const std::vector<int>& order, bool shuffle, bool stall, std::mt19937& rng) {
  Runtime& r = rt();
  const int threads = (int)r.fibers.size();
  std::vector<int> ord = order;
  std::vector<char> out((threads + kWarp - 1) / kWarp, 0);  // per warp: sits out this round
  bool everyone = false;
  for (;;) {
    if (shuffle) std::shuffle(ord.begin(), ord.end(), rng);
    if (stall)
      for (char& o : out) o = !everyone && (rng() & 1);
    everyone = false;
    bool progress = false, skipped = false;
    int done = 0;
    for (int i : ord) {
      Fiber& f = r.fibers[i];
      if (f.state == State::Done) {
        ++done;
        continue;
      }
      if (f.state != State::Ready) continue;
      if (out[i / kWarp]) {
        skipped = true;
        continue;
      }
      resume(f);
      progress = true;
      if (!r.error.empty()) fail(where(f) + ": " + r.error);
    }
    if (done == threads) return;
    if (!progress && skipped) {
      everyone = true;
      continue;
    }
    if (!progress) {
      if (!r.bulk.empty()) {
        land(-1, 0);
        continue;
      }
      fail(deadlock());
    }
  }
}

// ------------------------------------------------------------------ collectives

inline void syncthreads() {
  Runtime& r = rt();
  Fiber* f = r.current;
  Cta& cta = r.ctas[f->cta];
  Fiber* block = &r.fibers[(size_t)f->cta * r.block.x];
  for (unsigned i = 0; i < r.block.x; ++i)
    if (block[i].state == State::Done) fail(where(*f) + ": __syncthreads after " + where(block[i]) + " exited");
  if (++cta.barrier_arrived == (int)r.block.x) {
    cta.barrier_arrived = 0;
    for (unsigned i = 0; i < r.block.x; ++i)
      if (block[i].state == State::Barrier) block[i].state = State::Ready;
  } else {
    f->state = State::Barrier;
  }
  yield();
}

// barrier.cluster.arrive + barrier.cluster.wait: every thread of every CTA of the cluster.
inline void cluster_sync() {
  Runtime& r = rt();
  Fiber* f = r.current;
  for (const Fiber& g : r.fibers)
    if (g.state == State::Done) fail(where(*f) + ": cluster_sync after " + where(g) + " exited");
  if (++r.cluster_arrived == (int)r.fibers.size()) {
    r.cluster_arrived = 0;
    for (Fiber& g : r.fibers)
      if (g.state == State::Cluster) g.state = State::Ready;
  } else {
    f->state = State::Cluster;
  }
  yield();
}

inline unsigned cluster_ctarank() { return (unsigned)rt().current->cta; }
inline unsigned cluster_nctarank() { return rt().cluster; }

// Every lane of this warp calls with its own record; the last to arrive runs
// compute(records[32]), then all go on.
template <typename Rec, typename Compute>
inline void warp_collective(Op op, Rec& rec, unsigned mask, Compute compute) {
  Runtime& r = rt();
  Fiber* f = r.current;
  if (mask != 0xffffffffu) fail(where(*f) + ": the simulator supports full-warp masks only");
  if (r.block.x % kWarp != 0) fail("block size is not a multiple of 32");
  const int warp = f->linear / kWarp;
  Fiber* lanes = &r.fibers[(size_t)f->cta * r.block.x + (size_t)warp * kWarp];
  int& arrived = r.ctas[f->cta].warp_arrived[warp];
  for (int l = 0; l < kWarp; ++l) {
    if (lanes[l].state == State::Done) fail(where(*f) + ": warp collective after lane " + std::to_string(l) + " exited");
    if (lanes[l].state == State::Warp && lanes[l].op != op)
      fail(where(*f) + ": lanes of one warp at different collectives (divergence)");
  }
  f->op = op;
  f->record = &rec;
  if (++arrived == kWarp) {
    arrived = 0;
    Rec* recs[kWarp];
    for (int l = 0; l < kWarp; ++l) recs[l] = static_cast<Rec*>(lanes[l].record);
    compute(recs);
    for (int l = 0; l < kWarp; ++l) {
      lanes[l].state = State::Ready;
      lanes[l].op = Op::None;
    }
  } else {
    f->state = State::Warp;
  }
  yield();
}

template <typename T>
struct ShflRec {
  T v, out;
  int arg;
};

template <typename T>
inline T shfl_xor(unsigned mask, T v, int lane_mask) {
  ShflRec<T> rec{v, v, lane_mask};
  warp_collective(Op::Shfl, rec, mask, [](ShflRec<T>** recs) {
    for (int l = 0; l < kWarp; ++l) {
      const int src = l ^ recs[l]->arg;
      recs[l]->out = src < kWarp ? recs[src]->v : recs[l]->v;
    }
  });
  return rec.out;
}

template <typename T>
inline T shfl_down(unsigned mask, T v, unsigned delta) {
  ShflRec<T> rec{v, v, (int)delta};
  warp_collective(Op::Shfl, rec, mask, [](ShflRec<T>** recs) {
    for (int l = 0; l < kWarp; ++l) {
      const int src = l + recs[l]->arg;
      recs[l]->out = src < kWarp ? recs[src]->v : recs[l]->v;
    }
  });
  return rec.out;
}

struct BallotRec {
  bool pred;
  unsigned out;
};

inline unsigned ballot(unsigned mask, bool pred) {
  BallotRec rec{pred, 0};
  warp_collective(Op::Ballot, rec, mask, [](BallotRec** recs) {
    unsigned bits = 0;
    for (int l = 0; l < kWarp; ++l) bits |= (unsigned)recs[l]->pred << l;
    for (int l = 0; l < kWarp; ++l) recs[l]->out = bits;
  });
  return rec.out;
}

inline void syncwarp(unsigned mask) {
  int rec = 0;
  warp_collective(Op::SyncWarp, rec, mask, [](int**) {});
}

// mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.{xor,and}.popc. Lane 4 g + t: A row g
// (a0: K bits 32 t.., a2: 128 + 32 t..) and row g + 8 (a1, a3); B column g (b0: 32 t..,
// b1: 128 + 32 t..); C/D rows g (c0, c1: columns 2 t, 2 t + 1) and g + 8 (c2, c3).
struct MmaRec {
  int d[4];
  unsigned a[4], b[2];
};

inline void mma_b1(bool use_xor, int (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  MmaRec rec;
  std::memcpy(rec.d, d, sizeof rec.d);
  std::memcpy(rec.a, a, sizeof rec.a);
  std::memcpy(rec.b, b, sizeof rec.b);
  auto compute = [use_xor](MmaRec** recs) {
    unsigned A[16][8], B[8][8];  // [row][32-bit K chunk], [column][chunk]
    int C[16][8];
    for (int l = 0; l < kWarp; ++l) {
      const int g = l / 4, t = l % 4;
      A[g][t] = recs[l]->a[0];
      A[g + 8][t] = recs[l]->a[1];
      A[g][4 + t] = recs[l]->a[2];
      A[g + 8][4 + t] = recs[l]->a[3];
      B[g][t] = recs[l]->b[0];
      B[g][4 + t] = recs[l]->b[1];
      C[g][2 * t] = recs[l]->d[0];
      C[g][2 * t + 1] = recs[l]->d[1];
      C[g + 8][2 * t] = recs[l]->d[2];
      C[g + 8][2 * t + 1] = recs[l]->d[3];
    }
    for (int i = 0; i < 16; ++i)
      for (int j = 0; j < 8; ++j)
        for (int c = 0; c < 8; ++c) C[i][j] += __builtin_popcount(use_xor ? A[i][c] ^ B[j][c] : A[i][c] & B[j][c]);
    for (int l = 0; l < kWarp; ++l) {
      const int g = l / 4, t = l % 4;
      recs[l]->d[0] = C[g][2 * t];
      recs[l]->d[1] = C[g][2 * t + 1];
      recs[l]->d[2] = C[g + 8][2 * t];
      recs[l]->d[3] = C[g + 8][2 * t + 1];
    }
  };
  warp_collective(Op::Mma, rec, 0xffffffffu, compute);
  std::memcpy(d, rec.d, sizeof rec.d);
}

// ldmatrix.sync.aligned.m8n8.x4.shared.b16: lanes 8 q .. 8 q + 7 give the row addresses
// of matrix q (16 bytes each, 16-byte aligned); lane l gets, in r[q], the 32 bits at byte
// 4 (l % 4) of matrix q's row l / 4.
struct LdmatrixRec {
  uint32_t addr;
  unsigned out[4];
};

inline void ldmatrix_x4(unsigned (&r)[4], uint32_t addr) {
  LdmatrixRec rec{addr, {}};
  warp_collective(Op::Ldmatrix, rec, 0xffffffffu, [](LdmatrixRec** recs) {
    const unsigned char* dyn = own_cta().dyn.data();  // the last lane to arrive runs this
    size_t at[kWarp];
    for (int l = 0; l < kWarp; ++l) at[l] = smem_index(recs[l]->addr, 16, "ldmatrix row");
    for (int l = 0; l < kWarp; ++l)
      for (int q = 0; q < 4; ++q) std::memcpy(&recs[l]->out[q], dyn + at[8 * q + l / 4] + 4 * (l % 4), 4);
  });
  std::memcpy(r, rec.out, sizeof rec.out);
}

// Shared addresses: dyn_base plus offsets into the dynamic shared memory (the only memory
// the kernels address this way). dyn_base is 16-byte aligned but by default not 128- or
// 1,024-byte aligned, as nothing guarantees more on a GPU: a kernel whose layout depends on
// address bits above 4 (the wgmma swizzle) must align its buffers itself.
inline uint32_t smem_addr(const void* p) {
  Runtime& r = rt();
  const unsigned char* c = static_cast<const unsigned char*>(p);
  const unsigned char* dyn = own_cta().dyn.data();
  if (c < dyn || c > dyn + r.dyn_bytes) fail("shared address outside dynamic shared memory");
  return r.dyn_base + (uint32_t)(c - dyn);
}

inline void cp_async16(uint32_t dst, const void* src, bool valid) {
  Runtime& r = rt();
  if (r.early_copies) perform({dst, src, valid});
  else r.current->pending.push_back({dst, src, valid});
}

inline void cp_async_commit() {
  Fiber* f = rt().current;
  f->groups.push_back(std::move(f->pending));
  f->pending.clear();
}

inline void cp_async_wait(int n) {
  Fiber* f = rt().current;
  while ((int)f->groups.size() > n) {
    for (const Copy& c : f->groups.front()) perform(c);
    f->groups.pop_front();
  }
}

// wgmma.mma_async m64nNk256 .s32.b1.b1.and.popc (N = 128 or 256: N / 2 accumulators a
// thread), both operands K-major in shared memory with the 128-byte swizzle (descriptor:
// start address >> 4 in bits 0-13, the stride between 8-row groups >> 4 in bits 32-45,
// mode 1 in bits 62-63): row r's byte b (b < 32) of the K step is at start + (r / 8) *
// stride + (r % 8) * 128 + b with address bits 4-6 XORed by bits 7-9. Thread 128 v + 32 w
// + 4 g + t of warpgroup v gets, for j < N / 8, d[4 j + 2 h + e] += popc(A row 16 w + g +
// 8 h AND B row 8 j + 2 t + e).
// The shared address of row r of a wgmma operand (before the swizzle, which moves each
// 16-byte piece by the bits of its own address).
inline uint64_t wgmma_row(uint64_t desc, int r) {
  if ((desc >> 62) != 1) fail("wgmma descriptor: only the 128-byte swizzle is emulated");
  if (((desc >> 16) & 0x3fff) != 1 || ((desc >> 49) & 7) != 0 || (desc & 0x3ff1c000c000c000ull) != 0)
    fail("wgmma descriptor: K-major 128-byte swizzle wants leading offset 1, base offset 0, reserved bits 0");
  const uint64_t start = (desc & 0x3fff) << 4, stride = ((desc >> 32) & 0x3fff) << 4;
  const uint64_t row = start + (uint64_t)(r / 8) * stride + (uint64_t)(r % 8) * 128;
  smem_index(row, 32, "wgmma operand row");
  return row;
}

inline std::vector<int> wgmma_compute(const Wgmma& op) {
  const int tid = rt().current->linear % 128, w = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const unsigned char* dyn = own_cta().dyn.data();
  auto bits = [&](uint64_t desc, int r, uint64_t (&v)[4]) {  // the 32 bytes of row r in the K step
    const uint64_t row = wgmma_row(desc, r);
    for (int piece = 0; piece < 2; ++piece) {
      const uint64_t addr = row + 16 * piece;
      const uint64_t phys = addr ^ (((addr >> 7) & 7) << 4);  // address bits 4-6 ^= bits 7-9
      std::memcpy(v + 2 * piece, dyn + smem_index(phys, 16, "wgmma operand"), 16);
    }
  };
  uint64_t a[2][4];  // this thread's rows of A: 16 w + g and + 8
  for (int h = 0; h < 2; ++h) bits(op.da, 16 * w + g + 8 * h, a[h]);
  std::vector<int> out(op.init);
  for (int j = 0; j < op.n / 4; ++j)
    for (int e = 0; e < 2; ++e) {
      uint64_t b[4];
      bits(op.db, 8 * j + 2 * t + e, b);
      for (int h = 0; h < 2; ++h)
        for (int k = 0; k < 4; ++k) out[4 * j + 2 * h + e] += __builtin_popcountll(a[h][k] & b[k]);
    }
  return out;
}

template <int kAcc>
inline void wgmma_and(int (&d)[kAcc], uint64_t da, uint64_t db) {
  static_assert(kAcc == 64 || kAcc == 128, "wgmma: m64n128 or m64n256 accumulators");
  Runtime& r = rt();
  Fiber* f = r.current;
  // .sync.aligned: the warpgroup's 128 threads issue it together, with the same descriptors.
  const std::tuple<int, int, long> key{f->cta, f->linear / 128, f->wgmma_issued++};
  auto& seen = r.wgmma_issues[key];
  if (seen.second == 0) seen.first = {da, db};
  else if (seen.first != std::make_pair(da, db)) fail(where(*f) + ": wgmma descriptors differ within a warpgroup");
  if (++seen.second == 128) r.wgmma_issues.erase(key);
  Wgmma op{d, kAcc, da, db, -1, std::vector<int>(d, d + kAcc), {}};
  for (const Wgmma& p : f->wgmma_pending)  // accumulating onto one still in flight: chained
    if (p.d == d) {
      if (p.n != kAcc) fail(where(*f) + ": wgmma of another shape on accumulators in flight");
      op.init = p.result;
    }
  op.result = wgmma_compute(op);
  f->wgmma_pending.push_back(std::move(op));
}

inline void wgmma_commit() {  // the uncommitted wgmma become one group (possibly empty)
  Fiber* f = rt().current;
  for (Wgmma& op : f->wgmma_pending)
    if (op.group < 0) op.group = f->wgmma_groups;
  ++f->wgmma_groups;
}

// wait_group n: every committed group but the newest n is complete. A completed wgmma
// writes its accumulators, after checking that nothing wrote them while the first wgmma
// on them was in flight, and that its shared-memory operands still hold what it read.
inline void wgmma_wait(int n) {
  Fiber* f = rt().current;
  for (const Wgmma& op : f->wgmma_pending)
    if (op.group < 0) fail(where(*f) + ": wgmma waited for before its commit");
  std::vector<Wgmma> left;
  for (size_t i = 0; i < f->wgmma_pending.size(); ++i) {
    const Wgmma& op = f->wgmma_pending[i];
    if (op.group >= f->wgmma_groups - n) {
      left.push_back(op);
      continue;
    }
    bool first = true;  // the first in flight on its accumulators (earlier ones on them completed)
    for (size_t k = 0; k < i; ++k) first = first && f->wgmma_pending[k].d != op.d;
    if (first && !std::equal(op.init.begin(), op.init.end(), op.d))
      fail(where(*f) + ": accumulators written while a wgmma on them was in flight");
    if (wgmma_compute(op) != op.result) fail(where(*f) + ": a wgmma's shared-memory operands changed before its wait");
    std::copy(op.result.begin(), op.result.end(), op.d);
  }
  f->wgmma_pending = std::move(left);
}

inline unsigned char* dynamic_smem() { return own_cta().dyn.data(); }

// Makes p's object escape (the compiler must assume any later opaque call, such as a
// fiber switch, may read or write it): see tests/cuda_sim.py, which calls this after
// each __shared__ declaration.
inline void escape(void* p) { asm volatile("" : : "g"(p) : "memory"); }

// ------------------------------------------------------------------ launch

struct Launch {
  dim3 grid, block;
  size_t smem;
  unsigned cluster;  // CTAs per cluster, along x

  template <typename... P, typename... A>
  void operator()(void (*kernel)(P...), A&&... args) const {
    Runtime& r = rt();
    std::lock_guard<std::mutex> hold(r.lock);
    const size_t threads = (size_t)block.x * block.y * block.z;
    if (threads == 0 || threads > 1024 || block.y != 1 || block.z != 1)
      fail("block must be 1-D with 1..1024 threads, got " + std::to_string(threads));
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535)
      fail("bad grid (" + std::to_string(grid.x) + "," + std::to_string(grid.y) + "," + std::to_string(grid.z) + ")");
    if (cluster == 0 || cluster > 8) fail("cluster size " + std::to_string(cluster) + ": 1..8 (portable) emulated");
    if (grid.x % cluster != 0 || (cluster > 1 && (grid.y != 1 || grid.z != 1)))
      fail("grid (" + std::to_string(grid.x) + "," + std::to_string(grid.y) + "," + std::to_string(grid.z) +
           ") is not 1-D in whole clusters of " + std::to_string(cluster));
    const auto optin = smem_optin().find(reinterpret_cast<const void*>(kernel));
    const size_t limit = optin == smem_optin().end() ? kDefaultSmem : (size_t)optin->second;
    if (smem > limit)
      fail("launch asks for " + std::to_string(smem) + " bytes of dynamic shared memory, the kernel may have " +
           std::to_string(limit));
    // Arguments converted to the kernel's parameter types once, as a launch does.
    std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
    r.grid = grid;
    r.block = block;
    r.cluster = cluster;
    r.dyn_bytes = smem;
    r.ctas.assign(cluster, Cta{});
    for (Cta& c : r.ctas) c.dyn.assign(std::max<size_t>(smem, 16), 0);
    r.error.clear();
    r.early_copies = std::getenv("FASTSPLINE_SIM_CP_ASYNC") && std::string(std::getenv("FASTSPLINE_SIM_CP_ASYNC")) == "early";
    const char* base = std::getenv("FASTSPLINE_SIM_SMEM_BASE");
    r.dyn_base = base ? (uint32_t)std::stoul(base) : 528u;  // 16-byte aligned, not 128 or 1,024
    if (r.dyn_base % 16 != 0) fail("FASTSPLINE_SIM_SMEM_BASE must be a multiple of 16");
    r.body = [&params, kernel] { std::apply(kernel, params); };
    const size_t all = threads * cluster;  // fibers of a cluster
    if (r.stacks.size() < all * kStack) r.stacks.assign(all * kStack, 0);
    const char* schedule = std::getenv("FASTSPLINE_SIM_SCHEDULE");
    const std::string mode = schedule ? schedule : "forward";
    std::vector<int> order(all);
    for (size_t i = 0; i < all; ++i) order[i] = (int)(mode == "reverse" ? all - 1 - i : i);
    const bool stall = mode.rfind("stall", 0) == 0, shuffle = stall || mode.rfind("random", 0) == 0;
    const size_t colon = mode.find(':');
    std::mt19937 rng(shuffle && colon != std::string::npos ? (unsigned)std::atoi(mode.c_str() + colon + 1) : 0u);
    for (unsigned bz = 0; bz < grid.z; ++bz)
      for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; bx += cluster) {
          r.wgmma_issues.clear();
          r.mbars.clear();
          r.bulk.clear();
          r.cluster_arrived = 0;
          for (unsigned c = 0; c < cluster; ++c) {
            Cta& cta = r.ctas[c];
            cta.block_idx = dim3(bx + c, by, bz);
            std::memset(cta.dyn.data(), 0xa5, cta.dyn.size());  // shared memory starts undefined
            cta.barrier_arrived = 0;
            cta.warp_arrived.assign((threads + kWarp - 1) / kWarp, 0);
          }
          r.fibers.assign(all, Fiber{});
          for (size_t i = 0; i < all; ++i) {
            Fiber& f = r.fibers[i];
            f.cta = (int)(i / threads);
            f.linear = (int)(i % threads);
            f.tid = dim3((unsigned)f.linear, 0, 0);
            start(f.ctx, stack_of(f), kStack, entry);
          }
          run_cluster(order, shuffle, stall, rng);
          for (const Fiber& f : r.fibers)
            if (!f.groups.empty() || !f.pending.empty()) fail(where(f) + " exited with cp.async copies outstanding");
          for (const Fiber& f : r.fibers)
            if (!f.wgmma_pending.empty()) fail(where(f) + " exited with wgmma outstanding");
          if (!r.wgmma_issues.empty()) fail("a wgmma issued by only part of a warpgroup");
          if (!r.bulk.empty())
            fail("block (" + std::to_string(bx + r.bulk[0].cta) + "," + std::to_string(by) +
                 ") exited with bulk copies outstanding (" + std::to_string(r.bulk.size()) +
                 " unlanded, the first to the " + mbarrier_name(r.bulk[0].cta, r.bulk[0].mbar) + ")");
        }
    r.fibers.clear();
    r.body = nullptr;
  }
};

inline Launch launch_cluster(dim3 grid, dim3 block, size_t smem, cudaStream_t, unsigned cluster) {
  return {grid, block, smem, cluster};
}
inline Launch launch(dim3 grid, dim3 block, size_t smem = 0, cudaStream_t stream = nullptr) {
  return launch_cluster(grid, block, smem, stream, 1);
}

inline dim3& block_index() { return own_cta().block_idx; }

}  // namespace sim

#define threadIdx (::sim::rt().current->tid)
#define blockIdx (::sim::block_index())
#define blockDim (::sim::rt().block)
#define gridDim (::sim::rt().grid)

inline void __syncthreads() { sim::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { sim::syncwarp(mask); }
inline unsigned __ballot_sync(unsigned mask, bool pred) { return sim::ballot(mask, pred); }
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask) { return sim::shfl_xor(mask, v, lane_mask); }
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta) { return sim::shfl_down(mask, v, delta); }
