import BNCore

extension ConfigKey {
    public static let lrSchedule = ConfigKey("lr_schedule")
    public static let lrStepEpochs = ConfigKey("lr_step_epochs")
    public static let lrGamma = ConfigKey("lr_gamma")
    public static let lrMin = ConfigKey("lr_min")
    public static let warmupEpochs = ConfigKey("warmup_epochs")
    public static let lrPatience = ConfigKey("lr_patience")
    public static let lrFactor = ConfigKey("lr_factor")
    public static let earlyStop = ConfigKey("early_stop")
    public static let monitor = ConfigKey("monitor")
    public static let minDelta = ConfigKey("min_delta")
}

/// A learning-rate schedule with the parameters it reads (`LRSchedule` has the formulas).
public enum ScheduleRule: Equatable, Sendable {
    case constant
    case step(every: Int, gamma: Double)
    case cosine(min: Double)
    case plateau(patience: Int, factor: Double, min: Double)

    public typealias Kind = LRSchedule.Kind
    public static let every = 10, gamma = 0.1, min = 0.0, patience = 10, factor = 0.1

    public init(_ kind: Kind) {
        switch kind {
        case .constant: self = .constant
        case .step: self = .step(every: Self.every, gamma: Self.gamma)
        case .cosine: self = .cosine(min: Self.min)
        case .plateau: self = .plateau(patience: Self.patience, factor: Self.factor, min: Self.min)
        }
    }

    public var kind: Kind {
        switch self {
        case .constant: return .constant
        case .step: return .step
        case .cosine: return .cosine
        case .plateau: return .plateau
        }
    }

    /// A parameter of another schedule: refused unless it is the default.
    func notRead<V: Equatable>(_ key: ConfigKey, _ v: V, _ fallback: V, by readers: [Kind]) throws {
        guard v != fallback else { return }
        let names = readers.map(\.rawValue)
        throw ConfigProblem(key, "is read only by --lr-schedule \(names.joined(separator: " or ")), and this run's schedule is \(kind.rawValue); add --lr-schedule \(names[0]) or drop \(key.flag)")
    }

    public mutating func set(stepEpochs n: Int) throws {
        guard case let .step(_, g) = self else { return try notRead(.lrStepEpochs, n, Self.every, by: [.step]) }
        self = .step(every: n, gamma: g)
    }
    public mutating func set(gamma g: Double) throws {
        guard case let .step(n, _) = self else { return try notRead(.lrGamma, g, Self.gamma, by: [.step]) }
        self = .step(every: n, gamma: g)
    }
    public mutating func set(min m: Double) throws {
        switch self {
        case .cosine: self = .cosine(min: m)
        case let .plateau(p, f, _): self = .plateau(patience: p, factor: f, min: m)
        default: try notRead(.lrMin, m, Self.min, by: [.cosine, .plateau])
        }
    }
    public mutating func set(patience p: Int) throws {
        guard case let .plateau(_, f, m) = self else { return try notRead(.lrPatience, p, Self.patience, by: [.plateau]) }
        self = .plateau(patience: p, factor: f, min: m)
    }
    public mutating func set(factor f: Double) throws {
        guard case let .plateau(p, _, m) = self else { return try notRead(.lrFactor, f, Self.factor, by: [.plateau]) }
        self = .plateau(patience: p, factor: f, min: m)
    }
}

/// `--lr-schedule` and its parameters, and the warmup every schedule has.
public struct ScheduleConfig: ConfigGroup {
    public var rule = ScheduleRule.constant
    public var warmupEpochs = 0.0
    public init() {}

    public func write(to w: inout FlatWriter) {
        w.write(.lrSchedule, rule.kind)
        switch rule {
        case .constant: break
        case let .step(n, g): w.write(.lrStepEpochs, n); w.write(.lrGamma, g)
        case let .cosine(m): w.write(.lrMin, m)
        case let .plateau(p, f, m): w.write(.lrMin, m); w.write(.lrPatience, p); w.write(.lrFactor, f)
        }
        w.write(.warmupEpochs, warmupEpochs)
    }

    public init(from r: FlatReader) throws {
        rule = ScheduleRule(try r.choice(.lrSchedule) ?? .constant)
        if let v = try r.int(.lrStepEpochs) { try rule.set(stepEpochs: v) }
        if let v = try r.double(.lrGamma) { try rule.set(gamma: v) }
        if let v = try r.double(.lrMin) { try rule.set(min: v) }
        warmupEpochs = try r.double(.warmupEpochs) ?? warmupEpochs
        if let v = try r.int(.lrPatience) { try rule.set(patience: v) }
        if let v = try r.double(.lrFactor) { try rule.set(factor: v) }
    }

