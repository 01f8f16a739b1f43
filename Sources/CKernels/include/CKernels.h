// Element-wise float32 kernels that Swift does not vectorize well (its SIMD types compile
// square roots lane by lane). Each is a plain C loop that clang vectorizes, built for x86-64-v4
// (AVX-512) and for baseline x86-64 and chosen at load time (target_clones). Floating-point contraction
// is off, so every lane rounds exactly as the scalar expression written here and as the Swift
// reference loops: results do not depend on the vector width or the CPU.
#ifndef CKERNELS_H
#define CKERNELS_H

#include <stddef.h>
#include <stdint.h>

/// One Adam/AdamW step over n parameters (torch.optim.Adam, single tensor, no amsgrad):
///     d = g + coupled w
///     m = b1 m + omb1 d,   v = b2 v + omb2 d d
///     w = w shrink - step m / (sqrt(v) / bc2sqrt + eps)
/// with omb1 = 1 - b1, omb2 = 1 - b2 rounded to float by the caller, as the Swift loop does.
void bn_adam_f32(float *restrict w, const float *restrict g, float *restrict m, float *restrict v, size_t n,
                 float coupled, float b1, float omb1, float b2, float omb2,
                 float shrink, float step, float bc2sqrt, float eps);

/// One RMSprop step (torch.optim.RMSprop, not centred), oma = 1 - alpha:
///     d = g + wd w,   v = alpha v + oma d d
///     b = mu b + d / (sqrt(v) + eps),  w = w - lr b            (b non-null: momentum)
///     w = w - lr d / (sqrt(v) + eps)                          (b null)
void bn_rmsprop_f32(float *restrict w, const float *restrict g, float *restrict v, float *restrict b, size_t n,
                    float wd, float alpha, float oma, float mu, float lr, float eps);

/// One plain SGD step (torch.optim.SGD without momentum or weight decay): w = w - lr g.
void bn_sgd_f32(float *restrict w, const float *restrict g, size_t n, float lr);

/// One SGD step with momentum mu (b non-null) and coupled weight decay wd (torch.optim.SGD,
/// dampening 0):
///     d = g + wd w;  b = d (first step) or mu b + d;  d = d + mu b (nesterov) or b;  w = w - lr d
/// With b null: w = w - lr (g + wd w).
void bn_momentum_sgd_f32(float *restrict w, const float *restrict g, float *restrict b, size_t n,
                         float wd, float mu, float lr, int first, int nesterov);

// BatchNorm2D over one channel: `planes` planes of `hw` values, plane e at x + e * stride
// (NCHW: stride = C H W). Sums run in 16 lanes (lane l takes the values at i = l mod 16 of
// each full block of 16), the lanes are then added in order 0..15 and the tail after them, as
// BNCore's Elementwise.sum/dot do (the same bits as Swift's SIMD16 loops); plane sums are
// added in plane order.

/// sum over the planes of x.
float bn_planes_sum_f32(const float *x, size_t planes, size_t stride, size_t hw);
/// sum over the planes of (x - mu)^2.
float bn_planes_squared_deviation_f32(const float *x, size_t planes, size_t stride, size_t hw, float mu);
/// y = gamma ((x - mu) istd) + beta, then max(y, 0) if relu (NaN -> 0).
void bn_planes_normalize_f32(const float *x, float *y, size_t planes, size_t stride, size_t hw,
                             float mu, float istd, float gamma, float beta, int relu);
/// (sum g, sum g xhat), xhat = (x - mu) istd, g = dy, or with y non-null dy where y > 0 else 0.
void bn_planes_gradient_sums_f32(const float *dy, const float *x, const float *y, size_t planes, size_t stride,
                                 size_t hw, float mu, float istd, float *sum_g, float *sum_gxhat);
/// GroupNorm, one group of one example: cpg channels of `plane` contiguous values (m = cpg
/// plane). mu and the biased variance are 16-lane sums as the plane kernels' (planes = 1);
/// xhat = (x - mu) istd into h, y = gamma_c xhat + beta_c. Returns istd = 1/sqrt(var + eps).
float bn_group_norm_forward_f32(const float *x, float *h, float *y, size_t cpg, size_t plane,
                                const float *gamma, const float *beta, float eps);
/// Its backward: per channel c, the 16-lane sums of dy and dy xhat over the plane are added to
/// dbeta[c] and dgamma[c]; with dx non-null, dx = istd (gamma_c dy - mean dxhat - xhat
/// mean(dxhat xhat)) with dxhat = gamma dy, the means over the group's m values.
void bn_group_norm_backward_f32(const float *dy, const float *h, float *dx, size_t cpg, size_t plane,
                                const float *gamma, float *dgamma, float *dbeta, float istd);
/// dx = k (g - a - xhat bq), g and xhat as above.
void bn_planes_input_gradient_f32(const float *dy, const float *x, const float *y, float *dx, size_t planes,
                                  size_t stride, size_t hw, float mu, float istd, float k, float a, float bq);

/// Dropout's mask from SplitMix64 (BNCore's generator): value i takes the generator's
/// (i+1)-th output after `state`, z, and is 0 where z < threshold, else scale. Returns the
/// state after n outputs (state + n * golden gamma), as n calls of SplitMix64.next() leave it.
uint64_t bn_dropout_mask_f32(float *restrict mask, size_t n, uint64_t state, uint64_t threshold, float scale);

