import ArgumentParser
import BNCore
import BNData
import BNTraining
import Foundation

/// `bntrain summary`: a model's layers, output shapes, parameters and FLOPs (like Keras'
/// `model.summary()` or torchinfo); with no model, the presets.
struct SummaryCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "summary",
        abstract: "Describe a model: one line per layer (index, kind, output shape, parameters, forward FLOPs per example) and a total; with no --model, list the presets.",
        discussion: """
            FLOPs count one forward pass of one example in evaluation mode: a multiply-add is 2 (fc: 2*in*out + out), \
            an activation 1 per element, bn 2 per element (scale and shift), ln 7 per element, dropout 0.
            \(ExitStatus.helpText).
            """)

    @OptionGroup var spec: SpecOptions

    @Option(help: ArgumentHelp("Take the input size and class count from this dataset (default: 28x28 images, 10 classes).", valueName: "dir|name"))
    var data: String?

    @Option(help: ArgumentHelp("The images' size instead of --data's: rows x cols (one channel).", valueName: "RxC"))
    var input: String?

    @Option(help: ArgumentHelp("The class count instead of --data's.", valueName: "n"))
    var classes: Int?

    @Option(help: ArgumentHelp("text (key=value lines) or jsonl.", valueName: "text|jsonl"))
    var logFormat: ReportFormat = .text

    func validate() throws {
        if let input, imageSize(input) == nil {
            throw ValidationError("--input '\(input)' is not an image size; write rows x cols, e.g. 28x28")
        }
        if let classes, !(2...ModelSpec.maxWidth).contains(classes) {
            throw ValidationError("--classes \(classes) is out of range; use 2 to \(ModelSpec.maxWidth)")
        }
    }

    /// rows x cols, each from 1 to `ModelSpec.maxWidth` (1xN describes N features).
    func imageSize(_ text: String) -> (rows: Int, cols: Int)? {
        let parts = text.split(separator: "x", omittingEmptySubsequences: false)
        let range = 1...ModelSpec.maxWidth
        guard parts.count == 2, let r = Int(parts[0]), let c = Int(parts[1]), range.contains(r), range.contains(c), range.contains(r * c) else { return nil }
        return (r, c)
    }

    func run() throws {
        let report = Report(format: logFormat == .jsonl ? .jsonl : .text)
        var inputs = 28 * 28, classes = 10, image = "28x28", imageShape = ImageShape(1, 28, 28)
        if let data {
            let (_, dataset) = try DataLocation.load(data)
            (inputs, classes, image) = (dataset.featureCount, dataset.classes, "\(dataset.rows)x\(dataset.cols)")
            imageShape = ImageShape(1, dataset.rows, dataset.cols)
        }
        if let input, let (r, c) = imageSize(input) { (inputs, image, imageShape) = (r * c, "\(r)x\(c)", ImageShape(1, r, c)) }
        if let n = self.classes { classes = n }
        guard let model = spec.model else {
            for p in ModelSpec.presets {
                var c = RunConfig()
                c.model.spec = p.name
                let spec = try c.spec()
                let params = try spec.summary(inputs: inputs, classes: classes, image: imageShape).reduce(0) { $0 + $1.parameters }
                try report.emit(Record("preset", [("name", .string(p.name)), ("spec", .string(spec.canonical)), ("parameters", .int(params)), ("about", .string(p.about))]))
            }
            return
        }
        let spec = try self.spec.config(model: model).spec()
        let rows: [ModelSpec.LayerSummary]
        do { rows = try spec.summary(inputs: inputs, classes: classes, image: imageShape) } catch let e as ModelSpec.ParseError {
            throw fail("--model \(e.message)", kind: .usage)
        }
        for r in rows {
            try report.emit(Record("layer", [
                ("index", .int(r.index)), ("layer_kind", .string(r.kind)), ("token", .string(r.token)), ("output", .string(r.outputShape)),
                ("parameters", .int(r.parameters)), ("flops", .int(r.flops)), ("tensors", .string(r.tensors.joined(separator: ","))),
                ("pytorch", .string(r.pytorch)),
            ]))
        }
        try report.emit(Record("total", [
            ("model", .string(model)), ("spec", .string(spec.canonical)), ("input", .string(image)),
            ("input_kind", .string(spec.isConvolutional ? "image" : "features")), ("classes", .int(classes)),
            ("layers", .int(rows.count)), ("parameters", .int(rows.reduce(0) { $0 + $1.parameters })), ("flops", .int(rows.reduce(0) { $0 + $1.flops })),
        ]))
    }
}
