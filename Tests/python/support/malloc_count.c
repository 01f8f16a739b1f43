/* LD_PRELOAD library that counts heap allocations and prints the counts to stderr at exit;
   used by test_no_allocation.py to show that a training step allocates nothing. calloc is
   served from a static buffer until dlsym has resolved the real one (dlsym itself calls it).
   malloc_count_window(1) / (0) brackets a region of interest: the allocations made inside
   it are counted apart (bnbench looks the function up with dlsym and brackets its training
   steps), so output formatting elsewhere in the process cannot blur the figure; the largest
   allocation made inside it is reported too. Window allocations whose caller is inside
   libopenblas are counted apart (window_blas_allocations): its AVX-512 kernels (SkylakeX,
   Cooperlake) allocate for some product shapes, which bntrain cannot change (docs/performance.md). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static unsigned long n_window_blas, n_malloc, n_calloc, n_realloc, n_memalign, n_window, n_windows, window_max;
static volatile int in_window;
void malloc_count_window(int on) { if (on) n_windows++; in_window = on; }
/* 1 when the code at `pc` lies in libopenblas (dladdr allocates nothing). */
static int from_blas(void *pc) { Dl_info d; return dladdr(pc, &d) && d.dli_fname && strstr(d.dli_fname, "libopenblas"); }
#define COUNT(n, size) (n++, (in_window && from_blas(__builtin_return_address(0))) ? (void)n_window_blas++ : (void)(n_window += in_window), (in_window && (size) > window_max) ? (window_max = (size)) : 0)
static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static int (*real_posix_memalign)(void **, size_t, size_t);
static char buf[65536]; static size_t used;
void *malloc(size_t s) { if (!real_malloc) real_malloc = dlsym(RTLD_NEXT, "malloc"); COUNT(n_malloc, s); return real_malloc(s); }
void *calloc(size_t a, size_t b) { if (!real_calloc) { void *p = buf + used; used += a * b; memset(p, 0, a*b); real_calloc = dlsym(RTLD_NEXT, "calloc"); return p; } COUNT(n_calloc, a * b); return real_calloc(a, b); }
void *realloc(void *p, size_t s) { if (!real_realloc) real_realloc = dlsym(RTLD_NEXT, "realloc"); COUNT(n_realloc, s); return real_realloc(p, s); }
int posix_memalign(void **p, size_t a, size_t s) { if (!real_posix_memalign) real_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign"); COUNT(n_memalign, s); return real_posix_memalign(p, a, s); }
void free(void *p) { static void (*real_free)(void *); if (p >= (void*)buf && p < (void*)(buf + sizeof buf)) return; if (!real_free) real_free = dlsym(RTLD_NEXT, "free"); real_free(p); }
void *aligned_alloc(size_t a, size_t s) { static void *(*real)(size_t, size_t); if (!real) real = dlsym(RTLD_NEXT, "aligned_alloc"); COUNT(n_memalign, s); return real(a, s); }
void *memalign(size_t a, size_t s) { static void *(*real)(size_t, size_t); if (!real) real = dlsym(RTLD_NEXT, "memalign"); COUNT(n_memalign, s); return real(a, s); }
__attribute__((destructor)) static void report(void) { char s[200]; int k = snprintf(s, sizeof s, "mallocs=%lu callocs=%lu reallocs=%lu memaligns=%lu windows=%lu window_allocations=%lu window_blas_allocations=%lu window_max_bytes=%lu\n", n_malloc, n_calloc, n_realloc, n_memalign, n_windows, n_window, n_window_blas, window_max); write(2, s, k); }
