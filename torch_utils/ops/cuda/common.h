// Small helpers shared by this project's CUDA kernels.
#pragma once

#include <torch/extension.h>

#include <algorithm>
#include <cstdint>

// The CPU emulation of the kernels (tests) compiles the same bindings with SGILO_CPU_EMULATION defined.
#ifdef SGILO_CPU_EMULATION
#define SGILO_CHECK_CUDA(t) TORCH_CHECK((t).is_cpu(), #t " must be a CPU tensor (emulation build)")
#else
#define SGILO_CHECK_CUDA(t) TORCH_CHECK((t).is_cuda(), #t " must be a CUDA tensor")
#endif

namespace sgilo {

// Mathematical modulo: the result is in [0, m) also for negative a (C++ '%' keeps the sign of a).
C10_HOST_DEVICE inline int64_t floor_mod(int64_t a, int64_t m) {
  const int64_t r = a % m;
  return r < 0 ? r + m : r;
}

// Grid size for a grid-stride loop over `total` items with `threads` threads per block. The grid is capped:
// every thread loops, so a modest grid keeps all SMs busy without launching millions of tiny blocks.
inline unsigned int grid_size(int64_t total, int threads) {
  const int64_t blocks = (total + threads - 1) / threads;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(blocks, 65535 * 8)));
}

}  // namespace sgilo
