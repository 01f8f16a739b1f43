/// `dropoutP`: inverted dropout with drop probability P in [0, 1) (`nn.Dropout(P)`): scaled by
/// 1/(1-P) in training, the identity in evaluation (0 FLOPs). Masks come from the network's
/// dropout stream.
public struct DropoutLayer: LayerKind {
    public let probability: Double
    public init(probability: Double) { self.probability = probability }

    public static let forms = "dropoutP (0 <= P < 1)"
    public static let sampleTokens = ["dropout0.5", "dropout1"]

    public static func parse(_ token: String) throws -> DropoutLayer? {
        guard token.hasPrefix("dropout") else { return nil }
        let rest = token.dropFirst(7)
        guard !rest.isEmpty else { throw LayerKindError("dropout needs its drop probability, e.g. dropout0.5") }
        guard rest.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }), let p = Double(rest), p >= 0, p < 1 else {
            throw LayerKindError("the dropout probability must be a decimal in [0, 1), e.g. dropout0.5")
        }
        return DropoutLayer(probability: p)
    }

    public var name: String { "dropout" }
    public var token: String { "dropout\(probability)" }

    public func pytorch(input: ModelSpec.Shape, output: ModelSpec.Shape, options: BuildOptions) -> String {
        "nn.Dropout(\(probability))"
    }

    public func build<T: BLASScalar>(_ c: inout LayerBuildContext<T>, fused: Bool) -> any Layer<T> {
        Dropout<T>(probability: probability, features: c.output.count, stream: c.dropoutStream)
    }
}
