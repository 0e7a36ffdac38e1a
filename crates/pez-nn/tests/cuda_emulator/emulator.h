// Enough of CUDA to run pez's kernels (src/cuda/*.cu) on the CPU, one OS thread per CUDA thread and one block at a
// time: __syncthreads is a barrier of the block, __shfl_xor_sync an exchange through memory between two barriers,
// __shared__ a static (blocks never overlap), bf16 a 16-bit float rounded to nearest even as CUDA rounds it.
// For tests/cuda_emulated.rs, which compares the kernels' results with the CPU kernels: no GPU runs here.
#pragma once
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

struct dim3 { unsigned x = 1, y = 1, z = 1; };
thread_local dim3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

static std::barrier<>* emu_block_barrier;
static float emu_shuffle[1024];

inline void __syncthreads() { emu_block_barrier->arrive_and_wait(); }

// Every thread of the block reaches each shuffle in pez's kernels (whole warps, uniform control flow), so a barrier
// of the whole block stands in for the warp's.
inline float __shfl_xor_sync(unsigned, float v, int lane_mask) {
  emu_shuffle[threadIdx.x] = v;
  __syncthreads();
  const float r = emu_shuffle[threadIdx.x ^ lane_mask];
  __syncthreads();
  return r;
}

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

struct __nv_bfloat16 { uint16_t bits; };
inline float __bfloat162float(__nv_bfloat16 h) {
  uint32_t u = uint32_t(h.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (std::isnan(f)) return {uint16_t(0x7fc0)};
  u += 0x7fff + ((u >> 16) & 1);  // round to nearest, ties to even
  return {uint16_t(u >> 16)};
}

// kernel<<<grid, block>>>(args...), blocks one after another.
template <class... P, class... A>
void emu_launch(void (*kernel)(P...), unsigned grid, unsigned block, A... args) {
  blockDim = {block, 1, 1};
  gridDim = {grid, 1, 1};
  for (unsigned b = 0; b < grid; b++) {
    std::barrier<> bar(block);
    emu_block_barrier = &bar;
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < block; t++)
      threads.emplace_back([=] {
        threadIdx = {t, 0, 0};
        blockIdx = {b, 0, 0};
        kernel(args...);
      });
    for (auto& th : threads) th.join();
  }
}
