/// `ln`: LayerNorm over each example's features, eps 1e-5 (`nn.LayerNorm(d)`, PyTorch's
/// default), gain 1 and shift 0 at start; 7 FLOPs per element (mean, centring, variance,
/// normalise, scale and shift).
public struct LayerNormLayer: LayerKind {
    public init() {}

    public static let forms = "ln"
    public static let sampleTokens = ["ln"]

    public static func parse(_ token: String) throws -> LayerNormLayer? { token == "ln" ? LayerNormLayer() : nil }

    public var name: String { "ln" }
    public var token: String { "ln" }

    public func output(from input: ModelSpec.Shape, classes: Int, isLast: Bool) throws -> ModelSpec.Shape {
        if case .image = input { throw LayerKindError("ln normalises a feature vector; use bn on images, or put ln after an fc") }
        return input
    }

    public func counts(input: ModelSpec.Shape, output: ModelSpec.Shape) -> (parameters: Int?, flops: Int?) {
        (ModelSpec.product([2, output.count]), ModelSpec.product([7, output.count]))
    }

    public func tensors(index i: Int, input: ModelSpec.Shape, output: ModelSpec.Shape) -> [TensorSpec] {
        [TensorSpec("\(i).weight", [output.count]), TensorSpec("\(i).bias", [output.count])]
    }

    public var inputFromWeight: (rank: Int, dimension: Int)? { (1, 0) }

    public func pytorch(input: ModelSpec.Shape, output: ModelSpec.Shape, options: BuildOptions) -> String {
        "nn.LayerNorm(\(output.count), eps=1e-05)"
    }

    public func build<T: BLASScalar>(_ c: inout LayerBuildContext<T>, fused: Bool) -> any Layer<T> {
        LayerNorm<T>(features: c.output.count, name: c.name)
    }
}
