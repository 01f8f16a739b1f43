/// What every plan over oneDNN's primitives holds (a convolution's forward and backward,
/// `OneDNNConvolution`; a bf16 matrix product, `OneDNNMatMul`): the descriptors, primitives,
/// memory objects and buffers it builds (freed with it), and the running of fixed lists of
/// primitives.
///
/// Building allocates everything; running only sets the user's data pointers and executes
/// the list with a scratchpad the plan owns (the attributes in `OneDNNPrimitives` make
/// every primitive take its scratchpad from the caller).
@usableFromInline
final class OneDNNPlan {
    typealias Handle = OpaquePointer
    typealias API = OneDNNPrimitives

    /// One memory object and its descriptor. A user's operand has no buffer of its own (its
    /// data pointer is set before each run); a blocked or converted one owns `buffer`.
    final class Memory {
        let handle: Handle
        let desc: UnsafeRawPointer
        let buffer: UnsafeMutableRawPointer?
        init(handle: Handle, desc: UnsafeRawPointer, buffer: UnsafeMutableRawPointer? = nil) { (self.handle, self.desc, self.buffer) = (handle, desc, buffer) }
    }

    /// One primitive with its arguments, ready to execute.
    struct Step {
        let primitive: Handle
        let args: UnsafeMutableRawPointer  // count x dnnl_exec_arg_t (16 bytes each)
        let count: Int32
    }

    enum BuildError: Error { case unsupported(String) }

    let api: API
    private var primitiveDescs: [Handle] = []
    private var primitives: [Handle] = []
    private var memories: [Handle] = []
    private var buffers: [UnsafeMutableRawPointer] = []
    private var descs: [UnsafeMutableRawPointer] = []
    private var argLists: [UnsafeMutableRawPointer] = []
    private var attrs: [Handle] = []

    init(api: API) { self.api = api }

    deinit {
        for a in argLists { a.deallocate() }
        for p in primitives { _ = api.destroyPrimitive(p) }
        for m in memories { _ = api.destroyMemory(m) }
        for pd in primitiveDescs { _ = api.destroyPrimitiveDesc(pd) }
        for b in buffers { b.deallocate() }
        for d in descs { d.deallocate() }
        for a in attrs { _ = api.destroyAttr(a) }
    }

    /// Primitive attributes: the scratchpad from the caller, and optionally an output scale
    /// given at each execution (`API.argOutputScales`), an accumulation into the destination
    /// (dst = result + sum * dst) and a logistic sigmoid applied last.
    func attributes(runtimeScale: Bool, sum: Float?, sigmoid: Bool = false) throws -> Handle {
        var attr: Handle?
        guard api.createAttr(&attr) == 0, let attr else { throw BuildError.unsupported("attributes") }
        attrs.append(attr)
        guard api.setScratchpadMode(attr, API.scratchpadUser) == 0 else { throw BuildError.unsupported("user scratchpad") }
        if runtimeScale {
            var scale = API.runtimeScale
            guard api.setOutputScales(attr, 1, 0, &scale) == 0 else { throw BuildError.unsupported("runtime output scale") }
        }
        if sum != nil || sigmoid {
            var ops: Handle?
            guard api.createPostOps(&ops) == 0, let ops else { throw BuildError.unsupported("post-ops") }
            defer { _ = api.destroyPostOps(ops) }
            if let sum, api.appendSum(ops, sum) != 0 { throw BuildError.unsupported("sum post-op") }
            if sigmoid, api.appendEltwise(ops, 1, API.eltwiseLogistic, 0, 0) != 0 { throw BuildError.unsupported("sigmoid post-op") }
            guard api.setPostOps(attr, ops) == 0 else { throw BuildError.unsupported("post-ops") }
        }
        return attr
    }

    // MARK: descriptors and memory

    /// A memory descriptor the plan keeps: by format tag (`API.tagAny` lets a primitive
    /// choose), or by strides when given (row-major (r, c) with leading dimension ld is
    /// strides [ld, 1]; its transpose [1, ld]).
    func desc(_ dims: [Int64], _ type: Int32, tag: Int32 = 0, strides: [Int64]? = nil) throws -> UnsafeRawPointer {
        let d = UnsafeMutableRawPointer.allocate(byteCount: API.memoryDescBytes, alignment: 16)
        d.initializeMemory(as: UInt8.self, repeating: 0, count: API.memoryDescBytes)
        descs.append(d)
        let status = strides.map { api.descByStrides(d, Int32(dims.count), dims, type, $0) } ?? api.descByTag(d, Int32(dims.count), dims, type, tag)
        guard status == 0 else { throw BuildError.unsupported("memory descriptor \(dims)") }
        return UnsafeRawPointer(d)
    }

    /// A user's operand: a memory object without a buffer; `set` points it at the data.
    func user(_ desc: UnsafeRawPointer) throws -> Memory {
        var h: Handle?
        guard api.createMemory(&h, desc, api.engine, nil) == 0, let h else { throw BuildError.unsupported("memory") }
        memories.append(h)
        return Memory(handle: h, desc: desc)
    }

