// RMSNorm and LayerNorm over the last dimension with frozen weights, forward and input-only backward: the CUDA twins
// of src/kernels/norms.rs (the same formulas, the reference). One block per row of `d` values; f32 and bf16 inputs,
// f32 arithmetic. Every kernel takes (x, w, z, out, d, eps) where z is the bias (LayerNorm forward), the output
// gradient (backward passes), or unused (RMSNorm forward).
#include "common.cuh"

// y = x * inv * w, inv = (mean(x^2) + eps)^-1/2
template <typename T>
__device__ void rms_norm_fwd(const T* x, const T* w, const T*, T* y, int d, float eps) {
  const size_t off = (size_t)blockIdx.x * d;
  x += off; y += off;
  float ss = 0.f;
  for (int i = threadIdx.x; i < d; i += blockDim.x) { const float v = to_f(x[i]); ss += v * v; }
  const float inv = rsqrtf(block_sum(ss) / d + eps);
  for (int i = threadIdx.x; i < d; i += blockDim.x) y[i] = from_f<T>(to_f(x[i]) * inv * to_f(w[i]));
}

// dx = inv * g * w - x * inv^3 * sum(g * w * x) / d
template <typename T>
__device__ void rms_norm_bwd(const T* x, const T* w, const T* g, T* dx, int d, float eps) {
  const size_t off = (size_t)blockIdx.x * d;
  x += off; g += off; dx += off;
  float ss = 0.f, gwx = 0.f;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    const float v = to_f(x[i]);
    ss += v * v;
    gwx += to_f(g[i]) * to_f(w[i]) * v;
  }
  const float inv = rsqrtf(block_sum(ss) / d + eps);
  const float k = inv * inv * inv * block_sum(gwx) / d;
  for (int i = threadIdx.x; i < d; i += blockDim.x)
    dx[i] = from_f<T>(inv * to_f(g[i]) * to_f(w[i]) - to_f(x[i]) * k);
}

// mean and inv = (var + eps)^-1/2 of one row, two passes (as the CPU kernel).
template <typename T>
__device__ void mean_inv(const T* x, int d, float eps, float* mean, float* inv) {
  float s = 0.f;
  for (int i = threadIdx.x; i < d; i += blockDim.x) s += to_f(x[i]);
  const float m = block_sum(s) / d;
  float v = 0.f;
  for (int i = threadIdx.x; i < d; i += blockDim.x) { const float c = to_f(x[i]) - m; v += c * c; }
  *mean = m;
  *inv = rsqrtf(block_sum(v) / d + eps);
}

// y = (x - mean) * inv * w + b
template <typename T>
__device__ void layer_norm_fwd(const T* x, const T* w, const T* b, T* y, int d, float eps) {
  const size_t off = (size_t)blockIdx.x * d;
  x += off; y += off;
  float mean, inv;
  mean_inv(x, d, eps, &mean, &inv);
  for (int i = threadIdx.x; i < d; i += blockDim.x)
    y[i] = from_f<T>((to_f(x[i]) - mean) * inv * to_f(w[i]) + to_f(b[i]));
}

// dx = inv * (gw - mean(gw) - xh * mean(gw * xh)), gw = g * w, xh = (x - mean) * inv
template <typename T>
__device__ void layer_norm_bwd(const T* x, const T* w, const T* g, T* dx, int d, float eps) {
  const size_t off = (size_t)blockIdx.x * d;
  x += off; g += off; dx += off;
  float mean, inv;
  mean_inv(x, d, eps, &mean, &inv);
  float sgw = 0.f, sgwxh = 0.f;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    const float gw = to_f(g[i]) * to_f(w[i]);
    sgw += gw;
    sgwxh += gw * (to_f(x[i]) - mean) * inv;
  }
  const float gw_mean = block_sum(sgw) / d, gwxh_mean = block_sum(sgwxh) / d;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    const float xh = (to_f(x[i]) - mean) * inv;
    dx[i] = from_f<T>(inv * (to_f(g[i]) * to_f(w[i]) - gw_mean - xh * gwxh_mean));
  }
}

#define ROW_KERNEL(NAME, FN, T)                                                                   \
  extern "C" __global__ void NAME(const T* x, const T* w, const T* z, T* out, int d, float eps) { \
    FN<T>(x, w, z, out, d, eps);                                                                  \
  }
ROW_KERNEL(pez_rms_norm_fwd_f32, rms_norm_fwd, float)
ROW_KERNEL(pez_rms_norm_fwd_bf16, rms_norm_fwd, __nv_bfloat16)
ROW_KERNEL(pez_rms_norm_bwd_f32, rms_norm_bwd, float)
ROW_KERNEL(pez_rms_norm_bwd_bf16, rms_norm_bwd, __nv_bfloat16)
ROW_KERNEL(pez_layer_norm_fwd_f32, layer_norm_fwd, float)
ROW_KERNEL(pez_layer_norm_fwd_bf16, layer_norm_fwd, __nv_bfloat16)
ROW_KERNEL(pez_layer_norm_bwd_f32, layer_norm_bwd, float)
ROW_KERNEL(pez_layer_norm_bwd_bf16, layer_norm_bwd, __nv_bfloat16)
