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
    public let network: Network<Float>
    public let optimizer: any Optimizer<Float>
    /// Where the run resumes (nil for a fresh run).
    public private(set) var state: TrainingState

    let trainIndices: [Int32]
    let valIndices: [Int32]
    let sink: RecordSink
    let diagnostics: (String) -> Void
    let loadSeconds: Double
    let resumed: Bool

    /// - config: the run (its `data` is the resolved folder, recorded as is).
    /// - resume: a checkpoint to continue (its config must equal `config` in every restored key).
    /// - initFrom: weights to start from instead of the initializer.
    public init(
        config: RunConfig, outputs: RunOutputs, dataset: Dataset, loadSeconds: Double = 0,
        resume: (checkpoint: Checkpoint, path: String)? = nil, initFrom: (checkpoint: Checkpoint, path: String)? = nil,
        sink: RecordSink, diagnostics: @escaping (String) -> Void = note
    ) throws {
        if let (key, message) = config.problem() { throw fail("\(key.flag) \(message)", code: ExitStatus.usage) }
        self.config = config
        self.outputs = outputs
        self.dataset = dataset
        self.loadSeconds = loadSeconds
        self.sink = sink
        self.diagnostics = diagnostics
        spec = try config.spec()
        if let n = config.trainLimit, n > dataset.train.count {
            throw fail("--train-limit \(n) is larger than the \(dataset.train.count) training images in '\(dataset.files.trainImages)'; use at most \(dataset.train.count)", code: ExitStatus.usage)
        }
        // Independent streams, so that e.g. --train-limit does not change the initial weights.
        var subsetRNG = SplitMix64(seed: config.seed, stream: "subset")
        var valRNG = SplitMix64(seed: config.seed, stream: "validation")
        var initRNG = SplitMix64(seed: config.seed, stream: "init")
        let subset = randomSubset(total: dataset.train.count, limit: config.trainLimit, rng: &subsetRNG)
        (trainIndices, valIndices) = validationSplit(subset, fraction: config.valSplit, rng: &valRNG)
        if trainIndices.isEmpty {
            throw fail("--val-split \(config.valSplit) leaves no training images out of \(subset.count); use a smaller fraction", code: ExitStatus.usage)
        }
        if config.batch > trainIndices.count {
            throw fail("--batch \(config.batch) is larger than the \(trainIndices.count) training images; use at most \(trainIndices.count)", code: ExitStatus.usage)
        }
        do {
            network = try spec.build(
                Float.self, inputs: dataset.featureCount, classes: dataset.classes, options: config.buildOptions,
                rng: &initRNG, dropoutRNG: SplitMix64(seed: config.seed, stream: "dropout"))
        } catch let e as ModelSpec.ParseError {
            throw fail("--model \(e.message)", code: ExitStatus.usage)
        }
        optimizer = SGD<Float>(learningRate: Float(config.lr))
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
            throw fail(e.description, code: ExitStatus.dataError)
        }
        if state.epoch >= config.epochs {
            throw fail("'\(resume?.path ?? "")' has already trained \(state.epoch) epochs; pass --epochs greater than \(state.epoch) to continue", code: ExitStatus.usage)
        }
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
        var fields: [(String, Value)] = [("version", .string(bntrainVersion)), ("data", .string(config.data ?? ""))]
        fields += [
            ("train_images", .string(dataset.files.trainImages)), ("test_images", .string(dataset.files.testImages)),
            ("image", .string("\(dataset.rows)x\(dataset.cols)")), ("classes", .int(dataset.classes)),
            ("train", .int(trainIndices.count)), ("val", .int(valIndices.count)), ("test", .int(dataset.test.count)),
        ]
        fields += config.fields.filter { $0.0 != RunConfig.CodingKeys.data.rawValue && $0.0 != RunConfig.CodingKeys.evalBatch.rawValue }
        fields += [
            ("spec", .string(spec.canonical)), ("parameters", .int(network.parameterCount)),
            ("blas_core", .string(BLAS.coreName)), ("load_seconds", .number(loadSeconds, digits: 3)),
        ]
        return Record("config", fields)
    }

    /// The checkpoint's metadata for the current state.
    func checkpointMetadata(_ s: TrainingState) -> [String: String] {
        var m = s.metadata
        m["bntrain.version"] = bntrainVersion
        m["bntrain.data"] = config.data ?? ""
        let json = (try? JSONEncoder().encode(config)).flatMap { String(data: $0, encoding: .utf8) } ?? "{}"
        m["bntrain.config"] = json
        return m
    }

    func writeCheckpoint(_ s: TrainingState, to path: String) throws {
        do {
            try Checkpoint(network: network, spec: spec, options: config.buildOptions, metadata: checkpointMetadata(s)).write(to: path)
        } catch {
            throw fail("\(error)", code: ExitStatus.cannotWrite)
        }
    }

    /// Trains from the current state to `config.epochs`. Emits the config record, one record
    /// per epoch and a summary. `shouldStop` is polled between steps (a pending signal).
    public func run(progress: Progress? = nil, shouldStop: () -> Int32? = { nil }) throws {
        let clock = ContinuousClock()
        let c = config
        let trainBatches = MinibatchSampler(split: dataset.train, indices: trainIndices, batchSize: c.batch)
        let valBatches = valIndices.isEmpty ? nil : MinibatchSampler(split: dataset.train, indices: valIndices, batchSize: min(c.evalBatch, valIndices.count))
        let testBatches = SequentialBatches(split: dataset.test, batchSize: min(c.evalBatch, dataset.test.count))
        sink.emit(configRecord)
        let metricsFile = try outputs.metrics.map { try MetricsFile(path: $0, resumeEpoch: resumed ? state.epoch : nil) }
        var shuffleRNG = SplitMix64(seed: 0)
        shuffleRNG.state = state.shuffleState
        var lastRecord: Record?
        var s = state
        let firstEpoch = s.epoch + 1
        for epoch in firstEpoch...c.epochs {
            let started = clock.now
            let epochRNGState = shuffleRNG.state
            if c.shuffle == .epoch { trainBatches.shuffle(rng: &shuffleRNG) }
            var lossSum = s.partialLossSum, seen = s.step * c.batch
            let startStep = s.step
            s.step = 0
            s.partialLossSum = 0
            for b in startStep..<trainBatches.batchCount {
                if let sig = shouldStop() {
                    progress?.clear()
                    s.trainSeconds += (clock.now - started).seconds
                    var message = "interrupted by \(Interruption.name(sig)) at epoch \(epoch), step \(b) of \(trainBatches.batchCount)"
                    if let save = outputs.save, outputs.saveBest {
                        // The file holds the best epoch; the interrupted state must not replace it.
                        message += s.bestValEpoch > 0 ? "; '\(save)' keeps the best epoch (\(s.bestValEpoch)); the interrupted state was not saved (--save-best)" : "; nothing saved yet (--save-best writes when validation accuracy improves)"
                    } else if let save = outputs.save {
                        var here = s
                        here.epoch = epoch - 1
                        here.step = b
                        here.partialLossSum = lossSum
                        here.shuffleState = epochRNGState
                        here.dropoutState = network.randomStream.generator.state
                        here.lastRecordJSON = lastRecord?.jsonLine ?? s.lastRecordJSON
                        try writeCheckpoint(here, to: save)
                        message += "; checkpoint saved to '\(save)'; continue with: bntrain --resume \(save) --epochs \(c.epochs)"
                    } else {
                        message += "; nothing saved (pass --save FILE to keep interrupted runs)"
                    }
                    if let m = outputs.metrics { message += "; metrics up to epoch \(epoch - 1) are in '\(m)'" }
                    diagnostics(message)
                    throw TrainingStop.interrupted(signal: sig)
                }
                let n = trainBatches.fill(batch: b)
                let loss = network.trainStep(trainBatches.x, labels: trainBatches.labels, optimizer: optimizer)
                guard loss.isFinite else {
                    progress?.clear()
                    throw fail("training diverged: the loss became \(loss.isNaN ? "NaN" : "infinite") at epoch \(epoch), step \(b + 1) of \(trainBatches.batchCount); try a smaller --lr (now \(c.lr))", code: ExitStatus.diverged)
                }
                lossSum += loss * Double(n)
                seen += n
                progress?.step(epoch: epoch, epochs: c.epochs, batch: b + 1, batches: trainBatches.batchCount, lossSoFar: lossSum / Double(seen), examples: seen, epochStart: started)
            }
            let seconds = (clock.now - started).seconds
            s.trainSeconds += seconds
            progress?.clear()
            let trainLoss = lossSum / Double(trainIndices.count)

            var fields: [(String, Value)] = [
                ("epoch", .int(epoch)), ("train_loss", .number(trainLoss, digits: 6)),
                ("loss_change", .number(s.previousLoss.map { trainLoss - $0 } ?? .nan, digits: 6)),
            ]
            var improvedVal = false
            if let valBatches {
                let v = Evaluation.run(network, valBatches)
                fields += [("val_loss", .number(v.loss, digits: 6)), ("val_acc", .number(v.accuracy, digits: 4))]
                if v.accuracy > s.bestValAccuracy {
                    (s.bestValAccuracy, s.bestValEpoch) = (v.accuracy, epoch)
                    improvedVal = true
                }
            }
            let testStarted = clock.now
            let test = Evaluation.run(network, testBatches)
            let testSeconds = (clock.now - testStarted).seconds
            if test.accuracy > s.bestTestAccuracy { (s.bestTestAccuracy, s.bestTestEpoch) = (test.accuracy, epoch) }
            fields += [
                ("test_loss", .number(test.loss, digits: 6)), ("test_acc", .number(test.accuracy, digits: 4)),
                ("seconds", .number(seconds, digits: 3)), ("test_seconds", .number(testSeconds, digits: 3)),
            ]
            let record = Record("epoch", fields)
            lastRecord = record
            s.previousLoss = trainLoss
            s.epoch = epoch
            s.shuffleState = shuffleRNG.state
            s.dropoutState = network.randomStream.generator.state
            s.lastRecordJSON = record.jsonLine
            state = s

            if let save = outputs.save, outputs.saveBest ? improvedVal : (epoch % outputs.saveEvery == 0 || epoch == c.epochs) {
                try writeCheckpoint(s, to: save)
            }
            sink.emit(record)
            metricsFile?.append(record)
        }
        var summary: [(String, Value)] = [("epochs", .int(c.epochs))]
        if let last = lastRecord {
            summary += [
                ("final_train_loss", last["train_loss"]!), ("final_test_loss", last["test_loss"]!), ("final_test_acc", last["test_acc"]!),
            ]
        }
        if valBatches != nil { summary += [("best_val_acc", .number(s.bestValAccuracy, digits: 4)), ("best_val_epoch", .int(s.bestValEpoch))] }
        summary += [
            ("best_test_acc", .number(s.bestTestAccuracy, digits: 4)), ("best_epoch", .int(s.bestTestEpoch)),
            ("train_seconds", .number(s.trainSeconds, digits: 3)),
            ("seconds_per_epoch", .number(s.trainSeconds / Double(max(c.epochs, 1)), digits: 4)),
        ]
        if let save = outputs.save { summary.append(("saved", .string(save))) }
        sink.emit(Record("summary", summary))
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
