import BNCheckpoint
import BNCore
import BNData
import Foundation

/// Per-invocation outputs of a run (not part of its configuration).
public struct RunOutputs: Sendable {
    /// Checkpoint path (`--save`), written every `saveEvery` epochs and after the last, or
    /// only when validation accuracy improves (`saveBest`).
    public var save: String?
    public var saveEvery = 1
    public var saveBest = false
    /// Epoch records also go to this file (.jsonl or .csv).
    public var metrics: String?
    /// Resume even when the dataset differs from the one the checkpoint was trained on.
    public var allowDataChange = false
    public init() {}
}

/// Why a run ended without finishing all its epochs.
public enum TrainingStop: Error, Equatable {
    /// A signal asked it to stop (exit 128 + signal); what was saved has been reported.
    case interrupted(signal: Int32)
}

/// A training run over a loaded dataset: build or restore the model, train epoch by epoch,
/// evaluate, emit records, save checkpoints. Everything but flag parsing and process set-up,
/// so that tests drive it in-process.
public final class Trainer {
    public let config: RunConfig
    public let outputs: RunOutputs
    public let dataset: Dataset
    public let spec: ModelSpec
    /// Images per test/validation batch: --eval-batch, or `automaticEvalBatch` when not given.
    public let evalBatch: Int
    public let network: Network<Float>
    /// The step over the canonical shards of each batch, on `workers` threads; its model is
    /// `network` (docs/parallel.md).
    public let parallel: DataParallel<Float>
    /// The kernels the network computes with (its precision, libraries and caches).
    public let kernels: Kernels
    public let optimizer: any Optimizer<Float>
    /// Where the run resumes (nil for a fresh run).
    public private(set) var state: TrainingState

    let trainIndices: [Int32]
    let valIndices: [Int32]
    let sink: RecordSink
    let diagnostics: (String) -> Void
    let loadSeconds: Double
    let resumed: Bool
    /// The checkpoint a resumed run continues, for naming it in errors about its values.
    let resumePath: String?
    /// What the run trains on (sizes and a content digest), recorded in checkpoints.
    let dataIdentity: String
    /// The activation trace, when asked for.
    let tracer: Tracer?
    /// `--bn-stats precise`: the pass that recomputes the BN statistics after every epoch.
    let precise: PreciseBatchNorm?
    let traceIndex: Int

