import BNCore
import Foundation

/// How the training examples are ordered each epoch.
public enum ShuffleMode: String, CaseIterable, Sendable, Codable {
    /// A fresh seeded shuffle every epoch.
    case epoch
    /// File order, every epoch (to compare step by step with other implementations).
    case none
}

/// Everything that defines a training run, as one typed value. Flags fill it; the `config`
/// record (`fields`), the checkpoint's `bntrain.config` JSON and `--resume`'s conflict check
/// (`resuming`) are all derived from its one `Codable` encoding.
///
/// The encoding keeps bntrain 0.3's representation (`train_limit` "all", `batchnorm`
/// on/off, `seed` as a string), so checkpoints from that release decode into it.
public struct RunConfig: Equatable, Sendable {
    /// Dataset folder (resolved before the run starts; `nil`: the default search).
    public var data: String?
    /// A preset name or a layer spec, as given (`spec()` resolves it).
    public var model = "dfn2"
    public var epochs = 20
    public var batch = 64
    public var lr = 0.01
    /// dfn2's hidden width (`nil`: 200). Not used by other models.
    public var hidden: Int?
    public var trainLimit: Int?
    public var valSplit = 0.0
    public var shuffle = ShuffleMode.epoch
    /// false: every BN layer of the model left out (`--no-batchnorm`).
    public var batchNorm = true
    public var bnMomentum = 0.9
    public var bnEps = 1e-5
    public var bnRunningVar = BatchNorm1D<Float>.RunningVariance.biased
    /// `glorot`, `he`, `std-normal`, or `from:PATH` (`--init-from`).
    public var initialization = Initializer.glorot.rawValue
    public var seed: UInt64 = 42
    public var threads = 1
    public var evalBatch = 1000

    public init() {}

    public enum CodingKeys: String, CodingKey, CaseIterable {
        case data, model, epochs, batch, lr, hidden
        case trainLimit = "train_limit", valSplit = "val_split", shuffle
        case batchNorm = "batchnorm", bnMomentum = "bn_momentum", bnEps = "bn_eps", bnRunningVar = "bn_running_var"
        case initialization = "init", seed, threads, evalBatch = "eval_batch"

        /// The flag that sets this key.
        public var flag: String {
            switch self {
            case .batchNorm: return "--no-batchnorm"
            default: return "--" + rawValue.replacingOccurrences(of: "_", with: "-")
            }
        }

        /// Keys a resumed run keeps from its checkpoint; the others (how long, where the data
        /// is, how many threads, the evaluation batch) may change between invocations.
        public var restoredOnResume: Bool {
            switch self {
            case .epochs, .threads, .evalBatch, .data: return false
            default: return true
            }
        }
    }

    // MARK: Derived values

    /// The model to build: the preset or spec, with dfn2's width and --no-batchnorm applied.
    public func spec() throws -> ModelSpec {
        let s = try ModelSpec.parse(model, hidden: hidden ?? ModelSpec.defaultHidden)
        return batchNorm ? s : s.removingBatchNorm()
    }

    public var buildOptions: BuildOptions {
        BuildOptions(bnMomentum: bnMomentum, bnEps: bnEps, runningVariance: bnRunningVar, initializer: Initializer(rawValue: initialization) ?? .glorot)
    }

    /// The encoding as ordered record fields.
    public var fields: [(String, Value)] { (try? FieldEncoder.fields(of: self)) ?? [] }

    // MARK: Validation

