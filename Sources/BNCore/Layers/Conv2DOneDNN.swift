/// Conv2D's forward and backward for one batch size through oneDNN's convolution primitives:
/// the direct convolution (`jit:avx512_core`, or `jit_bf16:avx512_core_bf16` with bf16 inputs)
/// or, when asked, Winograd's F(4x4, 3x3) (`jit_wino_4x3:avx512_core`, 3x3 stride 1 only).
///
/// The layer keeps PyTorch's layouts: x and y as (N, C, H, W), the weight as (O, C, k, k), the
/// bias as (O). oneDNN's fast kernels want blocked layouts (nChw16c: 16 channels innermost),
/// so the plan asks the library for its preferred layouts and reorders between them:
///     forward:   x -> src,  W -> Wf,  conv(src, Wf, b) -> dst,  dst -> y
///     backward:  dy -> ddst,  W -> Wd,  conv_bwd_data(ddst, Wd) -> dsrc,  dsrc -> dx
///                conv_bwd_weights(src, ddst) -> (dWb, db),  dWb -> dW
/// A reorder is left out wherever the library takes the plain layout itself (the first
/// layer's one-channel input, for instance), and the backward reuses the forward's reordered
/// src and, where the layouts agree, its reordered weights. With bf16 the reorders into src,
/// W and ddst also round to bf16 (nearest even); dst, dsrc, dW and db stay float32, so the
/// accumulation is float32 as in the products.
///
/// Every buffer is allocated when the plan is built; executing sets the plain operands'
/// data pointers and runs the fixed list of primitives with a scratchpad the plan owns. (The
/// library still builds a small argument map per execution: about a dozen blocks of at most
/// 120 bytes, and one of 1,568 bytes for Winograd, measured in test_no_allocation.py.)
@usableFromInline
final class OneDNNConvolution {
    typealias Handle = OneDNNPlan.Handle
    typealias API = OneDNNPrimitives
    typealias Memory = OneDNNPlan.Memory
    typealias Step = OneDNNPlan.Step
    typealias BuildError = OneDNNPlan.BuildError

    /// The primitives, memory and buffers (freed with the plan).
    let plan: OneDNNPlan
    @usableFromInline let batch: Int
    /// Whether the plan has its backward primitives (a training plan).
    let trains: Bool
    let inputGradient: Bool
    /// The implementations the library chose: forward, then backward data (if the layer
    /// computes its input gradient) and backward weights.
    private(set) var implementations: [String] = []
    let bf16: Bool

    private var forwardSteps: [Step] = [], backwardSteps: [Step] = []
    private let xUser: Memory, wUser: Memory, bUser: Memory, yUser: Memory
    private let dyUser: Memory, dxUser: Memory, dwUser: Memory, dbUser: Memory