    /// - config: the run (its `data` is the resolved folder, recorded as is).
    /// - resume: a checkpoint to continue (its config must equal `config` in every restored key).
    /// - initFrom: weights to start from instead of the initializer.
    public init(
        config: RunConfig, outputs: RunOutputs, dataset: Dataset, loadSeconds: Double = 0, ranks: Ranks? = nil,
        resume: (checkpoint: Checkpoint, path: String)? = nil, initFrom: (checkpoint: Checkpoint, path: String)? = nil,
        sink: RecordSink, diagnostics: @escaping (String) -> Void = { _ in }
    ) throws {
        resumePath = resume?.path
        // A value restored from a checkpoint is named as the checkpoint's, not as a flag the
        // user never gave.
        let origin = { (key: ConfigKey) -> String in
            if let p = resume?.path, key.restoredOnResume { return "checkpoint '\(p)': its \(key.name)" }
            return key.flag
        }
        // A bad restored value is a bad checkpoint (65); a bad flag a usage error (64).
        let code = { (key: ConfigKey) -> FailureKind in resume != nil && key.restoredOnResume ? .badInput : .usage }
        if let p = config.problem() { throw fail("\(origin(p.key)) \(p.message)", kind: code(p.key)) }
        self.config = config
        self.outputs = outputs
        self.dataset = dataset
        self.loadSeconds = loadSeconds
        self.sink = sink
        self.diagnostics = diagnostics
        spec = try config.spec()
        // The input as an image (one channel, the IDX rows x cols) for convolutional models.
        let image = ImageShape(1, dataset.rows, dataset.cols)
        // Shapes and counts first: every size below is derived from them.
        do { _ = try spec.summary(inputs: dataset.featureCount, classes: dataset.classes, image: image) } catch let e as ModelSpec.ParseError {
            throw fail("\(origin(.model)) \(e.message)", kind: code(.model))
        }
        if let n = config.data.trainLimit, n > dataset.train.count {
            throw fail("\(origin(.trainLimit)) \(n) is larger than the \(dataset.train.count) training images in '\(dataset.files.trainImages)'; use at most \(dataset.train.count)", kind: code(.trainLimit))
        }
        // Independent streams, so that e.g. --train-limit does not change the initial weights.
        var subsetRNG = SplitMix64(seed: config.seed, stream: "subset")
        var valRNG = SplitMix64(seed: config.seed, stream: "validation")
        var initRNG = SplitMix64(seed: config.seed, stream: "init")
        let subset = randomSubset(total: dataset.train.count, limit: config.data.trainLimit, rng: &subsetRNG)
        (trainIndices, valIndices) = validationSplit(subset, fraction: config.data.valSplit, rng: &valRNG)
        if trainIndices.isEmpty {
            throw fail("\(origin(.valSplit)) \(config.data.valSplit) leaves no training images out of \(subset.count); use a smaller fraction", kind: code(.valSplit))
        }
        if config.batch > trainIndices.count {
            throw fail("\(origin(.batch)) \(config.batch) is larger than the \(trainIndices.count) training images; use at most \(trainIndices.count)", kind: code(.batch))
        }
        if outputs.saveBest && valIndices.isEmpty {
            throw fail("--save-best keeps the epoch with the best validation accuracy, but this run has no validation data (\(origin(.valSplit)) is 0); drop --save-best or start a run with --val-split", kind: .usage)
        }
        // The digest reads every pixel once (tens of ms for 70,000 images): only when it is used.
        dataIdentity = (outputs.save != nil || resume != nil || ranks != nil) ? dataset.identity : ""
        // Every rank reads the dataset itself: all must have read the same one.
        if let ranks, ranks.count > 1 {
            func padded(_ text: String, _ n: Int) -> [UInt8] { Array((Array(text.utf8) + [UInt8](repeating: 0, count: n)).prefix(n)) }
            let mine = padded(dataIdentity, 192) + padded(ranks.host, 64)
            let all = ranks.allGather(mine)
            for (r, theirs) in all.enumerated() where theirs.prefix(192) != all[0].prefix(192) {
                let host = String(decoding: theirs.suffix(64).prefix { $0 != 0 }, as: UTF8.self)
                let what = String(decoding: theirs.prefix(192).prefix { $0 != 0 }, as: UTF8.self)
                let first = String(decoding: all[0].prefix(192).prefix { $0 != 0 }, as: UTF8.self)
                throw fail("rank \(r) (\(host)) read other data than rank 0 from \(config.data.folder): \(what) against \(first); give every rank the same dataset", kind: .badInput)
            }
        }
        // The trace target, and whether the network must be built unfused to expose it (the
        // value between an fc and its sigmoid, or a 2-D bn and its relu, exists only when they
        // are two layers;
        // unfused, the same arithmetic runs in the same order, so training is unchanged).
        var options = config.model.buildOptions
        // The network's own kernels: what this trainer's config says, whatever else runs in
        // the process.
        do { kernels = try config.kernels.makeKernels() } catch let e as MatMul.ConfigurationError {
            throw fail("\(e)", kind: .usage)  // the message names the flag
        }
        var target: (spec: TraceSpec, index: Int, width: Int)?
        if let t = config.observation.trace {
            do {
                let ts = try TraceSpec.parse(t)
                let (index, width) = try ts.resolve(in: spec, inputs: dataset.featureCount, classes: dataset.classes, image: image)
                target = (ts, index, width)
                // A fused pair (fc-sigmoid, bn-relu) hides the value between its two layers.
                let preActivation = (ts.side == .output && spec.mayFuseWithNext(index)) || (ts.side == .input && spec.mayFuseWithNext(index - 1))
                if preActivation { options.fuse = false }
            } catch let e as ModelSpec.ParseError {
                throw fail("\(origin(.trace)) \(e.message)", kind: code(.trace))
            }
        }
        // Refuse, before allocating, a model that cannot fit (sizes are bounded, so the estimate
        // cannot overflow: it is computed in Double).
        evalBatch = config.kernels.evalBatch > 0 ? config.kernels.evalBatch : Trainer.automaticEvalBatch(spec: spec, inputs: dataset.featureCount, image: image, classes: dataset.classes)
        // A trace keeps its values and runs its probe set in chunks of the automatic evaluation
        // batch (whatever --eval-batch says, so the values do not depend on it).
        let traceExamples = min(config.observation.traceExamples, dataset.test.count)
        let traceChunk = Trainer.automaticEvalBatch(spec: spec, inputs: dataset.featureCount, image: image, classes: dataset.classes)
        var traceFloats = 0.0
        if let target {
            let chunkFloats = 4 * Double(min(traceChunk, traceExamples)) * Trainer.floatsPerImage(spec: spec, inputs: dataset.featureCount, image: image, classes: dataset.classes)
            traceFloats = Tracer.storedFloats(examples: traceExamples, width: target.width) + chunkFloats
        }
        let needed = Trainer.memoryEstimate(spec: spec, inputs: dataset.featureCount, image: image, classes: dataset.classes, batch: config.batch, evalBatch: min(evalBatch, max(dataset.test.count, valIndices.count)), extraFloats: traceFloats)
        let available = Memory.physicalBytes
        if needed > Double(available) / 2 {
            let traced = traceFloats > 0 ? " and \(origin(.trace)) of \(traceExamples) examples (\(Memory.describe(Int(min(4 * traceFloats, 9e18)))))" : ""
            let fix = traceFloats > 0 ? "use narrower layers, a smaller batch, fewer \(origin(.traceExamples)) or another traced layer" : "use narrower layers or a smaller batch"
            throw fail("\(origin(.model)) '\(spec.canonical)' with \(origin(.batch)) \(config.batch)\(traced) needs about \(Memory.describe(Int(min(needed, 9e18)))) for its weights and activations, more than half of this machine's \(Memory.describe(available)); \(fix)", kind: .usage)
        }
        do {
            network = try spec.build(
                Float.self, inputs: dataset.featureCount, classes: dataset.classes, image: image, options: options,
                kernels: kernels, rng: &initRNG, dropoutRNG: SplitMix64(seed: config.seed, stream: "dropout"))
        } catch let e as ModelSpec.ParseError {
            throw fail("--model \(e.message)", kind: .usage)
        }
        // One replica per further shard slot, sharing the network's weights and buffers, each
        // with kernels of its own (their scratch buffers are per thread of work).
        // Ghost BN: groups of G rows are groups of whole shards, the shard at most G rows.
        var shardSize = config.parallel.shardSize, ghostShards = 0
        if let g = config.normalization.ghost {
            if network.batchNorms.isEmpty && network.batchNorms2D.isEmpty {
                throw fail("\(origin(.bnGhost)) \(g) groups BN's training statistics, but model '\(spec.canonical)' has no bn layer; drop it or use a model with bn", kind: code(.bnGhost))
            }
            if g > config.batch {
                throw fail("\(origin(.bnGhost)) \(g) is larger than the batch (\(origin(.batch)) \(config.batch)); use a ghost size of at most \(config.batch)", kind: code(.bnGhost))
            }
            if config.parallel.bnSync == .off {
                throw fail("\(origin(.bnGhost)) and \(origin(.bnSync)) off both set the groups BN normalises over (off is ghost batches of one shard); give one of them", kind: code(.bnGhost))
            }
            if g > shardSize && g % shardSize != 0 {
                throw fail("\(origin(.bnGhost)) \(g) is not a multiple of \(origin(.shardSize)) \(shardSize) (ghost batches are whole shards); use a multiple, or a ghost size of at most \(shardSize)", kind: code(.bnGhost))
            }
            if g <= shardSize { (shardSize, ghostShards) = (g, 1) } else { ghostShards = g / shardSize }
        }
        let plan = ShardPlan(shardSize: shardSize)
        let slots = plan.shardCount(batch: config.batch)
        let workers = config.parallel.resolvedWorkers(ranksOnHost: ranks?.localCount ?? 1)
        var replicas: [Network<Float>] = []
        do {
            for _ in 1..<max(slots, 1) {
                var rng = SplitMix64(seed: 0)
                replicas.append(try spec.build(Float.self, inputs: dataset.featureCount, classes: dataset.classes, image: image, options: options, kernels: try config.kernels.makeKernels(), rng: &rng))
            }
        } catch let e as ModelSpec.ParseError {
            throw fail("--model \(e.message)", kind: .usage)
        } catch let e as MatMul.ConfigurationError {
            throw fail("\(e)", kind: .usage)
        }
        // oneDNN threads through OpenMP, whose thread count is per thread: each worker's
        // primitives then run on that worker alone (they are created on first use, there).
        let single = workers > 1
        guard let dp = DataParallel(model: network, replicas: replicas, plan: plan, workers: workers, batchNormSync: config.parallel.bnSync, ghostShards: ghostShards, ranks: ranks, setup: { _ in if single { OneDNN.shared?.setThreads(1) } }) else {
            throw fail("--workers \(workers): could not start \(workers - 1) worker threads; use fewer workers", kind: .usage)
        }
        parallel = dp
        if workers > slots {
            diagnostics("note: --workers \(workers) but a batch of \(config.batch) has \(slots) shard\(slots == 1 ? "" : "s") of at most \(plan.shardSize) rows; \(workers - min(workers, slots)) worker\(workers - slots == 1 ? "" : "s") will idle (use a larger --batch or a smaller --shard-size)")
        }
        let cores = CPUTopology.usableCPUs.count
        if dp.workers > cores {
            diagnostics("note: --workers \(dp.workers) is more than the \(cores) CPU\(cores == 1 ? "" : "s") this process may use; the workers will take turns (slower, same numbers)")
        }
        let hasBN = !(network.batchNorms.isEmpty && network.batchNorms2D.isEmpty)
        if config.normalization.renorm && !hasBN {
            throw fail("\(origin(.bnRenorm)) renormalises BN layers, but model '\(spec.canonical)' has no bn layer; drop it or use a model with bn", kind: code(.bnRenorm))
        }
        if let e = config.normalization.freezeAfter, !hasBN {
            throw fail("\(origin(.bnFreezeAfter)) \(e) freezes BN layers, but model '\(spec.canonical)' has no bn layer; drop it or use a model with bn", kind: code(.bnFreezeAfter))
        }
        if config.normalization.stats == .precise {
            if network.batchNorms.isEmpty && network.batchNorms2D.isEmpty {
                throw fail("\(origin(.bnStats)) precise recomputes BN statistics, but model '\(spec.canonical)' has no bn layer; drop it or use a model with bn", kind: code(.bnStats))
            }
            if let n = config.normalization.preciseExamples, n > trainIndices.count {
                throw fail("\(origin(.preciseExamples)) \(n) is more than the \(trainIndices.count) training images; use at most \(trainIndices.count) or all", kind: code(.preciseExamples))
            }
            precise = PreciseBatchNorm(parallel: dp, split: dataset.train, examples: trainIndices.sorted(), limit: config.normalization.preciseExamples, batch: config.batch)
        } else {
            precise = nil
        }
        if let target {
            // The network layer computing the traced spec layer (the builder records which).
            let layer = network.specIndices.lastIndex { $0 <= target.index }!
            tracer = Tracer(spec: target.spec, networkLayer: layer, useOutput: target.spec.side == .output, width: target.width, images: dataset.test.images, examples: traceExamples, chunk: traceChunk, workers: dp.workers)
            traceIndex = target.index
        } else {
            tracer = nil
            traceIndex = 0
        }
        optimizer = config.optimizerSettings.make(Float.self)
        state = TrainingState()
        state.shuffleState = SplitMix64(seed: config.seed, stream: "shuffle").state
        state.dropoutState = network.randomStream.generator.state
        resumed = resume != nil
        do {
            if let (c, path) = resume {
                try checkModel(of: c, path: path)
                try c.load(into: network, path: path)
                var s = try TrainingState(metadata: c.metadata, path: path)
                if c.metadata["bntrain.dropout_rng"] == nil { s.dropoutState = state.dropoutState }
                state = s
                network.randomStream.generator.state = state.dropoutState
                try c.loadOptimizer(optimizer, network: network, path: path)
                let layers = dp.model.layers.compactMap { $0 as? any ShardSynchronizedNormalization<Float> }.map { ($0.name, $0.channels) }
                let ema = try c.loadBatchNormEMA(layers, path: path)
                if let precise {
                    guard let ema else { throw CheckpointError.malformed(path: path, reason: "it was saved with bn_stats precise but holds no bn_ema.* tensors (the EMA statistics a resumed run continues from)") }
                    precise.restore(ema: ema)
                } else if ema != nil {
                    throw CheckpointError.unexpectedTensor(path: path, name: "bn_ema.*")
                }
                if let saved = c.metadata["bntrain.data_identity"], saved != dataIdentity, !outputs.allowDataChange {
                    throw fail("--resume '\(path)' was trained on other data (\(saved)) than '\(config.data.folder ?? "")' (\(dataIdentity)); resume with its dataset, or pass --allow-data-change to continue on this one", kind: .usage)
                }
                let batches = (trainIndices.count + config.batch - 1) / config.batch
                guard state.step < batches else {
                    throw CheckpointError.malformed(path: path, reason: "metadata bntrain.step=\(state.step) is past the \(batches) steps of an epoch")
                }
            } else if let (c, path) = initFrom {
                // Any file whose tensors fit this model will do (another spec with the same
                // shapes, or a PyTorch state_dict); the shapes are checked tensor by tensor.
                try c.load(into: network, path: path, requireBuffers: false)
            }
        } catch let e as CheckpointError {
            throw fail(e.description, kind: .badInput)
        }
        if state.epoch >= config.epochs {
            throw fail("'\(resume?.path ?? "")' has already trained \(state.epoch) epochs; pass --epochs greater than \(state.epoch) to continue", kind: .usage)
        }
    }

