// Open MPI, loaded at run time (dlopen) so that bntrain builds and runs where MPI is not
// installed, as oneDNN is loaded. Only what a data-parallel run needs: init, rank and size,
// all-gather and broadcast of bytes, abort. Open MPI's handles (MPI_COMM_WORLD, MPI_BYTE, the
// error handler) are the addresses of its predefined objects, found by name.
#define _GNU_SOURCE
#include "CKernels.h"
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef void *handle;
static long long now_ms(void);
static struct {
    void *lib;
    int (*init_thread)(int *, char ***, int, int *);
    int (*initialized)(int *);
    int (*finalize)(void);
    int (*comm_rank)(handle, int *);
    int (*comm_size)(handle, int *);
    int (*allgather)(const void *, int, handle, void *, int, handle, handle);
    int (*bcast)(void *, int, handle, int, handle);
    int (*abort_)(handle, int);
    int (*set_errhandler)(handle, handle);
    int (*processor_name)(char *, int *);
    int (*error_string)(int, char *, int *);
    handle world, byte, errors_return;
} mpi;

// The watch over the other ranks on this host: MPI on shared memory does not notice a peer
// that was killed, and mpirun would then end the job with a screen of its own. Every 100 ms
// a thread checks that each peer's process still exists; when one has gone, the lowest
// surviving rank says which, in one line, and every survivor exits 75.
static struct {
    atomic_int stopping;
    atomic_llong inflight;  // CLOCK_MONOTONIC ms when the current all-gather began, 0 outside one
    long long timeout_ms;   // 0: no limit
    int count, me;
    long pids[1024];
    int ranks[1024];
    char host[256];
} watch;


int bn_mpi_load(const char *path, char *error, size_t capacity) {
    if (mpi.lib) return 0;
    const char *names[] = {"libmpi.so.40", "libmpi.so"};
    void *lib = NULL;
    if (path && *path) lib = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
    for (size_t i = 0; !(path && *path) && i < sizeof names / sizeof *names && !lib; i++) lib = dlopen(names[i], RTLD_NOW | RTLD_GLOBAL);
    if (!lib) {
        snprintf(error, capacity, "%s", dlerror());
        return 1;
    }
#define FIND(field, name)                                                            \
    do {                                                                             \
        *(void **)&mpi.field = dlsym(lib, name);                                     \
        if (!mpi.field) {                                                            \
            snprintf(error, capacity, "libmpi has no %s (not Open MPI 4?)", name); \
            dlclose(lib);                                                            \
            memset(&mpi, 0, sizeof mpi);                                             \
            return 1;                                                                \
        }                                                                            \
    } while (0)
    FIND(init_thread, "MPI_Init_thread");
    FIND(initialized, "MPI_Initialized");
    FIND(finalize, "MPI_Finalize");
    FIND(comm_rank, "MPI_Comm_rank");
    FIND(comm_size, "MPI_Comm_size");
    FIND(allgather, "MPI_Allgather");
    FIND(bcast, "MPI_Bcast");
    FIND(abort_, "MPI_Abort");
    FIND(set_errhandler, "MPI_Comm_set_errhandler");
    FIND(processor_name, "MPI_Get_processor_name");
    FIND(error_string, "MPI_Error_string");
    FIND(world, "ompi_mpi_comm_world");
    FIND(byte, "ompi_mpi_byte");
    FIND(errors_return, "ompi_mpi_errors_return");
#undef FIND
    mpi.lib = lib;
    return 0;
}

static void describe(int rc, char *error, size_t capacity) {
    char text[512];
    int len = 0;
    if (mpi.error_string && mpi.error_string(rc, text, &len) == 0) {
        text[len < (int)sizeof text ? len : (int)sizeof text - 1] = 0;
        snprintf(error, capacity, "%s", text);
    } else {
        snprintf(error, capacity, "MPI error %d", rc);
    }
}

