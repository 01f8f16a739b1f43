import BNCore
import Foundation

extension ConfigKey {
    public static let epochs = ConfigKey("epochs", restoredOnResume: false)
    public static let batch = ConfigKey("batch")
    public static let seed = ConfigKey("seed")
}

/// Everything that defines a training run, as one typed value made of groups. Flags fill it;
/// the `config` record (`fields`), the checkpoint's `bntrain.config` JSON and `--resume`'s
/// conflict check (`resuming`) are all derived from its one flat encoding, which each group
/// writes and reads for itself (`ConfigGroup`).
///
/// The encoding keeps bntrain 0.3's representation (`train_limit` "all", `batchnorm`
/// on/off, `seed` as a string), so checkpoints from that release decode into it.
public struct RunConfig: Equatable, Sendable {
    /// Passes over the training set (with --resume: the total to reach).
    public var epochs = 20
    public var batch = 64
    /// The root of every random stream (subset, split, init, shuffle, dropout).
    public var seed: UInt64 = 42
    public var model = ModelConfig()
    public var optimizer = OptimizerConfig()
    public var schedule = ScheduleConfig()
    public var stopping = StoppingConfig()
    public var data = DataConfig()
    public var observation = ObservationConfig()
    public var kernels = KernelConfig()
    public var parallel = ParallelConfig()
    public var normalization = NormalizationConfig()

    public init() {}

    /// bntrain 0.4's order of the `config` record's fields, kept so that records stay
    /// comparable across versions; a key not listed here follows, in the order written.
    static let recordOrder = [
        "data", "model", "epochs", "batch", "lr", "optimizer", "momentum", "nesterov", "beta1", "beta2", "adam_eps", "alpha",
        "weight_decay", "decay", "lr_schedule", "lr_step_epochs", "lr_gamma", "lr_min", "warmup_epochs", "lr_patience", "lr_factor",
        "early_stop", "monitor", "min_delta", "clip_grad_norm", "trace", "trace_every", "trace_examples", "eval_every", "hidden",
        "train_limit", "val_split", "shuffle", "batchnorm", "bn_momentum", "bn_eps", "bn_running_var", "init", "seed",
        "threads", "precision", "gemm", "conv", "eval_batch", "workers", "shard_size", "bn_sync", "bn_stats", "precise_bn_examples", "bn_ghost", "bn_renorm", "renorm_rmax", "renorm_dmax", "bn_freeze_after",
    ]

    /// The encoding as ordered record fields.
    public var fields: [(String, Value)] {
        var w = FlatWriter()
        w.write(.epochs, epochs)
        w.write(.batch, batch)
        w.write(.seed, String(seed))
        for g in groups { g.write(to: &w) }
        let rank = Dictionary(uniqueKeysWithValues: Self.recordOrder.enumerated().map { ($1, $0) })
        return w.fields.enumerated().sorted { a, b in
            (rank[a.element.0] ?? Self.recordOrder.count + a.offset, a.offset) < (rank[b.element.0] ?? Self.recordOrder.count + b.offset, b.offset)
        }.map(\.element)
    }

    var groups: [any ConfigGroup] { [model, optimizer, schedule, stopping, data, observation, kernels, parallel, normalization] }

    // MARK: Derived values

    public func spec() throws -> ModelSpec { try model.resolved() }
    public var optimizerSettings: OptimizerSettings { optimizer.settings }
    public var schedulePlan: LRSchedule { schedule.schedule(baseLR: optimizer.lr) }

    // MARK: Validation

    /// The first value out of range, naming its key with what is wrong and how to fix it; nil
    /// when all are usable. Flags and checkpoints are checked by the same rules.
    public func problem() -> ConfigProblem? {
        if epochs < 1 || epochs > 1_000_000 { return ConfigProblem(.epochs, "must be from 1 to 1000000 (got \(epochs))") }
        if batch < 1 || batch > 1 << 24 { return ConfigProblem(.batch, "must be from 1 to \(1 << 24) (got \(batch))") }
        if let p = optimizer.problem() ?? schedule.problem() { return p }
        if let m = schedule.minimumRate, !(m.isFinite && m >= 0 && m <= optimizer.lr) { return ConfigProblem(.lrMin, "must be from 0 to --lr (got \(m))") }
        if let p = stopping.problem() { return p }
        // The test set never steers training: plateau and early stopping watch validation data.
        if schedule.rule.kind == .plateau && data.valSplit == 0 { return ConfigProblem(.lrSchedule, "plateau reduces the rate when the validation loss stalls; add --val-split (for example 0.1)") }
        if case let .after(_, monitor, _) = stopping, data.valSplit == 0 {
            return ConfigProblem(.earlyStop, "stops when the validation \(monitor == .valLoss ? "loss" : "accuracy") stalls; add --val-split (for example 0.1)")
        }
        return observation.problem() ?? data.problem() ?? kernels.problem() ?? parallel.problem() ?? normalization.problem() ?? model.problem()
    }

