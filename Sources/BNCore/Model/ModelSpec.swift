/// A model written as a string: a preset name or layer tokens joined by `-` (or spaces).
///
///     fcN       fully connected, N outputs (nn.Linear)     fc     the last layer: one output per class
///     sigmoid   tanh   relu                                  element-wise activations
///     bn        BatchNorm1D over the features                ln     LayerNorm over the features
///     dropoutP  inverted dropout, drop probability P in [0, 1) (dropout0.2)
///
/// The model must end with `fc` (or `fcN` with N the class count); it starts from the
/// flattened image (pixels). Presets: `dfn2`, `bn-paper`, `mlp` (see `presets`).
/// The canonical form joins the tokens with `-`; it is what checkpoints and records carry.
public struct ModelSpec: Equatable, Sendable, CustomStringConvertible {
    public enum LayerSpec: Equatable, Sendable {
        /// `nil`: one output per class (only as the last layer).
        case fc(Int?)
        case activation(ActivationKind)
        case batchNorm
        case layerNorm
        case dropout(Double)

        public var token: String {
            switch self {
            case let .fc(n): return n.map { "fc\($0)" } ?? "fc"
            case let .activation(k): return k.rawValue
            case .batchNorm: return "bn"
            case .layerNorm: return "ln"
            case let .dropout(p): return "dropout\(p)"
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
            }
        }
    }

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

    static let grammar = "layers are fcN, fc (last: one output per class), sigmoid, tanh, relu, bn, ln, dropoutP (0 <= P < 1), joined by '-'; presets: \(presets.map(\.name).joined(separator: ", "))"

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
                guard digits.allSatisfy(\.isASCII), let n = Int(digits), n >= 1, n <= maxWidth else {
                    throw bad("fcN needs a width N from 1 to \(maxWidth) (fc256), or plain 'fc' for the last layer")
                }
                layers.append(.fc(n))
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

    /// Output width of each layer for `inputs` features in and `classes` classes; throws when
    /// the last layer's explicit width is not the class count.
    public func widths(inputs: Int, classes: Int) throws -> [Int] {
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
    }

    public func summary(inputs: Int, classes: Int) throws -> [LayerSummary] {
        let w = try widths(inputs: inputs, classes: classes)
        var rows: [LayerSummary] = []
        var inWidth = inputs
        for (i, l) in layers.enumerated() {
            let out = w[i]
            let (params, flops): (Int, Int)
            switch l {
            case .fc: (params, flops) = (inWidth * out + out, 2 * inWidth * out + out)
            case .activation: (params, flops) = (0, out)
            case .batchNorm: (params, flops) = (2 * out, 2 * out)
            case .layerNorm: (params, flops) = (2 * out, 7 * out)
            case .dropout: (params, flops) = (0, 0)
            }
            rows.append(LayerSummary(index: i, kind: l.kind, token: l.token, outputWidth: out, parameters: params, flops: flops))
            inWidth = out
        }
        return rows
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