    /// Ranges; `RunConfig.problem` adds the rules that involve other groups (lr_min <= lr).
    public func problem() -> ConfigProblem? {
        switch rule {
        case .constant, .cosine: break
        case let .step(n, g):
            if n < 1 || n > 1_000_000 { return ConfigProblem(.lrStepEpochs, "must be from 1 to 1000000 (got \(n))") }
            if !(g > 0 && g <= 1) { return ConfigProblem(.lrGamma, "must be in (0, 1] (got \(g))") }
        case let .plateau(p, f, _):
            if p < 0 || p > 1_000_000 { return ConfigProblem(.lrPatience, "must be from 0 to 1000000 (got \(p))") }
            if !(f > 0 && f < 1) { return ConfigProblem(.lrFactor, "must be in (0, 1) (got \(f))") }
        }
        if !(warmupEpochs.isFinite && warmupEpochs >= 0 && warmupEpochs <= 1_000_000) { return ConfigProblem(.warmupEpochs, "must be from 0 to 1000000 (got \(warmupEpochs))") }
        return nil
    }

    /// The lowest rate the schedule reaches (cosine and plateau), checked against `--lr`.
    var minimumRate: Double? {
        switch rule {
        case let .cosine(m), let .plateau(_, _, m): return m
        default: return nil
        }
    }

    /// The schedule with its starting rate.
    public func schedule(baseLR: Double) -> LRSchedule {
        var s = LRSchedule(kind: rule.kind, baseLR: baseLR, warmupEpochs: warmupEpochs)
        switch rule {
        case .constant: break
        case let .step(n, g): (s.stepEpochs, s.gamma) = (n, g)
        case let .cosine(m): s.minLR = m
        case let .plateau(p, f, m): (s.patience, s.factor, s.minLR) = (p, f, m)
        }
        return s
    }
}

/// `--early-stop N` and what it watches; off is its own case, so its settings exist only when on.
public enum StoppingConfig: ConfigGroup {
    case off
    case after(patience: Int, monitor: EarlyStopping.Monitor, minDelta: Double)

    public init() { self = .off }
    public static let monitor = EarlyStopping.Monitor.valLoss, minDelta = 0.0

    public var patience: Int {
        if case let .after(p, _, _) = self { return p }
        return 0
    }

    /// N epochs without improvement; 0 is off (keeping what it watches).
    public mutating func set(patience p: Int) {
        switch self {
        case .off: self = p == 0 ? .off : .after(patience: p, monitor: Self.monitor, minDelta: Self.minDelta)
        case let .after(_, m, d): self = p == 0 ? .off : .after(patience: p, monitor: m, minDelta: d)
        }
    }
    public mutating func set(monitor m: EarlyStopping.Monitor) throws {
        guard case let .after(p, _, d) = self else {
            if m != Self.monitor { throw ConfigProblem(.monitor, "is what --early-stop watches, and early stopping is off; add --early-stop N (for example 5) or drop --monitor") }
            return
        }
        self = .after(patience: p, monitor: m, minDelta: d)
    }
    public mutating func set(minDelta d: Double) throws {
        guard case let .after(p, m, _) = self else {
            if d != Self.minDelta { throw ConfigProblem(.minDelta, "is read by --early-stop, and early stopping is off; add --early-stop N (for example 5) or drop --min-delta") }
            return
        }
        self = .after(patience: p, monitor: m, minDelta: d)
    }

    public func write(to w: inout FlatWriter) {
        w.write(.earlyStop, patience)
        if case let .after(_, m, d) = self {
            w.write(.monitor, m)
            w.write(.minDelta, d)
        }
    }

    public init(from r: FlatReader) throws {
        self = .off
        if let p = try r.int(.earlyStop) { set(patience: p) }
        if let m = try r.choice(.monitor, EarlyStopping.Monitor.self) { try set(monitor: m) }
        if let d = try r.double(.minDelta) { try set(minDelta: d) }
    }

    public func problem() -> ConfigProblem? {
        guard case let .after(p, _, d) = self else { return nil }
        if p < 0 || p > 1_000_000 { return ConfigProblem(.earlyStop, "must be from 0 (off) to 1000000 (got \(p))") }
        if !(d.isFinite && d >= 0) { return ConfigProblem(.minDelta, "must be a non-negative finite number (got \(d))") }
        return nil
    }

    /// The stopper, nil when off.
    public var stopper: EarlyStopping? {
        guard case let .after(p, m, d) = self else { return nil }
        return EarlyStopping(patience: p, monitor: m, minDelta: d)
    }
}
