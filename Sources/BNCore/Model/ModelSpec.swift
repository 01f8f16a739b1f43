/// A model written as a string: a preset name or layer tokens joined by `-` (or spaces).
///
///     fcN       fully connected, N outputs (nn.Linear)     fc     the last layer: one output per class
///     sigmoid   tanh   relu                                  element-wise activations
///     bn        BatchNorm1D over the features                ln     LayerNorm over the features
///     dropoutP  inverted dropout, drop probability P in [0, 1) (dropout0.2)
///
/// The model must end with `fc` (or `fcN` with N the class count); it starts from the
/// flattened image (pixels) or, with image layers (conv, pooling, gap), the image itself.
/// Presets: see `presets`.
/// The canonical form joins the tokens with `-`; it is what checkpoints and records carry.
public struct ModelSpec: Equatable, Sendable, CustomStringConvertible {
    /// One layer of a spec: a parsed token, its kind's facts (`LayerKind`) behind it.
    public struct LayerSpec: Equatable, Sendable, CustomStringConvertible {
        /// The kind with its settings (`FullyConnectedLayer(width: 256)`).
        public let facts: any LayerKind
        public init(_ facts: any LayerKind) { self.facts = facts }

        public var token: String { facts.token }
        /// What the layer is called in summaries and errors.
        public var kind: String { facts.name }
        public var isImageLayer: Bool { facts.isImageLayer }
        public var description: String { token }

        /// Two layers are the same when their canonical tokens are: a token names one kind
        /// with one setting.
        public static func == (a: LayerSpec, b: LayerSpec) -> Bool { a.token == b.token }

        /// `fcN`, or `fc` (nil: one output per class).
        public static func fc(_ width: Int?) -> LayerSpec { LayerSpec(FullyConnectedLayer(width: width)) }
        public static func activation(_ f: ActivationKind) -> LayerSpec { LayerSpec(ActivationLayer(f)) }
        public static let batchNorm = LayerSpec(BatchNormLayer())
        public static let layerNorm = LayerSpec(LayerNormLayer())
    }

    /// Whether the model treats its input as an image (it has convolution or pooling layers);
    /// otherwise the input is the flattened pixels.
    public var isConvolutional: Bool { layers.contains { $0.isImageLayer } }

    public var layers: [LayerSpec]

    public init(layers: [LayerSpec]) { self.layers = layers }

    /// The canonical spec string: tokens joined by `-`.
    public var description: String { layers.map(\.token).joined(separator: "-") }
    public var canonical: String { description }

    public var hasBatchNorm: Bool { layers.contains { $0.facts is BatchNormLayer } }

    /// The same model with every BatchNorm layer left out (`--no-batchnorm`).
    public func removingBatchNorm() -> ModelSpec { ModelSpec(layers: layers.filter { !($0.facts is BatchNormLayer) }) }

    // MARK: Presets

    public struct Preset: Sendable {
        public let name: String
        public let about: String
        /// The spec; `hidden` is dfn2's width (--hidden).
        public let spec: @Sendable (_ hidden: Int) -> String
    }

    public static let defaultHidden = 200

    public static let presets: [Preset] = [
        Preset(name: "dfn2", about: "the reference net: one sigmoid hidden layer (--hidden, default 200), BN after the sigmoid") { "fc\($0)-sigmoid-bn-fc" },
        Preset(name: "bn-paper", about: "Ioffe & Szegedy 2015, sec. 4.1: three hidden layers of 100 with BN before each sigmoid") { _ in
            "fc100-bn-sigmoid-fc100-bn-sigmoid-fc100-bn-sigmoid-fc"
        },
        Preset(name: "mlp", about: "two hidden layers of 256 with BN, ReLU and dropout 0.2") { _ in "fc256-bn-relu-dropout0.2-fc256-bn-relu-dropout0.2-fc" },
        Preset(name: "lenet-bn", about: "LeNet-5 with BN after every convolution and hidden fc") { _ in
            "conv6k5p2-bn-relu-maxpool2-conv16k5-bn-relu-maxpool2-fc120-bn-relu-fc84-bn-relu-fc"
        },
        Preset(name: "cnn", about: "PyTorch's MNIST example with BN: two 3x3 convolutions, max pooling, dropout") { _ in
            "conv32k3-bn-relu-conv64k3-bn-relu-maxpool2-dropout0.25-fc128-bn-relu-dropout0.5-fc"
        },
    ]

