#include "CKernels.h"
#include <math.h>
#include <string.h>

#pragma STDC FP_CONTRACT OFF

#if defined(__x86_64__) && defined(__clang__)
#define BN_CLONES __attribute__((target_clones("arch=x86-64-v4", "default")))
#else
#define BN_CLONES
#endif

BN_CLONES
void bn_adam_f32(float *restrict w, const float *restrict g, float *restrict m, float *restrict v, size_t n,
                 float coupled, float b1, float omb1, float b2, float omb2,
                 float shrink, float step, float bc2sqrt, float eps) {
    for (size_t j = 0; j < n; j++) {
        float d = g[j] + coupled * w[j];
        float mj = b1 * m[j] + omb1 * d;
        float vj = b2 * v[j] + omb2 * d * d;
        m[j] = mj;
        v[j] = vj;
        w[j] = w[j] * shrink - step * mj / (__builtin_sqrtf(vj) / bc2sqrt + eps);
    }
}

BN_CLONES
void bn_rmsprop_f32(float *restrict w, const float *restrict g, float *restrict v, float *restrict b, size_t n,
                    float wd, float alpha, float oma, float mu, float lr, float eps) {
    if (b) {
        for (size_t j = 0; j < n; j++) {
            float d = g[j] + wd * w[j];
            float vj = alpha * v[j] + oma * d * d;
            float bj = mu * b[j] + d / (__builtin_sqrtf(vj) + eps);
            v[j] = vj;
            b[j] = bj;
            w[j] = w[j] - lr * bj;
        }
    } else {
        for (size_t j = 0; j < n; j++) {
            float d = g[j] + wd * w[j];
            float vj = alpha * v[j] + oma * d * d;
            v[j] = vj;
            w[j] = w[j] - lr * d / (__builtin_sqrtf(vj) + eps);
        }
    }
}

BN_CLONES
void bn_sgd_f32(float *restrict w, const float *restrict g, size_t n, float lr) {
    for (size_t j = 0; j < n; j++) w[j] = w[j] - lr * g[j];
}

BN_CLONES
void bn_momentum_sgd_f32(float *restrict w, const float *restrict g, float *restrict b, size_t n,
                         float wd, float mu, float lr, int first, int nesterov) {
    if (!b) {
        for (size_t j = 0; j < n; j++) w[j] = w[j] - lr * (g[j] + wd * w[j]);
    } else if (first) {
        for (size_t j = 0; j < n; j++) {
            float d = g[j] + wd * w[j];
            b[j] = d;
            w[j] = w[j] - lr * (nesterov ? d + mu * d : d);
        }
    } else if (nesterov) {
        for (size_t j = 0; j < n; j++) {
            float d = g[j] + wd * w[j];
            float bj = mu * b[j] + d;
            b[j] = bj;
            w[j] = w[j] - lr * (d + mu * bj);
        }
    } else {
        for (size_t j = 0; j < n; j++) {
            float bj = mu * b[j] + (g[j] + wd * w[j]);
            b[j] = bj;
            w[j] = w[j] - lr * bj;
        }
    }
}

// ---- BatchNorm2D planes (see the header for the summation order) ----

#define LANES 16

static inline float lane_total(const float *acc) {
    float s = 0;
    for (int l = 0; l < LANES; l++) s += acc[l];
    return s;
}

// The per-channel sums both share: sum over the planes of x (squared = 0) or of (x - mu)^2
// (squared = 1), in the 16-lane layout. Always inlined with a constant `squared`, so each
// caller gets its own branch-free vectorized loop.
static inline __attribute__((always_inline)) float planes_total(const float *x, size_t planes, size_t stride,
                                                                size_t hw, float mu, int squared) {
    float total = 0;
    for (size_t e = 0; e < planes; e++) {
        const float *p = x + e * stride;
        float acc[LANES] = {0};
        size_t i = 0;
        for (; i + LANES <= hw; i += LANES)
            for (int l = 0; l < LANES; l++) {
                float d = p[i + l] - mu;
                acc[l] += squared ? d * d : p[i + l];
            }
        float s = lane_total(acc);
        for (; i < hw; i++) s += squared ? (p[i] - mu) * (p[i] - mu) : p[i];
        total += s;
    }
    return total;
}

BN_CLONES
float bn_planes_sum_f32(const float *x, size_t planes, size_t stride, size_t hw) {
    return planes_total(x, planes, stride, hw, 0, 0);
}