    /// The first value out of range, as (key, what is wrong and how to fix it); nil when all
    /// are usable. Flags and checkpoints are checked by the same rules.
    public func problem() -> (key: CodingKeys, message: String)? {
        func p(_ k: CodingKeys, _ m: String) -> (CodingKeys, String) { (k, m) }
        if epochs < 1 || epochs > 1_000_000 { return p(.epochs, "must be from 1 to 1000000 (got \(epochs))") }
        if batch < 1 || batch > 1 << 24 { return p(.batch, "must be from 1 to \(1 << 24) (got \(batch))") }
        if !(lr.isFinite && lr > 0) { return p(.lr, "must be a positive finite number (got \(lr))") }
        if let h = hidden, h < 1 || h > ModelSpec.maxWidth { return p(.hidden, "must be from 1 to \(ModelSpec.maxWidth) (got \(h))") }
        if let n = trainLimit, n < 1 { return p(.trainLimit, "must be at least 1 (got \(n))") }
        if !(valSplit >= 0 && valSplit < 1) { return p(.valSplit, "must be in [0, 1) (got \(valSplit)); 0.1 holds out a tenth") }
        if !(bnMomentum >= 0 && bnMomentum < 1) { return p(.bnMomentum, "must be in [0, 1) (got \(bnMomentum)); it is the decay of the running average, 0.9 matches PyTorch's momentum=0.1") }
        if !(bnEps.isFinite && bnEps > 0) { return p(.bnEps, "must be a positive finite number (got \(bnEps))") }
        if threads < 1 || threads > 1024 { return p(.threads, "must be from 1 to 1024 (got \(threads))") }
        if evalBatch < 1 || evalBatch > 1 << 24 { return p(.evalBatch, "must be from 1 to \(1 << 24) (got \(evalBatch))") }
        if !initialization.hasPrefix("from:") && Initializer(rawValue: initialization) == nil {
            return p(.initialization, "must be one of \(Initializer.allCases.map(\.rawValue).joined(separator: ", ")) (got '\(initialization)')")
        }
        do { _ = try spec() } catch let e as ModelSpec.ParseError { return p(.model, e.message) } catch { return p(.model, "\(error)") }
        if hidden != nil && model != "dfn2" {
            return p(.hidden, "sets the width of the dfn2 preset only; write the widths into the --model spec instead (fc256-...)")
        }
        return nil
    }

    // MARK: Resume

    /// One command-line flag's effect on the configuration.
    public struct Setting {
        public let key: CodingKeys
        public let apply: (inout RunConfig) -> Void
        public init(_ key: CodingKeys, _ apply: @escaping (inout RunConfig) -> Void) {
            self.key = key
            self.apply = apply
        }
    }

    /// A fresh run: the defaults with every given flag applied.
    public static func fresh(_ settings: [Setting]) -> RunConfig {
        var c = RunConfig()
        for s in settings { s.apply(&c) }
        return c
    }

    /// A resumed run: the checkpoint's configuration, with the per-invocation flags applied
    /// (epochs, threads, eval batch; the data folder when given). A given flag that would
    /// change a restored value is a conflict, returned as `--flag VALUE (checkpoint: VALUE)`.
    public static func resuming(_ saved: RunConfig, with settings: [Setting]) -> (config: RunConfig, conflicts: [String]) {
        var config = saved
        var conflicts: [String] = []
        let savedFields = Dictionary(saved.fields, uniquingKeysWith: { a, _ in a })
        for s in settings {
            var changed = saved
            s.apply(&changed)
            let mine = Dictionary(changed.fields, uniquingKeysWith: { a, _ in a })
            if s.key.restoredOnResume {
                // Compare every field, not just `key`: --hidden also decides whether hidden is encoded.
                for k in CodingKeys.allCases where mine[k.rawValue] != savedFields[k.rawValue] {
                    let show = { (v: Value?) in v.map { $0.text } ?? "unset" }
                    let value = s.key == .batchNorm ? "" : " " + show(mine[k.rawValue])
                    conflicts.append("\(s.key.flag)\(value) (checkpoint: \(k == .batchNorm ? "batchnorm " : "")\(show(savedFields[k.rawValue])))")
                    break
                }
            } else {
                s.apply(&config)
            }
        }
        return (config, conflicts)
    }
}