    /// Builds the primitives for `batch` examples, or throws when the library cannot (or, in
    /// bf16, would only offer a slow gemm or reference implementation).
    init(api: API, input: ImageShape, output: ImageShape, kernel: Int, stride: Int, padding: Int, batch: Int, inputGradient: Bool, trains: Bool, bf16: Bool, winograd: Bool = false) throws {
        let plan = OneDNNPlan(api: api)
        self.plan = plan
        self.batch = batch
        self.trains = trains
        self.inputGradient = inputGradient
        self.bf16 = bf16
        let algorithm = winograd ? API.convolutionWinograd : API.convolutionDirect
        let dt = bf16 ? API.bf16 : API.f32
        let xDims = [Int64(batch), Int64(input.c), Int64(input.h), Int64(input.w)]
        let wDims = [Int64(output.c), Int64(input.c), Int64(kernel), Int64(kernel)]
        let bDims = [Int64(output.c)]
        let yDims = [Int64(batch), Int64(output.c), Int64(output.h), Int64(output.w)]
        let strides = [Int64](repeating: Int64(stride), count: 2), pads = [Int64](repeating: Int64(padding), count: 2)
        // PyTorch pads both sides alike; oneDNN checks the right padding against the output
        // size with floor division, as PyTorch's output formula does.

        // The user's (plain float32) operands.
        func user(_ dims: [Int64], _ tag: Int32) throws -> Memory { try plan.user(plan.desc(dims, API.f32, tag: tag)) }
        (xUser, wUser, bUser) = try (user(xDims, API.tagNCHW), user(wDims, API.tagNCHW), user(bDims, API.tagX))
        (yUser, dyUser, dxUser) = try (user(yDims, API.tagNCHW), user(yDims, API.tagNCHW), user(xDims, API.tagNCHW))
        (dwUser, dbUser) = try (user(wDims, API.tagNCHW), user(bDims, API.tagX))

        var impls: [String] = []
        var fScratch: [(Handle, Int)] = [], bScratch: [(Handle, Int)] = []
        // Forward.
        let src = try plan.desc(xDims, dt, tag: API.tagAny), wts = try plan.desc(wDims, dt, tag: API.tagAny)
        let dst = try plan.desc(yDims, API.f32, tag: API.tagAny)
        let bias = bUser.desc
        let forwardPD = try plan.primitiveDesc("forward", hint: nil) { d in
            api.convForwardDesc(d, API.forwardTraining, algorithm, src, wts, bias, dst, strides, pads, pads)
        }
        impls.append(api.implementation(forwardPD))
        let srcMem = try plan.operand(API.querySrc, of: forwardPD, user: xUser, into: &forwardSteps, scratch: &fScratch)
        let wMem = try plan.operand(API.queryWeights, of: forwardPD, user: wUser, into: &forwardSteps, scratch: &fScratch)
        let dstMem = try plan.ownedOrUser(API.queryDst, of: forwardPD, user: yUser)
        try plan.addStep(forwardPD, [(API.argSrc, srcMem), (API.argWeights, wMem), (API.argBias, bUser), (API.argDst, dstMem)], into: &forwardSteps, scratch: &fScratch)
        if dstMem !== yUser { try plan.addReorder(from: dstMem, to: yUser, into: &forwardSteps, scratch: &fScratch) }
        if trains {
            // Backward data (left out for the first layer, whose input needs no gradient).
            let ddst = try plan.desc(yDims, dt, tag: API.tagAny)
            var ddstMem: Memory?
            if inputGradient {
                let dsrc = try plan.desc(xDims, API.f32, tag: API.tagAny), wd = try plan.desc(wDims, dt, tag: API.tagAny)
                let pd = try plan.primitiveDesc("backward data", hint: forwardPD) { d in
                    api.convBackwardDataDesc(d, algorithm, dsrc, wd, ddst, strides, pads, pads)
                }
                impls.append(api.implementation(pd))
                let dyMem = try plan.operand(API.queryDiffDst, of: pd, user: dyUser, into: &backwardSteps, scratch: &bScratch)
                ddstMem = dyMem
                // The forward's reordered weights serve again when the layouts agree (the
                // weights do not change between a forward and its backward).
                let wdMem = try plan.reuse(API.queryWeights, of: pd, candidates: [wMem, wUser]) ?? plan.operand(API.queryWeights, of: pd, user: wUser, into: &backwardSteps, scratch: &bScratch)
                let dsrcMem = try plan.ownedOrUser(API.queryDiffSrc, of: pd, user: dxUser)
                try plan.addStep(pd, [(API.argDiffDst, dyMem), (API.argWeights, wdMem), (API.argDiffSrc, dsrcMem)], into: &backwardSteps, scratch: &bScratch)
                if dsrcMem !== dxUser { try plan.addReorder(from: dsrcMem, to: dxUser, into: &backwardSteps, scratch: &bScratch) }
            }
            // Backward weights and bias.
            let srcW = try plan.desc(xDims, dt, tag: API.tagAny), dw = try plan.desc(wDims, API.f32, tag: API.tagAny)
            let dbias = dbUser.desc
            let pd = try plan.primitiveDesc("backward weights", hint: forwardPD) { d in
                api.convBackwardWeightsDesc(d, algorithm, srcW, dw, dbias, ddst, strides, pads, pads)
            }
            impls.append(api.implementation(pd))
            let srcMemW = try plan.reuse(API.querySrc, of: pd, candidates: [srcMem, xUser]) ?? plan.operand(API.querySrc, of: pd, user: xUser, into: &backwardSteps, scratch: &bScratch)
            let dyMemW = try plan.reuse(API.queryDiffDst, of: pd, candidates: [ddstMem, dyUser].compactMap { $0 }) ?? plan.operand(API.queryDiffDst, of: pd, user: dyUser, into: &backwardSteps, scratch: &bScratch)
            let dwMem = try plan.ownedOrUser(API.queryDiffWeights, of: pd, user: dwUser)
            try plan.addStep(pd, [(API.argSrc, srcMemW), (API.argDiffDst, dyMemW), (API.argDiffWeights, dwMem), (API.argDiffBias, dbUser)], into: &backwardSteps, scratch: &bScratch)
            if dwMem !== dwUser { try plan.addReorder(from: dwMem, to: dwUser, into: &backwardSteps, scratch: &bScratch) }
        }
        if bf16, let slow = impls.first(where: { $0.contains("gemm") || $0.contains("ref") }) {
            throw BuildError.unsupported("bf16 convolution only as \(slow)")
        }
        // One scratchpad per direction, as large as its largest primitive needs.
        try plan.attachScratchpad(fScratch, to: &forwardSteps)
        try plan.attachScratchpad(bScratch, to: &backwardSteps)
        implementations = impls
    }

    /// y (N, O, OH, OW) = conv(x (N, C, H, W), W (O, C, k, k)) + b.
    @usableFromInline
    func forward(x: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        plan.set(xUser, x)
        plan.set(wUser, weight)
        plan.set(bUser, bias)
        plan.set(yUser, y)
        plan.run(forwardSteps, "convolution")
    }

    /// dW = sum_n dY_n * x_n, db = sum dY, and dx (when given) = the transposed convolution
    /// of dY; x is the input of this plan's last forward (still unchanged).
    @usableFromInline
    func backward(dy: UnsafePointer<Float>, weight: UnsafePointer<Float>, weightGrad: UnsafeMutablePointer<Float>, biasGrad: UnsafeMutablePointer<Float>, inputGrad: UnsafeMutablePointer<Float>?) {
        precondition(trains, "OneDNNConvolution: a forward-only plan cannot run backward")
        plan.set(dyUser, dy)
        plan.set(wUser, weight)
        plan.set(dwUser, weightGrad)
        plan.set(dbUser, biasGrad)
        if let inputGrad { plan.set(dxUser, inputGrad) }
        plan.run(backwardSteps, "convolution")
    }
}
