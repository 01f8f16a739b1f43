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

// A Float-specialised generic caller's scalars and buffers as the C kernels take them (callers
// check T == Float first).
@usableFromInline @inline(__always) func float32<T: BLASScalar>(_ x: T) -> Float { unsafeBitCast(x, to: Float.self) }
@usableFromInline @inline(__always) func float32<T: BLASScalar>(_ p: UnsafePointer<T>) -> UnsafePointer<Float> {
    UnsafeRawPointer(p).assumingMemoryBound(to: Float.self)
}
@usableFromInline @inline(__always) func float32<T: BLASScalar>(_ p: UnsafeMutablePointer<T>) -> UnsafePointer<Float> {
    UnsafeRawPointer(p).assumingMemoryBound(to: Float.self)
}
@usableFromInline @inline(__always) func float32Buffer<T: BLASScalar>(_ p: UnsafeMutablePointer<T>) -> UnsafeMutablePointer<Float> {
    UnsafeMutableRawPointer(p).assumingMemoryBound(to: Float.self)
}
