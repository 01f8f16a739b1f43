/// `sigmoid`, `tanh`, `relu`: element-wise activations (`nn.Sigmoid()`, `nn.Tanh()`,
/// `nn.ReLU()`), one FLOP per element.
public struct ActivationLayer: LayerKind {
    public let function: ActivationKind
    public init(_ function: ActivationKind) { self.function = function }

    public static let forms = ActivationKind.allCases.map(\.rawValue).joined(separator: ", ")
    public static let sampleTokens = ["relu", "sigmoid", "tanh"]

    public static func parse(_ token: String) throws -> ActivationLayer? { ActivationKind(rawValue: token).map(ActivationLayer.init) }

    public var name: String { function.rawValue }
    public var token: String { function.rawValue }

    public func counts(input: ModelSpec.Shape, output: ModelSpec.Shape) -> (parameters: Int?, flops: Int?) { (0, output.count) }

    public func pytorch(input: ModelSpec.Shape, output: ModelSpec.Shape, options: BuildOptions) -> String {
        switch function {
        case .sigmoid: return "nn.Sigmoid()"
        case .tanh: return "nn.Tanh()"
        case .relu: return "nn.ReLU()"
        }
    }

    public func build<T: BLASScalar>(_ c: inout LayerBuildContext<T>, fused: Bool) -> any Layer<T> {
        Activation<T>(function, features: c.output.count)
    }
}
