// Runs one of pez's CUDA kernels (src/cuda/*.cu) under the emulator, launched as src/cuda/mod.rs launches it.
// Inputs come on stdin and outputs go to stdout as little-endian f32 (a `_bf16` kernel gets its inputs rounded to
// bf16 and its outputs widened back):
//   pez_{rms,layer}_norm_{fwd,bwd}_T ROWS D EPS    x [ROWS*D], w [D], z [D] (forward) or the gradient [ROWS*D]
//   pez_rope_{fwd,bwd}_T ROWS POSITIONS D           x (or the gradient) [ROWS*D], cos and sin [POSITIONS*D]
//   pez_gated_fwd_T N GATE                          a, b [N] -> y;   pez_gated_bwd_T N GATE: a, b, g -> da, db
//   pez_masked_softmax_fwd_T ROWS SK MASK_ROWS SCALE   z [ROWS*SK], mask [MASK_ROWS*SK]
//   pez_masked_softmax_bwd_T ROWS SK MASK_ROWS SCALE   p, g [ROWS*SK]
#include "emulator.h"
#include "../../src/cuda/norms.cu"
#include "../../src/cuda/elementwise.cu"
#include "../../src/cuda/softmax.cu"
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

template <class T> T from_float(float v);
template <> float from_float<float>(float v) { return v; }
template <> __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16(v); }
inline float widen(float v) { return v; }
inline float widen(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T> static std::vector<T> read(size_t n) {
  std::vector<float> v(n);
  if (std::fread(v.data(), 4, n, stdin) != n) { std::fprintf(stderr, "short input\n"); std::exit(2); }
  std::vector<T> o(n);
  for (size_t i = 0; i < n; i++) o[i] = from_float<T>(v[i]);
  return o;
}
template <class T> static void write(const std::vector<T>& v) {
  std::vector<float> o(v.size());
  for (size_t i = 0; i < o.size(); i++) o[i] = widen(v[i]);
  std::fwrite(o.data(), 4, o.size(), stdout);
}
// The elementwise kernels' launch: 256 threads a block, at most 65535 blocks (src/cuda/mod.rs).
static unsigned grid_for(size_t work) { return (unsigned)std::min<size_t>((work + 255) / 256, 65535); }

template <class T> static int norm(void (*k)(const T*, const T*, const T*, T*, int, float), char** a, bool bwd) {
  const int rows = std::atoi(a[0]), d = std::atoi(a[1]);
  const size_t n = size_t(rows) * d;
  auto x = read<T>(n), w = read<T>(d), z = read<T>(bwd ? n : d);
  std::vector<T> out(n);
  emu_launch(k, rows, std::min(1024, std::max(32, (d + 31) / 32 * 32)), (const T*)x.data(), (const T*)w.data(),
             (const T*)z.data(), out.data(), d, (float)std::atof(a[2]));
  write(out);
  return 0;
}

template <class T> static int rope_k(void (*k)(const T*, const T*, const T*, T*, int, int, int), char** a) {
  const int rows = std::atoi(a[0]), positions = std::atoi(a[1]), d = std::atoi(a[2]);
  auto x = read<T>(size_t(rows) * d), c = read<T>(size_t(positions) * d), s = read<T>(size_t(positions) * d);
  std::vector<T> out(x.size());
  emu_launch(k, grid_for(size_t(rows) * d / 2), 256, (const T*)x.data(), (const T*)c.data(), (const T*)s.data(),
             out.data(), rows, positions, d);
  write(out);
  return 0;
}

template <class T> static int gated_f(void (*k)(const T*, const T*, T*, size_t, int), char** a) {
  const size_t n = std::atoll(a[0]);
  auto x = read<T>(n), y = read<T>(n);
  std::vector<T> out(n);
  emu_launch(k, grid_for(n), 256, (const T*)x.data(), (const T*)y.data(), out.data(), n, std::atoi(a[1]));
  write(out);
  return 0;
}

template <class T> static int gated_b(void (*k)(const T*, const T*, const T*, T*, T*, size_t, int), char** a) {
  const size_t n = std::atoll(a[0]);
  auto x = read<T>(n), y = read<T>(n), g = read<T>(n);
  std::vector<T> da(n), db(n);
  emu_launch(k, grid_for(n), 256, (const T*)x.data(), (const T*)y.data(), (const T*)g.data(), da.data(), db.data(), n,
             std::atoi(a[1]));
  write(da);
  write(db);
  return 0;
}

template <class T> static int softmax_k(void (*k)(const T*, const T*, T*, int, int, float), char** a, bool bwd) {
  const int rows = std::atoi(a[0]), sk = std::atoi(a[1]), mask_rows = std::atoi(a[2]);
  const size_t n = size_t(rows) * sk;
  auto x = read<T>(n), y = read<T>(bwd ? n : size_t(mask_rows) * sk);
  std::vector<T> out(n);
  emu_launch(k, rows, std::min(1024, std::max(32, (sk + 31) / 32 * 32)), (const T*)x.data(), (const T*)y.data(),
             out.data(), sk, mask_rows, (float)std::atof(a[3]));
  write(out);
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 4) { std::fprintf(stderr, "usage: harness KERNEL ARGS...\n"); return 2; }
  const std::string k = argv[1];
  char** a = argv + 2;
#define NORM(NAME, T, BWD) if (k == #NAME) return norm<T>(NAME, a, BWD);
  NORM(pez_rms_norm_fwd_f32, float, false) NORM(pez_rms_norm_fwd_bf16, __nv_bfloat16, false)
  NORM(pez_rms_norm_bwd_f32, float, true) NORM(pez_rms_norm_bwd_bf16, __nv_bfloat16, true)
  NORM(pez_layer_norm_fwd_f32, float, false) NORM(pez_layer_norm_fwd_bf16, __nv_bfloat16, false)
  NORM(pez_layer_norm_bwd_f32, float, true) NORM(pez_layer_norm_bwd_bf16, __nv_bfloat16, true)
#define ROPE_K(NAME, T) if (k == #NAME) return rope_k<T>(NAME, a);
  ROPE_K(pez_rope_fwd_f32, float) ROPE_K(pez_rope_fwd_bf16, __nv_bfloat16)
  ROPE_K(pez_rope_bwd_f32, float) ROPE_K(pez_rope_bwd_bf16, __nv_bfloat16)
  if (k == "pez_gated_fwd_f32") return gated_f<float>(pez_gated_fwd_f32, a);
  if (k == "pez_gated_fwd_bf16") return gated_f<__nv_bfloat16>(pez_gated_fwd_bf16, a);
  if (k == "pez_gated_bwd_f32") return gated_b<float>(pez_gated_bwd_f32, a);
  if (k == "pez_gated_bwd_bf16") return gated_b<__nv_bfloat16>(pez_gated_bwd_bf16, a);
#define SOFTMAX_K(NAME, T, BWD) if (k == #NAME) return softmax_k<T>(NAME, a, BWD);
  SOFTMAX_K(pez_masked_softmax_fwd_f32, float, false) SOFTMAX_K(pez_masked_softmax_fwd_bf16, __nv_bfloat16, false)
  SOFTMAX_K(pez_masked_softmax_bwd_f32, float, true) SOFTMAX_K(pez_masked_softmax_bwd_bf16, __nv_bfloat16, true)
  std::fprintf(stderr, "no kernel %s\n", k.c_str());
  return 2;
}
