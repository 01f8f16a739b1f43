#ifndef BNTRAIN_CZLIB_SHIM_H
#define BNTRAIN_CZLIB_SHIM_H
#include <zlib.h>

// gzopen is a macro alias for gzopen64 on 64-bit glibc builds with large-file support,
// which Swift cannot import; this wrapper gives Swift one stable name.
static inline gzFile bn_gzopen(const char *path, const char *mode) {
    return gzopen(path, mode);
}
#endif
