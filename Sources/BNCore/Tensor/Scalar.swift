import CKernels
import COpenBLAS
import RealModule

/// The element types the layers run on: `Float` for training, `Double` for gradient checks.
/// Each supplies the BLAS level-3/level-1 routines the layers need; everything else is
/// generic Swift over `Real` (exp, log, sqrt from swift-numerics).
public protocol BLASScalar: Real, BinaryFloatingPoint, Sendable {
    /// Row-major `C = alpha * op(A) * op(B) + beta * C`, op(A): (m, k), op(B): (k, n), C: (m, n).
    /// `lda`, `ldb`, `ldc` are the row strides of A, B, C as stored (before op). Float runs on
    /// `kernels` (the network's choice of precision and library); Double always on dgemm.
    static func gemm(
        using kernels: Kernels, transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        alpha: Self, a: UnsafePointer<Self>, lda: Int,
        b: UnsafePointer<Self>, ldb: Int,
        beta: Self, c: UnsafeMutablePointer<Self>, ldc: Int)

    /// Plain SGD over `n` contiguous elements: `w = w - lr * g`, a multiply then a subtraction,
    /// each rounded (never fused), so the bits do not depend on the CPU or the BLAS kernel
    /// family (OpenBLAS's saxpy fuses them on AVX-512 and not on its generic kernels).
    static func sgdUpdate(n: Int, learningRate lr: Self, gradient g: UnsafePointer<Self>, weights w: UnsafeMutablePointer<Self>)
    /// C (m, ldc) = A[:, 0..<m]^T B[:, 0..<n] over k rows of A (lda) and B (ldb), as one chain of
    /// fused multiply-adds per element in row order p, from 0 or (accumulate) from C: the same
    /// bits however the rows, the columns or the k rows are split (rank_update.c).
    static func rankUpdate(m: Int, n: Int, k: Int, a: UnsafePointer<Self>, lda: Int, b: UnsafePointer<Self>, ldb: Int,
                           c: UnsafeMutablePointer<Self>, ldc: Int, accumulate: Bool)

    /// `C = op(A) op(B) + bias` (bias (1, n) broadcast over rows), through the logistic sigmoid
    /// when asked, as one product with the bias and sigmoid in its epilogue; false when the
    /// kernels have no such product (float32 and Double: always), and the caller runs `gemm`
    /// and its own bias pass.
    static func gemmBias(
        using kernels: Kernels, transA: Bool, transB: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<Self>, lda: Int,
        b: UnsafePointer<Self>, ldb: Int, bias: UnsafePointer<Self>, sigmoid: Bool, c: UnsafeMutablePointer<Self>, ldc: Int) -> Bool
}

extension BLASScalar {
    @inlinable
    public static func gemmBias(
        using kernels: Kernels, transA: Bool, transB: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<Self>, lda: Int,
        b: UnsafePointer<Self>, ldb: Int, bias: UnsafePointer<Self>, sigmoid: Bool, c: UnsafeMutablePointer<Self>, ldc: Int
    ) -> Bool { false }
}

@inlinable
func cblasTranspose(_ t: Bool) -> CBLAS_TRANSPOSE { t ? CblasTrans : CblasNoTrans }

extension Float: BLASScalar {
    @inlinable
    public static func gemm(
        using kernels: Kernels, transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        alpha: Float, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        // OpenBLAS or oneDNN, float32 or bf16, as the network's kernels say.
        kernels.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    }

    @inlinable
    public static func sgdUpdate(n: Int, learningRate lr: Float, gradient g: UnsafePointer<Float>, weights w: UnsafeMutablePointer<Float>) {
        bn_sgd_f32(w, g, n, lr)
    }

    @inlinable
    public static func rankUpdate(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                                  c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool) {
        bn_rank_update_f32(m, n, k, a, lda, b, ldb, c, ldc, accumulate ? 1 : 0)
    }

    /// Under bf16, a oneDNN matmul with the bias and sigmoid as post-ops (`Kernels.biasProduct`).
    @inlinable
    public static func gemmBias(
        using kernels: Kernels, transA: Bool, transB: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int, bias: UnsafePointer<Float>, sigmoid: Bool, c: UnsafeMutablePointer<Float>, ldc: Int
    ) -> Bool {
        kernels.biasProduct(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, bias: bias, sigmoid: sigmoid, c: c, ldc: ldc)
    }
}

extension Double: BLASScalar {
    @inlinable
    public static func gemm(
        using kernels: Kernels, transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        alpha: Double, a: UnsafePointer<Double>, lda: Int,
        b: UnsafePointer<Double>, ldb: Int,
        beta: Double, c: UnsafeMutablePointer<Double>, ldc: Int
    ) {
        cblas_dgemm(
            CblasRowMajor, cblasTranspose(transA), cblasTranspose(transB),
            Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    @inlinable
    public static func sgdUpdate(n: Int, learningRate lr: Double, gradient g: UnsafePointer<Double>, weights w: UnsafeMutablePointer<Double>) {
        // Swift contracts no floating-point expression: a multiply, then a subtraction.
        for j in 0..<n { w[j] = w[j] - lr * g[j] }
    }

    @inlinable
    public static func rankUpdate(m: Int, n: Int, k: Int, a: UnsafePointer<Double>, lda: Int, b: UnsafePointer<Double>, ldb: Int,
                                  c: UnsafeMutablePointer<Double>, ldc: Int, accumulate: Bool) {
        for i in 0..<m {
            let ci = c + i * ldc
            if !accumulate { ci.update(repeating: 0, count: n) }
            for p in 0..<k {
                let ap = a[p * lda + i], bp = b + p * ldb
                for j in 0..<n { ci[j] = ci[j].addingProduct(ap, bp[j]) }
            }
        }
    }
}

/// Process-wide OpenBLAS settings (Debian's pthreads build).
public enum BLAS {
    /// Sets the BLAS thread count for every later call in the process.
    public static func setThreads(_ n: Int) { bn_blas_set_threads(Int32(n)) }
    public static var threads: Int { Int(bn_blas_get_threads()) }
    /// The kernel family OpenBLAS chose at load time ("SkylakeX", "Haswell", "Prescott", ...).
    public static var coreName: String { String(cString: openblas_get_corename()) }
}