/// out = a * b, element-wise.
void bn_multiply_f32(const float *restrict a, const float *restrict b, float *restrict out, size_t n);

/// 2x2 stride-2 max pooling of `count` examples of `channels` planes H x W into OH x OW
/// (OH = H / 2, OW = W / 2): the largest of each window, ties to the first in row-major order
/// (a NaN never replaces the current best); argmax holds its index within the example
/// (c H W + row W + col), for the backward pass.
void bn_maxpool2x2_f32(const float *restrict x, float *restrict y, int32_t *restrict argmax, size_t count,
                       size_t channels, size_t H, size_t W, size_t OH, size_t OW);

/// Asks the CPU to bring the `bytes` at p into its caches (one prefetch per 64-byte line),
/// without waiting: the minibatch sampler's next rows, read while this step computes.
void bn_prefetch(const void *p, size_t bytes);

/// Dense's fused forward pass for float32: y = 1 / (1 + exp(-(y + b))) in place over a
/// row-major (rows, cols) block, b broadcast over rows, with exp evaluated exactly as
/// BNCore's `Elementwise.fastExp` (Cephes' expf scheme: range reduction, a polynomial for
/// e^r, 2^n from exponent bits; inputs clamped to [-87.33, 88.72], NaN kept): the same bits
/// as the Swift loop 1 / (1 + fastExp(-(y + b))).
void bn_bias_sigmoid_f32(float *restrict y, const float *restrict b, size_t rows, size_t cols);

/// IDX pixels to bntrain's inputs: dst[i] = (p/255 - 0.5) * 2 for p = src[i], computed as
/// float(double(p) * (2/255) - 1), which equals BNData's Double-computed table for all 256
/// byte values (tested exhaustively), so a row gathered from bytes has the bits of one
/// decoded to float32 at load.
void bn_pixels_to_f32(const uint8_t *restrict src, float *restrict dst, size_t n);

/// dst (cols x rows) = transpose of src (rows x cols), row-major, copied as bit patterns.
void bn_transpose_u32(const uint32_t *restrict src, size_t rows, size_t cols, uint32_t *restrict dst);
void bn_transpose_u64(const uint64_t *restrict src, size_t rows, size_t cols, uint64_t *restrict dst);

/// Sorts v ascending (a radix sort; scratch holds n floats); -0 before +0.
void bn_sort_f32(float *v, float *scratch, size_t n);

/// 1 if this process runs the AVX-512 clones, x86-64-v4: AVX-512 F, BW, CD, DQ and VL (for the
/// run's config record).
int bn_kernels_avx512(void);

// A fully connected layer's weight gradient, split-invariant (rank_update.c):
// C[i, j] = fma chain over p = 0 ..< k of A[p, i] * B[p, j], from 0 or (accumulate) from C.
// The same bits whatever the path, tile or split of C's rows and columns.
void bn_rank_update_f32(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b, size_t ldb, float *c,
                        size_t ldc, int accumulate);
// path: 0 portable (fmaf), 1 AVX2+FMA, 2 AVX-512; for the tests that compare them.
void bn_rank_update_f32_path(int path, size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b,
                             size_t ldb, float *c, size_t ldc, int accumulate);
// The path this CPU runs: 2, 1 or 0.
int bn_rank_update_best_path(void);

/// A reusable barrier for `parties` threads that polls `spins` times, then sleeps.
/// NULL when parties < 1 or memory runs out.
/// The logical CPUs in this process's affinity mask, ascending, into cpus[0..<max]; returns
/// their count, or -1 if the mask cannot be read.
int bn_usable_cpus(int *cpus, int max);

typedef struct bn_barrier bn_barrier;
bn_barrier *bn_barrier_create(int parties, long spins);
void bn_barrier_wait(bn_barrier *barrier);
// Open MPI loaded at run time (mpi.c). Each returns 0 on success, else fills `error`.
int bn_mpi_load(const char *path, char *error, size_t capacity);  // path NULL: libmpi.so.40
int bn_mpi_init(int *rank, int *size, char *error, size_t capacity);
int bn_mpi_allgather(const void *send, size_t bytes, void *receive, char *error, size_t capacity);
int bn_mpi_bcast(void *buffer, size_t bytes, int root, char *error, size_t capacity);
void bn_mpi_processor_name(char *name, size_t capacity);
void bn_mpi_abort(int code);
// Watches the other ranks on this host (their pids), and all-gathers that take longer than
// timeout_ms (0: no limit); see mpi.c. bn_mpi_stop_watch before a
// planned exit (finalize and abort stop it too).
int bn_mpi_watch(const long *pids, const int *ranks, int count, int me, const char *host, long long timeout_ms);
void bn_mpi_stop_watch(void);
void bn_mpi_finalize(void);

// A flag that workers of a pool read while one of them sets it (a stop request).
void bn_atomic_store_i32(int32_t *flag, int32_t value);
int32_t bn_atomic_load_i32(const int32_t *flag);
void bn_barrier_destroy(bn_barrier *barrier);
/// Lowers the party count before the caller arrives (a team whose threads did not all start).
void bn_barrier_set_parties(bn_barrier *barrier, int parties);

/// dst[i] += srcs[0][i], then srcs[1][i], ... for i in [begin, end): a fixed summation order
/// per element, whatever range a caller takes.
void bn_sum_shards_f32(float *dst, const float *const *srcs, long shards, long begin, long end);
void bn_sum_shards_f64(double *dst, const double *const *srcs, long shards, long begin, long end);

#endif