    /// The evaluation batch when --eval-batch is not given (`Evaluation.automaticBatch` of the
    /// spec's layer widths): training, `eval` and `predict` all choose with this.
    public static func automaticEvalBatch(spec: ModelSpec, inputs: Int, image: ImageShape?, classes: Int) -> Int {
        let floats = floatsPerImage(spec: spec, inputs: inputs, image: image, classes: classes)
        return floats.isFinite ? Evaluation.automaticBatch(floatsPerImage: floats) : 1000
    }

    /// The input and every layer's output, per image (infinite for a spec that does not chain).
    static func floatsPerImage(spec: ModelSpec, inputs: Int, image: ImageShape?, classes: Int) -> Double {
        guard let rows = try? spec.summary(inputs: inputs, classes: classes, image: image) else { return .infinity }
        return rows.reduce(Double(inputs)) { $0 + Double($1.outputWidth) }
    }

    /// Bytes the model needs beyond the dataset: weights and gradients (3 copies with the
    /// optimizer's scratch), and per example of a training or evaluation batch about four
    /// buffers of each layer's width (output, input gradient, cached values).
    /// `extraFloats`: what an observer keeps besides (a trace's values).
    public static func memoryEstimate(spec: ModelSpec, inputs: Int, image: ImageShape, classes: Int, batch: Int, evalBatch: Int, extraFloats: Double = 0) -> Double {
        // A spec whose counts do not fit 64 bits, or whose shapes do not chain, fits nowhere.
        guard let rows = try? spec.summary(inputs: inputs, classes: classes, image: image) else { return .infinity }
        let params = rows.reduce(0.0) { $0 + Double($1.parameters) }
        let widths = rows.reduce(Double(inputs)) { $0 + Double($1.outputWidth) }
        // What a layer keeps per training example besides its output (convolutions: im2col
        // columns), by its kind.
        guard let shapes = try? spec.shapes(inputs: inputs, classes: classes, image: image), let input = try? spec.inputShape(inputs: inputs, image: image) else { return .infinity }
        let columns = zip(spec.layers, zip([input] + shapes.dropLast(), shapes)).reduce(0.0) { acc, pair in
            acc + Double(pair.0.facts.scratchPerExample(input: pair.1.0, output: pair.1.1))
        }
        return 4 * (3 * params + 4 * widths * Double(batch + evalBatch) + columns * Double(batch) + Double(batch * inputs) + extraFloats)
    }

