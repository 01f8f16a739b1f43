import BNCore

extension ConfigKey {
    public static let lr = ConfigKey("lr")
    public static let optimizer = ConfigKey("optimizer")
    public static let momentum = ConfigKey("momentum")
    public static let nesterov = ConfigKey("nesterov")
    public static let beta1 = ConfigKey("beta1")
    public static let beta2 = ConfigKey("beta2")
    public static let adamEps = ConfigKey("adam_eps")
    public static let alpha = ConfigKey("alpha")
    public static let weightDecay = ConfigKey("weight_decay")
    public static let decay = ConfigKey("decay")
    public static let clipGradNorm = ConfigKey("clip_grad_norm")
}

/// An optimizer with the parameters it reads (torch.optim's update rules, `Optimizer.swift`).
/// A parameter of another optimizer cannot be set: "beta1 applies to adam only" is the type.
public enum OptimizerRule: Equatable, Sendable {
    case sgd(momentum: Double, nesterov: Bool)
    case adam(beta1: Double, beta2: Double, eps: Double)
    case adamw(beta1: Double, beta2: Double, eps: Double)
    case rmsprop(alpha: Double, eps: Double, momentum: Double)

    public typealias Kind = OptimizerSettings.Kind
    public static let momentum = 0.0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, alpha = 0.99

    /// The optimizer with torch.optim's default parameters.
    public init(_ kind: Kind) {
        switch kind {
        case .sgd: self = .sgd(momentum: Self.momentum, nesterov: false)
        case .adam: self = .adam(beta1: Self.beta1, beta2: Self.beta2, eps: Self.eps)
        case .adamw: self = .adamw(beta1: Self.beta1, beta2: Self.beta2, eps: Self.eps)
        case .rmsprop: self = .rmsprop(alpha: Self.alpha, eps: Self.eps, momentum: Self.momentum)
        }
    }

    public var kind: Kind {
        switch self {
        case .sgd: return .sgd
        case .adam: return .adam
        case .adamw: return .adamw
        case .rmsprop: return .rmsprop
        }
    }

    /// Setting a parameter this optimizer does not read is refused, unless it is the default
    /// (which changes nothing).
    func notRead(_ key: ConfigKey, _ value: Double, _ fallback: Double, by readers: String) throws {
        if value != fallback { throw ConfigProblem(key, "applies to --optimizer \(readers), not \(kind.rawValue)") }
    }

    public mutating func set(momentum m: Double) throws {
        switch self {
        case let .sgd(_, n): self = .sgd(momentum: m, nesterov: n)
        case let .rmsprop(a, e, _): self = .rmsprop(alpha: a, eps: e, momentum: m)
        default: try notRead(.momentum, m, Self.momentum, by: "sgd and rmsprop")
        }
    }
    public mutating func set(nesterov n: Bool) throws {
        guard case let .sgd(m, _) = self else {
            if n { throw ConfigProblem(.nesterov, "needs --optimizer sgd with --momentum above 0 (as torch.optim.SGD)") }
            return
        }
        self = .sgd(momentum: m, nesterov: n)
    }
    public mutating func set(beta1 b: Double) throws {
        switch self {
        case let .adam(_, b2, e): self = .adam(beta1: b, beta2: b2, eps: e)
        case let .adamw(_, b2, e): self = .adamw(beta1: b, beta2: b2, eps: e)
        default: try notRead(.beta1, b, Self.beta1, by: "adam and adamw")
        }
    }
    public mutating func set(beta2 b: Double) throws {
        switch self {
        case let .adam(b1, _, e): self = .adam(beta1: b1, beta2: b, eps: e)
        case let .adamw(b1, _, e): self = .adamw(beta1: b1, beta2: b, eps: e)
        default: try notRead(.beta2, b, Self.beta2, by: "adam and adamw")
        }
    }
    public mutating func set(eps e: Double) throws {
        switch self {
        case let .adam(b1, b2, _): self = .adam(beta1: b1, beta2: b2, eps: e)
        case let .adamw(b1, b2, _): self = .adamw(beta1: b1, beta2: b2, eps: e)
        case let .rmsprop(a, _, m): self = .rmsprop(alpha: a, eps: e, momentum: m)
        case .sgd: try notRead(.adamEps, e, Self.eps, by: "adam, adamw and rmsprop")
        }
    }
    public mutating func set(alpha a: Double) throws {
        guard case let .rmsprop(_, e, m) = self else { return try notRead(.alpha, a, Self.alpha, by: "rmsprop") }
        self = .rmsprop(alpha: a, eps: e, momentum: m)
    }

