/// `gap`: global average pooling, each channel's mean, C x 1 x 1 (`nn.AdaptiveAvgPool2d(1)`);
/// one FLOP per input value.
public struct GlobalAvgPoolLayer: LayerKind {
    public init() {}

    public static let forms = "gap"
    public static let sampleTokens = ["gap"]

    public static func parse(_ token: String) throws -> GlobalAvgPoolLayer? { token == "gap" ? GlobalAvgPoolLayer() : nil }

    public var name: String { "gap" }
    public var token: String { "gap" }
    public var isImageLayer: Bool { true }

    public func output(from input: ModelSpec.Shape, classes: Int, isLast: Bool) throws -> ModelSpec.Shape {
        .image(ImageShape(try ImageToken.image(input).c, 1, 1))
    }

    public func counts(input: ModelSpec.Shape, output: ModelSpec.Shape) -> (parameters: Int?, flops: Int?) { (0, input.count) }

    public func pytorch(input: ModelSpec.Shape, output: ModelSpec.Shape, options: BuildOptions) -> String { "nn.AdaptiveAvgPool2d(1)" }

    public func build<T: BLASScalar>(_ c: inout LayerBuildContext<T>, fused: Bool) -> any Layer<T> {
        guard case let .image(s) = c.input else { preconditionFailure("checked by the shape rule") }
        return Pool2D<T>(.average, input: s, kernel: nil)
    }
}