    /// A checkpoint that names its model must name this one (dfn2 checkpoints of 0.3 name none).
    func checkModel(of c: Checkpoint, path: String) throws {
        if let saved = c.metadata[Checkpoint.modelKey], saved != spec.canonical {
            throw CheckpointError.malformed(path: path, reason: "it holds model '\(saved)', not '\(spec.canonical)'; pass --model '\(saved)' (and its --no-batchnorm) or use another checkpoint")
        }
    }

    /// The `config` record: version and data, then the configuration's own encoding, then
    /// what follows from it (the canonical spec, parameter count, kernels, load time).
    public var configRecord: Record {
        var fields: [(String, Value)] = [("version", .string(bntrainVersion)), ("data", .string(config.data.folder ?? ""))]
        fields += [
            ("train_images", .string(dataset.files.trainImages)), ("test_images", .string(dataset.files.testImages)),
            ("image", .string("\(dataset.rows)x\(dataset.cols)")), ("classes", .int(dataset.classes)),
            ("train", .int(trainIndices.count)), ("val", .int(valIndices.count)), ("test", .int(dataset.test.count)),
        ]
        fields += config.fields.filter { $0.0 != ConfigKey.data.name && $0.0 != ConfigKey.evalBatch.name }
        fields += [
            ("spec", .string(spec.canonical)), ("parameters", .int(network.parameterCount)),
            ("kernels", .string(kernels.description)), ("conv_kernels", .string(kernels.convolution.rawValue)), ("blas_core", .string(BLAS.coreName)),
            ("onednn", .string(OneDNN.summary)), ("elementwise", .string(ElementwiseKernels.isa)), ("load_seconds", .number(loadSeconds, digits: 3)),
        ]
        return Record("config", fields)
    }

