// Window attention for FastTinyViT's float32 encoder (built by mobile_sam_core/native.py, called
// through mobile_sam_core/window_attention.py).
//
// One call handles every window of one attention layer: for each window the token rows of the
// q/k/v projection are gathered into a per-thread buffer (they sit in 7 or 14 different image
// rows, up to 1 MB apart), then per head: keys transposed by 16x16 register transposes,
// scores = scale * q k^T + bias, softmax, weighted sum of v, written straight into the output
// token rows. PyTorch's path needs a partition copy, the flash-attention kernel (~35-50 GFLOP/s
// per thread for these 32-wide heads) and a copy back; the products here run at ~90% of the
// FMA units' peak (measured on Zen 4).
//
// Threads: OpenMP, linked by soname so that it shares PyTorch's libgomp (one thread pool).
// Built with -march=native and written with GCC vector extensions; the register blocking is
// sized for 32 512-bit registers (AVX-512), and Python uses the kernel only where it was built
// with AVX-512 (msc_window_attention_avx512), the only target it was measured on.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

typedef float v16 __attribute__((vector_size(64), aligned(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));
typedef int32_t v16i __attribute__((vector_size(64), aligned(64)));

enum { D = 32, MAXK = 256, QR = 6, PR = 12 };
// QR query rows x 64 keys of scores and PR query rows x 32 dims of output are 24 accumulators
// each: as many as fit in 32 vector registers next to the operands.

// Keep a loaded operand in a register: without this GCC re-reads it from memory in every FMA.
#if defined(__x86_64__)
#define REG(x) asm("" : "+v"(x))
#elif defined(__aarch64__)
#define REG(x) asm("" : "+w"(x))
#else
#define REG(x)
#endif

static inline v16 vld(const float *p) { return *(const v16u *)p; }
static inline void vst(float *p, v16 v) { *(v16u *)p = v; }
static inline v16 bc(float x) { return (v16){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }

// exp(x) for x <= 0 to ~1 ulp (Cephes' expf polynomial on [-ln2/2, ln2/2]). Inputs below -87
// give exp(-87) ~ 1.6e-38 instead of 0: the padding columns (-1e30) then add < 1e-36 to a row
// sum that is at least 1, and skipping the exact zero saves two instructions per vector.
static inline v16 vexp(v16 x) {
#ifdef __AVX512F__
    x = (v16)_mm512_max_ps((__m512)x, (__m512)bc(-87.f));
    const __m512 k = _mm512_roundscale_ps((__m512)(x * bc(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const v16 fx = (v16)k;
#else
    x = x < bc(-87.f) ? bc(-87.f) : x;
    const v16 t = x * bc(1.44269504088896341f) + bc(0.5f);
    v16 fx = __builtin_convertvector(__builtin_convertvector(t, v16i), v16);
    fx = fx > t ? fx - bc(1.f) : fx;  // floor(t): the conversion truncates toward zero
#endif
    v16 r = x - fx * bc(0.693359375f);
    r = r - fx * bc(-2.12194440e-4f);
    v16 y = bc(1.9875691500E-4f);
    y = y * r + bc(1.3981999507E-3f);
    y = y * r + bc(8.3334519073E-3f);
    y = y * r + bc(4.1665795894E-2f);
    y = y * r + bc(1.6666665459E-1f);
    y = y * r + bc(5.0000001201E-1f);
    y = y * (r * r) + r + bc(1.f);
#ifdef __AVX512F__
    return (v16)_mm512_scalef_ps((__m512)y, k);
#else
    return y * (v16)((__builtin_convertvector(fx, v16i) + 127) << 23);
#endif
}

// One step of a 16x16 transpose: rows r and r + B swap the lanes whose index has bit B set.
#define LANES_LO(B) 0 + (0 & B ? 16 - B : 0), 1 + (1 & B ? 16 - B : 0), 2 + (2 & B ? 16 - B : 0), \
    3 + (3 & B ? 16 - B : 0), 4 + (4 & B ? 16 - B : 0), 5 + (5 & B ? 16 - B : 0), 6 + (6 & B ? 16 - B : 0), \
    7 + (7 & B ? 16 - B : 0), 8 + (8 & B ? 16 - B : 0), 9 + (9 & B ? 16 - B : 0), 10 + (10 & B ? 16 - B : 0), \
    11 + (11 & B ? 16 - B : 0), 12 + (12 & B ? 16 - B : 0), 13 + (13 & B ? 16 - B : 0), \
    14 + (14 & B ? 16 - B : 0), 15 + (15 & B ? 16 - B : 0)
#define LANES_HI(B) 0 + (0 & B ? 16 : B), 1 + (1 & B ? 16 : B), 2 + (2 & B ? 16 : B), 3 + (3 & B ? 16 : B), \
    4 + (4 & B ? 16 : B), 5 + (5 & B ? 16 : B), 6 + (6 & B ? 16 : B), 7 + (7 & B ? 16 : B), 8 + (8 & B ? 16 : B), \
    9 + (9 & B ? 16 : B), 10 + (10 & B ? 16 : B), 11 + (11 & B ? 16 : B), 12 + (12 & B ? 16 : B), \
    13 + (13 & B ? 16 : B), 14 + (14 & B ? 16 : B), 15 + (15 & B ? 16 : B)
#define TRANSPOSE_STEP(a, B)                                                   \
    for (int r = 0; r < 16; r++)                                               \
        if (!(r & B)) {                                                        \
            const v16 x = a[r], y = a[r + B];                                  \
            a[r] = __builtin_shufflevector(x, y, LANES_LO(B));                 \
            a[r + B] = __builtin_shufflevector(x, y, LANES_HI(B));             \
        }

// kt[c][j] = k_j[c] for the keys j in [j0, j0 + 16) (zero beyond `keys`), channels [c0, c0 + 16).
static inline void transpose_keys(const float *const *k, int keys, int j0, int c0, float *kt, int nkp) {
    v16 a[16];
    for (int i = 0; i < 16; i++) a[i] = j0 + i < keys ? vld(k[j0 + i] + c0) : bc(0.f);
    TRANSPOSE_STEP(a, 1)
    TRANSPOSE_STEP(a, 2)
    TRANSPOSE_STEP(a, 4)
    TRANSPOSE_STEP(a, 8)
    for (int c = 0; c < 16; c++) vst(kt + (c0 + c) * nkp + j0, a[c]);
}

// S[r][jc, jc + 16 NT) = scale * q_r . k_j + bias[r][j] for R query rows.
template <int R, int NT>
static inline void score_chunk(const float *const *q, const float *kt, int nkp, int jc, float *s,
                               const float *bias, float scale) {
    v16 a[R][NT];
    for (int r = 0; r < R; r++)
        for (int u = 0; u < NT; u++) a[r][u] = bc(0.f);
    for (int c = 0; c < D; c++) {
        v16 k[NT];
        for (int u = 0; u < NT; u++) {
            k[u] = vld(kt + c * nkp + jc + 16 * u);
            REG(k[u]);
        }
        for (int r = 0; r < R; r++) {
            const v16 qb = bc(q[r][c]);
            for (int u = 0; u < NT; u++) a[r][u] += qb * k[u];
        }
    }
    for (int r = 0; r < R; r++)
        for (int u = 0; u < NT; u++)
            vst(s + r * MAXK + jc + 16 * u, a[r][u] * bc(scale) + vld(bias + (int64_t)r * nkp + jc + 16 * u));
}

template <int R>
static void score_rows(const float *const *q, const float *kt, int nkp, float *s, const float *bias, float scale) {
    int jc = 0;
    for (; jc + 64 <= nkp; jc += 64) score_chunk<R, 4>(q, kt, nkp, jc, s, bias, scale);
    switch ((nkp - jc) >> 4) {
        case 3: score_chunk<R, 3>(q, kt, nkp, jc, s, bias, scale); break;
        case 2: score_chunk<R, 2>(q, kt, nkp, jc, s, bias, scale); break;
        case 1: score_chunk<R, 1>(q, kt, nkp, jc, s, bias, scale); break;
        default: break;
    }
}

// out_r = inv_r * sum_j p[r][j] v_j for R query rows.
template <int R>
static void value_rows(const float *p, const float *const *v, int keys, float *const *out, const float *inv) {
    v16 o[R][2];
    for (int r = 0; r < R; r++) o[r][0] = o[r][1] = bc(0.f);
    for (int j = 0; j < keys; j++) {
        v16 v0 = vld(v[j]), v1 = vld(v[j] + 16);
        REG(v0);
        REG(v1);
        for (int r = 0; r < R; r++) {
            const v16 pb = bc(p[r * MAXK + j]);
            o[r][0] += pb * v0;
            o[r][1] += pb * v1;
        }
    }
    for (int r = 0; r < R; r++) {
        vst(out[r], o[r][0] * bc(inv[r]));
        vst(out[r] + 16, o[r][1] * bc(inv[r]));
    }
}

typedef void (*score_fn)(const float *const *, const float *, int, float *, const float *, float);
typedef void (*value_fn)(const float *, const float *const *, int, float *const *, const float *);
static const score_fn SCORE[QR + 1] = {0, score_rows<1>, score_rows<2>, score_rows<3>,
                                       score_rows<4>, score_rows<5>, score_rows<6>};
static const value_fn VALUE[PR + 1] = {0, value_rows<1>, value_rows<2>, value_rows<3>, value_rows<4>,
                                       value_rows<5>, value_rows<6>, value_rows<7>, value_rows<8>,
                                       value_rows<9>, value_rows<10>, value_rows<11>, value_rows<12>};

// Horizontal max / sum of a vector in four halving steps (a scalar loop over the 16 lanes is a
// dependent chain that costs more than the row's exponentials).
static inline v16 fold_max(v16 v) {
    v16 t = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    v = t > v ? t : v;
    t = __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    v = t > v ? t : v;
    t = __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    v = t > v ? t : v;
    t = __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    return t > v ? t : v;  // every lane holds the maximum
}

static inline float fold_sum(v16 v) {
    v += __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    v += __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    return v[0];
}

// Softmax numerators of one score row in place; returns 1 / their sum.
static inline float softmax_row(float *s, int nkp) {
    v16 m = vld(s);
    for (int j = 16; j < nkp; j += 16) {
        const v16 x = vld(s + j);
        m = x > m ? x : m;
    }
    m = fold_max(m);
    v16 sum = bc(0.f);
    for (int j = 0; j < nkp; j += 16) {
        const v16 e = vexp(vld(s + j) - m);
        vst(s + j, e);
        sum += e;
    }
    return 1.f / fold_sum(sum);
}

extern "C" int msc_window_attention_max_keys(void) { return MAXK; }

extern "C" int msc_window_attention_avx512(void) {
#ifdef __AVX512F__
    return 1;
#else
    return 0;
#endif
}

// qkv: token rows of 3 * heads * 32 floats (q | k | v, head h at h * 32 in each).
// Window w: its keys are the rows tok[w * maxkeys + j], j < nk[w] (-1: the merged padding token
// `pad`); the first nq[w] of them are its queries. Its bias (heads x nq x nkp, nkp = nk rounded up
// to 16, -1e30 beyond nk) starts at bias + boff[w]. Output: query rows of heads * 32 floats.
extern "C" void msc_window_attention(const float *qkv, const float *pad, const int32_t *tok, int maxkeys,
                                     const int32_t *nq, const int32_t *nk, const int64_t *boff,
                                     const float *bias, int64_t windows, int heads, float scale, float *out,
                                     int threads) {
    const int hk = heads * D;
    const int64_t ld = 3 * hk;
#pragma omp parallel num_threads(threads)
    {
        float kt[D * MAXK] __attribute__((aligned(64)));
        float s[PR * MAXK] __attribute__((aligned(64)));
        const float *q[MAXK], *k[MAXK], *v[MAXK];
        float *o[MAXK];
        float *stage = (float *)aligned_alloc(64, (size_t)maxkeys * ld * sizeof(float));  // one window's rows
#pragma omp for schedule(dynamic, 1)
        for (int64_t w = 0; w < windows; w++) {
            const int n = nq[w], keys = nk[w], nkp = (keys + 15) & ~15;
            const int32_t *t = tok + w * maxkeys;
            for (int j = 0; j < keys; j++)
                memcpy(stage + j * ld, t[j] >= 0 ? qkv + (int64_t)t[j] * ld : pad, ld * sizeof(float));
            for (int h = 0; h < heads; h++) {
                const float *bh = bias + boff[w] + (int64_t)h * n * nkp;
                for (int j = 0; j < keys; j++) {
                    k[j] = stage + j * ld + hk + h * D;
                    v[j] = stage + j * ld + 2 * hk + h * D;
                }
                for (int j0 = 0; j0 < nkp; j0 += 16)
                    for (int c0 = 0; c0 < D; c0 += 16) transpose_keys(k, keys, j0, c0, kt, nkp);
                for (int i = 0; i < n; i++) {
                    q[i] = stage + i * ld + h * D;
                    o[i] = out + (int64_t)t[i] * hk + h * D;
                }
                for (int i0 = 0; i0 < n; i0 += PR) {
                    const int rows = n - i0 < PR ? n - i0 : PR;
                    for (int r = 0; r < rows; r += QR)
                        SCORE[rows - r < QR ? rows - r : QR](q + i0 + r, kt, nkp, s + r * MAXK,
                                                             bh + (int64_t)(i0 + r) * nkp, scale);
                    float inv[PR];
                    for (int r = 0; r < rows; r++) inv[r] = softmax_row(s + r * MAXK, nkp);
                    VALUE[rows](s, v, keys, o + i0, inv);
                }
            }
        }
        free(stage);
    }
}
