// Scaled, masked softmax over rows of sk values, forward and input-only backward: the CUDA twin of
// src/kernels/softmax.rs (the same formulas). One block per row; f32 and bf16, f32 arithmetic. Both kernels take
// (a, b, out, sk, mask_rows, scale):
//   forward:  a = z, b = the mask ([mask_rows, sk]; row r reads mask row r % mask_rows), out = softmax(scale z + m)
//   backward: a = p (the forward's output), b = its gradient g, out = scale * p * (g - rowsum(g * p))
#include "common.cuh"

template <typename T>
__device__ void masked_softmax_fwd(const T* z, const T* mask, T* p, int sk, int mask_rows, float scale) {
  const size_t r = blockIdx.x;
  z += r * sk;
  p += r * sk;
  mask += (r % mask_rows) * sk;
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < sk; i += blockDim.x) mx = fmaxf(mx, to_f(z[i]) * scale + to_f(mask[i]));
  mx = block_max(mx);
  float s = 0.f;
  for (int i = threadIdx.x; i < sk; i += blockDim.x) s += expf(to_f(z[i]) * scale + to_f(mask[i]) - mx);
  s = block_sum(s);
  for (int i = threadIdx.x; i < sk; i += blockDim.x) p[i] = from_f<T>(expf(to_f(z[i]) * scale + to_f(mask[i]) - mx) / s);
}

template <typename T>
__device__ void masked_softmax_bwd(const T* p, const T* g, T* dz, int sk, int, float scale) {
  const size_t off = (size_t)blockIdx.x * sk;
  p += off;
  g += off;
  dz += off;
  float gp = 0.f;
  for (int i = threadIdx.x; i < sk; i += blockDim.x) gp += to_f(g[i]) * to_f(p[i]);
  gp = block_sum(gp);
  for (int i = threadIdx.x; i < sk; i += blockDim.x) dz[i] = from_f<T>(scale * to_f(p[i]) * (to_f(g[i]) - gp));
}

#define SOFTMAX(NAME, FN, T)                                                                                  \
  extern "C" __global__ void NAME(const T* a, const T* b, T* out, int sk, int mask_rows, float scale) {       \
    FN<T>(a, b, out, sk, mask_rows, scale);                                                                   \
  }
SOFTMAX(pez_masked_softmax_fwd_f32, masked_softmax_fwd, float)
SOFTMAX(pez_masked_softmax_fwd_bf16, masked_softmax_fwd, __nv_bfloat16)
SOFTMAX(pez_masked_softmax_bwd_f32, masked_softmax_bwd, float)
SOFTMAX(pez_masked_softmax_bwd_bf16, masked_softmax_bwd, __nv_bfloat16)