    /// The parameters this optimizer reads, as (key, value), in the 0.4 encoding's order.
    var parameters: [(ConfigKey, Double)] {
        switch self {
        case let .sgd(m, _): return [(.momentum, m)]
        case let .adam(b1, b2, e), let .adamw(b1, b2, e): return [(.beta1, b1), (.beta2, b2), (.adamEps, e)]
        case let .rmsprop(a, e, m): return [(.momentum, m), (.adamEps, e), (.alpha, a)]
        }
    }
}

/// `--lr`, `--optimizer` and its parameters, weight decay and gradient clipping.
public struct OptimizerConfig: ConfigGroup {
    public var lr = 0.01
    public var rule = OptimizerRule(.sgd)
    public var weightDecay = 0.0
    public var decayScope = WeightDecayScope.all
    /// Global gradient-norm clipping: 0 is off.
    public var clipGradNorm = 0.0
    public init() {}

    public func write(to w: inout FlatWriter) {
        w.write(.lr, lr)
        w.write(.optimizer, rule.kind)
        for (k, v) in rule.parameters { w.write(k, v) }
        if case let .sgd(_, n) = rule { w.write(.nesterov, onOff: n) }
        w.write(.weightDecay, weightDecay)
        if weightDecay > 0 { w.write(.decay, decayScope) }
        w.write(.clipGradNorm, clipGradNorm)
    }

    public init(from r: FlatReader) throws {
        lr = try r.double(.lr) ?? lr
        rule = OptimizerRule(try r.choice(.optimizer) ?? .sgd)
        if let v = try r.double(.momentum) { try rule.set(momentum: v) }
        if let v = try r.onOff(.nesterov) { try rule.set(nesterov: v) }
        if let v = try r.double(.beta1) { try rule.set(beta1: v) }
        if let v = try r.double(.beta2) { try rule.set(beta2: v) }
        if let v = try r.double(.adamEps) { try rule.set(eps: v) }
        if let v = try r.double(.alpha) { try rule.set(alpha: v) }
        weightDecay = try r.double(.weightDecay) ?? weightDecay
        decayScope = try r.choice(.decay) ?? decayScope
        clipGradNorm = try r.double(.clipGradNorm) ?? clipGradNorm
    }

    public func problem() -> ConfigProblem? {
        if !(lr.isFinite && lr > 0) { return ConfigProblem(.lr, "must be a positive finite number (got \(lr))") }
        let unit = { (k: ConfigKey, v: Double) in v >= 0 && v < 1 ? nil : ConfigProblem(k, "must be in [0, 1) (got \(v))") }
        switch rule {
        case let .sgd(m, n):
            if let p = unit(.momentum, m) { return p }
            if n && m == 0 { return ConfigProblem(.nesterov, "needs --optimizer sgd with --momentum above 0 (as torch.optim.SGD)") }
        case let .adam(b1, b2, e), let .adamw(b1, b2, e):
            if let p = unit(.beta1, b1) ?? unit(.beta2, b2) { return p }
            if !(e.isFinite && e > 0) { return ConfigProblem(.adamEps, "must be a positive finite number (got \(e))") }
        case let .rmsprop(a, e, m):
            if let p = unit(.momentum, m) { return p }
            if !(e.isFinite && e > 0) { return ConfigProblem(.adamEps, "must be a positive finite number (got \(e))") }
            if let p = unit(.alpha, a) { return p }
        }
        if !(weightDecay.isFinite && weightDecay >= 0) { return ConfigProblem(.weightDecay, "must be a non-negative finite number (got \(weightDecay))") }
        if !(clipGradNorm.isFinite && clipGradNorm >= 0) { return ConfigProblem(.clipGradNorm, "must be a non-negative finite number, 0 for off (got \(clipGradNorm))") }
        return nil
    }

    /// The optimizer's settings as BNCore takes them.
    public var settings: OptimizerSettings {
        var o = OptimizerSettings()
        o.kind = rule.kind
        o.learningRate = lr
        switch rule {
        case let .sgd(m, n): (o.momentum, o.nesterov) = (m, n)
        case let .adam(b1, b2, e), let .adamw(b1, b2, e): (o.beta1, o.beta2, o.eps) = (b1, b2, e)
        case let .rmsprop(a, e, m): (o.alpha, o.eps, o.momentum) = (a, e, m)
        }
        o.weightDecay = weightDecay
        o.decayScope = decayScope
        return o
    }
}
