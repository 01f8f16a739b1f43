#ifndef BNTRAIN_COPENBLAS_SHIM_H
#define BNTRAIN_COPENBLAS_SHIM_H
// OpenBLAS by name (not "blas", which may resolve to the slow reference BLAS).
#include <cblas.h>

// OpenBLAS-specific thread control; declared in OpenBLAS's cblas.h, wrapped so the Swift
// side does not depend on how a given OpenBLAS release spells it.
static inline void bn_blas_set_threads(int n) { openblas_set_num_threads(n); }
static inline int bn_blas_get_threads(void) { return openblas_get_num_threads(); }
#endif
