import ArgumentParser
import BNCheckpoint
import BNCore
import BNData
import Foundation

/// One training run: load data, build (or restore) the network, train, report, save. The
/// only place that wires the data module, the layer core and checkpoints together.
struct TrainingRun {
    var o: BNTrain
    /// The command line's own arguments, to tell flags the user gave from defaults.
    let arguments: [String]
    /// On --resume: the checkpoint's `init` field, so that the config record keeps it.
    var restoredInit: String?

    init(options: BNTrain, arguments: [String] = Array(CommandLine.arguments.dropFirst())) {
        o = options
        self.arguments = arguments
    }

    /// Whether `flag` appears on the command line (as `--flag v`, `--flag=v` or a bare flag).
    func given(_ flag: String) -> Bool {
        arguments.contains { $0 == flag || $0.hasPrefix(flag + "=") }
    }

    /// Where a resumed run picks up (from the checkpoint's metadata).
    struct ResumeState {
        var checkpoint: Checkpoint
        /// Completed epochs.
        var epoch: Int
        /// Steps already taken in the next epoch (an interrupted run), with their summed loss.
        var step: Int
        var partialLossSum: Double
        /// Generator state to shuffle the next epoch with.
        var shuffleState: UInt64
        var previousLoss: Double?
        var bestVal: (accuracy: Double, epoch: Int)
        var bestTest: (accuracy: Double, epoch: Int)
        var trainSeconds: Double
    }