BN_CLONES
float bn_planes_squared_deviation_f32(const float *x, size_t planes, size_t stride, size_t hw, float mu) {
    return planes_total(x, planes, stride, hw, mu, 1);
}

BN_CLONES
void bn_planes_normalize_f32(const float *x, float *y, size_t planes, size_t stride, size_t hw,
                             float mu, float istd, float gamma, float beta, int relu) {
    for (size_t e = 0; e < planes; e++) {
        const float *p = x + e * stride;
        float *q = y + e * stride;
        if (relu) {
            for (size_t i = 0; i < hw; i++) {
                float v = gamma * ((p[i] - mu) * istd) + beta;
                q[i] = v > 0 ? v : 0;
            }
        } else {
            for (size_t i = 0; i < hw; i++) q[i] = gamma * ((p[i] - mu) * istd) + beta;
        }
    }
}

// ---- GroupNorm groups (see the header) ----

BN_CLONES
float bn_group_norm_forward_f32(const float *x, float *h, float *y, size_t cpg, size_t plane,
                                const float *gamma, const float *beta, float eps) {
    size_t m = cpg * plane;
    float inv_m = 1.0f / (float)m;
    float mu = planes_total(x, 1, 0, m, 0, 0) * inv_m;
    float var = planes_total(x, 1, 0, m, mu, 1) * inv_m;
    float s = 1.0f / __builtin_sqrtf(var + eps);
    for (size_t c = 0; c < cpg; c++) {
        const float *p = x + c * plane;
        float *hp = h + c * plane, *yp = y + c * plane, g = gamma[c], b = beta[c];
        for (size_t i = 0; i < plane; i++) {
            float t = (p[i] - mu) * s;
            hp[i] = t;
            yp[i] = g * t + b;
        }
    }
    return s;
}

BN_CLONES
void bn_group_norm_backward_f32(const float *dy, const float *h, float *dx, size_t cpg, size_t plane,
                                const float *gamma, float *dgamma, float *dbeta, float istd) {
    float sum = 0, dot = 0;
    for (size_t c = 0; c < cpg; c++) {
        const float *d = dy + c * plane, *hp = h + c * plane;
        float a1[LANES] = {0}, a2[LANES] = {0};
        size_t i = 0;
        for (; i + LANES <= plane; i += LANES)
            for (int l = 0; l < LANES; l++) {
                a1[l] += d[i + l];
                a2[l] += d[i + l] * hp[i + l];
            }
        float s1 = lane_total(a1), s2 = lane_total(a2);
        for (; i < plane; i++) {
            s1 += d[i];
            s2 += d[i] * hp[i];
        }
        dbeta[c] += s1;
        dgamma[c] += s2;
        sum += gamma[c] * s1;
        dot += gamma[c] * s2;
    }
    if (!dx) return;
    float inv_m = 1.0f / (float)(cpg * plane), ms = sum * inv_m, md = dot * inv_m;
    for (size_t c = 0; c < cpg; c++) {
        const float *d = dy + c * plane, *hp = h + c * plane;
        float *o = dx + c * plane, g = gamma[c];
        for (size_t i = 0; i < plane; i++) o[i] = istd * (d[i] * g - ms - hp[i] * md);
    }
}

BN_CLONES
void bn_planes_gradient_sums_f32(const float *dy, const float *x, const float *y, size_t planes, size_t stride,
                                 size_t hw, float mu, float istd, float *sum_g, float *sum_gxhat) {
    float t1 = 0, t2 = 0;
    for (size_t e = 0; e < planes; e++) {
        const float *d = dy + e * stride, *p = x + e * stride, *r = y ? y + e * stride : 0;
        float a1[LANES] = {0}, a2[LANES] = {0};
        size_t i = 0;
        if (r) {
            for (; i + LANES <= hw; i += LANES)
                for (int l = 0; l < LANES; l++) {
                    float g = r[i + l] > 0 ? d[i + l] : 0;
                    a1[l] += g;
                    a2[l] += g * ((p[i + l] - mu) * istd);
                }
        } else {
            for (; i + LANES <= hw; i += LANES)
                for (int l = 0; l < LANES; l++) {
                    float g = d[i + l];
                    a1[l] += g;
                    a2[l] += g * ((p[i + l] - mu) * istd);
                }
        }
        float s1 = lane_total(a1), s2 = lane_total(a2);
        for (; i < hw; i++) {
            float g = (!r || r[i] > 0) ? d[i] : 0;
            s1 += g;
            s2 += g * ((p[i] - mu) * istd);
        }
        t1 += s1;
        t2 += s2;
    }
    *sum_g = t1;
    *sum_gxhat = t2;
}

