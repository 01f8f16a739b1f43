import COpenBLAS

/// The arithmetic of the float32 matrix products (`Float.gemm`, which every layer calls).
public enum Precision: String, CaseIterable, Sendable {
    /// float32 inputs, float32 accumulation.
    case fp32
    /// Mixed precision: A and B rounded to bf16, products accumulated in float32 (oneDNN's
    /// matmul primitive, one plan per product shape: `OneDNNMatMul`; as PyTorch's CPU autocast). Everything else (weights, BN
    /// statistics, loss, optimizer state) stays float32. Products smaller than
    /// `MatMul.oneDNNThreshold` multiply-adds stay float32: there, converting the inputs
    /// costs more than bf16 saves (`bnbench --model lenet-bn` prints both; docs/performance.md).
    case bf16
}

/// Which library runs the float32 products.
public enum GEMMLibrary: String, CaseIterable, Sendable {
    /// OpenBLAS for every product.
    case openblas
    /// oneDNN's dnnl_sgemm for every product.
    case onednn
    /// Per product shape: oneDNN from `MatMul.oneDNNThreshold` multiply-adds up, OpenBLAS below
    /// (what measured faster at each preset's shapes; see Scripts/bench --gemm).
    case auto
}

/// How Conv2D<Float> computes its forward and backward.
public enum ConvolutionKernels: String, CaseIterable, Sendable {
    /// oneDNN's primitives (`Conv2DOneDNN.swift`) for every convolution with at least
    /// `oneDNNMinimumTaps` multiply-adds per output value (C k k), im2col for thinner ones, or
    /// im2col throughout without libdnnl. In float32 a 3x3 stride-1 convolution runs
    /// Winograd's F(4x4, 3x3) (`jit_wino_4x3`) where oneDNN has it (AVX-512 CPUs; on AVX2 it
    /// runs the direct convolution), the others the direct convolution. Winograd
    /// multiplies less but rounds differently: on cnn's 32 -> 64 layer its y, dx and dW are
    /// within 1.6e-6 (largest) and 7.5e-7 (rms) of a Double reference, relative to the largest
    /// value, against 1.3e-6 and 8.6e-7 for the direct convolution (ConvOneDNNTests). A thin convolution such as cnn's
    /// first (1 channel, 3x3: 9) is bound by moving its wide output, and the reorders between
    /// oneDNN's blocked layout and NCHW cost more than its products save; lenet-bn's first
    /// (25) gains (`bnbench --breakdown 1`; docs/performance.md).
    case auto
    /// oneDNN's direct convolution for every convolution (no Winograd, no im2col); refused
    /// without libdnnl.
    case onednn
    /// im2col/col2im with `Float.gemm` per example (allocation-free; the only path for Double).
    case im2col

    public static let oneDNNMinimumTaps = 16
}

/// Constants and library-wide settings of the products. The kernel choice itself is a value,
/// `Kernels`, that each network is built with.
public enum MatMul {
    /// `auto` sends a product to oneDNN when m n k is at least this.
    public static let oneDNNThreshold = 1 << 20

    public enum ConfigurationError: Error, Equatable, CustomStringConvertible {
        case oneDNNMissing(String), noBF16(String)
        public var description: String {
            switch self {
            case let .oneDNNMissing(what): return "\(what) needs oneDNN (libdnnl.so.2), which is not installed; install it (apt-get install libdnnl-dev, or Scripts/setup) or use --precision fp32 --gemm openblas"
            case let .noBF16(isa): return "--precision bf16 needs a CPU with bf16 instructions (AVX512-BF16 or AMX); this one offers oneDNN only \(isa), where bf16 products would run slower than float32; use --precision fp32"
            }
        }
    }

    /// Thread count for both libraries (OpenBLAS's pool and oneDNN's OpenMP). A setting of the
    /// loaded libraries themselves, so it applies to every network in the process.
    public static func setThreads(_ n: Int) {
        BLAS.setThreads(n)
        OneDNN.shared?.setThreads(n)
    }
}