    // MARK: Flags and resume

    /// One command-line flag's effect on the configuration. `apply` throws a `ConfigProblem`
    /// when the flag does not apply (a parameter of another optimizer or schedule).
    public struct Setting {
        public let key: ConfigKey
        public let apply: (inout RunConfig) throws -> Void
        public init(_ key: ConfigKey, _ apply: @escaping (inout RunConfig) throws -> Void) {
            self.key = key
            self.apply = apply
        }
    }

    /// Settings in the record's order, so that a choice comes before its parameters
    /// (`optimizer` before `beta1`) and conflicts are listed as the record lists the keys.
    static func ordered(_ settings: [Setting]) -> [Setting] {
        let rank = { (s: Setting) in recordOrder.firstIndex(of: s.key.name) ?? recordOrder.count }
        return settings.enumerated().sorted { (rank($0.element), $0.offset) < (rank($1.element), $1.offset) }.map(\.element)
    }

    /// A fresh run: the defaults with every given flag applied.
    public static func fresh(_ settings: [Setting]) throws -> RunConfig {
        var c = RunConfig()
        for s in ordered(settings) { try s.apply(&c) }
        return c
    }

    /// A resumed run: the checkpoint's configuration, with the per-invocation flags applied
    /// (epochs, threads, eval batch; the data folder when given). A given flag that would
    /// change a restored value is a conflict, returned as `--flag VALUE (checkpoint: VALUE)`.
    public static func resuming(_ saved: RunConfig, with settings: [Setting]) throws -> (config: RunConfig, conflicts: [String]) {
        var config = saved
        var conflicts: [String] = []
        let savedFields = Dictionary(saved.fields, uniquingKeysWith: { a, _ in a })
        for s in ordered(settings) {
            var changed = saved
            try s.apply(&changed)
            if s.key.restoredOnResume {
                // Compare every field, not just `key`: --hidden also decides whether hidden is encoded.
                let mine = changed.fields
                let keys = Set(mine.map(\.0)).union(savedFields.keys)
                let mineByKey = Dictionary(mine, uniquingKeysWith: { a, _ in a })
                for k in recordOrder + keys.sorted() where keys.contains(k) && mineByKey[k] != savedFields[k] {
                    let show = { (v: Value?) in v.map { $0.text } ?? "unset" }
                    let value = s.key == .batchNorm ? "" : " " + show(mineByKey[k])
                    conflicts.append("\(s.key.flag)\(value) (checkpoint: \(k == ConfigKey.batchNorm.name ? "batchnorm " : "")\(show(savedFields[k])))")
                    break
                }
            } else {
                try s.apply(&config)
            }
        }
        return (config, conflicts)
    }
}

extension RunConfig: Codable {
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: FlatReader.Key.self)
        for (k, v) in fields {
            let key = FlatReader.Key(k)
            switch v {
            case let .int(i): try c.encode(i, forKey: key)
            case let .exact(x), let .number(x, _), let .scientific(x): try c.encode(x, forKey: key)
            case let .string(s): try c.encode(s, forKey: key)
            }
        }
    }

    /// Missing keys keep their defaults (older checkpoints); present ones must have the right
    /// type and spelling, and apply to the run's optimizer and schedule (a `ConfigProblem`
    /// otherwise). Ranges are checked by `problem()`, as for flags.
    public init(from decoder: Decoder) throws {
        let r = try FlatReader(decoder)
        epochs = try r.int(.epochs) ?? epochs
        batch = try r.int(.batch) ?? batch
        seed = try r.uint64(.seed) ?? seed
        model = try ModelConfig(from: r)
        optimizer = try OptimizerConfig(from: r)
        schedule = try ScheduleConfig(from: r)
        stopping = try StoppingConfig(from: r)
        data = try DataConfig(from: r)
        observation = try ObservationConfig(from: r)
        kernels = try KernelConfig(from: r)
        parallel = try ParallelConfig(from: r)
        normalization = try NormalizationConfig(from: r)
    }
}
