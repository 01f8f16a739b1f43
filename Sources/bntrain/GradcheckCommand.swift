import ArgumentParser
import BNCore
import BNData
import BNTraining
import Foundation

/// `bntrain gradcheck`: the model's gradients against finite differences, layer by layer.
struct GradcheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gradcheck",
        abstract: "Check a model's gradients layer by layer against central finite differences, in Double.",
        discussion: """
            Builds the model in Double, one layer per spec token (nothing fused), takes a small batch (the first \
            training images of --data, else seeded random pixels in [-1, 1] of 28x28 and 10 classes), a random upstream \
            gradient at the logits, and compares every layer's input gradient and every parameter gradient with \
            central differences (step 1e-6; dropout masks fixed). Also checks BatchNorm's staged and simplified \
            backward against each other, BatchNorm's evaluation output against its formula, dropout's evaluation \
            (the identity) and training scaling (0 or x/(1-p)), and the loss's gradient. One 'check' record per \
            tensor with its relative error ||a-n||/max(||a||,||n||) over the entries checked (absolute for a gradient that is zero, \
            below 1e-7 on both sides: a bias right before BatchNorm), then a summary with the worst and a \
            verdict: exit 0 when every error is below \(GradientCheckRun.threshold), 1 when one is not. Tensors with \
            more than --samples entries are checked at that many seeded entries; --full checks all.
            ReLU and max pooling have kinks (an input at 0, a window whose largest entries tie: zero padding, a black \
            background), where a central difference measures neither side's derivative: an entry whose +h or -h run \
            flips any ReLU or max-pool choice from its layer to the output is not compared, and is counted in 'skipped'. \
            Before checking, prints to stderr how many differences the check takes and about how long, from one timed \
            forward pass; a check estimated above --max-seconds is refused (exit 64), and records print as each tensor \
            finishes. A batch whose Double tensors would take more than half of memory is refused too.
            \(ExitStatus.helpText); 1 a gradient check failed.
            """)

    @OptionGroup var specOptions: SpecOptions

    @Option(help: ArgumentHelp("Take the batch from this dataset's training images (default: seeded random inputs).", valueName: "dir|name"))
    var data: String?

    @Option(help: "Examples in the batch.")
    var batch = 8

    @Option(help: "Entries checked per tensor (seeded sample).")
    var samples = 100

    @Flag(help: "Check every entry of every tensor.")
    var full = false

    @Option(help: ArgumentHelp("Refuse a check estimated to take longer (--full on a CNN takes hours).", valueName: "seconds"))
    var maxSeconds: Double = 600

    @Option(help: "Seed for the weights, inputs, upstream gradient, dropout masks and samples.")
    var seed: UInt64 = 1

    @Option(help: ArgumentHelp("text (key=value lines) or jsonl.", valueName: "text|jsonl"))
    var logFormat: ReportFormat = .text

    func validate() throws {
        guard batch >= 2, batch <= 256 else { throw ValidationError("--batch must be from 2 to 256 (BatchNorm needs two examples; got \(batch))") }
        guard samples >= 1, samples <= 1_000_000 else { throw ValidationError("--samples must be from 1 to 1000000 (got \(samples))") }
        guard maxSeconds.isFinite, maxSeconds > 0 else { throw ValidationError("--max-seconds must be a positive number of seconds (got \(maxSeconds))") }
    }

    func run() throws {
        let spec = try specOptions.config(model: "dfn2").spec()
        var rng = SplitMix64(seed: seed, stream: "inputs")
        var inputs = 28 * 28, classes = 10, image = ImageShape(1, 28, 28)
        var x: Matrix<Double>
        var labels: [Int32]
        if let data {
            let (_, dataset) = try DataLocation.load(data)
            (inputs, classes, image) = (dataset.featureCount, dataset.classes, ImageShape(1, dataset.rows, dataset.cols))
            let n = min(batch, dataset.train.count)
            x = Matrix(rows: n, cols: inputs)
            let pixels = dataset.train.images.floats(count: n)
            for k in 0..<x.count { x.data[k] = Double(pixels.data[k]) }
            labels = Array(dataset.train.labels.prefix(n))
        } else {
            x = Matrix(rows: batch, cols: inputs)
            for k in 0..<x.count { x.data[k] = rng.nextUniform() * 2 - 1 }
            labels = (0..<batch).map { _ in Int32(rng.nextInt(below: classes)) }
        }
        let needed = GradientCheckRun.memoryNeeded(spec: spec, inputs: inputs, image: image, classes: classes, batch: x.rows)
        let available = Memory.physicalBytes
        if needed > Double(available) / 2 {
            throw fail("--model '\(spec.canonical)' with --batch \(x.rows) needs about \(Memory.describe(Int(min(needed, 9e18)))) in Double for its weights, activations and gradients, more than half of this machine's \(Memory.describe(available)); use narrower layers or a smaller --batch", kind: .usage)
        }
        var options = BuildOptions()
        options.fuse = false
        var initRNG = SplitMix64(seed: seed, stream: "init")
        let net: Network<Double>
        do {
            net = try spec.build(Double.self, inputs: inputs, classes: classes, image: image, options: options, rng: &initRNG, dropoutRNG: SplitMix64(seed: seed, stream: "dropout"))
        } catch let e as ModelSpec.ParseError {
            throw fail("--model \(e.message)", kind: .usage)
        }
        GradientCheckRun.moveGainsAndShifts(net, rng: &rng)
        let plan = GradientCheckRun.plan(net, x: x, samples: full ? nil : samples)
        let estimate = Value.number(plan.seconds, digits: plan.seconds < 10 ? 1 : 0).text
        if plan.seconds > maxSeconds {
            throw fail("gradcheck of '\(spec.canonical)' takes \(plan.differences) differences, about \(estimate) s here, more than --max-seconds \(Value.number(maxSeconds, digits: 0).text); pass --max-seconds \(Int(plan.seconds * 1.5) + 1) to run it\(full ? ", or drop --full" : ", or lower --samples")", kind: .usage)
        }
        note("gradcheck: \(plan.differences) differences, about \(estimate) s")
        let report = Report(format: logFormat == .jsonl ? .jsonl : .text)
        let outcome = try GradientCheckRun.run(net, kinds: spec.layers.map(\.kind), x: x, labels: labels, samples: full ? nil : samples, seed: seed) {
            try report.emit(GradientCheckRun.record($0))
        }
        let w = outcome.worst
        try report.emit(Record("summary", [
            ("model", .string(specOptions.model ?? "dfn2")), ("spec", .string(spec.canonical)), ("batch", .int(x.rows)),
            ("checks", .int(outcome.entries.count)), ("worst", .scientific(w?.maxRelativeError ?? 0)),
            ("worst_index", .int(w?.index ?? 0)), ("worst_kind", .string(w?.kind ?? "")), ("worst_tensor", .string(w?.tensor ?? "")),
            ("threshold", .exact(GradientCheckRun.threshold)), ("verdict", .string(outcome.passed ? "pass" : "fail")),
        ] + (outcome.firstFailure.map { f in
            [("failing_index", .int(f.index)), ("failing_kind", .string(f.kind)), ("failing_tensor", .string(f.tensor))]
        } ?? [])))
        if let f = outcome.firstFailure {
            note("gradient check failed: layer \(f.index) (\(f.kind)) \(f.tensor) has relative error \(Value.scientific(f.maxRelativeError).text), above \(GradientCheckRun.threshold); layers below it inherit its error")
            throw ExitCode(outcome.exitCode)
        }
    }
}
