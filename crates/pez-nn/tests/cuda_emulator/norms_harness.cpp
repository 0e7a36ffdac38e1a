// Runs one of norms.cu's kernels under the emulator: `norms_harness KERNEL ROWS D EPS` reads x (ROWS*D f32),
// w (D f32) and z (ROWS*D f32, or D where the kernel reads the bias or nothing) from stdin, little-endian, and
// writes the output (ROWS*D f32). A `_bf16` kernel gets its inputs rounded to bf16 and its output widened back.
#include "emulator.h"
#include "../../src/cuda/norms.cu"
#include <cstdio>
#include <cstdlib>
#include <string>

template <class T> T from_float(float v);
template <> float from_float<float>(float v) { return v; }
template <> __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16(v); }
inline float widen(float v) { return v; }
inline float widen(__nv_bfloat16 v) { return __bfloat162float(v); }

static std::vector<float> read(size_t n) {
  std::vector<float> v(n);
  if (std::fread(v.data(), 4, n, stdin) != n) { std::fprintf(stderr, "short input\n"); std::exit(2); }
  return v;
}

template <class T>
static int run(void (*k)(const T*, const T*, const T*, T*, int, float), int rows, int d, float eps, size_t nz) {
  auto conv = [](const std::vector<float>& v) { std::vector<T> o(v.size()); for (size_t i = 0; i < v.size(); i++) o[i] = from_float<T>(v[i]); return o; };
  auto x = conv(read(size_t(rows) * d)), w = conv(read(d)), z = conv(read(nz));
  std::vector<T> out(size_t(rows) * d);
  const unsigned block = std::min(1024, std::max(32, (d + 31) / 32 * 32));  // as src/cuda/mod.rs launches
  emu_launch(k, rows, block, (const T*)x.data(), (const T*)w.data(), (const T*)z.data(), out.data(), d, eps);
  std::vector<float> o(out.size());
  for (size_t i = 0; i < o.size(); i++) o[i] = widen(out[i]);
  std::fwrite(o.data(), 4, o.size(), stdout);
  return 0;
}

int main(int argc, char** argv) {
  if (argc != 5) { std::fprintf(stderr, "usage: norms_harness KERNEL ROWS D EPS\n"); return 2; }
  const std::string k = argv[1];
  const int rows = std::atoi(argv[2]), d = std::atoi(argv[3]);
  const float eps = std::atof(argv[4]);
  const size_t full = size_t(rows) * d, nz = (k.find("bwd") != std::string::npos) ? full : d;
#define CASE(NAME, T) if (k == #NAME) return run<T>(NAME, rows, d, eps, nz);
  CASE(pez_rms_norm_fwd_f32, float) CASE(pez_rms_norm_fwd_bf16, __nv_bfloat16)
  CASE(pez_rms_norm_bwd_f32, float) CASE(pez_rms_norm_bwd_bf16, __nv_bfloat16)
  CASE(pez_layer_norm_fwd_f32, float) CASE(pez_layer_norm_fwd_bf16, __nv_bfloat16)
  CASE(pez_layer_norm_bwd_f32, float) CASE(pez_layer_norm_bwd_bf16, __nv_bfloat16)
  std::fprintf(stderr, "no kernel %s\n", k.c_str());
  return 2;
}
