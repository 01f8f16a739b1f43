// The weight gradient of a fully connected layer as a chain of fused multiply-adds whose
// order does not depend on how the work is split (docs/parallel.md, "fc weights").
//
//     C[i, j] = fma(A[p, i], B[p, j], ... fma(A[0, i], B[0, j], C0[i, j]))   p = 0 ..< k
//
// A: (k, lda >= i's), B: (k, ldb >= j's), C: (m, ldc); C0 = 0, or C itself when accumulating.
// Every element is the same chain over p, in the same order, whatever tile, path or row range
// it is computed in, and a chain continued in a second call (accumulate) is the chain over
// both calls' p. So a batch's dW is the same bits computed as one call, as one call per shard,
// or split by rows among any number of workers; and the same on every CPU with FMA.
#include "CKernels.h"
#include <math.h>

#pragma STDC FP_CONTRACT OFF

// The portable path: the same chain with fmaf, p outside j so it vectorises where it can.
static void rank_update_scalar(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b, size_t ldb,
                               float *c, size_t ldc, int accumulate) {
    for (size_t i = 0; i < m; i++) {
        float *ci = c + i * ldc;
        if (!accumulate)
            for (size_t j = 0; j < n; j++) ci[j] = 0;
        for (size_t p = 0; p < k; p++) {
            const float ap = a[p * lda + i], *bp = b + p * ldb;
            for (size_t j = 0; j < n; j++) ci[j] = fmaf(ap, bp[j], ci[j]);
        }
    }
}

#if defined(__x86_64__) && defined(__clang__)
#include <immintrin.h>

// AVX-512: tiles of 6 rows x 64 columns (24 accumulators), the last vector masked.
#define RU512_ROWS 6
#define RU512_VECS 4
__attribute__((target("avx512f"), always_inline)) static inline void
tile512(int rows, int vecs, __mmask16 tail, size_t k, const float *a, size_t lda, const float *b, size_t ldb, float *c,
        size_t ldc, int accumulate) {
    __m512 s[RU512_ROWS][RU512_VECS];
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < vecs; v++)
            s[r][v] = accumulate ? _mm512_maskz_loadu_ps(v == vecs - 1 ? tail : 0xFFFF, c + r * ldc + 16 * v) : _mm512_setzero_ps();
    for (size_t p = 0; p < k; p++) {
        const float *ap = a + p * lda, *bp = b + p * ldb;
        __m512 bv[RU512_VECS];
        for (int v = 0; v < vecs; v++) bv[v] = _mm512_maskz_loadu_ps(v == vecs - 1 ? tail : 0xFFFF, bp + 16 * v);
        for (int r = 0; r < rows; r++) {
            __m512 x = _mm512_set1_ps(ap[r]);
            for (int v = 0; v < vecs; v++) s[r][v] = _mm512_fmadd_ps(x, bv[v], s[r][v]);
        }
    }
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < vecs; v++) _mm512_mask_storeu_ps(c + r * ldc + 16 * v, v == vecs - 1 ? tail : 0xFFFF, s[r][v]);
}

__attribute__((target("avx512f"))) static void
rank_update_avx512(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b, size_t ldb, float *c,
                   size_t ldc, int accumulate) {
    for (size_t j = 0; j < n; j += 16 * RU512_VECS) {
        size_t width = n - j < 16 * RU512_VECS ? n - j : 16 * RU512_VECS;
        int vecs = (int)((width + 15) / 16);
        __mmask16 tail = width % 16 ? (__mmask16)((1u << (width % 16)) - 1) : 0xFFFF;
        size_t i = 0;
        if (vecs == RU512_VECS && tail == 0xFFFF)  // the common case, with constant trip counts
            for (; i + RU512_ROWS <= m; i += RU512_ROWS)
                tile512(RU512_ROWS, RU512_VECS, 0xFFFF, k, a + i, lda, b + j, ldb, c + i * ldc + j, ldc, accumulate);
        else
            for (; i + RU512_ROWS <= m; i += RU512_ROWS)
                tile512(RU512_ROWS, vecs, tail, k, a + i, lda, b + j, ldb, c + i * ldc + j, ldc, accumulate);
        for (; i < m; i++) tile512(1, vecs, tail, k, a + i, lda, b + j, ldb, c + i * ldc + j, ldc, accumulate);
    }
}