    /// A zeroed buffer of the library's size for `desc` (blocked layouts may pad channels to a
    /// multiple of 16; the padding must read as zero) and a memory object over it.
    func owned(_ desc: UnsafeRawPointer) throws -> Memory {
        let bytes = max(api.descSize(desc), 64)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        buffer.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        buffers.append(buffer)
        var h: Handle?
        guard api.createMemory(&h, desc, api.engine, buffer) == 0, let h else { throw BuildError.unsupported("memory") }
        memories.append(h)
        return Memory(handle: h, desc: desc, buffer: buffer)
    }

    /// Points a user's operand at its data for the next run.
    @inline(__always)
    func set(_ m: Memory, _ data: UnsafeRawPointer) {
        _ = api.setHandle(m.handle, UnsafeMutableRawPointer(mutating: data))
    }

    // MARK: primitives

    /// A primitive descriptor from an operation descriptor that `initDesc` writes.
    func primitiveDesc(_ what: String, attr: Handle? = nil, hint: Handle?, _ initDesc: (UnsafeMutableRawPointer) -> Int32) throws -> Handle {
        let op = UnsafeMutableRawPointer.allocate(byteCount: API.opDescBytes, alignment: 16)
        defer { op.deallocate() }
        op.initializeMemory(as: UInt8.self, repeating: 0, count: API.opDescBytes)
        guard initDesc(op) == 0 else { throw BuildError.unsupported("\(what) descriptor") }
        var pd: Handle?
        guard api.createPrimitiveDesc(&pd, op, attr ?? api.userScratchpad, api.engine, hint) == 0, let pd else { throw BuildError.unsupported("\(what) primitive") }
        primitiveDescs.append(pd)
        return pd
    }

    func queried(_ what: Int32, of pd: Handle) throws -> UnsafeRawPointer {
        guard let d = api.queryMD(pd, what, 0) else { throw BuildError.unsupported("query \(what)") }
        return d
    }

    /// The user's memory when the primitive takes its layout, else an owned one in the
    /// primitive's layout.
    func ownedOrUser(_ what: Int32, of pd: Handle, user: Memory) throws -> Memory {
        let d = try queried(what, of: pd)
        return api.descEqual(d, user.desc) != 0 ? user : try owned(d)
    }

    /// An input operand: the user's memory, or an owned copy in the primitive's layout
    /// reordered from it first.
    func operand(_ what: Int32, of pd: Handle, user: Memory, into steps: inout [Step], scratch: inout [(Handle, Int)]) throws -> Memory {
        let m = try ownedOrUser(what, of: pd, user: user)
        if m !== user { try addReorder(from: user, to: m, into: &steps, scratch: &scratch) }
        return m
    }

    /// The first candidate whose layout the primitive takes for `what`.
    func reuse(_ what: Int32, of pd: Handle, candidates: [Memory]) throws -> Memory? {
        let d = try queried(what, of: pd)
        return candidates.first { api.descEqual(d, $0.desc) != 0 }
    }

    /// Appends the primitive of `pd` with its arguments; a scratchpad, if it needs one, is
    /// filled in by `attachScratchpad` (its index is noted in `scratch`).
    func addStep(_ pd: Handle, _ args: [(Int32, Memory)], into steps: inout [Step], scratch: inout [(Handle, Int)]) throws {
        var p: Handle?
        guard api.createPrimitive(&p, pd) == 0, let p else { throw BuildError.unsupported("primitive") }
        primitives.append(p)
        let scratchBytes = try api.descSize(queried(API.queryScratchpad, of: pd))
        let n = args.count + (scratchBytes > 0 ? 1 : 0)
        let raw = UnsafeMutableRawPointer.allocate(byteCount: 16 * n, alignment: 16)
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: 16 * n)
        argLists.append(raw)
        for (i, (arg, m)) in args.enumerated() {
            raw.storeBytes(of: arg, toByteOffset: 16 * i, as: Int32.self)
            raw.storeBytes(of: m.handle, toByteOffset: 16 * i + 8, as: Handle.self)
        }
        if scratchBytes > 0 { scratch.append((pd, steps.count)) }
        steps.append(Step(primitive: p, args: raw, count: Int32(n)))
    }

    /// Appends a reorder (layout change and/or float32 -> bf16 rounding, nearest even);
    /// `attr` may add runtime output scales (then `scale` is the memory holding the factor).
    func addReorder(from: Memory, to: Memory, attr: Handle? = nil, scale: Memory? = nil, into steps: inout [Step], scratch: inout [(Handle, Int)]) throws {
        var pd: Handle?
        guard api.createReorderDesc(&pd, from.desc, api.engine, to.desc, api.engine, attr ?? api.userScratchpad) == 0, let pd else { throw BuildError.unsupported("reorder") }
        primitiveDescs.append(pd)
        var args = [(API.argFrom, from), (API.argTo, to)]
        if let scale { args.append((API.argOutputScales, scale)) }
        try addStep(pd, args, into: &steps, scratch: &scratch)
    }

    /// Gives every step that needs a scratchpad a memory object over one shared buffer.
    func attachScratchpad(_ needs: [(Handle, Int)], to steps: inout [Step]) throws {
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

    // MARK: running

    /// Executes the steps in order and waits for them.
    func run(_ steps: [Step], _ what: StaticString) {
        for s in steps {
            let status = api.execute(s.primitive, api.stream, s.count, s.args)
            precondition(status == 0, "oneDNN \(what) failed (status \(status))")
        }
        _ = api.waitStream(api.stream)
    }
}
