#if canImport(Glibc)
import Glibc
#endif

/// oneDNN's matrix products, loaded at run time (Debian 12: `libdnnl-dev`, oneDNN 2.6), so a
/// machine without the library still builds and trains with OpenBLAS in float32.
///
/// Only three C functions are used, looked up with dlsym (their C signatures below; oneDNN's
/// gemm is row-major, dnnl_dim_t is int64_t):
///     dnnl_status_t dnnl_sgemm(char transa, char transb, dim M, dim N, dim K, float alpha,
///                              const float *A, dim lda, const float *B, dim ldb,
///                              float beta, float *C, dim ldc)
///     dnnl_status_t dnnl_gemm_bf16bf16f32(... the same with const bfloat16 *A, *B ...)
///         (exported by 2.6 although its public header does not declare it)
///     dnnl_cpu_isa_t dnnl_get_effective_cpu_isa(void)
/// oneDNN threads through OpenMP; `omp_set_num_threads` (from the libgomp it loads) sets them.
public final class OneDNN: @unchecked Sendable {
    typealias SGEMM = @convention(c) (CChar, CChar, Int64, Int64, Int64, Float, UnsafePointer<Float>?, Int64, UnsafePointer<Float>?, Int64, Float, UnsafeMutablePointer<Float>?, Int64) -> Int32
    typealias BF16GEMM = @convention(c) (CChar, CChar, Int64, Int64, Int64, Float, UnsafePointer<UInt16>?, Int64, UnsafePointer<UInt16>?, Int64, Float, UnsafeMutablePointer<Float>?, Int64) -> Int32
    typealias ISA = @convention(c) () -> Int32
    typealias SetThreads = @convention(c) (Int32) -> Void
    typealias Version = @convention(c) () -> UnsafePointer<Int32>?

    let sgemmFunction: SGEMM
    let bf16Function: BF16GEMM
    let setThreadsFunction: SetThreads?
    /// "2.6.3" (from dnnl_version()).
    public let version: String
    /// dnnl_get_effective_cpu_isa(): a bit set; AVX512-BF16 (0xe7) and AMX (0x3e7) contain
    /// the AVX-512 core bits.
    public let isa: Int32
    /// The convolution and reorder primitives (nil if this libdnnl lacks them).
    let primitives: OneDNNPrimitives?

    /// The library, or nil when it is not installed (or lacks a symbol).
    public static let shared: OneDNN? = OneDNN()

    private init?() {
        guard let handle = dlopen("libdnnl.so.2", RTLD_NOW | RTLD_LOCAL),
              let s = dlsym(handle, "dnnl_sgemm"), let b = dlsym(handle, "dnnl_gemm_bf16bf16f32"),
              let i = dlsym(handle, "dnnl_get_effective_cpu_isa"), let v = dlsym(handle, "dnnl_version")
        else { return nil }
        sgemmFunction = unsafeBitCast(s, to: SGEMM.self)
        bf16Function = unsafeBitCast(b, to: BF16GEMM.self)
        setThreadsFunction = dlsym(handle, "omp_set_num_threads").map { unsafeBitCast($0, to: SetThreads.self) }
        isa = unsafeBitCast(i, to: ISA.self)()
        primitives = OneDNNPrimitives(handle: handle)
        // dnnl_version_t begins with three ints: major, minor, patch.
        if let p = unsafeBitCast(v, to: Version.self)() {
            version = "\(p[0]).\(p[1]).\(p[2])"
        } else {
            version = "?"
        }
    }

    /// Whether the CPU has bf16 dot-product instructions oneDNN uses (AVX512-BF16 or AMX).
    public var hasBF16: Bool { isa & 0xe7 == 0xe7 }

    /// "2.6.3/avx512_core_bf16", or "none" without the library (for records).
    public static var summary: String { shared.map { "\($0.version)/\($0.isaName)" } ?? "none" }
    /// Whether oneDNN dispatches to AVX-512 (avx512_core or above). oneDNN 2.6 has Winograd
    /// convolutions (`jit_wino_4x3`) only there; on AVX2 CPUs (Zen 1 to 3, Haswell to Comet
    /// Lake) `--conv auto` runs the direct convolution instead.
    public var hasAVX512: Bool { isa & 0x27 == 0x27 }
    /// Whether oneDNN found AMX tiles (Intel Sapphire Rapids and later).
    public var hasAMX: Bool { isa & 0x3e7 == 0x3e7 }
    /// The instruction set oneDNN dispatches to, by name.
    public var isaName: String {
        switch isa {
        case 0x3e7: return "avx512_core_amx"
        case 0xe7: return "avx512_core_bf16"
        case 0x67: return "avx512_core_vnni"
        case 0x27: return "avx512_core"
        case 0x407: return "avx2_vnni"
        case 0x7: return "avx2"
        default: return String(isa, radix: 16)
        }
    }

    public func setThreads(_ n: Int) { setThreadsFunction?(Int32(n)) }

    /// Row-major C = alpha op(A) op(B) + beta C in float32 (arguments as BLASScalar.gemm).
    @inline(__always)
    func sgemm(_ tA: Bool, _ tB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float, _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int, _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) -> Int32 {
        sgemmFunction(tA ? 84 : 78, tB ? 84 : 78, Int64(m), Int64(n), Int64(k), alpha, a, Int64(lda), b, Int64(ldb), beta, c, Int64(ldc))
    }

    /// The same with bf16 A and B (float32 accumulation and C).
    @inline(__always)
    func gemmBF16(_ tA: Bool, _ tB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float, _ a: UnsafePointer<UInt16>, _ lda: Int, _ b: UnsafePointer<UInt16>, _ ldb: Int, _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) -> Int32 {
        bf16Function(tA ? 84 : 78, tB ? 84 : 78, Int64(m), Int64(n), Int64(k), alpha, a, Int64(lda), b, Int64(ldb), beta, c, Int64(ldc))
    }
}