// MPI_THREAD_FUNNELED: only the main thread (worker 0) calls MPI.
int bn_mpi_init(int *rank, int *size, char *error, size_t capacity) {
    int provided = 0, done = 0, rc;
    mpi.initialized(&done);
    if (!done && (rc = mpi.init_thread(NULL, NULL, 1, &provided)) != 0) {
        describe(rc, error, capacity);
        return 1;
    }
    mpi.set_errhandler(mpi.world, mpi.errors_return);
    if ((rc = mpi.comm_rank(mpi.world, rank)) != 0 || (rc = mpi.comm_size(mpi.world, size)) != 0) {
        describe(rc, error, capacity);
        return 1;
    }
    return 0;
}

int bn_mpi_allgather(const void *send, size_t bytes, void *receive, char *error, size_t capacity) {
    atomic_store(&watch.inflight, now_ms());
    int rc = mpi.allgather(send, (int)bytes, mpi.byte, receive, (int)bytes, mpi.byte, mpi.world);
    atomic_store(&watch.inflight, 0);
    if (rc != 0) describe(rc, error, capacity);
    return rc != 0;
}

int bn_mpi_bcast(void *buffer, size_t bytes, int root, char *error, size_t capacity) {
    int rc = mpi.bcast(buffer, (int)bytes, mpi.byte, root, mpi.world);
    if (rc != 0) describe(rc, error, capacity);
    return rc != 0;
}

void bn_mpi_processor_name(char *name, size_t capacity) {
    char text[256];
    int len = 0;
    if (mpi.processor_name && mpi.processor_name(text, &len) == 0) {
        text[len < (int)sizeof text ? len : (int)sizeof text - 1] = 0;
        snprintf(name, capacity, "%s", text);
    } else {
        snprintf(name, capacity, "?");
    }
}

static long long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void *watch_loop(void *arg) {
    (void)arg;
    for (;;) {
        usleep(100 * 1000);
        if (atomic_load(&watch.stopping)) return NULL;
        long long began = atomic_load(&watch.inflight);
        if (watch.timeout_ms > 0 && began > 0 && now_ms() - began > watch.timeout_ms) {
            // No word from some rank for that long: one lost its network or hangs.
            if (watch.me == 0) {
                char line[512];
                int n = snprintf(line, sizeof line,
                                 "bntrain: error: rank 0 (%s) heard nothing from the other ranks for %lld s (a rank lost its "
                                 "network or stopped); the job stops; its last checkpoint is intact, continue with --resume\n",
                                 watch.host, watch.timeout_ms / 1000);
                if (n > 0) (void)!write(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
            }
            _exit(75);
        }
        for (int i = 0; i < watch.count; i++) {
            if (kill((pid_t)watch.pids[i], 0) == 0 || errno != ESRCH) continue;
            if (atomic_load(&watch.stopping)) return NULL;
            int report = 1;
            for (int j = 0; j < watch.count; j++)
                if (watch.ranks[j] < watch.me && (kill((pid_t)watch.pids[j], 0) == 0 || errno != ESRCH)) report = 0;
            if (report) {
                char line[512];
                int n = snprintf(line, sizeof line,
                                 "bntrain: error: rank %d (%s) ended during the run (killed or crashed); the job stops; "
                                 "its last checkpoint is intact, continue with --resume\n",
                                 watch.ranks[i], watch.host);
                if (n > 0) (void)!write(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
            }
            _exit(75);
        }
    }
}

int bn_mpi_watch(const long *pids, const int *ranks, int count, int me, const char *host, long long timeout_ms) {
    if (count < 0) count = 0;
    if (count > 1024) count = 1024;
    watch.timeout_ms = timeout_ms;
    watch.count = count;
    watch.me = me;
    memcpy(watch.pids, pids, sizeof(long) * (size_t)count);
    memcpy(watch.ranks, ranks, sizeof(int) * (size_t)count);
    snprintf(watch.host, sizeof watch.host, "%s", host);
    pthread_t t;
    if (pthread_create(&t, NULL, watch_loop, NULL) != 0) return 1;
    pthread_detach(t);
    return 0;
}

void bn_mpi_abort(int code) {
    atomic_store(&watch.stopping, 1);
    if (mpi.abort_) mpi.abort_(mpi.world, code);
}

void bn_mpi_finalize(void) {
    static atomic_int done;
    atomic_store(&watch.stopping, 1);
    if (mpi.finalize && !atomic_exchange(&done, 1)) mpi.finalize();
}

void bn_mpi_stop_watch(void) { atomic_store(&watch.stopping, 1); }
