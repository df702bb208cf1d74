// The end of SAM's mask decoder for one prompt, fused (see decoder_tail.py):
//   LayerNorm over 64 channels -> GELU -> 64 -> 4 x 32 linear (the second transposed convolution)
//   -> GELU -> dot with each mask's hypernetwork vector -> low-res logits in pixel order.
// PyTorch runs these as five passes over a 16384 x 64/128 array; here 16 rows at a time stay in
// registers and L1, with the rows in the vector lanes (no horizontal sums), and the logits are
// written straight to their (mask, 4h, 4w) positions.
//
// GELU is the exact one, 0.5 x (1 + erf(x / sqrt 2)). erf(u) for 0 <= u < 4 comes from 8 degree-7
// polynomials in (u - centre) on intervals of width 0.5, fitted by least squares at 200 Chebyshev
// nodes per interval in float64 (max error 7e-8 in float32, within half an ulp of 1); erf(4) is 1 in
// float32 and larger u are clamped to 4.

#include <cstdint>

#if defined(__AVX512F__)
#include <immintrin.h>

namespace {

constexpr int kC1 = 64;        // channels after the first upscaling
constexpr int kC2 = 32;        // channels after the second, per sub-pixel
constexpr int kSub = 4;        // sub-pixels of the second upscaling (2 x 2)
constexpr int kLanes = 16;     // rows per block: one per vector lane
constexpr int kMaxMasks = 4;

alignas(64) const float kCentre[16] = {0.25f, 0.75f, 1.25f, 1.75f, 2.25f, 2.75f, 3.25f, 3.75f,
                                       0.f,   0.f,   0.f,   0.f,   0.f,   0.f,   0.f,   0.f};
// kCoef[d][i]: coefficient of (u - kCentre[i])^d on interval i.
alignas(64) const float kCoef[8][16] = {
    {2.763263881e-01f, 7.111556530e-01f, 9.229001403e-01f, 9.866716862e-01f, 9.985373020e-01f, 9.998993874e-01f, 9.999957085e-01f, 9.999998808e-01f,
     0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f},
    {1.060014129e+00f, 6.429310441e-01f, 2.365211248e-01f, 5.277499557e-02f, 7.142319344e-03f, 5.862772814e-04f, 2.918901191e-05f, 8.814288321e-07f,
     0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f},
    {-2.650029659e-01f, -4.821981490e-01f, -2.956517339e-01f, -9.235620499e-02f, -1.607015729e-02f, -1.612267457e-03f, -9.486933413e-05f, -3.306070994e-06f,
     0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f},
    {-3.091704845e-01f, 2.678835019e-02f, 1.675358862e-01f, 9.015738964e-02f, 2.172451280e-02f, 2.760380274e-03f, 1.958126231e-04f, 7.970327715e-06f,
     0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f},
    {1.269345582e-01f, 1.506756246e-01f, -6.132035051e-03f, -4.810552299e-02f, -1.908825710e-02f, -3.257710487e-03f, -2.861694375e-04f, -1.378540856e-05f,
     0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f},
    {8.003626764e-02f, -5.321709067e-02f, -4.718655348e-02f, 6.618473213e-03f, 1.066005975e-02f, 2.756291069e-03f, 3.136288433e-04f, 1.833005808e-05f,
     0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f},
    {-3.934079409e-02f, -2.658282965e-02f, 2.059773728e-02f, 9.049494751e-03f, -2.779565053e-03f, -1.667850534e-03f, -2.737584291e-04f, -2.069241600e-05f,
     0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f},
    {-1.580337062e-02f, 1.788549498e-02f, 3.745110473e-03f, -5.933099426e-03f, -7.215269725e-04f, 6.358154351e-04f, 1.735965197e-04f, 1.714473728e-05f,
     0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}
};

inline __m512 erf16(__m512 x) {
  const __m512 u = _mm512_min_ps(_mm512_abs_ps(x), _mm512_set1_ps(4.0f));
  const __m512i i = _mm512_min_epi32(_mm512_cvttps_epi32(_mm512_mul_ps(u, _mm512_set1_ps(2.0f))),
                                     _mm512_set1_epi32(7));
  const __m512 t = _mm512_sub_ps(u, _mm512_permutexvar_ps(i, _mm512_load_ps(kCentre)));
  __m512 p = _mm512_permutexvar_ps(i, _mm512_load_ps(kCoef[7]));
  for (int d = 6; d >= 0; --d) p = _mm512_fmadd_ps(p, t, _mm512_permutexvar_ps(i, _mm512_load_ps(kCoef[d])));
  const __m512i sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(INT32_MIN));
  return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(p), sign));
}

inline __m512 gelu16(__m512 x) {
  const __m512 e = erf16(_mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f)));
  return _mm512_mul_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.5f)), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

}  // namespace

