// CUDA's execution model on the CPU, for running the kernels of csrc/ in CI.
//
// tests/cuda_emulation/build.py compiles a copy of csrc/ as C++ with this directory first on
// the include path: this header stands in for the CUDA runtime, the c10/cuda headers beside
// it for PyTorch's CUDA helpers, and each `kernel<<<grid, block, shared, stream>>>(args)` is
// rewritten into `::sgf_emu::launch(grid, block, shared, stream, [&] { kernel(args); })`.
//
// A launch runs its blocks one after another. The threads of a block are fibers (ucontext)
// on one OS thread, each run until it finishes or waits: at __syncthreads() until every
// thread of the block is there, at a warp shuffle until the 32 threads of its warp are.
// Blocks running one at a time make `static` the right storage for __shared__ arrays (one
// copy, reused by the next block, as a block's shared memory is). What would fail or hang on
// a GPU fails here as a launch error, which C10_CUDA_KERNEL_LAUNCH_CHECK() raises:
// a grid or block beyond CUDA's limits, a __syncthreads() that some threads of the block
// never reach, a shuffle that some lanes of the warp never reach, a partial shuffle mask.
// The scheduler resumes the waiting threads in thread order and in reverse order in turn, so
// that a result that depends on which thread runs first (a missing barrier) is likely to show.
// AddressSanitizer is told of every switch between stacks.
#pragma once

#include <ucontext.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#define CUDART_VERSION 0  // no CUDA runtime: compiled_archs / cuda_version report the emulation

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

typedef struct CUstream_st* cudaStream_t;
enum cudaError_t { cudaSuccess = 0, cudaErrorLaunchFailure = 719 };
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };

namespace sgf_emu {

// Streaming multiprocessors the emulated device reports, 0 and 1 in turn: the kernels that cap
// their grids at a multiple of it (launch.cuh's grid_size) then launch, in turn, a single block
// (every grid-stride loop takes many steps, even on a test's small tensors) and up to 32.
inline int multiprocessors() {
  static int queries = 0;
  return queries++ % 2;
}
constexpr std::size_t kStackBytes = 256 * 1024;

enum class State { kRunnable, kAtSyncthreads, kAtShuffle, kDone };

struct Thread {
  ucontext_t context;
  dim3 index;
  int linear = 0;
  State state = State::kRunnable;
};

struct Launch {
  dim3 grid, block, block_index;
  std::vector<Thread> threads;
  Thread* current = nullptr;
  ucontext_t scheduler;
  void (*body)(void*) = nullptr;
  void* body_state = nullptr;
  uint64_t exchange[1024];  // one shuffle value per thread of the block
  const void* scheduler_stack = nullptr;  // AddressSanitizer's bookkeeping of the stacks
  std::size_t scheduler_stack_size = 0;
};

inline Launch*& active() {
  static Launch* launch = nullptr;
  return launch;
}

inline std::string& launch_error() {
  static std::string error;
  return error;
}

inline std::vector<char>& stacks() {
  static std::vector<char> memory;
  return memory;
}

inline char* stack_of(int thread) { return stacks().data() + static_cast<std::size_t>(thread) * kStackBytes; }

inline const dim3& thread_index() { return active()->current->index; }

// Switches to `to`, whose stack is [stack, stack + size), saving the running context in
// `from`, or ending it if `from` is null; tells AddressSanitizer (when compiled with it).
inline void switch_to(ucontext_t* from, ucontext_t* to, const void* stack, std::size_t size) {
#if defined(__SANITIZE_ADDRESS__)
  void* fake_stack = nullptr;
  __sanitizer_start_switch_fiber(from != nullptr ? &fake_stack : nullptr, stack, size);
#else
  (void)stack, (void)size;
#endif
  if (from == nullptr) {
    setcontext(to);
  }
  swapcontext(from, to);
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#endif
}

// Suspends the current thread in `state` until the scheduler releases it.
inline void wait(State state) {
  Launch* launch = active();
  Thread* self = launch->current;
  self->state = state;
  switch_to(&self->context, &launch->scheduler, launch->scheduler_stack, launch->scheduler_stack_size);
}

inline void thread_entry() {
  Launch* launch = active();
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(nullptr, &launch->scheduler_stack, &launch->scheduler_stack_size);
#endif
  launch->body(launch->body_state);
  launch->current->state = State::kDone;
  switch_to(nullptr, &launch->scheduler, launch->scheduler_stack, launch->scheduler_stack_size);
}

inline std::string describe(const Launch& launch) {
  int done = 0, at_sync = 0, at_shuffle = 0;
  for (const Thread& t : launch.threads) {
    done += t.state == State::kDone;
    at_sync += t.state == State::kAtSyncthreads;
    at_shuffle += t.state == State::kAtShuffle;
  }
  return std::to_string(done) + " threads done, " + std::to_string(at_sync) + " at __syncthreads(), " +
         std::to_string(at_shuffle) + " at a shuffle";
}

// Runs block `launch.block_index` to its end; false (with launch_error set) if it cannot.
inline bool run_block(Launch& launch, bool reverse_first) {
  const int n = static_cast<int>(launch.threads.size());
  for (int i = 0; i < n; ++i) {
    Thread& t = launch.threads[i];
    t.state = State::kRunnable;
    getcontext(&t.context);
    t.context.uc_stack.ss_sp = stack_of(i);
    t.context.uc_stack.ss_size = kStackBytes;
    t.context.uc_link = nullptr;  // a thread's end switches to the scheduler itself
    makecontext(&t.context, thread_entry, 0);
  }
  for (bool reverse = reverse_first;; reverse = !reverse) {
    for (int k = 0; k < n; ++k) {
      Thread& t = launch.threads[reverse ? n - 1 - k : k];
      if (t.state == State::kRunnable) {
        launch.current = &t;
        switch_to(&launch.scheduler, &t.context, stack_of(t.linear), kStackBytes);
      }
    }
    int done = 0, at_sync = 0;
    bool released = false;
    for (int w = 0; w * 32 < n; ++w) {  // a warp whose 32 lanes all wait at a shuffle goes on
      const int lanes = n - w * 32 < 32 ? n - w * 32 : 32;
      int waiting = 0;
      for (int l = 0; l < lanes; ++l) {
        waiting += launch.threads[w * 32 + l].state == State::kAtShuffle;
      }
      if (lanes == 32 && waiting == 32) {
        for (int l = 0; l < lanes; ++l) {
          launch.threads[w * 32 + l].state = State::kRunnable;
        }
        released = true;
      }
    }
    for (const Thread& t : launch.threads) {
      done += t.state == State::kDone;
      at_sync += t.state == State::kAtSyncthreads;
    }
    if (done == n) {
      return true;
    }
    if (released) {
      continue;
    }
    if (at_sync == n) {
      for (Thread& t : launch.threads) {
        t.state = State::kRunnable;
      }
      continue;
    }
    const dim3& b = launch.block_index;
    launch_error() = "block (" + std::to_string(b.x) + ", " + std::to_string(b.y) + ", " + std::to_string(b.z) +
                     ") cannot go on: a __syncthreads() or a full-warp shuffle that not every thread reaches (" +
                     describe(launch) + ")";
    return false;
  }
}

template <typename F>
void call_body(void* f) {
  (*static_cast<F*>(f))();
}

// kernel<<<grid, block, shared_bytes, stream>>>(...), with `kernel_call` the call itself.
template <typename F>
void launch(dim3 grid, dim3 block, std::size_t shared_bytes, cudaStream_t, F&& kernel_call) {
  if (!launch_error().empty()) {
    return;  // a failed launch fails every later one until it is reported
  }
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535 ||
      threads == 0 || threads > 1024 || block.z > 64 || shared_bytes > 48 * 1024) {
    launch_error() = "invalid configuration argument: grid (" + std::to_string(grid.x) + ", " +
                     std::to_string(grid.y) + ", " + std::to_string(grid.z) + "), block (" + std::to_string(block.x) +
                     ", " + std::to_string(block.y) + ", " + std::to_string(block.z) + ")";
    return;
  }
  Launch launch;
  launch.grid = grid;
  launch.block = block;
  launch.threads.resize(threads);
  for (unsigned int z = 0, i = 0; z < block.z; ++z) {
    for (unsigned int y = 0; y < block.y; ++y) {
      for (unsigned int x = 0; x < block.x; ++x, ++i) {
        launch.threads[i].index = dim3(x, y, z);
        launch.threads[i].linear = static_cast<int>(i);
      }
    }
  }
  if (stacks().size() < threads * kStackBytes) {
    stacks().resize(threads * kStackBytes);
  }
  launch.body = &call_body<std::remove_reference_t<F>>;
  launch.body_state = &kernel_call;
  Launch* const outer = active();
  active() = &launch;
  bool reverse = false;
  for (unsigned int z = 0; z < grid.z; ++z) {
    for (unsigned int y = 0; y < grid.y; ++y) {
      for (unsigned int x = 0; x < grid.x; ++x) {
        launch.block_index = dim3(x, y, z);
        if (!run_block(launch, reverse)) {
          active() = outer;
          return;
        }
        reverse = !reverse;
      }
    }
  }
  active() = outer;
}