    /// The checkpoint's metadata for the current state.
    func checkpointMetadata(_ s: TrainingState) -> [String: String] {
        var m = s.metadata
        m["bntrain.version"] = bntrainVersion
        m["bntrain.data"] = config.data.folder ?? ""
        // Sorted keys: the same run writes the same header.
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = (try? encoder.encode(config)).flatMap { String(data: $0, encoding: .utf8) } ?? "{}"
        m["bntrain.config"] = json
        m["bntrain.data_identity"] = dataIdentity
        return m
    }

    /// The renormalization limits of the last step (`--bn-renorm`), for the epoch record.
    var renormLimits: (rmax: Double, dmax: Double)?

    /// Whether this run has written its checkpoint (the summary's `saved` says so only then).
    private(set) var wroteCheckpoint = false

    func writeCheckpoint(_ s: TrainingState, to path: String) throws {
        do {
            try Checkpoint(network: network, spec: spec, options: config.model.buildOptions, metadata: checkpointMetadata(s), optimizer: optimizer, state: preciseState()).write(to: path)
            wroteCheckpoint = true
        } catch {
            throw fail("\(error)", kind: .writeFailed)
        }
    }

    /// The `bn_ema.*` tensors of a precise-BN run: the EMA statistics training continues from.
    func preciseState() -> [String: SafeTensors.Tensor] {
        guard let precise else { return [:] }
        var t: [String: SafeTensors.Tensor] = [:]
        for (i, l) in precise.layers.enumerated() {
            let e = precise.ema(i)
            t["\(Checkpoint.bnEMAPrefix)\(l.name).running_mean"] = e.mean.withUnsafeBufferPointer { SafeTensors.Tensor(floats: $0, shape: [l.channels]) }
            t["\(Checkpoint.bnEMAPrefix)\(l.name).running_var"] = e.variance.withUnsafeBufferPointer { SafeTensors.Tensor(floats: $0, shape: [l.channels]) }
        }
        return t
    }

