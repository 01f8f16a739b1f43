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
    /// The optimizer and its settings (torch.optim's formulas; see `Optimizer.swift`).
    public var optimizer = OptimizerSettings.Kind.sgd
    public var momentum = 0.0
    public var nesterov = false
    public var beta1 = 0.9
    public var beta2 = 0.999
    public var adamEps = 1e-8
    public var alpha = 0.99
    public var weightDecay = 0.0
    public var decayScope = WeightDecayScope.all
    /// Learning-rate schedule (see `LRSchedule`).
    public var lrSchedule = LRSchedule.Kind.constant
    public var lrStepEpochs = 10
    public var lrGamma = 0.1
    public var lrMin = 0.0
    public var warmupEpochs = 0.0
    public var lrPatience = 10
    public var lrFactor = 0.1
    /// Early stopping: 0 is off.
    public var earlyStop = 0
    public var monitor = EarlyStopping.Monitor.valLoss
    public var minDelta = 0.0
    /// Global gradient-norm clipping: 0 is off.
    public var clipGradNorm = 0.0
    /// Activation trace (`TraceSpec` as written), every `traceEvery` steps over the first
    /// `traceExamples` test images; nil is off.
    public var trace: String?
    public var traceEvery = 100
    public var traceExamples = 500
    /// Test (and validation) evaluation every N training steps; 0 is off.
    public var evalEvery = 0
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
    /// Matrix-product arithmetic (bf16 mixed precision changes results: kept on resume).
    public var precision = Precision.fp32
    /// Which library runs the float32 products (speed only; may change between invocations).
    /// OpenBLAS by default: oneDNN 2.6's gemm allocates its packing buffer on every call, so
    /// only OpenBLAS keeps the training step free of allocations, and oneDNN's gain measured
    /// small (docs/precision.md).
    public var gemm = GEMMLibrary.openblas
    /// How float32 convolutions run (speed only; may change between invocations): oneDNN's
    /// direct convolutions where they measured faster, or im2col (allocation-free).
    public var conv = ConvolutionKernels.auto
    /// Images per test/validation batch; 0 = automatic (`Trainer.automaticEvalBatch`: up to
    /// 1000, fewer for wide convolutional nets). Memory and speed only: results do not depend on it.
    public var evalBatch = 0

    public init() {}

    public enum CodingKeys: String, CodingKey, CaseIterable {
        case data, model, epochs, batch, lr
        case optimizer, momentum, nesterov, beta1, beta2, adamEps = "adam_eps", alpha, weightDecay = "weight_decay", decayScope = "decay"
        case lrSchedule = "lr_schedule", lrStepEpochs = "lr_step_epochs", lrGamma = "lr_gamma", lrMin = "lr_min", warmupEpochs = "warmup_epochs"
        case lrPatience = "lr_patience", lrFactor = "lr_factor", earlyStop = "early_stop", monitor, minDelta = "min_delta", clipGradNorm = "clip_grad_norm"
        case trace, traceEvery = "trace_every", traceExamples = "trace_examples", evalEvery = "eval_every"
        case hidden
        case trainLimit = "train_limit", valSplit = "val_split", shuffle
        case batchNorm = "batchnorm", bnMomentum = "bn_momentum", bnEps = "bn_eps", bnRunningVar = "bn_running_var"
        case initialization = "init", seed, threads, precision, gemm, conv, evalBatch = "eval_batch"

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
            // Observing (tracing, step-wise evaluation) never changes training: a resumed run
            // keeps the checkpoint's settings unless given new ones.
            case .epochs, .threads, .gemm, .conv, .evalBatch, .data, .trace, .traceEvery, .traceExamples, .evalEvery: return false
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

    public var optimizerSettings: OptimizerSettings {
        var o = OptimizerSettings()
        o.kind = optimizer
        o.learningRate = lr
        o.momentum = momentum
        o.nesterov = nesterov
        o.beta1 = beta1
        o.beta2 = beta2
        o.eps = adamEps
        o.alpha = alpha
        o.weightDecay = weightDecay
        o.decayScope = decayScope
        return o
    }

    public var schedule: LRSchedule {
        LRSchedule(kind: lrSchedule, baseLR: lr, stepEpochs: lrStepEpochs, gamma: lrGamma, minLR: lrMin, warmupEpochs: warmupEpochs, patience: lrPatience, factor: lrFactor)
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
        let d = RunConfig()
        let sgdLike = optimizer == .sgd || optimizer == .rmsprop, adamLike = optimizer == .adam || optimizer == .adamw
        if !(momentum >= 0 && momentum < 1) { return p(.momentum, "must be in [0, 1) (got \(momentum))") }
        if momentum != d.momentum && !sgdLike { return p(.momentum, "applies to --optimizer sgd and rmsprop, not \(optimizer.rawValue)") }
        if nesterov && !(optimizer == .sgd && momentum > 0) { return p(.nesterov, "needs --optimizer sgd with --momentum above 0 (as torch.optim.SGD)") }
        if !(beta1 >= 0 && beta1 < 1) { return p(.beta1, "must be in [0, 1) (got \(beta1))") }
        if !(beta2 >= 0 && beta2 < 1) { return p(.beta2, "must be in [0, 1) (got \(beta2))") }
        if (beta1 != d.beta1 || beta2 != d.beta2) && !adamLike { return p(beta1 != d.beta1 ? .beta1 : .beta2, "applies to --optimizer adam and adamw, not \(optimizer.rawValue)") }
        if !(adamEps.isFinite && adamEps > 0) { return p(.adamEps, "must be a positive finite number (got \(adamEps))") }
        if adamEps != d.adamEps && optimizer == .sgd { return p(.adamEps, "applies to --optimizer adam, adamw and rmsprop, not sgd") }
        if !(alpha >= 0 && alpha < 1) { return p(.alpha, "must be in [0, 1) (got \(alpha))") }
        if alpha != d.alpha && optimizer != .rmsprop { return p(.alpha, "applies to --optimizer rmsprop, not \(optimizer.rawValue)") }
        if !(weightDecay.isFinite && weightDecay >= 0) { return p(.weightDecay, "must be a non-negative finite number (got \(weightDecay))") }
        if lrStepEpochs < 1 || lrStepEpochs > 1_000_000 { return p(.lrStepEpochs, "must be from 1 to 1000000 (got \(lrStepEpochs))") }
        if !(lrGamma > 0 && lrGamma <= 1) { return p(.lrGamma, "must be in (0, 1] (got \(lrGamma))") }
        if !(lrMin.isFinite && lrMin >= 0 && lrMin <= lr) { return p(.lrMin, "must be from 0 to --lr (got \(lrMin))") }
        if !(warmupEpochs.isFinite && warmupEpochs >= 0 && warmupEpochs <= 1_000_000) { return p(.warmupEpochs, "must be from 0 to 1000000 (got \(warmupEpochs))") }
        if lrPatience < 0 || lrPatience > 1_000_000 { return p(.lrPatience, "must be from 0 to 1000000 (got \(lrPatience))") }
        if !(lrFactor > 0 && lrFactor < 1) { return p(.lrFactor, "must be in (0, 1) (got \(lrFactor))") }
        if earlyStop < 0 || earlyStop > 1_000_000 { return p(.earlyStop, "must be from 0 (off) to 1000000 (got \(earlyStop))") }
        if !(minDelta.isFinite && minDelta >= 0) { return p(.minDelta, "must be a non-negative finite number (got \(minDelta))") }
        if !(clipGradNorm.isFinite && clipGradNorm >= 0) { return p(.clipGradNorm, "must be a non-negative finite number, 0 for off (got \(clipGradNorm))") }
        // The test set never steers training: plateau and early stopping watch validation data.
        if lrSchedule == .plateau && valSplit == 0 { return p(.lrSchedule, "plateau reduces the rate when the validation loss stalls; add --val-split (for example 0.1)") }
        if earlyStop > 0 && valSplit == 0 { return p(.earlyStop, "stops when the validation \(monitor == .valLoss ? "loss" : "accuracy") stalls; add --val-split (for example 0.1)") }
        if let t = trace {
            do { _ = try TraceSpec.parse(t) } catch let e as ModelSpec.ParseError { return p(.trace, e.message) } catch { return p(.trace, "\(error)") }
        }
        if traceEvery < 1 || traceEvery > 100_000_000 { return p(.traceEvery, "must be from 1 to 100000000 steps (got \(traceEvery))") }
        if traceExamples < 2 || traceExamples > 100_000 { return p(.traceExamples, "must be from 2 to 100000 (got \(traceExamples))") }
        if evalEvery < 0 || evalEvery > 100_000_000 { return p(.evalEvery, "must be from 0 (off) to 100000000 steps (got \(evalEvery))") }
        if let h = hidden, h < 1 || h > ModelSpec.maxWidth { return p(.hidden, "must be from 1 to \(ModelSpec.maxWidth) (got \(h))") }
        if let n = trainLimit, n < 1 { return p(.trainLimit, "must be at least 1 (got \(n))") }
        if !(valSplit >= 0 && valSplit < 1) { return p(.valSplit, "must be in [0, 1) (got \(valSplit)); 0.1 holds out a tenth") }
        if !(bnMomentum >= 0 && bnMomentum < 1) { return p(.bnMomentum, "must be in [0, 1) (got \(bnMomentum)); it is the decay of the running average, 0.9 matches PyTorch's momentum=0.1") }
        if !(bnEps.isFinite && bnEps > 0) { return p(.bnEps, "must be a positive finite number (got \(bnEps))") }
        if threads < 1 || threads > 1024 { return p(.threads, "must be from 1 to 1024 (got \(threads))") }
        if evalBatch < 0 || evalBatch > 1 << 24 { return p(.evalBatch, "must be from 1 to \(1 << 24), or 0 for automatic (got \(evalBatch))") }
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
        // The optimizer's and schedule's settings, each where it applies.
        try c.encode(optimizer.rawValue, forKey: .optimizer)
        if optimizer == .sgd || optimizer == .rmsprop { try c.encode(momentum, forKey: .momentum) }
        if optimizer == .sgd { try c.encode(nesterov ? "on" : "off", forKey: .nesterov) }
        if optimizer == .adam || optimizer == .adamw {
            try c.encode(beta1, forKey: .beta1)
            try c.encode(beta2, forKey: .beta2)
        }
        if optimizer != .sgd { try c.encode(adamEps, forKey: .adamEps) }
        if optimizer == .rmsprop { try c.encode(alpha, forKey: .alpha) }
        try c.encode(weightDecay, forKey: .weightDecay)
        if weightDecay > 0 { try c.encode(decayScope.rawValue, forKey: .decayScope) }
        try c.encode(lrSchedule.rawValue, forKey: .lrSchedule)
        if lrSchedule == .step {
            try c.encode(lrStepEpochs, forKey: .lrStepEpochs)
            try c.encode(lrGamma, forKey: .lrGamma)
        }
        if lrSchedule == .cosine || lrSchedule == .plateau { try c.encode(lrMin, forKey: .lrMin) }
        try c.encode(warmupEpochs, forKey: .warmupEpochs)
        if lrSchedule == .plateau {
            try c.encode(lrPatience, forKey: .lrPatience)
            try c.encode(lrFactor, forKey: .lrFactor)
        }
        try c.encode(earlyStop, forKey: .earlyStop)
        if earlyStop > 0 {
            try c.encode(monitor.rawValue, forKey: .monitor)
            try c.encode(minDelta, forKey: .minDelta)
        }
        try c.encode(clipGradNorm, forKey: .clipGradNorm)
        if let trace {
            try c.encode(trace, forKey: .trace)
            try c.encode(traceEvery, forKey: .traceEvery)
            try c.encode(traceExamples, forKey: .traceExamples)
        }
        if evalEvery > 0 { try c.encode(evalEvery, forKey: .evalEvery) }
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
        try c.encode(precision.rawValue, forKey: .precision)
        try c.encode(gemm.rawValue, forKey: .gemm)
        try c.encode(conv.rawValue, forKey: .conv)
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
        func decodeEnum<E: RawRepresentable>(_ key: CodingKeys, _ current: E) throws -> E where E.RawValue == String {
            guard let s = try c.decodeIfPresent(String.self, forKey: key) else { return current }
            guard let v = E(rawValue: s) else { throw bad(key, "is '\(s)', not a known value") }
            return v
        }
        optimizer = try decodeEnum(.optimizer, optimizer)
        momentum = try c.decodeIfPresent(Double.self, forKey: .momentum) ?? momentum
        if let s = try c.decodeIfPresent(String.self, forKey: .nesterov) {
            guard s == "on" || s == "off" else { throw bad(.nesterov, "is '\(s)', expected on or off") }
            nesterov = s == "on"
        }
        beta1 = try c.decodeIfPresent(Double.self, forKey: .beta1) ?? beta1
        beta2 = try c.decodeIfPresent(Double.self, forKey: .beta2) ?? beta2
        adamEps = try c.decodeIfPresent(Double.self, forKey: .adamEps) ?? adamEps
        alpha = try c.decodeIfPresent(Double.self, forKey: .alpha) ?? alpha
        weightDecay = try c.decodeIfPresent(Double.self, forKey: .weightDecay) ?? weightDecay
        decayScope = try decodeEnum(.decayScope, decayScope)
        lrSchedule = try decodeEnum(.lrSchedule, lrSchedule)
        lrStepEpochs = try c.decodeIfPresent(Int.self, forKey: .lrStepEpochs) ?? lrStepEpochs
        lrGamma = try c.decodeIfPresent(Double.self, forKey: .lrGamma) ?? lrGamma
        lrMin = try c.decodeIfPresent(Double.self, forKey: .lrMin) ?? lrMin
        warmupEpochs = try c.decodeIfPresent(Double.self, forKey: .warmupEpochs) ?? warmupEpochs
        lrPatience = try c.decodeIfPresent(Int.self, forKey: .lrPatience) ?? lrPatience
        lrFactor = try c.decodeIfPresent(Double.self, forKey: .lrFactor) ?? lrFactor
        earlyStop = try c.decodeIfPresent(Int.self, forKey: .earlyStop) ?? earlyStop
        monitor = try decodeEnum(.monitor, monitor)
        minDelta = try c.decodeIfPresent(Double.self, forKey: .minDelta) ?? minDelta
        clipGradNorm = try c.decodeIfPresent(Double.self, forKey: .clipGradNorm) ?? clipGradNorm
        trace = try c.decodeIfPresent(String.self, forKey: .trace)
        traceEvery = try c.decodeIfPresent(Int.self, forKey: .traceEvery) ?? traceEvery
        traceExamples = try c.decodeIfPresent(Int.self, forKey: .traceExamples) ?? traceExamples
        evalEvery = try c.decodeIfPresent(Int.self, forKey: .evalEvery) ?? evalEvery
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
        if let s = try c.decodeIfPresent(String.self, forKey: .precision) {
            guard let v = Precision(rawValue: s) else { throw bad(.precision, "is '\(s)', expected fp32 or bf16") }
            precision = v
        }
        if let s = try c.decodeIfPresent(String.self, forKey: .gemm) {
            guard let v = GEMMLibrary(rawValue: s) else { throw bad(.gemm, "is '\(s)', expected auto, openblas or onednn") }
            gemm = v
        }
        if let s = try c.decodeIfPresent(String.self, forKey: .conv) {
            guard let v = ConvolutionKernels(rawValue: s) else { throw bad(.conv, "is '\(s)', expected auto, onednn or im2col") }
            conv = v
        }
        evalBatch = try c.decodeIfPresent(Int.self, forKey: .evalBatch) ?? evalBatch
    }
}
