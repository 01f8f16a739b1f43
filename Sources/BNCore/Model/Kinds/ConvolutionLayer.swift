/// `convNkK[sS][pP]`: 2-D convolution with N output channels, a K x K kernel, stride S (1)
/// and zero padding P (0) (`nn.Conv2d(C, N, K, stride=S, padding=P)`). Weights are stored in
/// PyTorch's (O, C, K, K) layout; a multiply-add counts 2 (2 C K^2 per output, plus the bias).
public struct ConvolutionLayer: LayerKind {
    public let channels: Int, kernel: Int, stride: Int, padding: Int
    public init(channels: Int, kernel: Int, stride: Int = 1, padding: Int = 0) {
        (self.channels, self.kernel, self.stride, self.padding) = (channels, kernel, stride, padding)
    }

    public static let forms = "convNkK[sS][pP]"
    public static let sampleTokens = ["conv8k3", "conv4k5p2", "conv65536k1"]

    public static func parse(_ token: String) throws -> ConvolutionLayer? {
        guard token.hasPrefix("conv") else { return nil }
        let usage = "write convNkK with optional sS and pP (conv32k3, conv6k5p2, conv16k5s2)"
        let (n, values) = try ImageToken.parse(token, name: "conv", usage: usage)
        guard let k = values["k"], k >= 1, k <= 64, n <= 65536 else { throw LayerKindError(usage + "; 1 <= N <= 65536, 1 <= K <= 64") }
        let st = values["s"] ?? 1, pd = values["p"] ?? 0
        guard st >= 1, st <= 64, pd <= 64 else { throw LayerKindError(usage + "; 1 <= S <= 64, P <= 64") }
        return ConvolutionLayer(channels: n, kernel: k, stride: st, padding: pd)
    }

    public var name: String { "conv" }
    public var token: String { "conv\(channels)k\(kernel)" + (stride != 1 ? "s\(stride)" : "") + (padding != 0 ? "p\(padding)" : "") }
    public var isImageLayer: Bool { true }

    public func output(from input: ModelSpec.Shape, classes: Int, isLast: Bool) throws -> ModelSpec.Shape {
        let s = try ImageToken.image(input)
        let (k, st, pd) = (kernel, stride, padding)
        guard s.h + 2 * pd >= k, s.w + 2 * pd >= k else { throw LayerKindError("a \(k)x\(k) kernel does not fit its \(s) input") }
        let next = ImageShape(channels, (s.h + 2 * pd - k) / st + 1, (s.w + 2 * pd - k) / st + 1)
        guard ModelSpec.product([next.c, next.h, next.w]) != nil else {
            throw LayerKindError("its \(next) output has more values than a 64-bit count holds; use fewer channels, less padding or a stride")
        }
        return .image(next)
    }

    func inputChannels(_ input: ModelSpec.Shape) -> Int {
        if case let .image(s) = input { return s.c }
        return 0
    }

    public func counts(input: ModelSpec.Shape, output: ModelSpec.Shape) -> (parameters: Int?, flops: Int?) {
        let (c, o, k) = (inputChannels(input), channels, kernel)
        return (ModelSpec.sum([ModelSpec.product([o, c, k, k]), o]), ModelSpec.sum([ModelSpec.product([2, c, k, k, output.count]), output.count]))
    }

    public func tensors(index i: Int, input: ModelSpec.Shape, output: ModelSpec.Shape) -> [TensorSpec] {
        [TensorSpec("\(i).weight", [channels, inputChannels(input), kernel, kernel]), TensorSpec("\(i).bias", [channels])]
    }

    /// Each training example keeps its im2col columns, C K^2 OH OW values.
    public func scratchPerExample(input: ModelSpec.Shape, output: ModelSpec.Shape) -> Int {
        inputChannels(input) * kernel * kernel * (output.count / channels)
    }

    public func pytorch(input: ModelSpec.Shape, output: ModelSpec.Shape, options: BuildOptions) -> String {
        "nn.Conv2d(\(inputChannels(input)), \(channels), \(kernel), stride=\(stride), padding=\(padding))"
    }

    public func build<T: BLASScalar>(_ c: inout LayerBuildContext<T>, fused: Bool) -> any Layer<T> {
        guard case let .image(s) = c.input else { preconditionFailure("checked by the shape rule") }
        let conv = Conv2D<T>(input: s, outChannels: channels, kernel: kernel, stride: stride, padding: padding, name: c.name, kernels: c.kernels)
        c.options.initializer.initialize(conv, rng: &c.rng)
        return conv
    }
}