    public static func preset(named name: String) -> Preset? { presets.first { $0.name == name } }

    // MARK: Parsing

    /// A spec that cannot be used; `message` is one line naming the bad token.
    public struct ParseError: Error, CustomStringConvertible, Equatable {
        public let message: String
        public init(message: String) { self.message = message }
        public var description: String { message }
    }

    /// Widths accepted for `fcN`: a sanity bound, not a memory estimate.
    public static let maxWidth = 1 << 20

    /// Every layer token's form, for help texts and errors (from the kinds' own).
    public static var layerTokens: String { LayerKinds.forms }
    /// The preset names, comma-separated.
    public static var presetNames: String { presets.map(\.name).joined(separator: ", ") }

    static var grammar: String { "layers are \(layerTokens), joined by '-'; presets: \(presetNames)" }

    /// Parses a preset name (with dfn2's `hidden`) or a token string.
    public static func parse(_ text: String, hidden: Int = defaultHidden) throws -> ModelSpec {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" }
        let trimmed = String(text.drop(while: isSpace).reversed().drop(while: isSpace).reversed())
        if let p = preset(named: trimmed) { return try parse(p.spec(hidden), hidden: hidden) }
        guard !trimmed.isEmpty else { throw ParseError(message: "the model spec is empty; \(grammar)") }
        // Layers are separated by '-' or white space; an empty piece between two '-' (or a
        // leading or trailing '-') is an error rather than silently skipped.
        var tokens: [String] = []
        for (k, piece) in trimmed.split(separator: "-", omittingEmptySubsequences: false).enumerated() {
            let words = piece.split(whereSeparator: isSpace).map(String.init)
            if words.isEmpty {
                throw ParseError(message: "'\(trimmed)': empty layer after \(k == 0 ? "the start" : "'\(tokens.last ?? "")'") (a doubled, leading or trailing '-'); \(grammar)")
            }
            tokens += words
        }
        var layers: [LayerSpec] = []
        for (i, token) in tokens.enumerated() {
            do {
                guard let facts = try LayerKinds.parse(token) else { throw LayerKindError("unknown layer; \(grammar)") }
                layers.append(LayerSpec(facts))
            } catch let e as LayerKindError {
                throw ParseError(message: "'\(trimmed)', layer \(i + 1) '\(token)': \(e.why)")
            }
        }
        let spec = ModelSpec(layers: layers)
        try spec.checkStructure(text: trimmed)
        return spec
    }

    /// The rules a token list must follow beyond each token being valid.
    func checkStructure(text: String) throws {
        guard let last = layers.last, last.facts is FullyConnectedLayer else {
            throw ParseError(message: "'\(text)' must end with 'fc' (one output per class); add '-fc'")
        }
        for (i, l) in layers.enumerated().dropLast() where l == .fc(nil) {
            throw ParseError(message: "'\(text)', layer \(i + 1) 'fc': only the last layer may omit its width; write fcN")
        }
    }

    // MARK: Shapes

    /// A tensor's shape per example: a feature vector, or an image (C, H, W).
    public enum Shape: Equatable, Sendable, CustomStringConvertible {
        case flat(Int)
        case image(ImageShape)
        public var count: Int {
            switch self {
            case let .flat(n): return n
            case let .image(s): return s.count
            }
        }
        public var description: String {
            switch self {
            case let .flat(n): return "\(n)"
            case let .image(s): return s.description
            }
        }
    }

    /// The input shape: the image for a convolutional model, else the flattened pixels.
    public func inputShape(inputs: Int, image: ImageShape?) throws -> Shape {
        guard isConvolutional else { return .flat(inputs) }
        guard let image, image.count == inputs else { throw ParseError(message: "'\(canonical)' has image layers but the input is not an image (\(inputs) features)") }
        return .image(image)
    }

