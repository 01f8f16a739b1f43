import CKernels

/// The C element-wise kernels (`Sources/CKernels`: the Float optimizer updates): which clone
/// the loader picked for this CPU. Results are the same bits either way (no contraction, no
/// reductions); only the speed differs. Reported in the run's config record.
public enum ElementwiseKernels {
    /// "avx512" where the CPU has AVX-512F, else "x86-64" (SSE2; other architectures: "generic").
    public static let isa: String = {
        #if arch(x86_64)
        return bn_kernels_avx512() != 0 ? "avx512" : "x86-64"
        #else
        return "generic"
        #endif
    }()
}
