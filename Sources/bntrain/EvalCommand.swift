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

    @Option(help: "Batch size of the pass (memory and speed only). Default: automatic, 1000 images or fewer for wide convolutional nets.")
    var evalBatch: Int?

    func validate() throws {
        var c = RunConfig()
        c.kernels.evalBatch = evalBatch ?? 0
        if evalBatch == 0 { throw ValidationError("--eval-batch must be from 1 to \(1 << 24) (got 0); leave it out for automatic") }
        try c.checkFlags([.evalBatch])
    }

    func run() throws {
        saved.prepareKernels()
        let model = saved.model
        let (checkpoint, net, stored) = try loadModel(model)
        var dataFlag = data
        if dataFlag == nil, let saved = checkpoint.metadata["bntrain.data"], FileManager.default.fileExists(atPath: saved) { dataFlag = saved }
        let (folder, dataset) = try DataLocation.load(dataFlag)
        if let why = stored.misfit(rows: dataset.rows, cols: dataset.cols) {
            throw fail("model '\(model)' \(why) but '\(dataset.files.testImages)' has \(dataset.rows)x\(dataset.cols) = \(dataset.featureCount)", kind: .badInput)
        }
        do { try Dataset.checkLabels(dataset.test.labels, classes: stored.classes, path: dataset.files.testLabels) } catch let e as DataError {
            throw fail(e.description + " (the model has \(stored.classes) classes)", kind: .badInput)
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