/// The kernels a network computes with: the precision, the library of the float32 products
/// and the convolution kernels, with the caches that choice needs (bf16 matmul plans, bf16
/// scratch copies). Every layer that multiplies holds its network's `Kernels`; two networks
/// built with different ones compute side by side in one process, each with its own. A
/// `Kernels` is used by one thread at a time, as its network is.
///
/// OpenBLAS runs without allocating; oneDNN 2.6's float32 gemm function allocates and frees a
/// packing buffer on every call, so a step through it makes one heap allocation per oneDNN
/// product; bf16 products run matmul plans that allocate only the library's small argument
/// maps. Double (the checks) always runs OpenBLAS's dgemm, whatever the choice.
public final class Kernels: CustomStringConvertible {
    public let precision: Precision
    public let library: GEMMLibrary
    /// What float32 convolutions run on; `.auto` only when oneDNN's primitives are there.
    public let convolution: ConvolutionKernels

    /// Chooses the kernels. `auto` without oneDNN falls back to OpenBLAS, and convolutions
    /// to im2col; an explicit oneDNN or bf16 without the library, or bf16 on a CPU without
    /// bf16 instructions, is refused.
    public init(precision p: Precision = .fp32, library l: GEMMLibrary = .openblas, convolution c: ConvolutionKernels = .auto) throws {
        let dnnl = OneDNN.shared
        if c == .onednn && dnnl?.primitives == nil { throw MatMul.ConfigurationError.oneDNNMissing("--conv onednn") }
        if p == .bf16 {
            guard let dnnl else { throw MatMul.ConfigurationError.oneDNNMissing("--precision bf16") }
            guard dnnl.hasBF16 else { throw MatMul.ConfigurationError.noBF16(dnnl.isaName) }
        }
        if l == .onednn && dnnl == nil { throw MatMul.ConfigurationError.oneDNNMissing("--gemm onednn") }
        precision = p
        library = (l == .auto && dnnl == nil) ? .openblas : l
        convolution = dnnl?.primitives == nil ? .im2col : c
    }

    /// float32 through OpenBLAS, convolutions on oneDNN where it is installed: possible on
    /// every machine.
    public convenience init() {
        try! self.init(precision: .fp32, library: .openblas, convolution: .auto)  // cannot throw: nothing it needs can be missing
    }

    deinit {
        scratchA.free()
        scratchB.free()
    }

    /// bf16 products run as oneDNN matmul plans, one per product shape, built on first use
    /// (a training run has a handful of shapes; past `maxBF16Plans` the gemm function runs).
    /// A shape the library cannot plan is remembered as nil.
    var bf16Plans: [OneDNNMatMul.Key: OneDNNMatMul?] = [:]
    static let maxBF16Plans = 64

    func bf16Plan(_ key: OneDNNMatMul.Key, _ dnnl: OneDNN) -> OneDNNMatMul? {
        if let p = bf16Plans[key] { return p }
        guard bf16Plans.count < Self.maxBF16Plans, let api = dnnl.primitives else { return nil }
        let p = try? OneDNNMatMul(api: api, key: key)
        bf16Plans[key] = p
        return p
    }

    /// The implementations of the bf16 matmul plans built so far (tests check that none is
    /// oneDNN's reference code).
    public var bf16Implementations: [String] {
        Array(Set(bf16Plans.values.compactMap { $0?.implementation })).sorted()
    }

    /// bf16 copies of A and B for the gemm function, grown to the largest product seen and
    /// then reused.
    var scratchA = Scratch(), scratchB = Scratch()
    struct Scratch {
        var data: UnsafeMutablePointer<UInt16>?
        var capacity = 0
        mutating func reserve(_ n: Int) -> UnsafeMutablePointer<UInt16> {
            if n > capacity || data == nil {
                data?.deallocate()
                data = .allocate(capacity: max(n, 1))
                capacity = max(n, 1)
            }
            return data!
        }
        func free() { data?.deallocate() }
    }

