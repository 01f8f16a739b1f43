/// What one kind of layer knows about itself, in one place: its token grammar, shape rule,
/// parameter and FLOP counts, tensor names, PyTorch module and how to build it. The spec
/// parser, builder, summary, checkpoint expectations, help text and the Python reference all
/// read these facts; a new kind is one conforming type in its own file (under `Kinds/`) and
/// one line in `LayerKinds.all`.
///
/// A kind value is one parsed token (`fc256`, `conv6k5p2`): the kind with its settings.
public protocol LayerKind: Sendable {
    /// The token forms, for help texts and errors: "fcN, fc (last: one output per class)".
    static var forms: String { get }
    /// Tokens of this kind for the fuzz mutator, valid and not ("fc8", "fc1048576").
    static var sampleTokens: [String] { get }
    /// The kind of `token`, nil when the token is not this kind's; throws a `LayerKindError`
    /// (why, one line) when the token is this kind's but malformed (`fc0`).
    static func parse(_ token: String) throws -> Self?

    /// What the layer is called in summaries, records and errors ("fc", "bn", "conv").
    var name: String { get }
    /// The canonical token.
    var token: String { get }
    /// Whether the layer works on images (a model with one sees its input as an image).
    var isImageLayer: Bool { get }
    /// The output shape (per example) for `input`; `classes` for a last layer that sizes
    /// itself by the data. Throws a `LayerKindError` when the input does not fit.
    func output(from input: ModelSpec.Shape, classes: Int, isLast: Bool) throws -> ModelSpec.Shape
    /// Learnable values, and forward FLOPs per example in evaluation mode (a multiply-add is
    /// 2); nil where a count overflows.
    func counts(input: ModelSpec.Shape, output: ModelSpec.Shape) -> (parameters: Int?, flops: Int?)
    /// The tensors a checkpoint holds for the layer at index `i`, named as PyTorch's
    /// `state_dict` names them, with their logical shapes.
    func tensors(index i: Int, input: ModelSpec.Shape, output: ModelSpec.Shape) -> [TensorSpec]
    /// Floats a training example keeps besides the layer's output (conv: its im2col columns).
    func scratchPerExample(input: ModelSpec.Shape, output: ModelSpec.Shape) -> Int
    /// The equivalent PyTorch module as a Python expression over `nn` (and `FlattenLinear`, an
    /// nn.Linear that flattens its input first), for `bntrain summary`'s records.
    func pytorch(input: ModelSpec.Shape, output: ModelSpec.Shape, options: BuildOptions) -> String
    /// Whether the network computes this layer and `next` as one layer (fc then sigmoid) for
    /// this `input`; with no input, whether it may for some input.
    func fusesWith(_ next: any LayerKind, input: ModelSpec.Shape?) -> Bool
    /// Where a checkpoint's `i.weight` of this layer says how many features the layer takes
    /// (fc: rank 2, dimension 1); nil for a layer without tensors or with image input only.
    var inputFromWeight: (rank: Int, dimension: Int)? { get }
    /// The network layer; `fused` when `fusesWith` allowed it and the builder fuses.
    func build<T: BLASScalar>(_ context: inout LayerBuildContext<T>, fused: Bool) -> any Layer<T>
}

extension LayerKind {
    public static var sampleTokens: [String] { [] }
    public var isImageLayer: Bool { false }
    public func output(from input: ModelSpec.Shape, classes: Int, isLast: Bool) throws -> ModelSpec.Shape { input }
    public func counts(input: ModelSpec.Shape, output: ModelSpec.Shape) -> (parameters: Int?, flops: Int?) { (0, 0) }
    public func tensors(index i: Int, input: ModelSpec.Shape, output: ModelSpec.Shape) -> [TensorSpec] { [] }
    public func scratchPerExample(input: ModelSpec.Shape, output: ModelSpec.Shape) -> Int { 0 }
    public func fusesWith(_ next: any LayerKind, input: ModelSpec.Shape?) -> Bool { false }
    public var inputFromWeight: (rank: Int, dimension: Int)? { nil }
}

/// Why a token or a shape does not work, one line. The spec names the layer before it, or,
/// for a fact about the whole model (`aboutModel`), only the spec.
public struct LayerKindError: Error, Equatable {
    public let why: String
    public let aboutModel: Bool
    public init(_ why: String, aboutModel: Bool = false) {
        self.why = why
        self.aboutModel = aboutModel
    }
}

/// One tensor of a layer in a checkpoint: `name` (`3.weight`), logical `shape`, and whether
/// it is a buffer (running statistics) rather than a parameter.
public struct TensorSpec: Equatable, Sendable {
    public let name: String
    public let shape: [Int]
    public let buffer: Bool
    public init(_ name: String, _ shape: [Int], buffer: Bool = false) {
        self.name = name
        self.shape = shape
        self.buffer = buffer
    }
}

/// What a kind's `build` gets: the layer's place in the network and the build settings.
public struct LayerBuildContext<T: BLASScalar> {
    /// The tensor-name prefix: the layer's index in the spec.
    public let name: String
    public let input: ModelSpec.Shape, output: ModelSpec.Shape
    /// Whether this is the network's first layer (its input gradient is never needed).
    public let isFirst: Bool
    public let options: BuildOptions
    public let kernels: Kernels
    /// The weights' generator, drawn in layer order.
    public var rng: SplitMix64
    /// The dropout masks' stream, shared by every dropout layer.
    public let dropoutStream: RandomStream
}

/// Every layer kind bntrain knows, in the order the parser tries them.
public enum LayerKinds {
    /// No token is claimed by two kinds, so the order is only the help text's.
    public static let all: [any LayerKind.Type] = [
        FullyConnectedLayer.self,
        ActivationLayer.self,
        BatchNormLayer.self,
        LayerNormLayer.self,
        GroupNormLayer.self,
        DropoutLayer.self,
        ConvolutionLayer.self,
        PoolingLayer.self,
        GlobalAvgPoolLayer.self,
    ]

    /// Every kind's token forms, for help texts and errors.
    public static var forms: String { all.map { $0.forms }.joined(separator: ", ") }

    /// The kind of `token`, or nil when no kind claims it.
    static func parse(_ token: String) throws -> (any LayerKind)? {
        for kind in all {
            if let k = try kind.parse(token) { return k }
        }
        return nil
    }
}