    /// Trains from the current state to `config.epochs`. Emits the config record, one record
    /// per epoch and a summary. `shouldStop` is polled between steps (a pending signal).
    public func run(progress: ProgressDisplay? = nil, shouldStop: () -> Int32? = { nil }) throws {
        let clock = ContinuousClock()
        let c = config
        let batches = Batches(self)
        try sink.emit(configRecord)
        let steps = batches.train.batchCount
        let metricsFile = try outputs.metrics.map {
            try MetricsFile(path: $0, resumeEpoch: resumed ? state.epoch : nil, resumeStep: resumed ? state.epoch * steps + state.step : nil)
        }
        let publish = { (r: Record) in
            progress?.clear()
            try self.sink.emit(r)
            try metricsFile?.append(r)
        }
        let observers = stepObservers(batches)
        var shuffleRNG = SplitMix64(seed: 0)
        shuffleRNG.state = state.shuffleState
        var s = state
        var schedule = c.schedulePlan.resumed(from: s)
        var early = c.stopping.stopper?.resumed(from: s)
        var lastRecord: Record?, stoppedEarly = false
        let clip: Float? = c.optimizer.clipGradNorm > 0 ? Float(c.optimizer.clipGradNorm) : nil
        for epoch in (s.epoch + 1)...c.epochs {
            let started = clock.now
            let epochRNGState = shuffleRNG.state
            if c.data.shuffle == .epoch { batches.train.shuffle(rng: &shuffleRNG) }
            var lossSum = s.partialLossSum, seen = s.step * c.batch
            var rate = schedule.rate(completed: epoch - 1, step: s.step, stepsPerEpoch: steps, totalEpochs: c.epochs)
            optimizer.learningRate = Float(rate)
            let startStep = s.step
            (s.step, s.partialLossSum) = (0, 0)
            precise?.resumeTraining()
            parallel.setBatchNormFrozen(c.normalization.freezeAfter.map { epoch >= $0 } ?? false)
            steps: for b in startStep..<steps {
                if let sig = shouldStop() {
                    progress?.clear()
                    s.trainSeconds += (clock.now - started).seconds
                    var here = s
                    (here.epoch, here.step, here.partialLossSum, here.shuffleState) = (epoch - 1, b, lossSum, epochRNGState)
                    here.lastRecordJSON = lastRecord?.jsonLine ?? s.lastRecordJSON
                    try stop(signal: sig, at: here, batches: steps)
                }
                // The workers convert their own shards' rows of the batch (`loader`).
                let n = batches.train.prepare(batch: b)
                if c.schedule.warmupEpochs > 0 {  // a rate that changes within the epoch: set every step
                    rate = schedule.rate(completed: epoch - 1, step: b, stepsPerEpoch: steps, totalEpochs: c.epochs)
                    optimizer.learningRate = Float(rate)
                }
                if c.normalization.renorm {
                    let l = c.normalization.renormLimits(step: (epoch - 1) * steps + b, total: c.epochs * steps)
                    renormLimits = l
                    parallel.setRenormLimits(RenormLimits(rmax: Float(l.rmax), dmax: Float(l.dmax)))
                }
                let loss = parallel.trainStep(batches.train.x, labels: batches.train.labels, optimizer: optimizer, clipNorm: clip, loader: batches.train)
                guard loss.isFinite else {
                    progress?.clear()
                    throw fail("training diverged: the loss became \(loss.isNaN ? "NaN" : "infinite") at epoch \(epoch), step \(b + 1) of \(steps); try a smaller --lr (now \(c.optimizer.lr))", kind: .diverged)
                }
                lossSum += loss * Double(n)
                seen += n
                for observer in observers {
                    // nil: a signal ended the observation; the next step's check saves and stops.
                    guard let records = observer.observe(step: (epoch - 1) * steps + b + 1, epoch: epoch, shouldStop: shouldStop) else { continue steps }
                    for r in records { try publish(r) }
                }
                progress?.step(epoch: epoch, epochs: c.epochs, batch: b + 1, batches: steps, lossSoFar: lossSum / Double(seen), examples: seen, epochStart: started)
            }
            let seconds = (clock.now - started).seconds
            s.trainSeconds += seconds
            progress?.clear()
            let (record, improved) = try endEpoch(epoch, lossSum: lossSum, rate: rate, seconds: seconds, batches, &s, &schedule, &early, &stoppedEarly)
            lastRecord = record
            s.shuffleState = shuffleRNG.state
            state = s
            if let save = outputs.save, outputs.saveBest ? improved : (epoch % outputs.saveEvery == 0 || epoch == c.epochs || stoppedEarly) {
                try writeCheckpoint(s, to: save)
            }
            try sink.emit(record)
            try metricsFile?.append(record)
            if stoppedEarly { break }
        }
        try sink.emit(summaryRecord(s, last: lastRecord, validation: batches.validation != nil, early: early, stoppedEarly: stoppedEarly))
    }