    /// Output shape of each layer. An fc after image layers flattens its input (C H W values,
    /// in PyTorch's order); conv and pooling need an image; ln needs a feature vector.
    public func shapes(inputs: Int, classes: Int, image: ImageShape? = nil) throws -> [Shape] {
        var shape = try inputShape(inputs: inputs, image: image)
        var out: [Shape] = []
        for (i, l) in layers.enumerated() {
            do {
                shape = try l.facts.output(from: shape, classes: classes, isLast: i == layers.count - 1)
            } catch let e as LayerKindError {
                throw ParseError(message: e.aboutModel ? "'\(canonical)' \(e.why)" : "'\(canonical)', layer \(i + 1) '\(l.token)': \(e.why)")
            }
            out.append(shape)
        }
        return out
    }

    /// Output width of each layer for `inputs` features in and `classes` classes; throws when
    /// the last layer's explicit width is not the class count.
    public func widths(inputs: Int, classes: Int, image: ImageShape? = nil) throws -> [Int] {
        try shapes(inputs: inputs, classes: classes, image: image).map(\.count)
    }

    /// One line of `bntrain summary`.
    public struct LayerSummary: Equatable, Sendable {
        public var index: Int
        public var kind: String
        public var token: String
        public var outputWidth: Int
        public var parameters: Int
        /// Forward FLOPs per example in evaluation mode: a multiply-add counts 2 (fc: 2 in out + out
        /// for the bias); activations 1 per element; bn 2 per element (scale and shift folded);
        /// ln 7 per element (mean, centring, variance, normalise, scale and shift); dropout 0.
        public var flops: Int
        /// "6x28x28" for an image, "120" for a feature vector.
        public var outputShape: String = ""
        /// The equivalent PyTorch module, a Python expression (`nn.Linear(784, 100)`).
        public var pytorch: String = ""
        /// The layer's checkpoint tensors (`0.weight`, `0.bias`), buffers included.
        public var tensors: [String] = []
    }

    /// Each layer's output, parameters and FLOPs. Every count is checked arithmetic, and so
    /// are their totals over the model: a spec whose counts overflow 64-bit integers is refused
    /// with a `ParseError` naming the layer, so callers may add the rows up freely.
    public func summary(inputs: Int, classes: Int, image: ImageShape? = nil, options: BuildOptions = BuildOptions()) throws -> [LayerSummary] {
        let shapes = try shapes(inputs: inputs, classes: classes, image: image)
        var rows: [LayerSummary] = []
        var inShape = try inputShape(inputs: inputs, image: image)
        var totalParams = 0, totalFlops = 0, totalWidth = inputs
        for (i, l) in layers.enumerated() {
            let outShape = shapes[i], out = outShape.count
            let (params, flops) = l.facts.counts(input: inShape, output: outShape)
            let s = ModelSpec.sum
            guard let params, let flops, let tp = s([totalParams, params]), let tf = s([totalFlops, flops]), let tw = s([totalWidth, out]) else {
                throw ParseError(message: "'\(canonical)', layer \(i + 1) '\(l.token)': the model's parameter or FLOP count passes what a 64-bit integer holds (\(Int.max)); use narrower or fewer layers")
            }
            (totalParams, totalFlops, totalWidth) = (tp, tf, tw)
            rows.append(LayerSummary(
                index: i, kind: l.kind, token: l.token, outputWidth: out, parameters: params, flops: flops, outputShape: outShape.description,
                pytorch: l.facts.pytorch(input: inShape, output: outShape, options: options),
                tensors: l.facts.tensors(index: i, input: inShape, output: outShape).map(\.name)))
            inShape = outShape
        }
        return rows
    }

    /// The product of non-negative counts, or nil when it overflows.
    public static func product(_ factors: [Int]) -> Int? {
        var r = 1
        for f in factors {
            let (v, overflow) = r.multipliedReportingOverflow(by: f)
            if overflow { return nil }
            r = v
        }
        return r
    }

    /// The sum of counts (nil entries propagate), or nil when it overflows.
    public static func sum(_ terms: [Int?]) -> Int? {
        var r = 0
        for t in terms {
            guard let t else { return nil }
            let (v, overflow) = r.addingReportingOverflow(t)
            if overflow { return nil }
            r = v
        }
        return r
    }
}

extension ModelSpec: Codable {
    /// Encoded as its canonical string.
    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        self = try ModelSpec.parse(text)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(canonical)
    }
}