// AVX2 with FMA: tiles of 4 rows x 24 columns (12 accumulators); columns past the last whole
// vector go to the portable path (the same chain).
#define RU256_ROWS 4
#define RU256_VECS 3
__attribute__((target("avx2,fma"), always_inline)) static inline void
tile256(int rows, int vecs, size_t k, const float *a, size_t lda, const float *b, size_t ldb, float *c, size_t ldc,
        int accumulate) {
    __m256 s[RU256_ROWS][RU256_VECS];
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < vecs; v++) s[r][v] = accumulate ? _mm256_loadu_ps(c + r * ldc + 8 * v) : _mm256_setzero_ps();
    for (size_t p = 0; p < k; p++) {
        const float *ap = a + p * lda, *bp = b + p * ldb;
        __m256 bv[RU256_VECS];
        for (int v = 0; v < vecs; v++) bv[v] = _mm256_loadu_ps(bp + 8 * v);
        for (int r = 0; r < rows; r++) {
            __m256 x = _mm256_set1_ps(ap[r]);
            for (int v = 0; v < vecs; v++) s[r][v] = _mm256_fmadd_ps(x, bv[v], s[r][v]);
        }
    }
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < vecs; v++) _mm256_storeu_ps(c + r * ldc + 8 * v, s[r][v]);
}

__attribute__((target("avx2,fma"))) static void
rank_update_avx2(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b, size_t ldb, float *c,
                 size_t ldc, int accumulate) {
    size_t whole = n / 8 * 8, j = 0;
    for (; j < whole; j += 8 * RU256_VECS) {
        int vecs = whole - j < 8 * RU256_VECS ? (int)((whole - j) / 8) : RU256_VECS;
        size_t i = 0;
        if (vecs == RU256_VECS)
            for (; i + RU256_ROWS <= m; i += RU256_ROWS)
                tile256(RU256_ROWS, RU256_VECS, k, a + i, lda, b + j, ldb, c + i * ldc + j, ldc, accumulate);
        else
            for (; i + RU256_ROWS <= m; i += RU256_ROWS)
                tile256(RU256_ROWS, vecs, k, a + i, lda, b + j, ldb, c + i * ldc + j, ldc, accumulate);
        for (; i < m; i++) tile256(1, vecs, k, a + i, lda, b + j, ldb, c + i * ldc + j, ldc, accumulate);
    }
    if (whole < n) rank_update_scalar(m, n - whole, k, a, lda, b + whole, ldb, c + whole, ldc, accumulate);
}
#endif

void bn_rank_update_f32_path(int path, size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b,
                             size_t ldb, float *c, size_t ldc, int accumulate) {
#if defined(__x86_64__) && defined(__clang__)
    if (path == 2) return rank_update_avx512(m, n, k, a, lda, b, ldb, c, ldc, accumulate);
    if (path == 1) return rank_update_avx2(m, n, k, a, lda, b, ldb, c, ldc, accumulate);
#endif
    rank_update_scalar(m, n, k, a, lda, b, ldb, c, ldc, accumulate);
}

int bn_rank_update_best_path(void) {
#if defined(__x86_64__) && defined(__clang__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}

static int best_path = -1;

void bn_rank_update_f32(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b, size_t ldb, float *c,
                        size_t ldc, int accumulate) {
    int path = __atomic_load_n(&best_path, __ATOMIC_RELAXED);
    if (path < 0) {
        path = bn_rank_update_best_path();
        __atomic_store_n(&best_path, path, __ATOMIC_RELAXED);
    }
    bn_rank_update_f32_path(path, m, n, k, a, lda, b, ldb, c, ldc, accumulate);
}
