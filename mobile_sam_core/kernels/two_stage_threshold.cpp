// SAM's mask step in one pass: both bilinear resizes and the threshold (see mask_kernels.py).
//
// Along each axis the two resizes are one map in which output sample i mixes the three low-res
// samples base[i] + 0..2 with weights w[i][0..2]. The horizontal taps run once per low-res row the
// block of output rows needs; then each output pixel takes three vertical taps and is classified:
// 1 where the value is > hi, 2 where lo < value <= hi (undecided), else 0.
//
// Built with -ffp-contract=off (native.py, per-kernel flags): every product and sum is rounded as
// written, the same float32 operations in the same order as mask_kernels.composite_values, so the
// self-check can demand equality and the error bound of mask_upsample._composite_margin holds.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>

extern "C" {

// Rows [ya, yb) of `out` (row stride out_stride bytes, out_w columns). `src` holds the low-res
// crop padded by two rows and columns (row stride src_stride floats); `by`/`wy` are the vertical
// taps of every output row, `bx`/`wx` the horizontal taps of every output column (weights (n, 3)
// row-major). The bases must not decrease along each axis. Writes the undecided count of each
// row to row_undecided[y] and returns their total (-1 if its row buffer cannot be allocated).
int64_t msc_two_stage_threshold(const float* src, int64_t src_stride, const int64_t* by, const float* wy,
                                const int64_t* bx, const float* wx, int64_t out_w, float lo, float hi,
                                uint8_t* out, int64_t out_stride, int64_t* row_undecided, int64_t ya,
                                int64_t yb) {
  if (yb <= ya) return 0;
  const int64_t first = by[ya];
  const int64_t n_rows = by[yb - 1] + 3 - first;
  // Every element is written before it is read: no zero fill (1.5 MB for a 1500x2241 mask).
  std::unique_ptr<float[]> rows(new (std::nothrow) float[static_cast<size_t>(n_rows * out_w)]);
  if (!rows) return -1;
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* s = src + (first + r) * src_stride;
    float* g = rows.get() + r * out_w;
    for (int64_t x = 0; x < out_w; ++x) {
      const float* t = s + bx[x];
      const float* w = wx + 3 * x;
      g[x] = w[0] * t[0] + w[1] * t[1] + w[2] * t[2];
    }
  }
  int64_t undecided = 0;
  for (int64_t y = ya; y < yb; ++y) {
    const float* a = rows.get() + (by[y] - first) * out_w;
    const float* b = a + out_w;
    const float* c = b + out_w;
    const float w0 = wy[3 * y], w1 = wy[3 * y + 1], w2 = wy[3 * y + 2];
    uint8_t* o = out + y * out_stride;
    int32_t n = 0;
    for (int64_t x = 0; x < out_w; ++x) {
      const float v = w0 * a[x] + w1 * b[x] + w2 * c[x];
      const uint8_t above_lo = v > lo, above_hi = v > hi;  // lo <= hi: above_hi implies above_lo
      o[x] = static_cast<uint8_t>(2 * above_lo - above_hi);
      n += above_lo - above_hi;
    }
    row_undecided[y] = n;
    undecided += n;
  }
  return undecided;
}

}  // extern "C"
