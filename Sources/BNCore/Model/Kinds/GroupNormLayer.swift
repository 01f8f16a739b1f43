/// `gnG`: GroupNorm with G groups (`nn.GroupNorm(G, C, eps=1e-5)`) over the channels of an
/// image, or the features of a vector; C must be divisible by G. `gn1` normalises each
/// example over all its values (LayerNorm over C, H, W with per-channel affine); `gnC`, one
/// group per channel, is instance norm. Gains start at 1, shifts at 0; 7 FLOPs per element,
/// as ln.
public struct GroupNormLayer: LayerKind {
    public let groups: Int
    public init(groups: Int) { self.groups = groups }

    public static let forms = "gnG (G groups)"
    public static let sampleTokens = ["gn1", "gn2", "gn3", "gn0"]

    public static func parse(_ token: String) throws -> GroupNormLayer? {
        guard token.hasPrefix("gn") else { return nil }
        let digits = token.dropFirst(2)
        guard digits.allSatisfy({ $0.isASCII && $0.isNumber }), let g = Int(digits), g >= 1, g <= 65536 else {
            throw LayerKindError("gnG needs a group count G from 1 to 65536 (gn4)")
        }
        return GroupNormLayer(groups: g)
    }

    public var name: String { "gn" }
    public var token: String { "gn\(groups)" }

    /// Channels (an image) or features (a vector), and the values per channel.
    func layout(_ input: ModelSpec.Shape) -> (channels: Int, plane: Int) {
        if case let .image(s) = input { return (s.c, s.h * s.w) }
        return (input.count, 1)
    }

    public func output(from input: ModelSpec.Shape, classes: Int, isLast: Bool) throws -> ModelSpec.Shape {
        let c = layout(input).channels
        guard c % groups == 0 else { throw LayerKindError("its \(c) channels do not split into \(groups) groups; use a G that divides \(c)") }
        return input
    }

    public func counts(input: ModelSpec.Shape, output: ModelSpec.Shape) -> (parameters: Int?, flops: Int?) {
        (ModelSpec.product([2, layout(input).channels]), ModelSpec.product([7, output.count]))
    }

    public func tensors(index i: Int, input: ModelSpec.Shape, output: ModelSpec.Shape) -> [TensorSpec] {
        let c = layout(input).channels
        return [TensorSpec("\(i).weight", [c]), TensorSpec("\(i).bias", [c])]
    }

    public var inputFromWeight: (rank: Int, dimension: Int)? { (1, 0) }

    public func pytorch(input: ModelSpec.Shape, output: ModelSpec.Shape, options: BuildOptions) -> String {
        "nn.GroupNorm(\(groups), \(layout(input).channels), eps=1e-05)"
    }

    public func build<T: BLASScalar>(_ c: inout LayerBuildContext<T>, fused: Bool) -> any Layer<T> {
        let (channels, plane) = layout(c.input)
        return GroupNorm<T>(channels: channels, groups: groups, plane: plane, name: c.name)
    }
}
