// What pez's CUDA kernels share: bf16 <-> f32 (the arithmetic is f32 for every input type) and the grid-stride loop.
#pragma once
#ifndef PEZ_CUDA_EMULATOR  // tests/cuda_emulator runs the kernels on the CPU with its own bf16
#include <cuda_bf16.h>
#endif

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16(x); }

// Every k in [0, n) once, over all the launch's threads.
#define GRID_STRIDE(k, n) \
  for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < (n); k += (size_t)gridDim.x * blockDim.x)
