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
    typealias Handle = OpaquePointer
    typealias API = OneDNNPrimitives

    /// One memory object: its descriptor and, for the blocked ones, the buffer it owns.
    final class Memory {
        let handle: Handle
        let desc: UnsafeRawPointer
        init(handle: Handle, desc: UnsafeRawPointer) { (self.handle, self.desc) = (handle, desc) }
    }

    /// One primitive with its arguments, ready to execute.
    struct Step {
        let primitive: Handle
        let args: UnsafeMutableRawPointer  // nargs x dnnl_exec_arg_t (16 bytes each)
        let count: Int32
    }

    let api: API
    @usableFromInline let batch: Int
    /// Whether the plan has its backward primitives (a training plan).
    let trains: Bool
    let inputGradient: Bool
    /// The implementations the library chose: forward, then backward data (if the layer
    /// computes its input gradient) and backward weights.
    private(set) var implementations: [String] = []
    let bf16: Bool

    private var primitiveDescs: [Handle] = []
    private var primitives: [Handle] = []
    private var memories: [Handle] = []
    private var buffers: [UnsafeMutableRawPointer] = []
    private var forwardSteps: [Step] = [], backwardSteps: [Step] = []
    private let xUser: Memory, wUser: Memory, bUser: Memory, yUser: Memory
    private let dyUser: Memory, dxUser: Memory, dwUser: Memory, dbUser: Memory

    enum BuildError: Error { case unsupported(String) }

    /// Builds the primitives for `batch` examples, or throws when the library cannot (or, in
    /// bf16, would only offer a slow gemm or reference implementation).
    init(api: API, input: ImageShape, output: ImageShape, kernel: Int, stride: Int, padding: Int, batch: Int, inputGradient: Bool, trains: Bool, bf16: Bool, winograd: Bool = false) throws {
        self.api = api
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

        var descBuffers: [UnsafeMutableRawPointer] = []
        defer { descBuffers.forEach { $0.deallocate() } }
        func desc(_ dims: [Int64], _ type: Int32, _ tag: Int32) throws -> UnsafeRawPointer {
            let d = UnsafeMutableRawPointer.allocate(byteCount: API.memoryDescBytes, alignment: 16)
            d.initializeMemory(as: UInt8.self, repeating: 0, count: API.memoryDescBytes)
            descBuffers.append(d)
            guard api.descByTag(d, Int32(dims.count), dims, type, tag) == 0 else { throw BuildError.unsupported("memory descriptor \(dims)") }
            return UnsafeRawPointer(d)
        }

        // The user's (plain float32) operands; their descriptors live as long as the plan.
        var userDescs: [UnsafeMutableRawPointer] = [], userHandles: [Handle] = []
        func user(_ dims: [Int64], _ tag: Int32) -> Memory? {
            let d = UnsafeMutableRawPointer.allocate(byteCount: API.memoryDescBytes, alignment: 16)
            d.initializeMemory(as: UInt8.self, repeating: 0, count: API.memoryDescBytes)
            userDescs.append(d)
            var h: Handle?
            guard api.descByTag(d, Int32(dims.count), dims, API.f32, tag) == 0, api.createMemory(&h, d, api.engine, nil) == 0, let h else { return nil }
            userHandles.append(h)
            return Memory(handle: h, desc: d)
        }
        guard let x = user(xDims, API.tagNCHW), let w = user(wDims, API.tagNCHW), let b = user(bDims, API.tagX),
              let y = user(yDims, API.tagNCHW), let dy = user(yDims, API.tagNCHW), let dx = user(xDims, API.tagNCHW),
              let dw = user(wDims, API.tagNCHW), let db = user(bDims, API.tagX)
        else {
            userHandles.forEach { _ = api.destroyMemory($0) }
            userDescs.forEach { $0.deallocate() }
            throw BuildError.unsupported("memory descriptors")
        }
        (xUser, wUser, bUser, yUser, dyUser, dxUser, dwUser, dbUser) = (x, w, b, y, dy, dx, dw, db)
        // Fully initialised from here: a throw below runs deinit, which frees what was built.
        self.userDescs = userDescs
        memories = userHandles

        var impls: [String] = []
        var fScratch: [(Handle, Int)] = [], bScratch: [(Handle, Int)] = []
        // Forward.
        let src = try desc(xDims, dt, API.tagAny), wts = try desc(wDims, dt, API.tagAny)
        let dst = try desc(yDims, API.f32, API.tagAny)
        let forwardPD = try primitiveDesc("forward", hint: nil) { d in
            api.convForwardDesc(d, API.forwardTraining, algorithm, src, wts, self.bUser.desc, dst, strides, pads, pads)
        }
        impls.append(api.implementation(forwardPD))
        let srcMem = try operand(API.querySrc, of: forwardPD, user: xUser, into: &forwardSteps, scratch: &fScratch)
        let wMem = try operand(API.queryWeights, of: forwardPD, user: wUser, into: &forwardSteps, scratch: &fScratch)
        let dstMem = try blockedOrUser(API.queryDst, of: forwardPD, user: yUser)
        try addStep(forwardPD, [(API.argSrc, srcMem), (API.argWeights, wMem), (API.argBias, bUser), (API.argDst, dstMem)], into: &forwardSteps, scratch: &fScratch)
        if dstMem !== yUser { try addReorder(from: dstMem, to: yUser, into: &forwardSteps, scratch: &fScratch) }
        if trains {
            // Backward data (left out for the first layer, whose input needs no gradient).
            let ddst = try desc(yDims, dt, API.tagAny)
            var ddstMem: Memory?
            if inputGradient {
                let dsrc = try desc(xDims, API.f32, API.tagAny), wd = try desc(wDims, dt, API.tagAny)
                let pd = try primitiveDesc("backward data", hint: forwardPD) { d in
                    api.convBackwardDataDesc(d, algorithm, dsrc, wd, ddst, strides, pads, pads)
                }
                impls.append(api.implementation(pd))
                let dyMem = try operand(API.queryDiffDst, of: pd, user: dyUser, into: &backwardSteps, scratch: &bScratch)
                ddstMem = dyMem
                // The forward's reordered weights serve again when the layouts agree (the
                // weights do not change between a forward and its backward).
                let wdMem = try reuse(API.queryWeights, of: pd, candidates: [wMem, wUser]) ?? operand(API.queryWeights, of: pd, user: wUser, into: &backwardSteps, scratch: &bScratch)
                let dsrcMem = try blockedOrUser(API.queryDiffSrc, of: pd, user: dxUser)
                try addStep(pd, [(API.argDiffDst, dyMem), (API.argWeights, wdMem), (API.argDiffSrc, dsrcMem)], into: &backwardSteps, scratch: &bScratch)
                if dsrcMem !== dxUser { try addReorder(from: dsrcMem, to: dxUser, into: &backwardSteps, scratch: &bScratch) }
            }
            // Backward weights and bias.
            let srcW = try desc(xDims, dt, API.tagAny), dw = try desc(wDims, API.f32, API.tagAny)
            let pd = try primitiveDesc("backward weights", hint: forwardPD) { d in
                api.convBackwardWeightsDesc(d, algorithm, srcW, dw, self.dbUser.desc, ddst, strides, pads, pads)
            }
            impls.append(api.implementation(pd))
            let srcMemW = try reuse(API.querySrc, of: pd, candidates: [srcMem, xUser]) ?? operand(API.querySrc, of: pd, user: xUser, into: &backwardSteps, scratch: &bScratch)
            let dyMemW = try reuse(API.queryDiffDst, of: pd, candidates: [ddstMem, dyUser].compactMap { $0 }) ?? operand(API.queryDiffDst, of: pd, user: dyUser, into: &backwardSteps, scratch: &bScratch)
            let dwMem = try blockedOrUser(API.queryDiffWeights, of: pd, user: dwUser)
            try addStep(pd, [(API.argSrc, srcMemW), (API.argDiffDst, dyMemW), (API.argDiffWeights, dwMem), (API.argDiffBias, dbUser)], into: &backwardSteps, scratch: &bScratch)
            if dwMem !== dwUser { try addReorder(from: dwMem, to: dwUser, into: &backwardSteps, scratch: &bScratch) }
        }
        if bf16, let slow = impls.first(where: { $0.contains("gemm") || $0.contains("ref") }) {
            throw BuildError.unsupported("bf16 convolution only as \(slow)")
        }
        // One scratchpad per direction, as large as its largest primitive needs.
        try attachScratchpad(fScratch, to: &forwardSteps)
        try attachScratchpad(bScratch, to: &backwardSteps)
        implementations = impls
    }

    private var userDescs: [UnsafeMutableRawPointer] = []

    deinit {
        for s in forwardSteps + backwardSteps { s.args.deallocate() }
        for p in primitives { _ = api.destroyPrimitive(p) }
        for m in memories { _ = api.destroyMemory(m) }
        for pd in primitiveDescs { _ = api.destroyPrimitiveDesc(pd) }
        for b in buffers { b.deallocate() }
        for d in userDescs { d.deallocate() }
    }

    // MARK: building

    private func primitiveDesc(_ what: String, hint: Handle?, _ initDesc: (UnsafeMutableRawPointer) -> Int32) throws -> Handle {
        let op = UnsafeMutableRawPointer.allocate(byteCount: API.opDescBytes, alignment: 16)
        defer { op.deallocate() }
        op.initializeMemory(as: UInt8.self, repeating: 0, count: API.opDescBytes)
        guard initDesc(op) == 0 else { throw BuildError.unsupported("\(what) descriptor") }
        var pd: Handle?
        guard api.createPrimitiveDesc(&pd, op, api.userScratchpad, api.engine, hint) == 0, let pd else { throw BuildError.unsupported("\(what) primitive") }
        primitiveDescs.append(pd)
        return pd
    }

    /// A zeroed buffer of the library's size for `desc` (blocked layouts may pad channels to a
    /// multiple of 16; the padding must read as zero) and a memory object over it.
    private func blocked(_ desc: UnsafeRawPointer) throws -> Memory {
        let bytes = max(api.descSize(desc), 64)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        buffer.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        buffers.append(buffer)
        var h: Handle?
        guard api.createMemory(&h, desc, api.engine, buffer) == 0, let h else { throw BuildError.unsupported("memory") }
        memories.append(h)
        return Memory(handle: h, desc: desc)
    }

    private func queried(_ what: Int32, of pd: Handle) throws -> UnsafeRawPointer {
        guard let d = api.queryMD(pd, what, 0) else { throw BuildError.unsupported("query \(what)") }
        return d
    }

    /// The user's memory when the primitive takes its layout, else a blocked one.
    private func blockedOrUser(_ what: Int32, of pd: Handle, user: Memory) throws -> Memory {
        let d = try queried(what, of: pd)
        return api.descEqual(d, user.desc) != 0 ? user : try blocked(d)
    }

    /// An input operand: the user's memory, or a blocked copy reordered from it first.
    private func operand(_ what: Int32, of pd: Handle, user: Memory, into steps: inout [Step], scratch: inout [(Handle, Int)]) throws -> Memory {
        let m = try blockedOrUser(what, of: pd, user: user)
        if m !== user { try addReorder(from: user, to: m, into: &steps, scratch: &scratch) }
        return m
    }

    private func reuse(_ what: Int32, of pd: Handle, candidates: [Memory]) throws -> Memory? {
        let d = try queried(what, of: pd)
        return candidates.first { api.descEqual(d, $0.desc) != 0 }
    }

    private func addStep(_ pd: Handle, _ args: [(Int32, Memory)], into steps: inout [Step], scratch: inout [(Handle, Int)]) throws {
        var p: Handle?
        guard api.createPrimitive(&p, pd) == 0, let p else { throw BuildError.unsupported("primitive") }
        primitives.append(p)
        let scratchBytes = try api.descSize(queried(API.queryScratchpad, of: pd))
        let n = args.count + (scratchBytes > 0 ? 1 : 0)
        let raw = UnsafeMutableRawPointer.allocate(byteCount: 16 * n, alignment: 16)
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: 16 * n)
        for (i, (arg, m)) in args.enumerated() {
            raw.storeBytes(of: arg, toByteOffset: 16 * i, as: Int32.self)
            raw.storeBytes(of: m.handle, toByteOffset: 16 * i + 8, as: Handle.self)
        }
        if scratchBytes > 0 { scratch.append((pd, steps.count)) }  // filled in by attachScratchpad
        steps.append(Step(primitive: p, args: raw, count: Int32(n)))
    }

    private func addReorder(from: Memory, to: Memory, into steps: inout [Step], scratch: inout [(Handle, Int)]) throws {
        var pd: Handle?
        guard api.createReorderDesc(&pd, from.desc, api.engine, to.desc, api.engine, api.userScratchpad) == 0, let pd else { throw BuildError.unsupported("reorder") }
        primitiveDescs.append(pd)
        try addStep(pd, [(API.argFrom, from), (API.argTo, to)], into: &steps, scratch: &scratch)
    }

    /// Gives every step that needs a scratchpad a memory object over one shared buffer.
    private func attachScratchpad(_ needs: [(Handle, Int)], to steps: inout [Step]) throws {
        guard !needs.isEmpty else { return }
        let bytes = try needs.map { try api.descSize(queried(API.queryScratchpad, of: $0.0)) }.max()!
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        buffers.append(buffer)
        for (pd, index) in needs {
            var h: Handle?
            guard try api.createMemory(&h, queried(API.queryScratchpad, of: pd), api.engine, buffer) == 0, let h else { throw BuildError.unsupported("scratchpad") }
            memories.append(h)
            let s = steps[index]
            let last = 16 * (Int(s.count) - 1)
            s.args.storeBytes(of: API.argScratchpad, toByteOffset: last, as: Int32.self)
            s.args.storeBytes(of: h, toByteOffset: last + 8, as: Handle.self)
        }
    }

    // MARK: executing

    private func run(_ steps: [Step]) {
        for s in steps {
            let status = api.execute(s.primitive, api.stream, s.count, s.args)
            precondition(status == 0, "oneDNN convolution failed (status \(status))")
        }
        _ = api.waitStream(api.stream)
    }

    /// y (N, O, OH, OW) = conv(x (N, C, H, W), W (O, C, k, k)) + b.
    @usableFromInline
    func forward(x: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        _ = api.setHandle(xUser.handle, UnsafeMutableRawPointer(mutating: x))
        _ = api.setHandle(wUser.handle, UnsafeMutableRawPointer(mutating: weight))
        _ = api.setHandle(bUser.handle, UnsafeMutableRawPointer(mutating: bias))
        _ = api.setHandle(yUser.handle, UnsafeMutableRawPointer(y))
        run(forwardSteps)
    }

    /// dW = sum_n dY_n * x_n, db = sum dY, and dx (when given) = the transposed convolution
    /// of dY; x is the input of this plan's last forward (still unchanged).
    @usableFromInline
    func backward(dy: UnsafePointer<Float>, weight: UnsafePointer<Float>, weightGrad: UnsafeMutablePointer<Float>, biasGrad: UnsafeMutablePointer<Float>, inputGrad: UnsafeMutablePointer<Float>?) {
        precondition(trains, "OneDNNConvolution: a forward-only plan cannot run backward")
        _ = api.setHandle(dyUser.handle, UnsafeMutableRawPointer(mutating: dy))
        _ = api.setHandle(wUser.handle, UnsafeMutableRawPointer(mutating: weight))
        _ = api.setHandle(dwUser.handle, UnsafeMutableRawPointer(weightGrad))
        _ = api.setHandle(dbUser.handle, UnsafeMutableRawPointer(biasGrad))
        if let inputGrad { _ = api.setHandle(dxUser.handle, UnsafeMutableRawPointer(inputGrad)) }
        run(backwardSteps)
    }
}