    /// The run's batches: training in the sampler's order, validation and test in evaluation
    /// batches.
    /// One validation and test source per worker (each loads its own batches).
    struct Batches {
        let train: MinibatchSampler
        let validations: [MinibatchSampler]?
        let tests: [SequentialBatches]
        var validation: MinibatchSampler? { validations?[0] }
        var test: SequentialBatches { tests[0] }
        init(_ t: Trainer) {
            let workers = 0..<t.parallel.workers
            train = MinibatchSampler(split: t.dataset.train, indices: t.trainIndices, batchSize: t.config.batch)
            validations = t.valIndices.isEmpty ? nil : workers.map { _ in MinibatchSampler(split: t.dataset.train, indices: t.valIndices, batchSize: min(t.evalBatch, t.valIndices.count)) }
            tests = workers.map { _ in SequentialBatches(split: t.dataset.test, batchSize: min(t.evalBatch, t.dataset.test.count)) }
        }
    }

    /// What looks at the model between steps, in order: the trace, then step-wise evaluation.
    func stepObservers(_ batches: Batches) -> [any StepObserver] {
        var out: [any StepObserver] = []
        if let tracer { out.append(TraceObserver(tracer: tracer, parallel: parallel, every: config.observation.traceEvery, layer: traceIndex)) }
        if config.observation.evalEvery > 0 { out.append(EvalObserver(parallel: parallel, every: config.observation.evalEvery, validation: batches.validations, test: batches.tests)) }
        return out
    }

    /// A signal between steps: saves `here` (the state before the interrupted step) when the
    /// run saves, says where it stopped and how to continue, and ends the run.
    func stop(signal sig: Int32, at here: TrainingState, batches: Int) throws -> Never {
        var message = "interrupted by \(signalName(sig)) at epoch \(here.epoch + 1), step \(here.step) of \(batches)"
        if let save = outputs.save, outputs.saveBest {
            // The file holds the best epoch; the interrupted state must not replace it.
            message += here.bestValEpoch > 0 ? "; '\(save)' keeps the best epoch (\(here.bestValEpoch)); the interrupted state was not saved (--save-best)" : "; nothing saved yet (--save-best writes when validation accuracy improves)"
        } else if let save = outputs.save {
            var s = here
            s.dropoutState = network.randomStream.generator.state
            try writeCheckpoint(s, to: save)
            message += "; checkpoint saved to '\(save)'; continue with: bntrain --resume \(save) --epochs \(config.epochs)"
        } else {
            message += "; nothing saved (pass --save FILE to keep interrupted runs)"
        }
        if let m = outputs.metrics { message += "; metrics up to epoch \(here.epoch) are in '\(m)'" }
        diagnostics(message)
        throw TrainingStop.interrupted(signal: sig)
    }