    mutating func run() throws {
        let clock = ContinuousClock()
        var resumeState: ResumeState?
        if let path = o.resume {
            resumeState = try restoreOptions(from: path)
        }
        // Output paths are checked before any work, not after 20 epochs.
        for (flag, path) in [("--save", o.save), ("--metrics", o.metrics)] {
            if let path, let problem = AtomicFile.checkWritable(path) {
                throw fail("\(flag): \(problem); choose a writable path", code: ExitStatus.cannotWrite)
            }
        }
        let initFrom = try o.initFrom.map { try readCheckpoint($0, flag: "--init-from") }

        BLAS.setThreads(o.threads)
        let loadStarted = clock.now
        let (folder, dataset) = try DataLocation.load(o.data)
        let loadSeconds = (clock.now - loadStarted).seconds
        if let n = o.trainLimit, n > dataset.train.count {
            throw fail("--train-limit \(n) is larger than the \(dataset.train.count) training images in '\(dataset.files.trainImages)'; use at most \(dataset.train.count)", code: ExitStatus.usage)
        }

        // Independent streams, so that e.g. --train-limit does not change the initial weights.
        var subsetRNG = SplitMix64(seed: o.seed, stream: "subset")
        var valRNG = SplitMix64(seed: o.seed, stream: "validation")
        var initRNG = SplitMix64(seed: o.seed, stream: "init")
        var shuffleRNG = SplitMix64(seed: o.seed, stream: "shuffle")

        let subset = randomSubset(total: dataset.train.count, limit: o.trainLimit, rng: &subsetRNG)
        let (trainIndices, valIndices) = validationSplit(subset, fraction: o.valSplit, rng: &valRNG)
        if trainIndices.isEmpty {
            throw fail("--val-split \(o.valSplit) leaves no training images out of \(subset.count); use a smaller fraction", code: ExitStatus.usage)
        }
        if o.batch > trainIndices.count {
            throw fail("--batch \(o.batch) is larger than the \(trainIndices.count) training images; use at most \(trainIndices.count)", code: ExitStatus.usage)
        }
        let trainBatches = MinibatchSampler(split: dataset.train, indices: trainIndices, batchSize: o.batch)
        let valBatches = valIndices.isEmpty ? nil : MinibatchSampler(split: dataset.train, indices: valIndices, batchSize: min(o.evalBatch, valIndices.count))
        let testBatches = SequentialBatches(split: dataset.test, batchSize: min(o.evalBatch, dataset.test.count))

        let spec = ModelSpec(
            inputs: dataset.featureCount, hidden: o.hidden, classes: dataset.classes, batchNorm: !o.noBatchnorm,
            bnEps: o.bnEps, bnMomentum: o.bnMomentum, runningVariance: o.bnRunningVar)
        let net = spec.makeNetwork(initializer: o.`init`, rng: &initRNG)
        do {
            if let r = resumeState {
                try r.checkpoint.load(into: net, path: o.resume!)
                shuffleRNG.state = r.shuffleState
            } else if let c = initFrom {
                try c.load(into: net, path: o.initFrom!, requireBuffers: false)
            }
        } catch let e as CheckpointError {
            throw fail(e.description, code: ExitStatus.dataError)
        }
        let sgd = SGD<Float>(learningRate: Float(o.lr))

        let config = configFields(folder: folder, dataset: dataset, trainCount: trainIndices.count, valCount: valIndices.count, net: net)
        let report = Report(format: o.logFormat)
        report.emit(Record("config", config + [("blas_core", .string(BLAS.coreName)), ("load_seconds", .number(loadSeconds, digits: 3))]))
        if let r = resumeState { note("resuming '\(o.resume!)' after epoch \(r.epoch) of \(o.epochs); configuration taken from the checkpoint") }

        let metricsFile = try o.metrics.map { try MetricsFile(path: $0, resumeEpoch: resumeState?.epoch) }
        let progress = Progress(quiet: o.quiet)
        let configJSON = "{" + config.map { "\(jsonString($0.0)):\($0.1.json)" }.joined(separator: ",") + "}"

        var previousLoss = resumeState?.previousLoss
        var bestVal: (accuracy: Double, epoch: Int) = resumeState?.bestVal ?? (-1.0, 0)
        var bestTest: (accuracy: Double, epoch: Int) = resumeState?.bestTest ?? (-1.0, 0)
        var trainSeconds = resumeState?.trainSeconds ?? 0
        var lastRecord: Record?
        let firstEpoch = (resumeState?.epoch ?? 0) + 1
        var firstStep = resumeState?.step ?? 0
        var partialLossSum = resumeState?.partialLossSum ?? 0

        /// Metadata for a checkpoint taken after `completed` epochs plus `step` steps of the next.
        func checkpointMetadata(completed: Int, step: Int, lossSum: Double, rngState: UInt64, prevLoss: Double?, record: Record?) -> [String: String] {
            var meta: [String: String] = [
                "bntrain.version": BNTrain.version, "bntrain.config": configJSON, "bntrain.data": folder,
                "bntrain.epoch": "\(completed)", "bntrain.step": "\(step)", "bntrain.partial_loss_sum": "\(lossSum)",
                "bntrain.shuffle_rng": "\(rngState)",
                "bntrain.best_val_acc": "\(bestVal.accuracy)", "bntrain.best_val_epoch": "\(bestVal.epoch)",
                "bntrain.best_test_acc": "\(bestTest.accuracy)", "bntrain.best_test_epoch": "\(bestTest.epoch)",
                "bntrain.train_seconds": "\(trainSeconds)",
            ]
            if let prevLoss { meta["bntrain.prev_train_loss"] = "\(prevLoss)" }
            if let record { meta["bntrain.metrics"] = record.jsonLine }
            return meta
        }
        func writeCheckpoint(_ meta: [String: String], to path: String) throws {
            do { try Checkpoint(network: net, metadata: meta).write(to: path) } catch {
                throw fail("\(error)", code: ExitStatus.cannotWrite)
            }
        }

        Interruption.install()
        for epoch in firstEpoch...o.epochs {  // firstEpoch <= o.epochs: restoreOptions refuses a finished run
            let started = clock.now
            let epochRNGState = shuffleRNG.state
            if o.shuffle == .epoch { trainBatches.shuffle(rng: &shuffleRNG) }
            var lossSum = partialLossSum, seen = firstStep * o.batch
            let startStep = firstStep
            firstStep = 0
            partialLossSum = 0
            for b in startStep..<trainBatches.batchCount {
                if let sig = Interruption.requested {
                    progress.clear()
                    trainSeconds += (clock.now - started).seconds
                    var message = "interrupted by \(Interruption.name(sig)) at epoch \(epoch), step \(b) of \(trainBatches.batchCount)"
                    if let save = o.save, o.saveBest {
                        // The file holds the best epoch; the interrupted state must not replace it.
                        message += bestVal.epoch > 0 ? "; '\(save)' keeps the best epoch (\(bestVal.epoch)); the interrupted state was not saved (--save-best)" : "; nothing saved yet (--save-best writes when validation accuracy improves)"
                    } else if let save = o.save {
                        try writeCheckpoint(checkpointMetadata(completed: epoch - 1, step: b, lossSum: lossSum, rngState: epochRNGState, prevLoss: previousLoss, record: lastRecord), to: save)
                        message += "; checkpoint saved to '\(save)'; continue with: bntrain --resume \(save) --epochs \(o.epochs)"
                    } else {
                        message += "; nothing saved (pass --save FILE to keep interrupted runs)"
                    }
                    if let m = o.metrics { message += "; metrics up to epoch \(epoch - 1) are in '\(m)'" }
                    note(message)
                    throw ExitCode(128 + sig)
                }
                let n = trainBatches.fill(batch: b)
                let loss = net.trainStep(trainBatches.x, labels: trainBatches.labels, optimizer: sgd)
                guard loss.isFinite else {
                    progress.clear()
                    throw fail("training diverged: the loss became \(loss.isNaN ? "NaN" : "infinite") at epoch \(epoch), step \(b + 1) of \(trainBatches.batchCount); try a smaller --lr (now \(o.lr))", code: ExitStatus.diverged)
                }
                lossSum += loss * Double(n)
                seen += n
                progress.step(epoch: epoch, epochs: o.epochs, batch: b + 1, batches: trainBatches.batchCount, lossSoFar: lossSum / Double(seen), examples: seen, epochStart: started)
            }
            let seconds = (clock.now - started).seconds
            trainSeconds += seconds
            progress.clear()
            let trainLoss = lossSum / Double(trainIndices.count)

            var fields: [(String, Value)] = [
                ("epoch", .int(epoch)), ("train_loss", .number(trainLoss, digits: 6)),
                ("loss_change", .number(previousLoss.map { trainLoss - $0 } ?? .nan, digits: 6)),
            ]
            var improvedVal = false
            if let valBatches {
                let v = Evaluation.run(net, valBatches)
                fields += [("val_loss", .number(v.loss, digits: 6)), ("val_acc", .number(v.accuracy, digits: 4))]
                if v.accuracy > bestVal.accuracy {
                    bestVal = (v.accuracy, epoch)
                    improvedVal = true
                }
            }
            let testStarted = clock.now
            let test = Evaluation.run(net, testBatches)
            let testSeconds = (clock.now - testStarted).seconds
            if test.accuracy > bestTest.accuracy { bestTest = (test.accuracy, epoch) }
            fields += [
                ("test_loss", .number(test.loss, digits: 6)), ("test_acc", .number(test.accuracy, digits: 4)),
                ("seconds", .number(seconds, digits: 3)), ("test_seconds", .number(testSeconds, digits: 3)),
            ]
            let record = Record("epoch", fields)
            lastRecord = record
            previousLoss = trainLoss

            if let save = o.save, o.saveBest ? improvedVal : (epoch % o.saveEvery == 0 || epoch == o.epochs) {
                try writeCheckpoint(checkpointMetadata(completed: epoch, step: 0, lossSum: 0, rngState: shuffleRNG.state, prevLoss: trainLoss, record: record), to: save)
            }
            report.emit(record)
            metricsFile?.append(record)
        }
        var summary: [(String, Value)] = [("epochs", .int(o.epochs))]
        if let last = lastRecord {
            summary += [
                ("final_train_loss", last["train_loss"]!), ("final_test_loss", last["test_loss"]!), ("final_test_acc", last["test_acc"]!),
            ]
        }
        if valBatches != nil { summary += [("best_val_acc", .number(bestVal.accuracy, digits: 4)), ("best_val_epoch", .int(bestVal.epoch))] }
        summary += [
            ("best_test_acc", .number(bestTest.accuracy, digits: 4)), ("best_epoch", .int(bestTest.epoch)),
            ("train_seconds", .number(trainSeconds, digits: 3)),
            ("seconds_per_epoch", .number(trainSeconds / Double(max(o.epochs, 1)), digits: 4)),
        ]
        if let save = o.save { summary.append(("saved", .string(save))) }
        report.emit(Record("summary", summary))
        if let sig = Interruption.requested {
            // The signal came after the last step: the run is complete and saved, but a caller
            // (a shell loop, a sweep) still learns that the user asked it to stop.
            note("interrupted by \(Interruption.name(sig)) after the last step; the run completed\(o.save.map { " and is saved in '\($0)'" } ?? "")")
            throw ExitCode(128 + sig)
        }
    }