BN_CLONES
void bn_planes_input_gradient_f32(const float *dy, const float *x, const float *y, float *dx, size_t planes,
                                  size_t stride, size_t hw, float mu, float istd, float k, float a, float bq) {
    for (size_t e = 0; e < planes; e++) {
        const float *d = dy + e * stride, *p = x + e * stride;
        float *o = dx + e * stride;
        if (y) {
            const float *r = y + e * stride;
            for (size_t i = 0; i < hw; i++) {
                float g = r[i] > 0 ? d[i] : 0;
                o[i] = k * (g - a - ((p[i] - mu) * istd) * bq);
            }
        } else {
            for (size_t i = 0; i < hw; i++) o[i] = k * (d[i] - a - ((p[i] - mu) * istd) * bq);
        }
    }
}

// ---- Dropout ----

BN_CLONES
uint64_t bn_dropout_mask_f32(float *restrict mask, size_t n, uint64_t state, uint64_t threshold, float scale) {
    const uint64_t gamma = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < n; i++) {
        uint64_t z = state + (uint64_t)(i + 1) * gamma;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        mask[i] = z < threshold ? 0.0f : scale;
    }
    return state + (uint64_t)n * gamma;
}

BN_CLONES
void bn_multiply_f32(const float *restrict a, const float *restrict b, float *restrict out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = a[i] * b[i];
}

// ---- Max pooling ----

BN_CLONES
void bn_maxpool2x2_f32(const float *restrict x, float *restrict y, int32_t *restrict argmax, size_t count,
                       size_t channels, size_t H, size_t W, size_t OH, size_t OW) {
    size_t in = channels * H * W, out = channels * OH * OW;
    for (size_t e = 0; e < count; e++) {
        const float *xe = x + e * in;
        float *ye = y + e * out;
        int32_t *ae = argmax + e * out;
        for (size_t c = 0; c < channels; c++) {
            for (size_t i = 0; i < OH; i++) {
                size_t r0 = (c * H + 2 * i) * W, r1 = r0 + W;
                float *yo = ye + (c * OH + i) * OW;
                int32_t *ao = ae + (c * OH + i) * OW;
                for (size_t j = 0; j < OW; j++) {
                    size_t q = 2 * j;
                    float best = xe[r0 + q];
                    int32_t at = (int32_t)(r0 + q);
                    float v = xe[r0 + q + 1];
                    if (v > best) { best = v; at = (int32_t)(r0 + q + 1); }
                    v = xe[r1 + q];
                    if (v > best) { best = v; at = (int32_t)(r1 + q); }
                    v = xe[r1 + q + 1];
                    if (v > best) { best = v; at = (int32_t)(r1 + q + 1); }
                    yo[j] = best;
                    ao[j] = at;
                }
            }
        }
    }
}

void bn_prefetch(const void *p, size_t bytes) {
    const char *b = (const char *)p;
    for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(b + o, 0, 3);
    if (bytes) __builtin_prefetch(b + bytes - 1, 0, 3);
}

// Elementwise.fastExp, operation for operation (Swift's max(x, y) is `y >= x ? y : x`, its
// min(x, y) `y < x ? y : x`; products and sums evaluate left to right, unfused).
static inline float bn_fast_exp(float x) {
    float lo = -87.33f, hi = 88.72f;
    float xc = lo >= x ? lo : x;
    xc = hi < xc ? hi : xc;
    float shifted = xc * 1.44269504f + 12582912.0f;
    float n = shifted - 12582912.0f;
    uint32_t sb;
    __builtin_memcpy(&sb, &shifted, 4);
    int32_t ni = (int32_t)(sb - 0x4B400000u);
    float r = xc - n * 0.693359375f;
    r = r - n * -2.1219444e-4f;
    float p = 1.98756915e-4f;
    p = p * r + 1.39819995e-3f;
    p = p * r + 8.3334519e-3f;
    p = p * r + 4.16657959e-2f;
    p = p * r + 1.66666655e-1f;
    p = p * r + 5.00000012e-1f;
    float er = p * r * r + r + 1.0f;
    int32_t half = ni >> 1;  // arithmetic shift, as Swift's &>> on Int32
    uint32_t b1 = ((uint32_t)half + 127u) << 23, b2 = ((uint32_t)(ni - half) + 127u) << 23;
    float s1, s2;
    __builtin_memcpy(&s1, &b1, 4);
    __builtin_memcpy(&s2, &b2, 4);
    return er * s1 * s2;
}

