import BNCore
import BNData
import Foundation

/// One training run: load data, build the network, train, report. The only place that wires
/// the data module to the layer core.
struct TrainingRun {
    let options: BNTrain

    func run() throws {
        let o = options
        BLAS.setThreads(o.threads)
        let folder = DataLocation.resolve(o.data)
        let clock = ContinuousClock()
        let loadStarted = clock.now
        let dataset: Dataset
        do {
            let files = try DatasetFiles.locate(in: folder, hint: DataLocation.fetchHint)
            dataset = try Dataset.load(files)
        } catch let e as DataError {
            switch e {
            case .missingFolder where o.data == nil: throw fail(DataLocation.noDefaultMessage(), code: ExitStatus.noInput)
            case .missingFolder, .missingFile, .ambiguousFile: throw fail(e.description, code: ExitStatus.noInput)
            default: throw fail(e.description, code: ExitStatus.dataError)
            }
        }
        if let n = o.trainLimit, n > dataset.train.count {
            throw fail("--train-limit \(n) is larger than the \(dataset.train.count) training images in '\(dataset.files.trainImages)'; use at most \(dataset.train.count)", code: ExitStatus.usage)
        }
        let loadSeconds = (clock.now - loadStarted).seconds
        let trainCount = o.trainLimit ?? dataset.train.count
        if o.batch > trainCount {
            throw fail("--batch \(o.batch) is larger than the \(trainCount) training images; use at most \(trainCount)", code: ExitStatus.usage)
        }

        // Independent streams, so that e.g. --train-limit does not change the initial weights.
        var subsetRNG = SplitMix64(seed: o.seed, stream: "subset")
        var initRNG = SplitMix64(seed: o.seed, stream: "init")
        var shuffleRNG = SplitMix64(seed: o.seed, stream: "shuffle")

        let indices = randomSubset(total: dataset.train.count, limit: o.trainLimit, rng: &subsetRNG)
        let trainBatches = MinibatchSampler(split: dataset.train, indices: indices, batchSize: o.batch)
        let testBatches = SequentialBatches(split: dataset.test, batchSize: min(o.evalBatch, dataset.test.count))
        let net = Network<Float>.reference(
            inputs: dataset.featureCount, hidden: o.hidden, classes: dataset.classes, batchNorm: !o.noBatchnorm,
            bnMomentum: Float(o.bnMomentum), bnEps: Float(o.bnEps), runningVariance: o.bnRunningVar,
            initializer: o.`init`, rng: &initRNG)
        let sgd = SGD<Float>(learningRate: Float(o.lr))

        let report = Report()
        report.line("config", [
            ("version", BNTrain.version), ("data", folder),
            ("train_images", dataset.files.trainImages), ("test_images", dataset.files.testImages),
            ("image", "\(dataset.rows)x\(dataset.cols)"), ("classes", "\(dataset.classes)"),
            ("train", "\(trainCount)"), ("test", "\(dataset.test.count)"),
            ("epochs", "\(o.epochs)"), ("batch", "\(o.batch)"), ("lr", "\(o.lr)"), ("hidden", "\(o.hidden)"),
            ("batchnorm", o.noBatchnorm ? "off" : "on"), ("bn_momentum", "\(o.bnMomentum)"), ("bn_eps", "\(o.bnEps)"),
            ("bn_running_var", o.bnRunningVar.rawValue), ("init", o.`init`.rawValue),
            ("seed", "\(o.seed)"), ("threads", "\(o.threads)"), ("blas_core", BLAS.coreName), ("parameters", "\(net.parameterCount)"),
            ("load_seconds", Report.fixed(loadSeconds, 3)),
        ])

        var previousLoss: Double?
        var best = (accuracy: -1.0, epoch: 0)
        var last = (loss: 0.0, accuracy: 0.0)
        var trainSeconds = 0.0
        for epoch in 1...o.epochs {
            let started = clock.now
            trainBatches.shuffle(rng: &shuffleRNG)
            var lossSum = 0.0
            for b in 0..<trainBatches.batchCount {
                let n = trainBatches.fill(batch: b)
                let loss = net.trainStep(trainBatches.x, labels: trainBatches.labels, optimizer: sgd)
                guard loss.isFinite else {
                    throw fail("training diverged: the loss became \(loss) at epoch \(epoch), step \(b + 1) of \(trainBatches.batchCount); try a smaller --lr (now \(o.lr))", code: ExitStatus.diverged)
                }
                lossSum += loss * Double(n)
            }
            let seconds = (clock.now - started).seconds
            trainSeconds += seconds
            let trainLoss = lossSum / Double(trainCount)

            let testStarted = clock.now
            let test = evaluate(net, testBatches)
            let testSeconds = (clock.now - testStarted).seconds
            if test.accuracy > best.accuracy { best = (test.accuracy, epoch) }
            last = (test.loss, test.accuracy)
            report.line(nil, [
                ("epoch", "\(epoch)"), ("train_loss", Report.fixed(trainLoss, 6)),
                ("loss_change", previousLoss.map { Report.fixed(trainLoss - $0, 6) } ?? "nan"),
                ("test_loss", Report.fixed(test.loss, 6)), ("test_acc", Report.fixed(test.accuracy, 4)),
                ("seconds", Report.fixed(seconds, 3)), ("test_seconds", Report.fixed(testSeconds, 3)),
            ])
            previousLoss = trainLoss
        }
        report.line("summary", [
            ("epochs", "\(o.epochs)"), ("final_train_loss", Report.fixed(previousLoss ?? .nan, 6)),
            ("final_test_loss", Report.fixed(last.loss, 6)), ("final_test_acc", Report.fixed(last.accuracy, 4)),
            ("best_test_acc", Report.fixed(best.accuracy, 4)), ("best_epoch", "\(best.epoch)"),
            ("train_seconds", Report.fixed(trainSeconds, 3)),
            ("seconds_per_epoch", Report.fixed(trainSeconds / Double(o.epochs), 4)),
        ])
    }

    /// Mean loss and accuracy over a whole split, in evaluation mode (BN running statistics).
    func evaluate(_ net: Network<Float>, _ batches: SequentialBatches) -> (loss: Double, accuracy: Double) {
        var lossSum = 0.0, correct = 0
        for b in 0..<batches.batchCount {
            batches.select(batch: b)
            let logits = net.forward(batches.x, training: false)
            let r = net.loss.evaluate(logits: logits, labels: batches.labels)
            lossSum += r.lossSum
            correct += r.correct
        }
        let n = Double(batches.exampleCount)
        return (lossSum / n, Double(correct) / n)
    }
}

extension Duration {
    var seconds: Double {
        let c = components
        return Double(c.seconds) + Double(c.attoseconds) * 1e-18
    }
}