    /// The configuration record: every flag that affects results, the files read and the
    /// version. Also stored in checkpoints, from which `--resume` restores it.
    func configFields(folder: String, dataset: Dataset, trainCount: Int, valCount: Int, net: Network<Float>) -> [(String, Value)] {
        [
            ("version", .string(BNTrain.version)), ("data", .string(folder)),
            ("train_images", .string(dataset.files.trainImages)), ("test_images", .string(dataset.files.testImages)),
            ("image", .string("\(dataset.rows)x\(dataset.cols)")), ("classes", .int(dataset.classes)),
            ("train", .int(trainCount)), ("val", .int(valCount)), ("test", .int(dataset.test.count)),
            ("epochs", .int(o.epochs)), ("batch", .int(o.batch)), ("lr", .exact(o.lr)), ("hidden", .int(o.hidden)),
            ("train_limit", o.trainLimit.map { .int($0) } ?? .string("all")), ("val_split", .exact(o.valSplit)),
            ("shuffle", .string(o.shuffle.rawValue)),
            ("batchnorm", .string(o.noBatchnorm ? "off" : "on")), ("bn_momentum", .exact(o.bnMomentum)), ("bn_eps", .exact(o.bnEps)),
            ("bn_running_var", .string(o.bnRunningVar.rawValue)), ("init", .string(restoredInit ?? o.initFrom.map { "from:" + $0 } ?? o.`init`.rawValue)),
            ("seed", .string("\(o.seed)")), ("threads", .int(o.threads)), ("parameters", .int(net.parameterCount)),
        ]
    }