BN_CLONES
void bn_bias_sigmoid_f32(float *restrict y, const float *restrict b, size_t rows, size_t cols) {
    for (size_t i = 0; i < rows; i++) {
        float *row = y + i * cols;
        for (size_t j = 0; j < cols; j++) row[j] = 1.0f / (1.0f + bn_fast_exp(-(row[j] + b[j])));
    }
}

BN_CLONES
void bn_pixels_to_f32(const uint8_t *restrict src, float *restrict dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = (float)((double)src[i] * (2.0 / 255.0) - 1.0);
}

int bn_kernels_avx512(void) {
#if defined(__x86_64__) && defined(__clang__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("x86-64-v4") ? 1 : 0;
#else
    return 0;
#endif
}

/* dst (cols x rows) = transpose of src (rows x cols), both row-major, elements of 4 or 8
   bytes moved as bit patterns. 32 x 32 tiles keep both sides' cache lines in use; a plain
   strided loop touches one element of each destination line per pass. */
#define BN_TRANSPOSE_TILE 32
#define BN_DEFINE_TRANSPOSE(NAME, TYPE)                                                        \
    void NAME(const TYPE *restrict src, size_t rows, size_t cols, TYPE *restrict dst) {       \
        for (size_t r0 = 0; r0 < rows; r0 += BN_TRANSPOSE_TILE) {                              \
            size_t r1 = r0 + BN_TRANSPOSE_TILE < rows ? r0 + BN_TRANSPOSE_TILE : rows;         \
            for (size_t c0 = 0; c0 < cols; c0 += BN_TRANSPOSE_TILE) {                          \
                size_t c1 = c0 + BN_TRANSPOSE_TILE < cols ? c0 + BN_TRANSPOSE_TILE : cols;     \
                for (size_t r = r0; r < r1; r++)                                               \
                    for (size_t c = c0; c < c1; c++) dst[c * rows + r] = src[r * cols + c];    \
            }                                                                                  \
        }                                                                                      \
    }
BN_DEFINE_TRANSPOSE(bn_transpose_u32, uint32_t)
BN_DEFINE_TRANSPOSE(bn_transpose_u64, uint64_t)

/* Sorts v[0..n) ascending, using scratch[0..n): an LSD radix sort on the bit patterns
   (3 passes of 11 bits). Keys map floats to unsigned integers in the same order: a positive
   float's sign bit is set, a negative float's bits are all flipped; -0 sorts before +0, and
   NaNs sort to the ends (by sign). The result ends in v. */
static inline uint32_t bn_float_key(uint32_t b) { return (b & 0x80000000u) ? ~b : (b | 0x80000000u); }

void bn_sort_f32(float *v, float *scratch, size_t n) {
    enum { BITS = 11, BUCKETS = 1 << BITS };
    static const int shifts[3] = {0, 11, 22};
    size_t counts[3][BUCKETS];
    memset(counts, 0, sizeof counts);
    const uint32_t *u = (const uint32_t *)v;
    for (size_t i = 0; i < n; i++) {
        uint32_t k = bn_float_key(u[i]);
        counts[0][k & (BUCKETS - 1)]++;
        counts[1][(k >> 11) & (BUCKETS - 1)]++;
        counts[2][k >> 22]++;
    }
    uint32_t *src = (uint32_t *)v, *dst = (uint32_t *)scratch;
    for (int p = 0; p < 3; p++) {
        size_t sum = 0;
        for (int b = 0; b < BUCKETS; b++) { size_t c = counts[p][b]; counts[p][b] = sum; sum += c; }
        for (size_t i = 0; i < n; i++) {
            uint32_t k = bn_float_key(src[i]);
            dst[counts[p][(k >> shifts[p]) & (BUCKETS - 1)]++] = src[i];
        }
        uint32_t *t = src; src = dst; dst = t;
    }
    /* Three passes leave the result in scratch. */
    memcpy(v, src, n * sizeof(float));
}
