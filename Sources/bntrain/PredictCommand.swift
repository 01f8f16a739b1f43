import ArgumentParser
import BNCheckpoint
import BNCore
import BNData
import BNPlatform
import BNTraining
import Foundation

/// `bntrain predict`: labels for the images of one IDX file.
struct PredictCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "predict",
        abstract: "Predict a label for every image of an IDX image file: one line per image with the label and its probability.",
        discussion: ExitStatus.helpText)

    @OptionGroup var saved: SavedModelOptions

    @Option(help: ArgumentHelp("An IDX image file (magic 2051), raw or gzipped.", valueName: "file"))
    var images: String

    @Option(help: ArgumentHelp("text (index=.. label=.. prob=.. lines), jsonl, or csv (an index,label,prob header, then one row per image).", valueName: "text|jsonl|csv"))
    var logFormat: LogFormat = .text

    func run() throws {
        saved.prepareKernels()
        let model = saved.model
        let (_, net, stored) = try loadModel(model)
        let set: ImageSet
        do { set = try IDX.readImages(path: images) } catch let e as DataError {
            switch e {
            case .unreadable, .notRegularFile: throw fail("--images: \(e.description)", kind: .notFound)
            default: break
            }
            throw fail(e.description, kind: .badInput)
        }
        if let why = stored.misfit(rows: set.rows, cols: set.cols) {
            throw fail("model '\(model)' \(why) but '\(images)' has \(set.rows)x\(set.cols) = \(set.featureCount)", kind: .badInput)
        }
        let chunk = Trainer.automaticEvalBatch(spec: stored.spec, inputs: stored.inputs, image: stored.image, classes: stored.classes)
        let batch = Matrix<Float>(rows: 0, cols: set.featureCount, capacityRows: min(chunk, set.count))
        var out = logFormat == .csv ? "index,label,prob\n" : ""
        for start in stride(from: 0, to: set.count, by: chunk) {
            let n = min(chunk, set.count - start)
            batch.resize(rows: n)
            set.convert(images: start, count: n, into: batch.data)
            for (i, p) in Evaluation.predictions(net.forward(batch, training: false)).enumerated() {
                let fields: [(String, Value)] = [("index", .int(start + i)), ("label", .int(p.label)), ("prob", .number(p.probability, digits: 4))]
                let r = Record("prediction", fields)
                switch logFormat {
                case .text: out += r.textLine + "\n"
                case .jsonl: out += r.jsonLine + "\n"
                case .csv: out += r.csvRow + "\n"
                }
            }
            try writeOut(out)
            out = ""
        }
    }
}