    /// The epoch's record after its evaluations; validation (never test) data steers the
    /// schedule and early stopping. `improved`: --save-best should write (validation accuracy
    /// improved, or with early stopping, its monitor's best epoch is this one).
    func endEpoch(
        _ epoch: Int, lossSum: Double, rate: Double, seconds: Double, _ batches: Batches, _ s: inout TrainingState,
        _ schedule: inout LRSchedule, _ early: inout EarlyStopping?, _ stoppedEarly: inout Bool
    ) throws -> (record: Record, improved: Bool) {
        let trainLoss = lossSum / Double(trainIndices.count)
        var fields: [(String, Value)] = [
            ("epoch", .int(epoch)), ("train_loss", .number(trainLoss, digits: 6)),
            ("loss_change", .number(s.previousLoss.map { trainLoss - $0 } ?? .nan, digits: 6)), ("lr", .exact(rate)),
        ]
        var improved = false
        // Precise statistics before anything evaluates or saves (the EMA ones kept beside).
        let preciseStarted = ContinuousClock().now
        precise?.recompute(pass: UInt64(epoch), seed: config.seed)
        let preciseSeconds = (ContinuousClock().now - preciseStarted).seconds
        if let validation = batches.validation {
            let v = Evaluation.run(parallel, batches.validations!)
            fields += [("val_loss", .number(v.loss, digits: 6)), ("val_acc", .number(v.accuracy, digits: 4))]
            if v.accuracy > s.bestValAccuracy {
                (s.bestValAccuracy, s.bestValEpoch) = (v.accuracy, epoch)
                improved = early == nil
            }
            schedule.endEpoch(validationLoss: v.loss)
            if var e = early {
                stoppedEarly = e.update(epoch: epoch, loss: v.loss, accuracy: v.accuracy)
                improved = e.bestEpoch == epoch
                early = e
            }
        }
        let clock = ContinuousClock(), testStarted = clock.now
        let test = Evaluation.run(parallel, batches.tests)
        let testSeconds = (clock.now - testStarted).seconds
        if test.accuracy > s.bestTestAccuracy { (s.bestTestAccuracy, s.bestTestEpoch) = (test.accuracy, epoch) }
        fields += [
            ("test_loss", .number(test.loss, digits: 6)), ("test_acc", .number(test.accuracy, digits: 4)),
            ("seconds", .number(seconds, digits: 3)), ("test_seconds", .number(testSeconds, digits: 3)),
        ]
        if precise != nil { fields.append(("precise_seconds", .number(preciseSeconds, digits: 3))) }
        if let l = renormLimits { fields += [("renorm_rmax", .number(l.rmax, digits: 4)), ("renorm_dmax", .number(l.dmax, digits: 4))] }
        if let e = config.normalization.freezeAfter { fields.append(("bn_frozen", .string(epoch >= e ? "yes" : "no"))) }
        let record = Record("epoch", fields)
        s.previousLoss = trainLoss
        s.epoch = epoch
        s.dropoutState = network.randomStream.generator.state
        s.lastRecordJSON = record.jsonLine
        schedule.save(into: &s)
        EarlyStopping.save(early, into: &s)
        return (record, improved)
    }

    /// The `summary` record: the last epoch's results, the bests, why the run ended (all its
    /// epochs, or early stopping with the monitor's best epoch), time, and the file written.
    func summaryRecord(_ s: TrainingState, last: Record?, validation: Bool, early: EarlyStopping?, stoppedEarly: Bool) -> Record {
        var summary: [(String, Value)] = [("epochs", .int(s.epoch))]
        if let last {
            summary += [("final_train_loss", last["train_loss"]!), ("final_test_loss", last["test_loss"]!), ("final_test_acc", last["test_acc"]!)]
        }
        if validation { summary += [("best_val_acc", .number(s.bestValAccuracy, digits: 4)), ("best_val_epoch", .int(s.bestValEpoch))] }
        summary.append(("stopped", .string(stoppedEarly ? "early_stop" : "completed")))
        if let e = early {
            summary += [("monitor", .string(e.monitor.rawValue)), ("monitor_best", .number(e.best ?? .nan, digits: e.monitor == .valLoss ? 6 : 4)), ("monitor_best_epoch", .int(e.bestEpoch))]
        }
        summary += [
            ("best_test_acc", .number(s.bestTestAccuracy, digits: 4)), ("best_epoch", .int(s.bestTestEpoch)),
            ("train_seconds", .number(s.trainSeconds, digits: 3)),
            ("seconds_per_epoch", .number(s.trainSeconds / Double(max(s.epoch, 1)), digits: 4)),
        ]
        // `saved` only for a file this run wrote (--save-best writes when validation improves;
        // a resumed run's file may hold an earlier epoch).
        if let save = outputs.save, wroteCheckpoint { summary.append(("saved", .string(save))) }
        return Record("summary", summary)
    }
}

/// The release, recorded in config records and checkpoints.
public let bntrainVersion = "0.4.0"

extension Duration {
    public var seconds: Double {
        let c = components
        return Double(c.seconds) + Double(c.attoseconds) * 1e-18
    }
}