extern "C" {

int msc_decoder_tail_avx512() { return 1; }

// gelu(x) for n floats, in place (the tests compare it with PyTorch's).
void msc_gelu(float* x, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) _mm512_storeu_ps(x + i, gelu16(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(x + i, m, gelu16(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

// y: (rows, 64) row-major, rows ordered (token, kh, kw) over a (rows / 4 / w) x w token grid;
// ln_w/ln_b/eps: the LayerNorm; w2: (128, 64) with outputs ordered (kh2, kw2, channel); b2: (128);
// hyper: (masks, 32). Writes out: (masks, 4h, 4w), pixel (4y + 2kh + kh2, 4x + 2kw + kw2).
// Returns 0, or -1 for unsupported sizes.
int msc_decoder_tail(const float* y, int64_t rows, int64_t w, const float* ln_w, const float* ln_b, float eps,
                     const float* w2, const float* b2, const float* hyper, int64_t masks, float* out,
                     int threads) {
  if (masks < 1 || masks > kMaxMasks || rows <= 0 || w <= 0 || rows % (4 * w) != 0) return -1;
  const int64_t h = rows / 4 / w, out_h = 4 * h, out_w = 4 * w;
  const int64_t blocks = (rows + kLanes - 1) / kLanes;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    alignas(64) float a[kC1][kLanes];
    alignas(64) float res[kSub][kMaxMasks][kLanes];
    const int64_t r0 = blk * kLanes;
    const int nr = static_cast<int>(rows - r0 < kLanes ? rows - r0 : kLanes);
    for (int l = 0; l < kLanes; ++l) {
      const float* src = y + (r0 + (l < nr ? l : 0)) * kC1;  // missing rows repeat row 0 (discarded)
      for (int k = 0; k < kC1; ++k) a[k][l] = src[k];
    }
    // LayerNorm (two passes, biased variance) and GELU, per lane
    __m512 sum = _mm512_setzero_ps();
    for (int k = 0; k < kC1; ++k) sum = _mm512_add_ps(sum, _mm512_load_ps(a[k]));
    const __m512 mean = _mm512_mul_ps(sum, _mm512_set1_ps(1.0f / kC1));
    __m512 ss = _mm512_setzero_ps();
    for (int k = 0; k < kC1; ++k) {
      const __m512 d = _mm512_sub_ps(_mm512_load_ps(a[k]), mean);
      ss = _mm512_fmadd_ps(d, d, ss);
    }
    const __m512 var = _mm512_mul_ps(ss, _mm512_set1_ps(1.0f / kC1));
    const __m512 rstd = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_sqrt_ps(_mm512_add_ps(var, _mm512_set1_ps(eps))));
    for (int k = 0; k < kC1; ++k) {
      const __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_load_ps(a[k]), mean), rstd);
      _mm512_store_ps(a[k], gelu16(_mm512_fmadd_ps(d, _mm512_set1_ps(ln_w[k]), _mm512_set1_ps(ln_b[k]))));
    }
    for (int s = 0; s < kSub; ++s) {
      __m512 macc[kMaxMasks];
      for (int m = 0; m < kMaxMasks; ++m) macc[m] = _mm512_setzero_ps();
      for (int half = 0; half < 2; ++half) {
        const int j0 = s * kC2 + half * 16;
        __m512 acc[16];
        for (int c = 0; c < 16; ++c) acc[c] = _mm512_set1_ps(b2[j0 + c]);
        for (int k = 0; k < kC1; ++k) {
          const __m512 v = _mm512_load_ps(a[k]);
          for (int c = 0; c < 16; ++c) acc[c] = _mm512_fmadd_ps(_mm512_set1_ps(w2[(j0 + c) * kC1 + k]), v, acc[c]);
        }
        for (int c = 0; c < 16; ++c) {
          const __m512 g = gelu16(acc[c]);
          for (int m = 0; m < masks; ++m)
            macc[m] = _mm512_fmadd_ps(_mm512_set1_ps(hyper[m * kC2 + half * 16 + c]), g, macc[m]);
        }
      }
      for (int m = 0; m < masks; ++m) _mm512_store_ps(res[s][m], macc[m]);
    }
    for (int l = 0; l < nr; ++l) {
      const int64_t r = r0 + l, n = r >> 2, kh = (r >> 1) & 1, kw = r & 1;
      const int64_t y0 = 4 * (n / w) + 2 * kh, x0 = 4 * (n % w) + 2 * kw;
      for (int s = 0; s < kSub; ++s) {
        const int64_t yy = y0 + (s >> 1), xx = x0 + (s & 1);
        for (int m = 0; m < masks; ++m) out[(m * out_h + yy) * out_w + xx] = res[s][m][l];
      }
    }
  }
  return 0;
}

}  // extern "C"

#else  // without AVX-512 the caller keeps PyTorch's path

extern "C" {
int msc_decoder_tail_avx512() { return 0; }
void msc_gelu(float*, int64_t) {}
int msc_decoder_tail(const float*, int64_t, int64_t, const float*, const float*, float, const float*, const float*,
                     const float*, int64_t, float*, int) {
  return -1;
}
}  // extern "C"

#endif
