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
    public enum LayerSpec: Equatable, Sendable {
        /// `nil`: one output per class (only as the last layer).
        case fc(Int?)
        case activation(ActivationKind)
        case batchNorm
        case layerNorm
        case dropout(Double)
        /// 2-D convolution: output channels, k x k kernel, stride, zero padding (`conv32k3`,
        /// `conv6k5p2`, `conv16k5s2`).
        case conv(out: Int, kernel: Int, stride: Int, padding: Int)
        /// Max or average pooling over k x k windows with a stride (`maxpool2`, `maxpool3s2`,
        /// `avgpool2`); the stride defaults to k.
        case pool(max: Bool, kernel: Int, stride: Int)
        /// Global average pooling (`gap`): each channel's mean, C x 1 x 1.
        case globalAvgPool

        public var isImageLayer: Bool {
            switch self {
            case .conv, .pool, .globalAvgPool: return true
            default: return false
            }
        }

        public var token: String {
            switch self {
            case let .fc(n): return n.map { "fc\($0)" } ?? "fc"
            case let .activation(k): return k.rawValue
            case .batchNorm: return "bn"
            case .layerNorm: return "ln"
            case let .dropout(p): return "dropout\(p)"
            case let .conv(o, k, st, pd): return "conv\(o)k\(k)" + (st != 1 ? "s\(st)" : "") + (pd != 0 ? "p\(pd)" : "")
            case let .pool(mx, k, st): return (mx ? "maxpool" : "avgpool") + "\(k)" + (st != k ? "s\(st)" : "")
            case .globalAvgPool: return "gap"
            }
        }

        /// What the layer is called in summaries and errors.
        public var kind: String {
            switch self {
            case .fc: return "fc"
            case let .activation(k): return k.rawValue
            case .batchNorm: return "bn"
            case .layerNorm: return "ln"
            case .dropout: return "dropout"
            case .conv: return "conv"
            case let .pool(mx, _, _): return mx ? "maxpool" : "avgpool"
            case .globalAvgPool: return "gap"
            }
        }
    }

    /// Whether the model treats its input as an image (it has convolution or pooling layers);
    /// otherwise the input is the flattened pixels.
    public var isConvolutional: Bool { layers.contains { $0.isImageLayer } }

    public var layers: [LayerSpec]

    public init(layers: [LayerSpec]) { self.layers = layers }

    /// The canonical spec string: tokens joined by `-`.
    public var description: String { layers.map(\.token).joined(separator: "-") }
    public var canonical: String { description }

    public var hasBatchNorm: Bool { layers.contains(.batchNorm) }

    /// The same model with every BatchNorm layer left out (`--no-batchnorm`).
    public func removingBatchNorm() -> ModelSpec { ModelSpec(layers: layers.filter { $0 != .batchNorm }) }

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

    /// Every layer token's form, for help texts and errors.
    public static let layerTokens = "fcN, fc (last: one output per class), sigmoid, tanh, relu, bn, ln, dropoutP (0 <= P < 1), convNkK[sS][pP], maxpoolK[sS], avgpoolK[sS], gap"
    /// The preset names, comma-separated.
    public static var presetNames: String { presets.map(\.name).joined(separator: ", ") }

    static let grammar = "layers are \(layerTokens), joined by '-'; presets: \(presetNames)"

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
            func bad(_ why: String) -> ParseError {
                ParseError(message: "'\(trimmed)', layer \(i + 1) '\(token)': \(why)")
            }
            if let k = ActivationKind(rawValue: token) {
                layers.append(.activation(k))
            } else if token == "bn" {
                layers.append(.batchNorm)
            } else if token == "ln" {
                layers.append(.layerNorm)
            } else if token == "fc" {
                layers.append(.fc(nil))
            } else if token.hasPrefix("fc") {
                let digits = token.dropFirst(2)
                guard digits.allSatisfy({ $0.isASCII && $0.isNumber }), let n = Int(digits), n >= 1, n <= maxWidth else {
                    throw bad("fcN needs a width N from 1 to \(maxWidth) (fc256), or plain 'fc' for the last layer")
                }
                layers.append(.fc(n))
            } else if token == "gap" {
                layers.append(.globalAvgPool)
            } else if token.hasPrefix("conv") || token.hasPrefix("maxpool") || token.hasPrefix("avgpool") {
                layers.append(try parseImageToken(token) { bad($0) })
            } else if token.hasPrefix("dropout") {
                let rest = token.dropFirst(7)
                guard !rest.isEmpty else { throw bad("dropout needs its drop probability, e.g. dropout0.5") }
                guard rest.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }), let p = Double(rest), p >= 0, p < 1 else {
                    throw bad("the dropout probability must be a decimal in [0, 1), e.g. dropout0.5")
                }
                layers.append(.dropout(p))
            } else {
                throw bad("unknown layer; \(grammar)")
            }
        }
        let spec = ModelSpec(layers: layers)
        try spec.checkStructure(text: trimmed)
        return spec
    }

    /// `convNkK[sS][pP]` or `maxpoolK[sS]` / `avgpoolK[sS]`: letters each followed by a number.
    static func parseImageToken(_ token: String, _ bad: (String) -> ParseError) throws -> LayerSpec {
        let isConv = token.hasPrefix("conv")
        let name = isConv ? "conv" : String(token.prefix(7))
        var rest = Substring(token.dropFirst(name.count))
        func number() -> Int? {
            let digits = rest.prefix { $0.isASCII && $0.isNumber }
            rest = rest.dropFirst(digits.count)
            return digits.isEmpty || digits.count > 7 ? nil : Int(digits)
        }
        let usage = isConv ? "write convNkK with optional sS and pP (conv32k3, conv6k5p2, conv16k5s2)" : "write \(name)K with an optional sS (maxpool2, maxpool3s2)"
        guard let first = number(), first >= 1 else { throw bad(usage) }
        var values: [Character: Int] = [:]
        while let letter = rest.first {
            rest = rest.dropFirst()
            guard "ksp".contains(letter), values[letter] == nil, let v = number() else { throw bad(usage) }
            values[letter] = v
        }
        if isConv {
            guard let k = values["k"], k >= 1, k <= 64, first <= 65536 else { throw bad(usage + "; 1 <= N <= 65536, 1 <= K <= 64") }
            let st = values["s"] ?? 1, pd = values["p"] ?? 0
            guard st >= 1, st <= 64, pd <= 64 else { throw bad(usage + "; 1 <= S <= 64, P <= 64") }
            return .conv(out: first, kernel: k, stride: st, padding: pd)
        }
        guard values["k"] == nil, values["p"] == nil, first <= 64 else { throw bad(usage) }
        let st = values["s"] ?? first
        guard st >= 1, st <= 64 else { throw bad(usage) }
        return .pool(max: name == "maxpool", kernel: first, stride: st)
    }

    /// The rules a token list must follow beyond each token being valid.
    func checkStructure(text: String) throws {
        guard let last = layers.last, case .fc = last else {
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
            func bad(_ why: String) -> ParseError { ParseError(message: "'\(canonical)', layer \(i + 1) '\(l.token)': \(why)") }
            switch (l, shape) {
            case let (.fc(n), _):
                if i == layers.count - 1, let n, n != classes {
                    throw ParseError(message: "'\(canonical)' ends with fc\(n) but the data has \(classes) classes; end it with plain 'fc'")
                }
                shape = .flat(n ?? classes)
            case let (.conv(o, k, st, pd), .image(s)):
                guard s.h + 2 * pd >= k, s.w + 2 * pd >= k else { throw bad("a \(k)x\(k) kernel does not fit its \(s) input") }
                let next = ImageShape(o, (s.h + 2 * pd - k) / st + 1, (s.w + 2 * pd - k) / st + 1)
                guard ModelSpec.product([next.c, next.h, next.w]) != nil else { throw bad("its \(next) output has more values than a 64-bit count holds; use fewer channels, less padding or a stride") }
                shape = .image(next)
            case let (.pool(_, k, st), .image(s)):
                guard s.h >= k, s.w >= k else { throw bad("a \(k)x\(k) window does not fit its \(s) input") }
                shape = .image(ImageShape(s.c, (s.h - k) / st + 1, (s.w - k) / st + 1))
            case let (.globalAvgPool, .image(s)):
                shape = .image(ImageShape(s.c, 1, 1))
            case (.conv, .flat), (.pool, .flat), (.globalAvgPool, .flat):
                throw bad("needs an image input; image layers must come before the first fc")
            case (.layerNorm, .image):
                throw bad("ln normalises a feature vector; use bn on images, or put ln after an fc")
            default: break  // activations, dropout, bn keep the shape
            }
            out.append(shape)
        }
        return out
    }

    /// Output width of each layer for `inputs` features in and `classes` classes; throws when
    /// the last layer's explicit width is not the class count.
    public func widths(inputs: Int, classes: Int, image: ImageShape? = nil) throws -> [Int] {
        if isConvolutional { return try shapes(inputs: inputs, classes: classes, image: image).map(\.count) }
        var w = inputs
        var out: [Int] = []
        for (i, l) in layers.enumerated() {
            if case let .fc(n) = l {
                if i == layers.count - 1, let n, n != classes {
                    throw ParseError(message: "'\(canonical)' ends with fc\(n) but the data has \(classes) classes; end it with plain 'fc'")
                }
                w = n ?? classes
            }
            out.append(w)
        }
        return out
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
    }

    /// Each layer's output, parameters and FLOPs. Every count is checked arithmetic, and so
    /// are their totals over the model: a spec whose counts overflow 64-bit integers is refused
    /// with a `ParseError` naming the layer, so callers may add the rows up freely.
    public func summary(inputs: Int, classes: Int, image: ImageShape? = nil) throws -> [LayerSummary] {
        let shapes = try shapes(inputs: inputs, classes: classes, image: image)
        var rows: [LayerSummary] = []
        var inShape = try inputShape(inputs: inputs, image: image)
        var totalParams = 0, totalFlops = 0, totalWidth = inputs
        for (i, l) in layers.enumerated() {
            let outShape = shapes[i], out = outShape.count, inWidth = inShape.count
            let p = ModelSpec.product, s = ModelSpec.sum
            let (params, flops): (Int?, Int?)
            switch (l, inShape, outShape) {
            case (.fc, _, _): (params, flops) = (s([p([inWidth, out]), out]), s([p([2, inWidth, out]), out]))
            case (.activation, _, _): (params, flops) = (0, out)
            case let (.batchNorm, .image(sh), _): (params, flops) = (p([2, sh.c]), p([2, out]))
            case (.batchNorm, _, _): (params, flops) = (p([2, out]), p([2, out]))
            case (.layerNorm, _, _): (params, flops) = (p([2, out]), p([7, out]))
            case (.dropout, _, _): (params, flops) = (0, 0)
            case let (.conv(o, k, _, _), .image(sh), _): (params, flops) = (s([p([o, sh.c, k, k]), o]), s([p([2, sh.c, k, k, out]), out]))
            case let (.pool(_, k, _), _, _): (params, flops) = (0, p([k, k, out]))
            case (.globalAvgPool, _, _): (params, flops) = (0, inWidth)
            default: (params, flops) = (0, 0)
            }
            guard let params, let flops, let tp = s([totalParams, params]), let tf = s([totalFlops, flops]), let tw = s([totalWidth, out]) else {
                throw ParseError(message: "'\(canonical)', layer \(i + 1) '\(l.token)': the model's parameter or FLOP count passes what a 64-bit integer holds (\(Int.max)); use narrower or fewer layers")
            }
            (totalParams, totalFlops, totalWidth) = (tp, tf, tw)
            rows.append(LayerSummary(index: i, kind: l.kind, token: l.token, outputWidth: out, parameters: params, flops: flops, outputShape: outShape.description))
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
