/// `fcN`: fully connected, N outputs (`nn.Linear(in, N)`); `fc`: the last layer, one output
/// per class. After image layers it flattens its input (C H W values, PyTorch's order).
public struct FullyConnectedLayer: LayerKind {
    /// nil: one output per class (only as the last layer).
    public let width: Int?
    public init(width: Int?) { self.width = width }

    public static let forms = "fcN, fc (last: one output per class)"
    public static let sampleTokens = ["fc1", "fc4", "fc8", "fc36", "fc1048576", "fc"]

    public static func parse(_ token: String) throws -> FullyConnectedLayer? {
        if token == "fc" { return FullyConnectedLayer(width: nil) }
        guard token.hasPrefix("fc") else { return nil }
        let digits = token.dropFirst(2)
        guard digits.allSatisfy({ $0.isASCII && $0.isNumber }), let n = Int(digits), n >= 1, n <= ModelSpec.maxWidth else {
            throw LayerKindError("fcN needs a width N from 1 to \(ModelSpec.maxWidth) (fc256), or plain 'fc' for the last layer")
        }
        return FullyConnectedLayer(width: n)
    }

    public var name: String { "fc" }
    public var token: String { width.map { "fc\($0)" } ?? "fc" }

    public func output(from input: ModelSpec.Shape, classes: Int, isLast: Bool) throws -> ModelSpec.Shape {
        if isLast, let width, width != classes {
            throw LayerKindError("ends with fc\(width) but the data has \(classes) classes; end it with plain 'fc'", aboutModel: true)
        }
        return .flat(width ?? classes)
    }

    public func counts(input: ModelSpec.Shape, output: ModelSpec.Shape) -> (parameters: Int?, flops: Int?) {
        let (i, o) = (input.count, output.count)
        return (ModelSpec.sum([ModelSpec.product([i, o]), o]), ModelSpec.sum([ModelSpec.product([2, i, o]), o]))
    }

    public func tensors(index i: Int, input: ModelSpec.Shape, output: ModelSpec.Shape) -> [TensorSpec] {
        [TensorSpec("\(i).weight", [output.count, input.count]), TensorSpec("\(i).bias", [output.count])]
    }

    public var inputFromWeight: (rank: Int, dimension: Int)? { (2, 1) }

    public func pytorch(input: ModelSpec.Shape, output: ModelSpec.Shape, options: BuildOptions) -> String {
        if case .image = input { return "FlattenLinear(\(input.count), \(output.count))" }
        return "nn.Linear(\(input.count), \(output.count))"
    }

    /// An fc followed by a sigmoid runs as one Dense with the sigmoid fused.
    public func fusesWith(_ next: any LayerKind, input: ModelSpec.Shape?) -> Bool {
        (next as? ActivationLayer)?.function == .sigmoid
    }

    /// The network's first layer stores its weight transposed: its forward product is the
    /// step's largest and runs faster as a plain NN product, and its input gradient, the
    /// product that layout slows, is never computed.
    public func build<T: BLASScalar>(_ c: inout LayerBuildContext<T>, fused: Bool) -> any Layer<T> {
        let dense = Dense<T>(
            inFeatures: c.input.count, outFeatures: c.output.count, activation: fused ? .sigmoid : .identity,
            weightLayout: c.isFirst ? .inOut : .outIn, name: c.name, kernels: c.kernels)
        c.options.initializer.initialize(dense, rng: &c.rng)
        return dense
    }
}