    /// What runs, for the config record: openblas, onednn, or for auto
    /// onednn-from-1048576+openblas (oneDNN from that many multiply-adds, OpenBLAS below);
    /// bf16: onednn-bf16-from-1048576+openblas (bf16 from that size, float32 OpenBLAS below).
    public var description: String {
        let threshold = MatMul.oneDNNThreshold
        switch (precision, library) {
        case (.bf16, _): return "onednn-bf16-from-\(threshold)+openblas"
        case (.fp32, .openblas): return "openblas"
        case (.fp32, .onednn): return "onednn"
        case (.fp32, .auto): return "onednn-from-\(threshold)+openblas"
        }
    }

    /// C = op(A) op(B) + bias (broadcast over rows), through the sigmoid when asked, as one
    /// bf16 matmul with the bias and sigmoid in its epilogue. Runs only under bf16 for a
    /// product of at least `oneDNNThreshold` multiply-adds that oneDNN can plan; returns false
    /// otherwise, and the caller runs `sgemm` and its own bias pass (as float32 always does).
    public func biasProduct(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int, bias: UnsafePointer<Float>, sigmoid: Bool, c: UnsafeMutablePointer<Float>, ldc: Int
    ) -> Bool {
        guard precision == .bf16, m > 0, n > 0, m * n * k >= MatMul.oneDNNThreshold, let dnnl = OneDNN.shared else { return false }
        var key = OneDNNMatMul.Key(transA: transA, transB: transB, m: m, n: n, k: k, lda: lda, ldb: ldb, ldc: ldc, beta: 0, scaled: false)
        key.epilogue = sigmoid ? .biasSigmoid : .bias
        guard let p = bf16Plan(key, dnnl) else { return false }
        p.run(alpha: 1, a: a, b: b, c: c, bias: bias)
        return true
    }

    /// Row-major float32 C = alpha op(A) op(B) + beta C through the chosen kernels.
    public func sgemm(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        if m == 0 || n == 0 { return }
        let threshold = MatMul.oneDNNThreshold
        if precision == .bf16, m * n * k >= threshold, let dnnl = OneDNN.shared {
            let key = OneDNNMatMul.Key(transA: transA, transB: transB, m: m, n: n, k: k, lda: lda, ldb: ldb, ldc: ldc, beta: beta.bitPattern, scaled: alpha != 1)
            if let p = bf16Plan(key, dnnl) {
                p.run(alpha: alpha, a: a, b: b, c: c)
                return
            }
            // No matmul plan (the library lacks one, or too many shapes): the gemm function.
            // op(A) is (m, k): stored (k, m) when transposed. Converted contiguous, so the
            // leading dimension becomes the stored column count.
            let (ar, ac) = transA ? (k, m) : (m, k), (br, bc) = transB ? (n, k) : (k, n)
            let a16 = scratchA.reserve(ar * ac), b16 = scratchB.reserve(br * bc)
            BFloat16.convert(a, rows: ar, cols: ac, ld: lda, into: a16)
            BFloat16.convert(b, rows: br, cols: bc, ld: ldb, into: b16)
            let status = dnnl.gemmBF16(transA, transB, m, n, k, alpha, a16, ac, b16, bc, beta, c, ldc)
            precondition(status == 0, "dnnl_gemm_bf16bf16f32 failed (status \(status)) at m=\(m) n=\(n) k=\(k)")
            return
        }
        if library == .onednn || (library == .auto && m * n * k >= threshold), let dnnl = OneDNN.shared, k > 0 {
            let status = dnnl.sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
            precondition(status == 0, "dnnl_sgemm failed (status \(status)) at m=\(m) n=\(n) k=\(k)")
            return
        }
        cblas_sgemm(
            CblasRowMajor, cblasTranspose(transA), cblasTranspose(transB),
            Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
}
