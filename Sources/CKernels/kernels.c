#include "CKernels.h"
#include <math.h>

#pragma STDC FP_CONTRACT OFF

#if defined(__x86_64__) && defined(__clang__)
#define BN_CLONES __attribute__((target_clones("avx512f", "default")))
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

int bn_kernels_avx512(void) {
#if defined(__x86_64__) && defined(__clang__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") ? 1 : 0;
#else
    return 0;
#endif
}
