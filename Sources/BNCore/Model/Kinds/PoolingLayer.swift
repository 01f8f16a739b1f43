/// `maxpoolK[sS]`, `avgpoolK[sS]`: K x K max or average pooling with stride S (K)
/// (`nn.MaxPool2d(K, S)`, `nn.AvgPool2d(K, S)`); K^2 FLOPs per output.
public struct PoolingLayer: LayerKind {
    public let max: Bool, kernel: Int, stride: Int
    public init(max: Bool, kernel: Int, stride: Int) { (self.max, self.kernel, self.stride) = (max, kernel, stride) }

    public static let forms = "maxpoolK[sS], avgpoolK[sS]"
    public static let sampleTokens = ["maxpool2", "avgpool3s2"]

    public static func parse(_ token: String) throws -> PoolingLayer? {
        guard token.hasPrefix("maxpool") || token.hasPrefix("avgpool") else { return nil }
        let name = String(token.prefix(7))
        let usage = "write \(name)K with an optional sS (maxpool2, maxpool3s2)"
        let (k, values) = try ImageToken.parse(token, name: name, usage: usage)
        guard values["k"] == nil, values["p"] == nil, k <= 64 else { throw LayerKindError(usage) }
        let st = values["s"] ?? k
        guard st >= 1, st <= 64 else { throw LayerKindError(usage) }
        return PoolingLayer(max: name == "maxpool", kernel: k, stride: st)
    }

    public var name: String { max ? "maxpool" : "avgpool" }
    public var token: String { name + "\(kernel)" + (stride != kernel ? "s\(stride)" : "") }
    public var isImageLayer: Bool { true }

    public func output(from input: ModelSpec.Shape, classes: Int, isLast: Bool) throws -> ModelSpec.Shape {
        let s = try ImageToken.image(input)
        guard s.h >= kernel, s.w >= kernel else { throw LayerKindError("a \(kernel)x\(kernel) window does not fit its \(s) input") }
        return .image(ImageShape(s.c, (s.h - kernel) / stride + 1, (s.w - kernel) / stride + 1))
    }

    public func counts(input: ModelSpec.Shape, output: ModelSpec.Shape) -> (parameters: Int?, flops: Int?) {
        (0, ModelSpec.product([kernel, kernel, output.count]))
    }

    public func pytorch(input: ModelSpec.Shape, output: ModelSpec.Shape, options: BuildOptions) -> String {
        "nn.\(max ? "MaxPool2d" : "AvgPool2d")(\(kernel), stride=\(stride))"
    }

    public func build<T: BLASScalar>(_ c: inout LayerBuildContext<T>, fused: Bool) -> any Layer<T> {
        guard case let .image(s) = c.input else { preconditionFailure("checked by the shape rule") }
        return Pool2D<T>(max ? .max : .average, input: s, kernel: kernel, stride: stride)
    }
}