// Raises the error of the last failed launch, as cudaGetLastError() would report it.
inline cudaError_t take_launch_error(std::string& message) {
  message.swap(launch_error());
  launch_error().clear();
  return message.empty() ? cudaSuccess : cudaErrorLaunchFailure;
}

}  // namespace sgf_emu

#define threadIdx (::sgf_emu::thread_index())
#define blockIdx (::sgf_emu::active()->block_index)
#define blockDim (::sgf_emu::active()->block)
#define gridDim (::sgf_emu::active()->grid)

inline void __syncthreads() { ::sgf_emu::wait(::sgf_emu::State::kAtSyncthreads); }

// The value of lane (lane + delta) of the warp, or the caller's own where that is past the
// warp's end; every lane of the warp must call it (only full masks are emulated).
template <typename T>
T __shfl_down_sync(unsigned int mask, T value, unsigned int delta) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "shuffles move at most 8 bytes");
  ::sgf_emu::Launch* launch = ::sgf_emu::active();
  const int self = launch->current->linear;
  if (mask != 0xffffffffu) {
    ::sgf_emu::launch_error() = "__shfl_down_sync with a partial mask is not emulated";
  }
  std::memcpy(&launch->exchange[self], &value, sizeof(T));
  ::sgf_emu::wait(::sgf_emu::State::kAtShuffle);
  T result = value;
  if (self % 32 + delta < 32) {
    std::memcpy(&result, &launch->exchange[self + delta], sizeof(T));
  }
  ::sgf_emu::wait(::sgf_emu::State::kAtShuffle);  // nobody overwrites a value before all have read it
  return result;
}

inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attribute, int) {
  *value = attribute == cudaDevAttrMultiProcessorCount ? ::sgf_emu::multiprocessors() : 0;
  return cudaSuccess;
}
