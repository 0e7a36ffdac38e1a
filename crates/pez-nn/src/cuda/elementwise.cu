// Rotary embeddings and gated activations, forward and input-only backward: the CUDA twins of src/kernels/rope.rs
// and gated.rs (the same formulas). A thread per value (per pair for rope) over a grid-stride loop; f32 and bf16,
// f32 arithmetic.
#include "common.cuh"

// Half-split rotary embedding of rows of d values, row r at position r % positions of the [positions, d] tables:
// y = x * cos + rot(x) * sin, rot(x) = [-x2, x1]; dx = g * cos + rot^T(g * sin), rot^T(u) = [u2, -u1].
template <typename T>
__device__ void rope(const T* x, const T* cos, const T* sin, T* out, int rows, int positions, int d, bool bwd) {
  const int half = d / 2;
  GRID_STRIDE(k, (size_t)rows * half) {
    const size_t r = k / half, i = k % half, base = r * d, p = (r % positions) * d;
    const float x1 = to_f(x[base + i]), x2 = to_f(x[base + i + half]);
    const float c1 = to_f(cos[p + i]), c2 = to_f(cos[p + i + half]), s1 = to_f(sin[p + i]), s2 = to_f(sin[p + i + half]);
    if (!bwd) {
      out[base + i] = from_f<T>(x1 * c1 - x2 * s1);
      out[base + i + half] = from_f<T>(x2 * c2 + x1 * s2);
    } else {  // x is the output gradient here
      out[base + i] = from_f<T>(x1 * c1 + x2 * s2);
      out[base + i + half] = from_f<T>(x2 * c2 - x1 * s1);
    }
  }
}

// act(a) and act'(a): gate 0 is SiLU, 1 is tanh-GELU (candle's gelu; tanh(u) = 1 - 2 / (exp(2u) + 1)).
__device__ __forceinline__ void act(int gate, float a, float* f, float* df) {
  if (gate == 0) {
    const float s = 1.f / (1.f + expf(-a));
    *f = a * s;
    *df = s * (1.f + a * (1.f - s));
  } else {
    const float k = 0.7978845608028654f, c3 = 0.044715f;
    const float t = 1.f - 2.f / (expf(2.f * k * a * (1.f + c3 * a * a)) + 1.f);
    *f = 0.5f * a * (1.f + t);
    *df = 0.5f * (1.f + t) + 0.5f * a * (1.f - t * t) * k * (1.f + 3.f * c3 * a * a);
  }
}

// y = act(a) * b
template <typename T>
__device__ void gated_fwd(const T* a, const T* b, T* y, size_t n, int gate) {
  GRID_STRIDE(k, n) {
    float f, df;
    act(gate, to_f(a[k]), &f, &df);
    y[k] = from_f<T>(f * to_f(b[k]));
  }
}

// da = g * b * act'(a), db = g * act(a)
template <typename T>
__device__ void gated_bwd(const T* a, const T* b, const T* g, T* da, T* db, size_t n, int gate) {
  GRID_STRIDE(k, n) {
    float f, df;
    act(gate, to_f(a[k]), &f, &df);
    const float gk = to_f(g[k]);
    da[k] = from_f<T>(gk * to_f(b[k]) * df);
    db[k] = from_f<T>(gk * f);
  }
}

#define ROPE(NAME, T, BWD)                                                                                         \
  extern "C" __global__ void NAME(const T* x, const T* cos, const T* sin, T* out, int rows, int positions, int d) { \
    rope<T>(x, cos, sin, out, rows, positions, d, BWD);                                                           \
  }
ROPE(pez_rope_fwd_f32, float, false)
ROPE(pez_rope_fwd_bf16, __nv_bfloat16, false)
ROPE(pez_rope_bwd_f32, float, true)
ROPE(pez_rope_bwd_bf16, __nv_bfloat16, true)

#define GATED(T, SUFFIX)                                                                                    \
  extern "C" __global__ void pez_gated_fwd_##SUFFIX(const T* a, const T* b, T* y, size_t n, int gate) {    \
    gated_fwd<T>(a, b, y, n, gate);                                                                         \
  }                                                                                                         \
  extern "C" __global__ void pez_gated_bwd_##SUFFIX(const T* a, const T* b, const T* g, T* da, T* db, size_t n, \
                                                    int gate) {                                             \
    gated_bwd<T>(a, b, g, da, db, n, gate);                                                                 \
  }
GATED(float, f32)
GATED(__nv_bfloat16, bf16)