    /// Reads `--resume`'s checkpoint and takes the run's configuration from it (the flags
    /// that shape results; --epochs, output and thread flags stay as given).
    mutating func restoreOptions(from path: String) throws -> ResumeState {
        let c = try readCheckpoint(path, flag: "--resume")
        let m = c.metadata
        guard let configText = m["bntrain.config"],
              let config = try? JSONSerialization.jsonObject(with: Data(configText.utf8)) as? [String: Any],
              let epoch = m["bntrain.epoch"].flatMap(Int.init), let rng = m["bntrain.shuffle_rng"].flatMap(UInt64.init) else {
            throw fail("'\(path)' has no bntrain training state (was it written by bntrain --save?); use --init-from to start from its weights", code: ExitStatus.dataError)
        }
        func string(_ k: String) -> String? { (config[k] as? String) ?? (config[k] as? NSNumber)?.stringValue }
        func int(_ k: String) -> Int? { (config[k] as? NSNumber)?.intValue ?? string(k).flatMap(Int.init) }
        func double(_ k: String) -> Double? { (config[k] as? NSNumber)?.doubleValue ?? string(k).flatMap(Double.init) }
        if o.data == nil { o.data = string("data") }
        // The checkpoint's configuration wins; a flag given on the command line that disagrees
        // with it is an error rather than silently ignored (changing --lr mid-run would no
        // longer be "the same run"; --init-from starts a new run from these weights instead).
        var conflicts: [String] = []
        func restore<T: Equatable>(_ flag: String, _ saved: T?, _ field: WritableKeyPath<BNTrain, T>, show: (T) -> String = { "\($0)" }) {
            guard let saved else { return }
            if given(flag) && o[keyPath: field] != saved { conflicts.append("\(flag) \(show(o[keyPath: field])) (checkpoint: \(show(saved)))") }
            o[keyPath: field] = saved
        }
        restore("--batch", int("batch"), \.batch)
        restore("--lr", double("lr"), \.lr)
        restore("--hidden", int("hidden"), \.hidden)
        let savedLimit: Int?? = string("train_limit").map { $0 == "all" ? nil : Int($0) }
        restore("--train-limit", savedLimit, \.trainLimit, show: { $0.map(String.init) ?? "all" })
        restore("--val-split", double("val_split"), \.valSplit)
        restore("--shuffle", string("shuffle").flatMap(ShuffleMode.init(rawValue:)), \.shuffle, show: { $0.rawValue })
        if let savedOff = string("batchnorm").map({ $0 == "off" }) {
            if given("--no-batchnorm") && !savedOff { conflicts.append("--no-batchnorm (checkpoint: batchnorm on)") }
            o.noBatchnorm = savedOff
        }
        restore("--bn-momentum", double("bn_momentum"), \.bnMomentum)
        restore("--bn-eps", double("bn_eps"), \.bnEps)
        restore("--bn-running-var", string("bn_running_var").flatMap(BatchNorm1D<Float>.RunningVariance.init(rawValue:)), \.bnRunningVar, show: { $0.rawValue })
        restore("--seed", string("seed").flatMap(UInt64.init), \.seed)
        if let savedInit = string("init") {
            if given("--init") && o.`init`.rawValue != savedInit { conflicts.append("--init \(o.`init`.rawValue) (checkpoint: \(savedInit))") }
            restoredInit = savedInit
        }
        if !conflicts.isEmpty {
            throw fail("--resume '\(path)' continues the saved run, but \(conflicts.joined(separator: ", ")) disagree\(conflicts.count == 1 ? "s" : "") with it; drop \(conflicts.count == 1 ? "that flag" : "those flags") to resume, or start a new run from its weights with --init-from", code: ExitStatus.usage)
        }
        if epoch >= o.epochs {
            throw fail("'\(path)' has already trained \(epoch) epochs; pass --epochs greater than \(epoch) to continue", code: ExitStatus.usage)
        }
        return ResumeState(
            checkpoint: c, epoch: epoch,
            step: m["bntrain.step"].flatMap(Int.init) ?? 0,
            partialLossSum: m["bntrain.partial_loss_sum"].flatMap(Double.init) ?? 0,
            shuffleState: rng,
            previousLoss: m["bntrain.prev_train_loss"].flatMap(Double.init),
            bestVal: (m["bntrain.best_val_acc"].flatMap(Double.init) ?? -1, m["bntrain.best_val_epoch"].flatMap(Int.init) ?? 0),
            bestTest: (m["bntrain.best_test_acc"].flatMap(Double.init) ?? -1, m["bntrain.best_test_epoch"].flatMap(Int.init) ?? 0),
            trainSeconds: m["bntrain.train_seconds"].flatMap(Double.init) ?? 0)
    }
}

extension Duration {
    var seconds: Double {
        let c = components
        return Double(c.seconds) + Double(c.attoseconds) * 1e-18
    }
}
