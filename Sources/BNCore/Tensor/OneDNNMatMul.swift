/// One bf16 matrix product shape through oneDNN's matmul primitive (`--precision bf16`):
///     C (m, n) = alpha op(A) op(B) + beta C,   A, B, C float32 row-major (lda, ldb, ldc)
/// as three primitives:
///     A -> A16, B -> B16   reorders that round to bf16 (nearest even) and keep the stored
///                          layout, so a transposed operand stays transposed (described by
///                          its strides: (m, k) stored (k, m) is strides [1, m])
///     C = A16 B16 (+ C)    matmul, float32 accumulation; beta != 0 is a sum post-op
/// For alpha != 1 (the fused SGD update, alpha = -lr) the smaller operand's reorder scales
/// it, with the factor given at execution, so a learning-rate schedule reuses the plan: the
/// product rounds alpha B to bf16 instead of B, one rounding either way.
///
/// It is faster than `dnnl_gemm_bf16bf16f32` on float32 inputs converted by
/// `BFloat16.convert` (the previous path, still the fallback; docs/performance.md): the library's
/// reorders use the CPU's bf16 conversion instructions, the matmul
/// (`brg:avx512_core_bf16`, or AMX's kernel) packs nothing per call, and its workspace is the
/// plan's scratchpad, so a run allocates only the library's small argument map.
final class OneDNNMatMul {
    /// A product's shape; one plan each.
    struct Key: Hashable {
        let transA: Bool, transB: Bool
        let m: Int, n: Int, k: Int, lda: Int, ldb: Int, ldc: Int
        /// beta's bit pattern (0 or 1 in practice: a plain or an accumulated product).
        let beta: UInt32
        /// Whether alpha differs from 1.
        let scaled: Bool
        /// What follows the product in the same pass (Dense's forward).
        var epilogue: Epilogue = .none
    }

    /// C = op(A) op(B) + b (b: (1, n) broadcast over rows), optionally through the logistic
    /// sigmoid, in the matmul's own pass over C (Dense's forward: one pass over the output
    /// instead of two).
    enum Epilogue: UInt8, Hashable { case none, bias, biasSigmoid }

    typealias API = OneDNNPrimitives
    let plan: OneDNNPlan
    /// The matmul's implementation ("brg:avx512_core_bf16", ...).
    let implementation: String
    private var steps: [OneDNNPlan.Step] = []
    private let a32: OneDNNPlan.Memory, b32: OneDNNPlan.Memory, c32: OneDNNPlan.Memory
    private let scale: UnsafeMutablePointer<Float>?
    private let bias32: OneDNNPlan.Memory?

    init(api: API, key: Key) throws {
        let plan = OneDNNPlan(api: api)
        self.plan = plan
        let (m, n, k) = (Int64(key.m), Int64(key.n), Int64(key.k))
        // op(A): (m, k), stored (k, m) when transposed; op(B): (k, n), stored (n, k).
        let aStrides: [Int64] = key.transA ? [1, Int64(key.lda)] : [Int64(key.lda), 1]
        let a16Strides: [Int64] = key.transA ? [1, m] : [k, 1]
        let bStrides: [Int64] = key.transB ? [1, Int64(key.ldb)] : [Int64(key.ldb), 1]
        let b16Strides: [Int64] = key.transB ? [1, k] : [n, 1]
        a32 = try plan.user(plan.desc([m, k], API.f32, strides: aStrides))
        b32 = try plan.user(plan.desc([k, n], API.f32, strides: bStrides))
        c32 = try plan.user(plan.desc([m, n], API.f32, strides: [Int64(key.ldc), 1]))
        let a16 = try plan.owned(plan.desc([m, k], API.bf16, strides: a16Strides))
        let b16 = try plan.owned(plan.desc([k, n], API.bf16, strides: b16Strides))

        var scratch: [(OpaquePointer, Int)] = []
        let scaleA = key.scaled && m * k <= k * n
        var scaleMemory: OneDNNPlan.Memory?
        if key.scaled {
            let s = try plan.owned(plan.desc([1], API.f32, tag: API.tagX))
            scaleMemory = s
            scale = s.buffer!.assumingMemoryBound(to: Float.self)
        } else {
            scale = nil
        }
        let scaledAttr = key.scaled ? try plan.attributes(runtimeScale: true, sum: nil) : nil
        try plan.addReorder(from: a32, to: a16, attr: scaleA ? scaledAttr : nil, scale: scaleA ? scaleMemory : nil, into: &steps, scratch: &scratch)
        try plan.addReorder(from: b32, to: b16, attr: scaleA ? nil : scaledAttr, scale: scaleA ? nil : scaleMemory, into: &steps, scratch: &scratch)
        let beta = Float(bitPattern: key.beta)
        let attr = try plan.attributes(runtimeScale: false, sum: beta == 0 ? nil : beta, sigmoid: key.epilogue == .biasSigmoid)
        bias32 = key.epilogue == .none ? nil : try plan.user(plan.desc([1, n], API.f32, strides: [n, 1]))
        let (src, wts, dst, bias) = (a16.desc, b16.desc, c32.desc, bias32?.desc)
        let pd = try plan.primitiveDesc("matmul", attr: attr, hint: nil) { d in api.matmulDesc(d, src, wts, bias, dst) }
        implementation = api.implementation(pd)
        if implementation.contains("ref") { throw OneDNNPlan.BuildError.unsupported("bf16 matmul only as \(implementation)") }
        var args = [(API.argSrc, a16), (API.argWeights, b16), (API.argDst, c32)]
        if let bias32 { args.append((API.argBias, bias32)) }
        try plan.addStep(pd, args, into: &steps, scratch: &scratch)
        try plan.attachScratchpad(scratch, to: &steps)
    }

    /// C = alpha op(A) op(B) + beta C for this plan's shape (alpha must be 1 unless the plan
    /// was built scaled), then the epilogue with `bias` ((1, n); needed unless `.none`).
    func run(alpha: Float, a: UnsafePointer<Float>, b: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>? = nil) {
        plan.set(a32, a)
        plan.set(b32, b)
        plan.set(c32, c)
        if let bias32, let bias { plan.set(bias32, bias) }
        scale?.pointee = alpha
        plan.run(steps, "bf16 matmul")
    }
}