extension RunConfig: Codable {
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(data, forKey: .data)
        try c.encode(model, forKey: .model)
        try c.encode(epochs, forKey: .epochs)
        try c.encode(batch, forKey: .batch)
        try c.encode(lr, forKey: .lr)
        if model == "dfn2" { try c.encode(hidden ?? ModelSpec.defaultHidden, forKey: .hidden) } else { try c.encodeIfPresent(hidden, forKey: .hidden) }
        if let n = trainLimit { try c.encode(n, forKey: .trainLimit) } else { try c.encode("all", forKey: .trainLimit) }
        try c.encode(valSplit, forKey: .valSplit)
        try c.encode(shuffle.rawValue, forKey: .shuffle)
        try c.encode(batchNorm ? "on" : "off", forKey: .batchNorm)
        try c.encode(bnMomentum, forKey: .bnMomentum)
        try c.encode(bnEps, forKey: .bnEps)
        try c.encode(bnRunningVar.rawValue, forKey: .bnRunningVar)
        try c.encode(initialization, forKey: .initialization)
        try c.encode(String(seed), forKey: .seed)
        try c.encode(threads, forKey: .threads)
        try c.encode(evalBatch, forKey: .evalBatch)
    }

    /// Missing keys keep their defaults (older checkpoints); present ones must have the right
    /// type and spelling. Ranges are checked by `problem()`, as for flags.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func bad(_ k: CodingKeys, _ why: String) -> DecodingError {
            .dataCorruptedError(forKey: k, in: c, debugDescription: why)
        }
        data = try c.decodeIfPresent(String.self, forKey: .data)
        model = try c.decodeIfPresent(String.self, forKey: .model) ?? model
        epochs = try c.decodeIfPresent(Int.self, forKey: .epochs) ?? epochs
        batch = try c.decodeIfPresent(Int.self, forKey: .batch) ?? batch
        lr = try c.decodeIfPresent(Double.self, forKey: .lr) ?? lr
        hidden = try c.decodeIfPresent(Int.self, forKey: .hidden)
        if model == "dfn2" && hidden == ModelSpec.defaultHidden { hidden = nil }
        if let s = try? c.decodeIfPresent(String.self, forKey: .trainLimit) {
            guard s == "all" else { throw bad(.trainLimit, "is '\(s)', expected a count or \"all\"") }
        } else {
            trainLimit = try c.decodeIfPresent(Int.self, forKey: .trainLimit)
        }
        valSplit = try c.decodeIfPresent(Double.self, forKey: .valSplit) ?? valSplit
        if let s = try c.decodeIfPresent(String.self, forKey: .shuffle) {
            guard let v = ShuffleMode(rawValue: s) else { throw bad(.shuffle, "is '\(s)', expected epoch or none") }
            shuffle = v
        }
        if let s = try c.decodeIfPresent(String.self, forKey: .batchNorm) {
            guard s == "on" || s == "off" else { throw bad(.batchNorm, "is '\(s)', expected on or off") }
            batchNorm = s == "on"
        }
        bnMomentum = try c.decodeIfPresent(Double.self, forKey: .bnMomentum) ?? bnMomentum
        bnEps = try c.decodeIfPresent(Double.self, forKey: .bnEps) ?? bnEps
        if let s = try c.decodeIfPresent(String.self, forKey: .bnRunningVar) {
            guard let v = BatchNorm1D<Float>.RunningVariance(rawValue: s) else { throw bad(.bnRunningVar, "is '\(s)', expected biased or unbiased") }
            bnRunningVar = v
        }
        initialization = try c.decodeIfPresent(String.self, forKey: .initialization) ?? initialization
        if let s = try c.decodeIfPresent(String.self, forKey: .seed) {
            guard let v = UInt64(s) else { throw bad(.seed, "is '\(s)', expected an unsigned 64-bit integer") }
            seed = v
        }
        threads = try c.decodeIfPresent(Int.self, forKey: .threads) ?? threads
        evalBatch = try c.decodeIfPresent(Int.self, forKey: .evalBatch) ?? evalBatch
    }
}
