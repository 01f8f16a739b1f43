import ArgumentParser
import BNCheckpoint
import BNCore
import BNData
import BNPlatform
import BNTraining
import Foundation

/// `bntrain eval`: a saved model on a dataset's test split.
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Evaluate a saved model on a dataset's test images: loss, accuracy, per-class accuracy, confusion matrix.",
        discussion: ExitStatus.helpText)

    @OptionGroup var saved: SavedModelOptions

    @Option(help: ArgumentHelp("Dataset folder or name, as for training. Default: the checkpoint's dataset if it exists, else Data/mnist or Data/fashion-mnist.", valueName: "dir|name"))
    var data: String?

    @Option(help: ArgumentHelp("text (key=value lines) or jsonl (one JSON object).", valueName: "text|jsonl"))
    var logFormat: ReportFormat = .text

    @Option(help: ArgumentHelp("Recompute the BN statistics first (precise BN, as --bn-stats precise) over the first N training images of --data, or all; the checkpoint is not changed.", valueName: "N|all"))
    var preciseBn: String?

    @OptionGroup var precise: PreciseBNOptions

    @Option(help: "Batch size of the pass (memory and speed only). Default: automatic, 1000 images or fewer for wide convolutional nets.")
    var evalBatch: Int?

    func validate() throws {
        var c = RunConfig()
        c.kernels.evalBatch = evalBatch ?? 0
        if evalBatch == 0 { throw ValidationError("--eval-batch must be from 1 to \(1 << 24) (got 0); leave it out for automatic") }
        try c.checkFlags([.evalBatch])
        if let p = preciseBn { _ = try imageCount(p, flag: "--precise-bn") }
        if preciseBn == nil && precise.preciseBnBatch != nil { throw ValidationError("--precise-bn-batch sets the batch of the --precise-bn pass; add --precise-bn N or all") }
    }

    func run() throws {
        saved.prepareKernels()
        let model = saved.model
        let (checkpoint, net, stored) = try loadModel(model)
        let (folder, dataset) = try dataset(for: stored, model: model, checkpoint: checkpoint, data: data, training: preciseBn != nil)
        var preciseFields: [(String, Value)] = []
        if let p = preciseBn {
            guard !(net.batchNorms.isEmpty && net.batchNorms2D.isEmpty) else {
                throw fail("--precise-bn recomputes BN statistics, but model '\(model)' (\(stored.spec.canonical)) has no bn layer; drop it", kind: .usage)
            }
            let limit = try imageCount(p, flag: "--precise-bn")
            if let n = limit, n > dataset.train.count {
                throw fail("--precise-bn \(n) is more than the \(dataset.train.count) training images in '\(dataset.files.trainImages)'; use at most \(dataset.train.count) or all", kind: .usage)
            }
            let batch = precise.batch(checkpoint)
            let parallel = DataParallel(model: net, replicas: [], plan: ShardPlan(shardSize: batch), workers: 1, batchNormSync: .on)!
            let pass = PreciseBatchNorm(parallel: parallel, split: dataset.train, examples: (0..<Int32(dataset.train.count)).map { $0 }, limit: limit, batch: batch)
            pass.recompute(pass: 0, seed: 0)
            preciseFields = [("precise_bn", .int(pass.batchCount * min(batch, limit ?? dataset.train.count))), ("precise_bn_batch", .int(min(batch, limit ?? dataset.train.count)))]
        }
        let batches = SequentialBatches(split: dataset.test, batchSize: min(evalBatch ?? Trainer.automaticEvalBatch(spec: stored.spec, inputs: stored.inputs, image: stored.image, classes: stored.classes), dataset.test.count))
        let c = stored.classes
        let result = Evaluation.run(net, batches, confusion: true)
        let confusion = result.confusion!
        let total = dataset.test.count
        let counts = confusion.map { $0.reduce(0, +) }
        let perClass = (0..<c).map { counts[$0] == 0 ? Double.nan : Double(confusion[$0][$0]) / Double(counts[$0]) }
        let head: [(String, Value)] = [
            ("model", .string(model)), ("data", .string(folder)), ("test_images", .string(dataset.files.testImages)),
            ("test", .int(total)), ("classes", .int(c)),
            ("spec", .string(stored.spec.canonical)),
        ] + preciseFields + [
            ("test_loss", .number(result.loss, digits: 6)), ("test_acc", .number(result.accuracy, digits: 4)),
        ]
        switch logFormat {
        case .jsonl:
            let classes = (0..<c).map { "{\"class\":\($0),\"count\":\(counts[$0]),\"correct\":\(confusion[$0][$0]),\"acc\":\(Value.number(perClass[$0], digits: 4).json)}" }
            let rows = confusion.map { "[" + $0.map(String.init).joined(separator: ",") + "]" }
            try writeLine(Record("eval", head).jsonLine.dropLast() + ",\"per_class\":[\(classes.joined(separator: ","))],\"confusion\":[\(rows.joined(separator: ","))]}")
        case .text:
            let report = Report(format: .text)
            try report.emit(Record("eval", head))
            for k in 0..<c {
                try report.emit(Record("class", [("class", .int(k)), ("count", .int(counts[k])), ("correct", .int(confusion[k][k])), ("acc", .number(perClass[k], digits: 4))]))
            }
            // Rows: true label; columns: predicted label.
            for k in 0..<c {
                try report.emit(Record("confusion", [("true", .int(k)), ("predicted", .string(confusion[k].map(String.init).joined(separator: ",")))]))
            }
        }
    }
}
