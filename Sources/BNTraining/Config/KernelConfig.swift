import BNCore

extension ConfigKey {
    public static let threads = ConfigKey("threads", restoredOnResume: false)
    public static let precision = ConfigKey("precision")
    public static let gemm = ConfigKey("gemm", restoredOnResume: false)
    public static let conv = ConfigKey("conv", restoredOnResume: false)
    public static let evalBatch = ConfigKey("eval_batch", restoredOnResume: false)
}

/// How the arithmetic runs. Only `precision` changes results (bf16 rounds the products'
/// inputs), so only it is kept on resume; the rest is speed and memory.
public struct KernelConfig: ConfigGroup {
    public var threads = 1
    public var precision = Precision.fp32
    /// OpenBLAS by default: oneDNN 2.6's gemm allocates its packing buffer on every call, so
    /// only OpenBLAS keeps the training step free of allocations, and oneDNN's gain measured
    /// small (docs/precision.md).
    public var gemm = GEMMLibrary.openblas
    /// oneDNN's direct convolutions where they measured faster, or im2col (allocation-free).
    public var conv = ConvolutionKernels.auto
    /// Images per test/validation batch; 0 = automatic (`Trainer.automaticEvalBatch`: up to
    /// 1000, fewer for wide convolutional nets). Results do not depend on it.
    public var evalBatch = 0
    public init() {}

    public func write(to w: inout FlatWriter) {
        w.write(.threads, threads)
        w.write(.precision, precision)
        w.write(.gemm, gemm)
        w.write(.conv, conv)
        w.write(.evalBatch, evalBatch)
    }

    public init(from r: FlatReader) throws {
        threads = try r.int(.threads) ?? threads
        precision = try r.choice(.precision) ?? precision
        gemm = try r.choice(.gemm) ?? gemm
        conv = try r.choice(.conv) ?? conv
        evalBatch = try r.int(.evalBatch) ?? evalBatch
    }

    public func problem() -> ConfigProblem? {
        if threads < 1 || threads > 1024 { return ConfigProblem(.threads, "must be from 1 to 1024 (got \(threads))") }
        if evalBatch < 0 || evalBatch > 1 << 24 { return ConfigProblem(.evalBatch, "must be from 1 to \(1 << 24), or 0 for automatic (got \(evalBatch))") }
        return nil
    }

    /// The kernel choice as a value for the network.
    public func makeKernels() throws -> Kernels { try Kernels(precision: precision, library: gemm, convolution: conv) }
}
