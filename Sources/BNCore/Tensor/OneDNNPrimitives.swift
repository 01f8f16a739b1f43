#if canImport(Glibc)
import Glibc
#endif

/// oneDNN 2.6's primitive API (convolutions, matrix products and reorders), looked up with dlsym like the
/// products in `OneDNN`, so nothing here is needed at build time.
///
/// The C types are handled opaquely: handles (`dnnl_engine_t`, `dnnl_primitive_desc_t`, ...)
/// are `OpaquePointer`s; `dnnl_memory_desc_t` (696 bytes in 2.6), `dnnl_convolution_desc_t`
/// (5,976 bytes) and `dnnl_matmul_desc_t` are only ever written by the library, into buffers of `memoryDescBytes` and
/// `opDescBytes`; `dnnl_dims_t` is int64_t[12]; `dnnl_exec_arg_t` is { int arg; void *memory; }
/// (16 bytes: the pointer at offset 8). The enum values below are 2.6's (dnnl_types.h).
final class OneDNNPrimitives: @unchecked Sendable {
    typealias Handle = OpaquePointer
    typealias CreateEngine = @convention(c) (UnsafeMutablePointer<Handle?>, Int32, Int) -> Int32
    typealias CreateStream = @convention(c) (UnsafeMutablePointer<Handle?>, Handle?, UInt32) -> Int32
    typealias DescByTag = @convention(c) (UnsafeMutableRawPointer, Int32, UnsafePointer<Int64>, Int32, Int32) -> Int32
    typealias DescByStrides = @convention(c) (UnsafeMutableRawPointer, Int32, UnsafePointer<Int64>, Int32, UnsafePointer<Int64>) -> Int32
    typealias MatMulDesc = @convention(c) (UnsafeMutableRawPointer, UnsafeRawPointer, UnsafeRawPointer, UnsafeRawPointer?, UnsafeRawPointer) -> Int32
    typealias SetOutputScales = @convention(c) (Handle?, Int64, Int32, UnsafePointer<Float>) -> Int32
    typealias CreatePostOps = @convention(c) (UnsafeMutablePointer<Handle?>) -> Int32
    typealias AppendSum = @convention(c) (Handle?, Float) -> Int32
    typealias AppendEltwise = @convention(c) (Handle?, Float, Int32, Float, Float) -> Int32
    typealias SetPostOps = @convention(c) (Handle?, Handle?) -> Int32
    typealias ConvForwardDesc = @convention(c) (UnsafeMutableRawPointer, Int32, Int32, UnsafeRawPointer, UnsafeRawPointer, UnsafeRawPointer?, UnsafeRawPointer, UnsafePointer<Int64>, UnsafePointer<Int64>, UnsafePointer<Int64>) -> Int32
    typealias ConvBackwardDataDesc = @convention(c) (UnsafeMutableRawPointer, Int32, UnsafeRawPointer, UnsafeRawPointer, UnsafeRawPointer, UnsafePointer<Int64>, UnsafePointer<Int64>, UnsafePointer<Int64>) -> Int32
    typealias ConvBackwardWeightsDesc = @convention(c) (UnsafeMutableRawPointer, Int32, UnsafeRawPointer, UnsafeRawPointer, UnsafeRawPointer?, UnsafeRawPointer, UnsafePointer<Int64>, UnsafePointer<Int64>, UnsafePointer<Int64>) -> Int32
    typealias CreateAttr = @convention(c) (UnsafeMutablePointer<Handle?>) -> Int32
    typealias SetScratchpadMode = @convention(c) (Handle?, Int32) -> Int32
    typealias CreatePrimitiveDesc = @convention(c) (UnsafeMutablePointer<Handle?>, UnsafeRawPointer, Handle?, Handle?, Handle?) -> Int32
    typealias CreateReorderDesc = @convention(c) (UnsafeMutablePointer<Handle?>, UnsafeRawPointer, Handle?, UnsafeRawPointer, Handle?, Handle?) -> Int32
    typealias Query = @convention(c) (Handle?, Int32, Int32, UnsafeMutableRawPointer) -> Int32
    typealias QueryMD = @convention(c) (Handle?, Int32, Int32) -> UnsafeRawPointer?
    typealias DescSize = @convention(c) (UnsafeRawPointer) -> Int
    typealias DescEqual = @convention(c) (UnsafeRawPointer, UnsafeRawPointer) -> Int32
    typealias CreatePrimitive = @convention(c) (UnsafeMutablePointer<Handle?>, Handle?) -> Int32
    typealias CreateMemory = @convention(c) (UnsafeMutablePointer<Handle?>, UnsafeRawPointer, Handle?, UnsafeMutableRawPointer?) -> Int32
    typealias SetHandle = @convention(c) (Handle?, UnsafeMutableRawPointer?) -> Int32
    typealias Execute = @convention(c) (Handle?, Handle?, Int32, UnsafeRawPointer) -> Int32
    /// dnnl_*_destroy and dnnl_stream_wait: one handle in, a status out.
    typealias HandleCall = @convention(c) (Handle?) -> Int32

