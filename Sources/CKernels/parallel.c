// A barrier that spins briefly, then blocks, and the fixed-order shard reduction.
#define _GNU_SOURCE
#include "CKernels.h"
#include <sched.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

struct bn_barrier {
    atomic_uint arrived;     // threads that reached the current round
    atomic_uint generation;  // rounds completed; waiters watch it change
    atomic_uint parties;
    long spins;              // polls of `generation` before sleeping on the condition
    pthread_mutex_t lock;
    pthread_cond_t wake;
};

bn_barrier *bn_barrier_create(int parties, long spins) {
    if (parties < 1) return NULL;
    bn_barrier *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    atomic_init(&b->arrived, 0);
    atomic_init(&b->generation, 0);
    atomic_init(&b->parties, (unsigned)parties);
    b->spins = spins < 0 ? 0 : spins;
    if (pthread_mutex_init(&b->lock, NULL) != 0) { free(b); return NULL; }
    if (pthread_cond_init(&b->wake, NULL) != 0) { pthread_mutex_destroy(&b->lock); free(b); return NULL; }
    return b;
}

void bn_barrier_destroy(bn_barrier *b) {
    if (!b) return;
    pthread_cond_destroy(&b->wake);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

static inline void bn_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

// The last thread to arrive resets the count and then publishes the new generation
// (release), so a thread that sees the new generation also sees the reset count before it
// can arrive at the next round. The others poll for `spins` rounds, then sleep; the mutex
// around the publish means no sleeper misses the broadcast.
void bn_barrier_wait(bn_barrier *b) {
    unsigned gen = atomic_load_explicit(&b->generation, memory_order_acquire);
    if (atomic_fetch_add_explicit(&b->arrived, 1, memory_order_acq_rel) + 1 == atomic_load_explicit(&b->parties, memory_order_acquire)) {
        atomic_store_explicit(&b->arrived, 0, memory_order_relaxed);
        pthread_mutex_lock(&b->lock);
        atomic_store_explicit(&b->generation, gen + 1, memory_order_release);
        pthread_cond_broadcast(&b->wake);
        pthread_mutex_unlock(&b->lock);
        return;
    }
    for (long i = 0; i < b->spins; i++) {
        if (atomic_load_explicit(&b->generation, memory_order_acquire) != gen) return;
        bn_cpu_relax();
    }
    pthread_mutex_lock(&b->lock);
    while (atomic_load_explicit(&b->generation, memory_order_acquire) == gen) pthread_cond_wait(&b->wake, &b->lock);
    pthread_mutex_unlock(&b->lock);
}

void bn_atomic_store_i32(int32_t *flag, int32_t value) { __atomic_store_n(flag, value, __ATOMIC_RELEASE); }
int32_t bn_atomic_load_i32(const int32_t *flag) { return __atomic_load_n(flag, __ATOMIC_ACQUIRE); }

// Lowers the party count, for a team some of whose threads never started; call it only
// while fewer than `parties` threads wait (the caller has not arrived yet).
void bn_barrier_set_parties(bn_barrier *b, int parties) {
    atomic_store_explicit(&b->parties, (unsigned)parties, memory_order_release);
}

// dst[i] = (((dst[i] + src[0][i]) + src[1][i]) + ...) for i in [begin, end): every element
// is summed in shard order, so how [0, n) is cut among workers never changes a bit.
void bn_sum_shards_f32(float *restrict dst, const float *const *srcs, long shards, long begin, long end) {
    for (long s = 0; s < shards; s++) {
        const float *restrict src = srcs[s];
        for (long i = begin; i < end; i++) dst[i] += src[i];
    }
}

void bn_sum_shards_f64(double *restrict dst, const double *const *srcs, long shards, long begin, long end) {
    for (long s = 0; s < shards; s++) {
        const double *restrict src = srcs[s];
        for (long i = begin; i < end; i++) dst[i] += src[i];
    }
}

int bn_usable_cpus(int *cpus, int max) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
    int n = 0;
    for (int c = 0; c < CPU_SETSIZE && n < max; c++) {
        if (CPU_ISSET(c, &set)) cpus[n++] = c;
    }
    return n;
}
