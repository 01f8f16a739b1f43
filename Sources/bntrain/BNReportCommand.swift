import ArgumentParser
import BNCheckpoint
import BNCore
import BNData
import BNTraining
import Foundation

/// The precise-BN pass's settings shared by `eval --precise-bn` and `bn-report`.
struct PreciseBNOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Rows per batch of the precise-BN pass (the per-batch statistics it averages). Default: the checkpoint's training --batch, else 64.", valueName: "B"))
    var preciseBnBatch: Int?

    func validate() throws {
        if let b = preciseBnBatch, b < 1 || b > 1 << 24 { throw ValidationError("--precise-bn-batch must be from 1 to \(1 << 24) (got \(b))") }
    }

    /// --precise-bn-batch, else the batch recorded in the checkpoint's configuration.
    func batch(_ c: Checkpoint) -> Int {
        if let b = preciseBnBatch { return b }
        let json = c.metadata["bntrain.config"].flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) } as? [String: Any]
        if let b = json?["batch"] as? Int, b >= 1, b <= 1 << 24 { return b }
        return 64
    }
}

/// Loads a dataset for a saved model and checks that its images and labels fit it.
func dataset(for stored: StoredModel, model: String, checkpoint: Checkpoint, data: String?, training: Bool) throws -> (folder: String, dataset: Dataset) {
    var dataFlag = data
    if dataFlag == nil, let saved = checkpoint.metadata["bntrain.data"], FileManager.default.fileExists(atPath: saved) { dataFlag = saved }
    let (folder, dataset) = try DataLocation.load(dataFlag)
    if let why = stored.misfit(rows: dataset.rows, cols: dataset.cols) {
        throw fail("model '\(model)' \(why) but '\(dataset.files.testImages)' has \(dataset.rows)x\(dataset.cols) = \(dataset.featureCount)", kind: .badInput)
    }
    do {
        try Dataset.checkLabels(dataset.test.labels, classes: stored.classes, path: dataset.files.testLabels)
        if training { try Dataset.checkLabels(dataset.train.labels, classes: stored.classes, path: dataset.files.trainLabels) }
    } catch let e as DataError {
        throw fail(e.description + " (the model has \(stored.classes) classes)", kind: .badInput)
    }
    return (folder, dataset)
}

/// Parses `N|all` for an image count flag.
func imageCount(_ text: String, flag: String) throws -> Int? {
    if text == "all" { return nil }
    guard let n = Int(text), n >= 1, n <= NormalizationConfig.maxExamples else {
        throw ValidationError("\(flag) must be from 1 to \(NormalizationConfig.maxExamples) images, or all (got '\(text)')")
    }
    return n
}

/// `bntrain bn-report`: where a saved model's BN statistics stand against the training set's.
struct BNReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bn-report",
        abstract: "Compare a saved model's BN running statistics with the training set's: per-layer drift, and test accuracy with running, precise and batch statistics.",
        discussion: """
        One `bn` record per BN layer: mean_distance = ||running_mean - mu|| / ||sigma|| and \
        var_distance = ||running_var - sigma^2|| / ||sigma^2||, where mu and sigma^2 are the \
        exact statistics of the layer's input over the training images with the model in \
        evaluation mode; the same for the precise statistics; and acc_with_precise, the test \
        accuracy with that layer's statistics alone made precise. Then one `bn_report` record: \
        test accuracy and loss with the running statistics, precise ones (fvcore's pass) and \
        each test batch's own (BN in training mode), and drift_layer, the layer whose precise \
        statistics alone recover the most accuracy. docs/normalization.md.

        \(ExitStatus.helpText)
        """)

    @OptionGroup var saved: SavedModelOptions

    @Option(help: ArgumentHelp("Dataset folder or name. Default: the checkpoint's dataset if it exists, else Data/mnist or Data/fashion-mnist.", valueName: "dir|name"))
    var data: String?

    @Option(help: ArgumentHelp("Training images the population and precise statistics are taken over (the first N, in file order). Default: all.", valueName: "N|all"))
    var examples = "all"

    @OptionGroup var precise: PreciseBNOptions

    @Option(help: ArgumentHelp("text (key=value lines) or jsonl.", valueName: "text|jsonl"))
    var logFormat: ReportFormat = .text

    func validate() throws { _ = try imageCount(examples, flag: "--examples") }

    func run() throws {
        saved.prepareKernels()
        let model = saved.model
        let (checkpoint, net, stored) = try loadModel(model)
        guard !(net.batchNorms.isEmpty && net.batchNorms2D.isEmpty) else {
            throw fail("model '\(model)' (\(stored.spec.canonical)) has no bn layer; bn-report describes BN statistics", kind: .usage)
        }
        let (_, data) = try dataset(for: stored, model: model, checkpoint: checkpoint, data: data, training: true)
        let limit = try imageCount(examples, flag: "--examples")
        if let n = limit, n > data.train.count {
            throw fail("--examples \(n) is more than the \(data.train.count) training images in '\(data.files.trainImages)'; use at most \(data.train.count) or all", kind: .usage)
        }
        let evalBatch = Trainer.automaticEvalBatch(spec: stored.spec, inputs: stored.inputs, image: stored.image, classes: stored.classes)
        let r = BatchNormReport.measure(net, train: data.train, examples: limit, batch: precise.batch(checkpoint), test: data.test, evalBatch: evalBatch, seed: 0)
        let report = Report(format: logFormat == .jsonl ? .jsonl : .text)
        for l in r.layers {
            try report.emit(Record("bn", [
                ("layer", .string(l.name)), ("channels", .int(l.channels)),
                ("mean_distance", .number(l.meanDistance, digits: 6)), ("var_distance", .number(l.varianceDistance, digits: 6)),
                ("precise_mean_distance", .number(l.preciseMeanDistance, digits: 6)), ("precise_var_distance", .number(l.preciseVarianceDistance, digits: 6)),
                ("acc_with_precise", .number(l.accuracyWithPrecise, digits: 4)),
            ]))
        }
        let drift = r.driftLayer!
        try report.emit(Record("bn_report", [
            ("model", .string(model)), ("spec", .string(stored.spec.canonical)), ("layers", .int(r.layers.count)),
            ("train_examples", .int(min(limit ?? data.train.count, data.train.count))), ("precise_batch", .int(precise.batch(checkpoint))),
            ("acc_running", .number(r.runningAccuracy, digits: 4)), ("acc_precise", .number(r.preciseAccuracy, digits: 4)), ("acc_batch", .number(r.batchAccuracy, digits: 4)),
            ("loss_running", .number(r.runningLoss, digits: 6)), ("loss_precise", .number(r.preciseLoss, digits: 6)), ("loss_batch", .number(r.batchLoss, digits: 6)),
            ("gap", .number(r.preciseAccuracy - r.runningAccuracy, digits: 4)),
            ("drift_layer", .string(drift.name)), ("drift_layer_recovers", .number(drift.accuracyWithPrecise - r.runningAccuracy, digits: 4)),
        ]))
    }
}
