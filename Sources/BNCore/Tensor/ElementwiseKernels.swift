import CKernels

/// The C element-wise kernels (`Sources/CKernels`: the Float optimizer updates, BatchNorm2D's
/// planes, dropout, 2x2 max pooling, Dense's bias+sigmoid, and BNData's pixel conversion):
/// which clone the loader picked for this CPU. Results are
/// the same bits either way (no contraction; sums in a fixed 16-lane layout); only the speed
/// differs. Reported in the run's config record.
public enum ElementwiseKernels {
    /// "avx512" where the CPU is x86-64-v4 (AVX-512 F/BW/CD/DQ/VL), else "x86-64" (other
    /// architectures: "generic").
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
