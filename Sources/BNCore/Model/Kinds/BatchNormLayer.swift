/// `bn`: BatchNorm1D over the features of a vector (`nn.BatchNorm1d(d)`), or BatchNorm2D over
/// the channels of an image, statistics over N, H and W (`nn.BatchNorm2d(C)`). Its settings
/// (`--bn-momentum`, `--bn-eps`, `--bn-running-var`) are the build options', for every bn.
/// Scale and shift fold into 2 FLOPs per element in evaluation.
public struct BatchNormLayer: LayerKind {
    public init() {}

    public static let forms = "bn"
    public static let sampleTokens = ["bn"]

    public static func parse(_ token: String) throws -> BatchNormLayer? { token == "bn" ? BatchNormLayer() : nil }

    public var name: String { "bn" }
    public var token: String { "bn" }

    /// Features normalised: the channels of an image, else the vector's width.
    func features(_ input: ModelSpec.Shape) -> Int {
        if case let .image(s) = input { return s.c }
        return input.count
    }

    public func counts(input: ModelSpec.Shape, output: ModelSpec.Shape) -> (parameters: Int?, flops: Int?) {
        (ModelSpec.product([2, features(input)]), ModelSpec.product([2, output.count]))
    }

    public func tensors(index i: Int, input: ModelSpec.Shape, output: ModelSpec.Shape) -> [TensorSpec] {
        let d = features(input)
        return [TensorSpec("\(i).weight", [d]), TensorSpec("\(i).bias", [d]), TensorSpec("\(i).running_mean", [d], buffer: true),
                TensorSpec("\(i).running_var", [d], buffer: true), TensorSpec("\(i).num_batches_tracked", [], buffer: true)]
    }

    public var inputFromWeight: (rank: Int, dimension: Int)? { (1, 0) }

    /// PyTorch's momentum is 1 - m (its running = (1 - momentum) running + momentum batch).
    public func pytorch(input: ModelSpec.Shape, output: ModelSpec.Shape, options: BuildOptions) -> String {
        let module = { if case .image = input { return "nn.BatchNorm2d" } else { return "nn.BatchNorm1d" } }()
        return "\(module)(\(features(input)), eps=\(options.bnEps), momentum=\(1 - options.bnMomentum))"
    }

    /// A BatchNorm2D followed by a relu runs as one layer with the ReLU fused.
    public func fusesWith(_ next: any LayerKind, input: ModelSpec.Shape?) -> Bool {
        guard (next as? ActivationLayer)?.function == .relu else { return false }
        guard let input else { return true }
        if case .image = input { return true }
        return false
    }

    public func build<T: BLASScalar>(_ c: inout LayerBuildContext<T>, fused: Bool) -> any Layer<T> {
        let o = c.options
        let runningVariance = BatchNorm1D<T>.RunningVariance(rawValue: o.runningVariance.rawValue)!
        if case let .image(s) = c.input {
            return BatchNorm2D<T>(shape: s, momentum: T(o.bnMomentum), eps: T(o.bnEps), runningVariance: runningVariance, fusedReLU: fused, name: c.name)
        }
        return BatchNorm1D<T>(features: c.output.count, momentum: T(o.bnMomentum), eps: T(o.bnEps), runningVariance: runningVariance, name: c.name)
    }
}