    // dnnl_types.h (2.6)
    static let f32: Int32 = 3, bf16: Int32 = 2
    static let tagAny: Int32 = 1, tagX: Int32 = 2, tagNCHW: Int32 = 5  // nchw == oihw == abcd
    static let forwardTraining: Int32 = 64
    static let convolutionDirect: Int32 = 1, convolutionWinograd: Int32 = 2
    static let eltwiseLogistic: Int32 = 0xaf
    static let scratchpadUser: Int32 = 1
    static let queryImplInfo: Int32 = 8, querySrc: Int32 = 129, queryDiffSrc: Int32 = 130, queryWeights: Int32 = 131
    static let queryDiffWeights: Int32 = 132, queryDst: Int32 = 133, queryDiffDst: Int32 = 134, queryScratchpad: Int32 = 136
    static let argSrc: Int32 = 1, argDst: Int32 = 17, argWeights: Int32 = 33, argBias: Int32 = 41
    static let argDiffSrc: Int32 = 129, argDiffDst: Int32 = 145, argDiffWeights: Int32 = 161, argDiffBias: Int32 = 169
    static let argScratchpad: Int32 = 80, argFrom: Int32 = 1, argTo: Int32 = 17, argOutputScales: Int32 = 513
    /// DNNL_RUNTIME_F32_VAL: an output scale given at execution (a quiet NaN's bit pattern).
    static let runtimeScale = Float(bitPattern: 0x7fc0_00d0)
    static let memoryDescBytes = 1024, opDescBytes = 8192

    let descByTag: DescByTag
    let descByStrides: DescByStrides
    let matmulDesc: MatMulDesc
    let createAttr: CreateAttr
    let setOutputScales: SetOutputScales
    let createPostOps: CreatePostOps
    let appendSum: AppendSum
    let appendEltwise: AppendEltwise
    let setPostOps: SetPostOps
    let destroyAttr: HandleCall, destroyPostOps: HandleCall
    let convForwardDesc: ConvForwardDesc
    let convBackwardDataDesc: ConvBackwardDataDesc
    let convBackwardWeightsDesc: ConvBackwardWeightsDesc
    let setScratchpadMode: SetScratchpadMode
    let createPrimitiveDesc: CreatePrimitiveDesc
    let createReorderDesc: CreateReorderDesc
    let query: Query
    let queryMD: QueryMD
    let descSize: DescSize
    let descEqual: DescEqual
    let createPrimitive: CreatePrimitive
    let createMemory: CreateMemory
    let setHandle: SetHandle
    let execute: Execute
    let destroyPrimitive: HandleCall, destroyPrimitiveDesc: HandleCall, destroyMemory: HandleCall
    let waitStream: HandleCall
    /// One CPU engine and one in-order stream for the process; primitive attributes that
    /// make every primitive take its scratchpad from the caller (so executing allocates no
    /// workspace: the layer sizes it once).
    let engine: Handle, stream: Handle, userScratchpad: Handle

    /// The primitive API of an already opened libdnnl, or nil if a symbol is missing or the
    /// engine cannot be created.
    init?(handle: UnsafeMutableRawPointer) {
        func sym<F>(_ name: String, _: F.Type) -> F? { dlsym(handle, name).map { unsafeBitCast($0, to: F.self) } }
        guard let createEngine = sym("dnnl_engine_create", CreateEngine.self),
              let createStream = sym("dnnl_stream_create", CreateStream.self),
              let createAttr = sym("dnnl_primitive_attr_create", CreateAttr.self),
              let descByTag = sym("dnnl_memory_desc_init_by_tag", DescByTag.self),
              let descByStrides = sym("dnnl_memory_desc_init_by_strides", DescByStrides.self),
              let matmulDesc = sym("dnnl_matmul_desc_init", MatMulDesc.self),
              let setOutputScales = sym("dnnl_primitive_attr_set_output_scales", SetOutputScales.self),
              let createPostOps = sym("dnnl_post_ops_create", CreatePostOps.self),
              let appendSum = sym("dnnl_post_ops_append_sum", AppendSum.self),
              let appendEltwise = sym("dnnl_post_ops_append_eltwise", AppendEltwise.self),
              let setPostOps = sym("dnnl_primitive_attr_set_post_ops", SetPostOps.self),
              let destroyAttr = sym("dnnl_primitive_attr_destroy", HandleCall.self),
              let destroyPostOps = sym("dnnl_post_ops_destroy", HandleCall.self),
              let convForwardDesc = sym("dnnl_convolution_forward_desc_init", ConvForwardDesc.self),
              let convBackwardDataDesc = sym("dnnl_convolution_backward_data_desc_init", ConvBackwardDataDesc.self),
              let convBackwardWeightsDesc = sym("dnnl_convolution_backward_weights_desc_init", ConvBackwardWeightsDesc.self),
              let setScratchpadMode = sym("dnnl_primitive_attr_set_scratchpad_mode", SetScratchpadMode.self),
              let createPrimitiveDesc = sym("dnnl_primitive_desc_create", CreatePrimitiveDesc.self),
              let createReorderDesc = sym("dnnl_reorder_primitive_desc_create", CreateReorderDesc.self),
              let query = sym("dnnl_primitive_desc_query", Query.self),
              let queryMD = sym("dnnl_primitive_desc_query_md", QueryMD.self),
              let descSize = sym("dnnl_memory_desc_get_size", DescSize.self),
              let descEqual = sym("dnnl_memory_desc_equal", DescEqual.self),
              let createPrimitive = sym("dnnl_primitive_create", CreatePrimitive.self),
              let createMemory = sym("dnnl_memory_create", CreateMemory.self),
              let setHandle = sym("dnnl_memory_set_data_handle", SetHandle.self),
              let execute = sym("dnnl_primitive_execute", Execute.self),
              let destroyPrimitive = sym("dnnl_primitive_destroy", HandleCall.self),
              let destroyPrimitiveDesc = sym("dnnl_primitive_desc_destroy", HandleCall.self),
              let destroyMemory = sym("dnnl_memory_destroy", HandleCall.self),
              let waitStream = sym("dnnl_stream_wait", HandleCall.self)
        else { return nil }
        var engine: Handle?, stream: Handle?, attr: Handle?
        guard createEngine(&engine, 1, 0) == 0, let engine,  // dnnl_cpu
              createStream(&stream, engine, 1) == 0, let stream,  // dnnl_stream_in_order
              createAttr(&attr) == 0, let attr, setScratchpadMode(attr, Self.scratchpadUser) == 0
        else { return nil }
        (self.engine, self.stream, userScratchpad) = (engine, stream, attr)
        self.descByTag = descByTag
        self.descByStrides = descByStrides
        self.matmulDesc = matmulDesc
        self.createAttr = createAttr
        self.setOutputScales = setOutputScales
        self.createPostOps = createPostOps
        self.appendSum = appendSum
        self.appendEltwise = appendEltwise
        self.setPostOps = setPostOps
        (self.destroyAttr, self.destroyPostOps) = (destroyAttr, destroyPostOps)
        self.convForwardDesc = convForwardDesc
        self.convBackwardDataDesc = convBackwardDataDesc
        self.convBackwardWeightsDesc = convBackwardWeightsDesc
        self.setScratchpadMode = setScratchpadMode
        self.createPrimitiveDesc = createPrimitiveDesc
        self.createReorderDesc = createReorderDesc
        self.query = query
        self.queryMD = queryMD
        self.descSize = descSize
        self.descEqual = descEqual
        self.createPrimitive = createPrimitive
        self.createMemory = createMemory
        self.setHandle = setHandle
        self.execute = execute
        self.destroyPrimitive = destroyPrimitive
        self.destroyPrimitiveDesc = destroyPrimitiveDesc
        self.destroyMemory = destroyMemory
        self.waitStream = waitStream
    }

    /// The implementation a primitive descriptor chose ("jit:avx512_core", "gemm:jit", ...).
    func implementation(_ pd: Handle) -> String {
        var s: UnsafePointer<CChar>?
        guard query(pd, Self.queryImplInfo, 0, &s) == 0, let s else { return "?" }
        return String(cString: s)
    }
}
