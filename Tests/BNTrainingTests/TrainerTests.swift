import BNCheckpoint
import BNCore
import BNData
import BNTraining
import Foundation
import XCTest

/// The training loop in-process: the record sequence, resume bit for bit (at an epoch
/// boundary and mid-epoch, with dropout), the configuration round trip and conflict check.
final class TrainerTests: XCTestCase {
    var dir: String!
    var dataset: Dataset!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "bntraining-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // 4 classes of 6x6 images: class k is bright in row k + 1, plus noise.
        var rng = SplitMix64(seed: 1)
        func make(_ n: Int) -> ([UInt8], [UInt8]) {
            var px: [UInt8] = [], labels: [UInt8] = []
            for i in 0..<n {
                labels.append(UInt8(i % 4))
                for r in 0..<6 { for _ in 0..<6 { px.append(UInt8((r == i % 4 + 1 ? 140 : 20) + rng.nextInt(below: 80))) } }
            }
            return (px, labels)
        }
        let (a, b) = make(300), (c, d) = make(100)
        try IDX.writeImages(a, count: 300, rows: 6, cols: 6, to: dir + "/train-images-idx3-ubyte", gzip: false)
        try IDX.writeLabels(b, to: dir + "/train-labels-idx1-ubyte", gzip: false)
        try IDX.writeImages(c, count: 100, rows: 6, cols: 6, to: dir + "/t10k-images-idx3-ubyte", gzip: false)
        try IDX.writeLabels(d, to: dir + "/t10k-labels-idx1-ubyte", gzip: false)
        dataset = try Dataset.load(DatasetFiles.locate(in: dir, hint: ""))
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    func config(_ model: String = "fc16-bn-relu-dropout0.3-fc12-ln-tanh-fc", epochs: Int = 4) -> RunConfig {
        var c = RunConfig()
        c.data.folder = dir
        c.model.spec = model
        c.epochs = epochs
        c.batch = 32
        c.optimizer.lr = 0.05
        c.data.valSplit = 0.2
        return c
    }

    func run(_ c: RunConfig, outputs: RunOutputs = RunOutputs(), resume: String? = nil, stopAtStep: Int? = nil) throws -> [Record] {
        let sink = RecordList()
        let r = try resume.map { (checkpoint: try Checkpoint.read(path: $0), path: $0) }
        let trainer = try Trainer(config: c, outputs: outputs, dataset: dataset, resume: r, sink: sink, diagnostics: { _ in })
        var steps = 0
        do {
            try trainer.run(shouldStop: {
                steps += 1
                return stopAtStep.map { steps > $0 ? 2 : nil } ?? nil
            })
        } catch TrainingStop.interrupted {}
        return sink.records
    }

    /// Everything but the timing fields, for comparing runs.
    func stable(_ records: [Record]) -> [String] {
        records.map { r in Record(r.kind, r.fields.filter { !$0.0.contains("seconds") && $0.0 != "saved" }).jsonLine }
    }

    func testRecordSequenceAndDeterminism() throws {
        let a = try run(config()), b = try run(config())
        XCTAssertEqual(a.map(\.kind), ["config", "epoch", "epoch", "epoch", "epoch", "summary"])
        XCTAssertEqual(stable(a), stable(b), "same seed, same records")
        XCTAssertEqual(a[0]["spec"], .string("fc16-bn-relu-dropout0.3-fc12-ln-tanh-fc"))
        XCTAssertEqual(a[0]["parameters"], .int(36 * 16 + 16 + 32 + 16 * 12 + 12 + 24 + 12 * 4 + 4))
        XCTAssertEqual(a[1]["epoch"], .int(1))
        XCTAssertNotNil(a[1]["val_acc"])
        var other = config()
        other.seed = 7
        XCTAssertNotEqual(stable(try run(other)), stable(a), "the seed matters")
    }

    /// The automatic evaluation batch: 1000 images for the fully connected presets and
    /// lenet-bn, fewer for cnn (its activations kept within 128 MiB); and the records of a run
    /// do not depend on the evaluation batch (automatic, 1, 7 or 1000 here), only memory does.
    func testEvaluationBatchIsAutomaticAndDoesNotChangeResults() throws {
        let mnist = ImageShape(1, 28, 28)
        func auto(_ preset: String) throws -> Int {
            try Trainer.automaticEvalBatch(spec: ModelSpec.parse(preset), inputs: 784, image: mnist, classes: 10)
        }
        XCTAssertEqual(try auto("dfn2"), 1000)
        XCTAssertEqual(try auto("mlp"), 1000)
        XCTAssertEqual(try auto("lenet-bn"), 1000)
        let cnn = try auto("cnn")
        XCTAssert(cnn >= 100 && cnn <= 200, "cnn: \(cnn) images per evaluation batch")
        XCTAssertEqual(Evaluation.automaticBatch(floatsPerImage: 1e9), 32, "never fewer than 32")
        XCTAssertEqual(Evaluation.automaticBatch(floatsPerImage: 0), 1000)

        let model = "conv4k3-bn-relu-maxpool2-dropout0.2-fc8-bn-relu-fc"
        var c = config(model, epochs: 2)
        let automatic = try run(c)
        for b in [1, 7, 1000] {
            c.kernels.evalBatch = b
            XCTAssertEqual(stable(try run(c)), stable(automatic), "--eval-batch \(b)")
        }
    }

    /// An interrupted run (mid-epoch, with dropout) resumed from its checkpoint ends with the
    /// same weights, statistics and records as an uninterrupted one, bit for bit.
    func testResumeMidEpochWithDropoutIsBitForBit() throws {
        var whole = RunOutputs()
        whole.save = dir + "/whole.safetensors"
        let full = try run(config(), outputs: whole)
        var part = RunOutputs()
        part.save = dir + "/part.safetensors"
        let first = try run(config(), outputs: part, stopAtStep: 11)  // 8 steps an epoch: stops in epoch 2
        XCTAssertEqual(first.filter { $0.kind == "epoch" }.count, 1)
        let saved = try Checkpoint.read(path: dir + "/part.safetensors")
        XCTAssertEqual(saved.metadata["bntrain.epoch"], "1")
        XCTAssertEqual(saved.metadata["bntrain.step"], "3")
        let rest = try run(config(), outputs: part, resume: dir + "/part.safetensors")
        XCTAssertEqual(stable(Array(rest.dropFirst())), stable(Array(full.dropFirst(2))), "epochs 2-4 and the summary")
        let a = try Checkpoint.read(path: dir + "/whole.safetensors"), b = try Checkpoint.read(path: dir + "/part.safetensors")
        XCTAssertEqual(Set(a.tensors.keys), Set(b.tensors.keys))
        for (name, t) in a.tensors { XCTAssertEqual(t, b.tensors[name], "\(name) differs after resume") }
        XCTAssertEqual(a.metadata["bntrain.dropout_rng"], b.metadata["bntrain.dropout_rng"])
    }

    /// Every optimizer and schedule resumes bit for bit: interrupted mid-epoch, and stopped
    /// after epoch 2 then continued to 4, both end where an uninterrupted run ends (records,
    /// weights, BN statistics, optimizer state, generators).
    func testEveryOptimizerAndScheduleResumesBitForBit() throws {
        let variants: [(String, (inout RunConfig) -> Void)] = [
            ("sgd-nesterov-cosine-warmup", { $0.optimizer.rule = .sgd(momentum: 0.9, nesterov: true); $0.optimizer.weightDecay = 5e-4; $0.schedule.rule = .cosine(min: 0); $0.schedule.warmupEpochs = 1 }),
            ("adam-step", { $0.optimizer.rule = OptimizerRule(.adam); $0.optimizer.lr = 1e-3; $0.schedule.rule = .step(every: 1, gamma: 0.5) }),
            ("adamw-plateau", { $0.optimizer.rule = OptimizerRule(.adamw); $0.optimizer.lr = 1e-3; $0.optimizer.weightDecay = 0.01; $0.optimizer.decayScope = .weights; $0.schedule.rule = .plateau(patience: 0, factor: 0.5, min: 0) }),
            ("rmsprop-clip-early", { $0.optimizer.rule = .rmsprop(alpha: 0.99, eps: 1e-8, momentum: 0.5); $0.optimizer.lr = 1e-3; $0.optimizer.clipGradNorm = 0.5; $0.stopping = .after(patience: 3, monitor: .valAcc, minDelta: 0) }),
        ]
        for (name, edit) in variants {
            var c = config()
            edit(&c)
            var whole = RunOutputs()
            whole.save = dir + "/\(name)-whole.safetensors"
            let full = try run(c, outputs: whole)
            // Mid-epoch interruption (8 steps an epoch: stops in epoch 2), then resume.
            var part = RunOutputs()
            part.save = dir + "/\(name)-part.safetensors"
            _ = try run(c, outputs: part, stopAtStep: 11)
            let rest = try run(c, outputs: part, resume: part.save)
            XCTAssertEqual(stable(Array(rest.dropFirst())), stable(Array(full.dropFirst(2))), "\(name): mid-epoch resume")
            // Stopped right after epoch 2 (at the first step of epoch 3), then continued. (Not
            // a run with --epochs 2 extended to 4: cosine's horizon is --epochs.)
            var two = RunOutputs()
            two.save = dir + "/\(name)-two.safetensors"
            _ = try run(c, outputs: two, stopAtStep: 16)
            XCTAssertEqual(try Checkpoint.read(path: two.save!).metadata["bntrain.step"], "0", name)
            let more = try run(c, outputs: two, resume: two.save)
            XCTAssertEqual(stable(Array(more.dropFirst())), stable(Array(full.dropFirst(3))), "\(name): resume after epoch 2")
            let a = try Checkpoint.read(path: whole.save!)
            for path in [part.save!, two.save!] {
                let b = try Checkpoint.read(path: path)
                XCTAssertEqual(Set(a.tensors.keys), Set(b.tensors.keys), name)
                for (k, t) in a.tensors { XCTAssertEqual(t, b.tensors[k], "\(name): \(k) differs after resume") }
            }
            if c.optimizer.rule != .sgd(momentum: 0, nesterov: false) { XCTAssertNotNil(a.tensors["optimizer.step"], name) }
            XCTAssertTrue(full.last!.fields.contains { $0.0 == "stopped" }, name)
        }
    }

    /// Tracing and step-wise evaluation observe without touching training: the epoch records
    /// are those of a plain run, even when the trace needs the fc+sigmoid pair unfused.
    func testTracingAndEvalEveryLeaveTrainingUnchanged() throws {
        for (model, trace) in [("dfn2", "last-sigmoid"), ("fc16-bn-relu-dropout0.3-fc12-ln-tanh-fc", "last-tanh:output:unit=3")] {
            let plain = try run(config(model))
            var c = config(model)
            c.observation.trace = trace
            c.observation.traceEvery = 3
            c.observation.traceExamples = 40
            c.observation.evalEvery = 5
            let observed = try run(c)
            let kinds = Set(observed.map(\.kind))
            XCTAssertEqual(kinds, ["config", "epoch", "trace", "eval", "summary"], model)
            XCTAssertEqual(stable(observed.filter { $0.kind == "epoch" || $0.kind == "summary" }), stable(plain.filter { $0.kind == "epoch" || $0.kind == "summary" }), model)
            let traces = observed.filter { $0.kind == "trace" }
            XCTAssertEqual(traces.map { $0["step"] }, (1...(32 / 3)).map { .int($0 * 3) }, "every 3 steps of 4 epochs of 8")
            XCTAssertEqual(observed.filter { $0.kind == "eval" }.map { $0["step"] }, [.int(5), .int(10), .int(15), .int(20), .int(25), .int(30)])
        }
    }

    /// A signal that arrives during a trace ends the trace before its record; the run stops
    /// at the next step's check, as for a signal between steps.
    func testASignalDuringATraceEndsItBeforeItsRecord() throws {
        var c = config("dfn2", epochs: 1)
        c.observation.trace = "last-sigmoid"
        c.observation.traceEvery = 1
        c.observation.traceExamples = 40
        XCTAssertEqual(try run(c).filter { $0.kind == "trace" }.count, 8, "8 steps, a trace after each")
        // shouldStop's first call is before step 1; its second is inside step 1's trace.
        let stopped = try run(c, stopAtStep: 1)
        XCTAssertEqual(stopped.map(\.kind), ["config"], "no trace record of the interrupted trace")
    }

    /// A resumed run traces and evaluates at the same steps, with the same values, as an
    /// uninterrupted one: the two halves put together are the whole.
    func testResumeKeepsTracingConsistent() throws {
        var c = config()
        c.observation.trace = "1:output"
        c.observation.traceEvery = 2
        c.observation.evalEvery = 3
        var whole = RunOutputs()
        whole.save = dir + "/t-whole.safetensors"
        let full = try run(c, outputs: whole)
        var part = RunOutputs()
        part.save = dir + "/t-part.safetensors"
        part.metrics = dir + "/t.jsonl"
        let first = try run(c, outputs: part, stopAtStep: 13)
        let rest = try run(c, outputs: part, resume: part.save)
        let observed = { (r: [Record]) in r.filter { $0.kind == "trace" || $0.kind == "eval" || $0.kind == "epoch" } }
        XCTAssertEqual(stable(observed(first) + observed(rest)), stable(observed(full)))
        // The metrics file holds each step-wise record once, in order.
        let lines = try String(contentsOfFile: part.metrics!, encoding: .utf8).split(separator: "\n")
        let steps = lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }.filter { $0["kind"] as? String == "trace" }.compactMap { $0["step"] as? Int }
        XCTAssertEqual(steps, Array(stride(from: 2, through: 32, by: 2)))
    }

    /// The configuration survives the checkpoint's JSON exactly, and decodes bntrain 0.3's form.
    func testConfigRoundTripAndLegacyForm() throws {
        var c = config()
        c.data.trainLimit = 250
        c.seed = UInt64.max
        c.model.bnRunningVar = .unbiased
        c.model.batchNorm = false
        let back = try JSONDecoder().decode(RunConfig.self, from: JSONEncoder().encode(c))
        XCTAssertEqual(back, c)
        let legacy = #"{"version":"0.3.0","data":"Data/x","epochs":20,"batch":64,"lr":0.01,"hidden":12,"train_limit":"all","val_split":0.0,"shuffle":"none","batchnorm":"off","bn_momentum":0.9,"bn_eps":1e-05,"bn_running_var":"biased","init":"he","seed":"5","threads":1,"parameters":1}"#
        let old = try JSONDecoder().decode(RunConfig.self, from: Data(legacy.utf8))
        XCTAssertEqual(old.model.spec, "dfn2")
        XCTAssertEqual(old.model.hidden, 12)
        XCTAssertEqual(try old.spec().canonical, "fc12-sigmoid-fc")
        XCTAssertEqual(old.data.shuffle, ShuffleMode.none)
        XCTAssertEqual(old.model.initialization, "he")
        XCTAssertNil(old.data.trainLimit)
        for bad in [#"{"batchnorm":"maybe"}"#, #"{"train_limit":"some"}"#, #"{"seed":"-1"}"#, #"{"lr":"fast"}"#] {
            XCTAssertThrowsError(try JSONDecoder().decode(RunConfig.self, from: Data(bad.utf8)), bad)
        }
        var out = RunConfig()
        out.optimizer.lr = -1
        XCTAssertEqual(out.problem()?.key, .lr)
        out = RunConfig()
        out.model.spec = "mlp"
        out.model.hidden = 30
        XCTAssertEqual(out.problem()?.key, .hidden)
    }

    /// Given flags that change a restored value are conflicts; per-invocation ones apply.
    func testResumeConflictsAreDerivedFromTheEncoding() throws {
        let saved = config()
        typealias S = RunConfig.Setting
        let (merged, conflicts) = try RunConfig.resuming(saved, with: [
            S(.epochs) { $0.epochs = 9 }, S(.lr) { $0.optimizer.lr = 0.05 }, S(.model) { $0.model.spec = "mlp" }, S(.threads) { $0.kernels.threads = 2 },
            S(.batchNorm) { $0.model.batchNorm = false },
        ])
        XCTAssertEqual(merged.epochs, 9)
        XCTAssertEqual(merged.kernels.threads, 2)
        XCTAssertEqual(merged.model, saved.model)
        XCTAssertEqual(conflicts, ["--model mlp (checkpoint: fc16-bn-relu-dropout0.3-fc12-ln-tanh-fc)", "--no-batchnorm (checkpoint: batchnorm on)"])
    }

    /// The config record is the configuration's encoding plus what follows from it.
    /// Kernels are a value: two trainers built in one process with different kernel choices
    /// each compute with, and record, their own, and a run is the same whatever ran beside it.
    func testTwoTrainersInOneProcessComputeWithTheirOwnKernels() throws {
        guard (try? Kernels(convolution: .onednn)) != nil else { throw XCTSkip("oneDNN (libdnnl.so.2) is not installed") }
        func make(_ conv: ConvolutionKernels, _ gemm: GEMMLibrary) throws -> (Trainer, RecordList) {
            var c = config("conv8k5p2-bn-relu-fc", epochs: 1)
            c.kernels.conv = conv
            c.kernels.gemm = gemm
            let sink = RecordList()
            return (try Trainer(config: c, outputs: RunOutputs(), dataset: dataset, sink: sink, diagnostics: { _ in }), sink)
        }
        let (a, aRecords) = try make(.im2col, .openblas)
        let (b, bRecords) = try make(.onednn, .onednn)
        try a.run(shouldStop: { nil })
        try b.run(shouldStop: { nil })
        let (again, againRecords) = try make(.im2col, .openblas)
        try again.run(shouldStop: { nil })
        let field = { (records: [Record], key: String) in records[0].fields.first { $0.0 == key }?.1 }
        XCTAssertEqual(field(aRecords.records, "kernels"), .string("openblas"))
        XCTAssertEqual(field(aRecords.records, "conv_kernels"), .string("im2col"))
        XCTAssertEqual(field(bRecords.records, "kernels"), .string("onednn"))
        XCTAssertEqual(field(bRecords.records, "conv_kernels"), .string("onednn"))
        let conv = { (t: Trainer) in t.network.layers.compactMap { $0 as? Conv2D<Float> }.first!.lastImplementation }
        XCTAssertEqual(conv(a), "im2col")
        XCTAssertNotEqual(conv(b), "im2col", "the oneDNN trainer's convolution ran on oneDNN")
        XCTAssertEqual(conv(again), "im2col")
        XCTAssertTrue(a.kernels !== b.kernels)
        XCTAssertEqual(stable(aRecords.records), stable(againRecords.records), "the same run, whatever ran before it")
    }

    func testConfigRecordDerivesFromTheConfiguration() throws {
        let records = try run(config("dfn2", epochs: 1))
        let keys = records[0].fields.map(\.0)
        XCTAssertEqual(keys, [
            "version", "data", "train_images", "test_images", "image", "classes", "train", "val", "test",
            "model", "epochs", "batch", "lr", "optimizer", "momentum", "nesterov", "weight_decay", "lr_schedule", "warmup_epochs",
            "early_stop", "clip_grad_norm", "hidden", "train_limit", "val_split", "shuffle", "batchnorm", "bn_momentum",
            "bn_eps", "bn_running_var", "init", "seed", "threads", "precision", "gemm", "conv", "workers", "shard_size", "bn_sync", "bn_stats", "spec", "parameters", "kernels", "conv_kernels", "blas_core", "onednn", "elementwise", "load_seconds",
        ])
        XCTAssertFalse(try run(config("mlp", epochs: 1))[0].fields.contains { $0.0 == "hidden" }, "hidden is dfn2's only")
    }
}

/// Record values: never `-nan`, and a value can never split a line.
final class RecordFormatTests: XCTestCase {
    func testNonFiniteNumbersPrintWithoutSign() {
        XCTAssertEqual(Value.number(-Double.nan, digits: 4).text, "nan")
        XCTAssertEqual(Value.number(Double.nan, digits: 4).text, "nan")
        XCTAssertEqual(Value.exact(-Double.nan).text, "nan")
        XCTAssertEqual(Value.number(-Double.infinity, digits: 2).text, "-inf")
        XCTAssertEqual(Value.number(-Double.nan, digits: 4).json, "null")
    }

    func testControlCharactersAreEscapedInEveryFormat() {
        let v = Value.string("a\nb\rc\td\u{1b}[2Je,f")
        for line in [v.text, v.json, v.csv, Record("config", [("data", v)]).textLine, Record("config", [("data", v)]).jsonLine] {
            XCTAssertFalse(line.unicodeScalars.contains { $0.properties.generalCategory == .control }, line)
        }
        XCTAssertEqual(v.text, #""a\nb\rc\td\x1b[2Je,f""#)
        XCTAssertEqual(escapingControlCharacters("plain"), "plain")
    }
}

/// A layer whose backward is wrong on purpose (test-only): y = 2x, but dx = dy.
final class BrokenDoubler: Layer {
    typealias T = Double
    let inFeatures: Int
    var outFeatures: Int { inFeatures }
    var computesInputGradient = true
    let parameters: [Parameter<Double>] = []
    let output: Matrix<Double>, inputGrad: Matrix<Double>
    init(features: Int) {
        inFeatures = features
        output = Matrix(rows: 0, cols: features)
        inputGrad = Matrix(rows: 0, cols: features)
    }
    func forward(_ x: Matrix<Double>, training: Bool) -> Matrix<Double> {
        output.resize(rows: x.rows)
        for k in 0..<x.count { output.data[k] = 2 * x.data[k] }
        return output
    }
    func backward(_ dy: Matrix<Double>) -> Matrix<Double> {
        inputGrad.copy(from: dy)  // wrong: should be 2 dy
        return inputGrad
    }
}

/// A real layer whose input gradient a test changes (test-only): `slip` edits its dx.
final class Miswired: Layer {
    let inner: any Layer<Double>
    let slip: (Miswired, Matrix<Double>) -> Void
    init(_ inner: any Layer<Double>, slip: @escaping (Miswired, Matrix<Double>) -> Void) {
        self.inner = inner
        self.slip = slip
    }
    var inFeatures: Int { inner.inFeatures }
    var outFeatures: Int { inner.outFeatures }
    var computesInputGradient: Bool {
        get { inner.computesInputGradient }
        set { inner.computesInputGradient = newValue }
    }
    var parameters: [Parameter<Double>] { inner.parameters }
    var buffers: [Buffer<Double>] { inner.buffers }
    func forward(_ x: Matrix<Double>, training: Bool) -> Matrix<Double> { inner.forward(x, training: training) }
    func backward(_ dy: Matrix<Double>) -> Matrix<Double> {
        let dx = inner.backward(dy)
        slip(self, dx)
        return dx
    }
}

/// Any layer with a wrong input gradient: its own, times 1 + 1e-3 (a small constant slip).
func SlightlyWrong(_ inner: any Layer<Double>) -> any Layer<Double> {
    Miswired(inner) { _, dx in for k in 0..<dx.count { dx.data[k] *= 1 + 1e-3 } }
}

/// A normalisation layer whose input gradient lacks its gamma factor: its own dx divided by
/// gamma of each example's feature or channel, right only where gamma = 1.
func ForgetsGamma(_ inner: any Layer<Double>) -> any Layer<Double> {
    Miswired(inner) { layer, dx in
        let gamma = layer.parameters.first { $0.role == .gain }!.value.data
        let plane = layer.inFeatures / layer.parameters[0].value.count  // H*W for BatchNorm2D, 1 for BatchNorm1D
        for k in 0..<dx.count { dx.data[k] /= gamma[(k % layer.inFeatures) / plane] }
    }
}

/// lenet-bn in Double, unfused, and a batch of MNIST-style images: a black background (exact
/// zeros, which zero padding extends) around a patch of 8-bit intensities.
func lenetOnBlackBackgrounds(seed: UInt64, wrongLayer: Int? = nil, wrong: (any Layer<Double>) -> any Layer<Double> = SlightlyWrong) throws -> (Network<Double>, [String], Matrix<Double>, [Int32]) {
    let spec = try ModelSpec.parse("lenet-bn")
    var options = BuildOptions()
    options.fuse = false
    var rng = SplitMix64(seed: seed)
    let net = try spec.build(Double.self, inputs: 784, classes: 10, image: ImageShape(1, 28, 28), options: options, rng: &rng, dropoutRNG: SplitMix64(seed: seed + 1))
    let x = Matrix<Double>(rows: 4, cols: 784)
    for e in 0..<4 {
        for r in 8..<20 { for c in 9..<19 { x.data[e * 784 + r * 28 + c] = Double(rng.nextInt(below: 256)) / 255 } }
    }
    let layers = net.layers.enumerated().map { i, l -> any Layer<Double> in i == wrongLayer ? wrong(l) : l }
    return (Network(layers: layers, classes: 10), spec.layers.map(\.kind), x, [1, 7, 3, 9])
}

final class GradientCheckRunTests: XCTestCase {
    func testAWrongBackwardFailsAndIsNamed() {
        var rng = SplitMix64(seed: 1)
        let a = Dense<Double>(inFeatures: 5, outFeatures: 4, name: "0"), b = Dense<Double>(inFeatures: 4, outFeatures: 3, name: "2")
        Initializer.glorot.initialize(a, rng: &rng)
        Initializer.glorot.initialize(b, rng: &rng)
        let x = Matrix<Double>(rows: 4, cols: 5)
        for k in 0..<x.count { x.data[k] = rng.nextNormal() }
        let good = GradientCheckRun.run(Network(layers: [a, Activation<Double>(.tanh, features: 4), b], classes: 3), kinds: ["fc", "tanh", "fc"], x: x, labels: [0, 1, 2, 0], samples: nil, seed: 1)
        XCTAssertTrue(good.passed, "\(good.worst!)")
        XCTAssertEqual(good.exitCode, 0)
        let bad = GradientCheckRun.run(Network(layers: [a, BrokenDoubler(features: 4), b], classes: 3), kinds: ["fc", "broken", "fc"], x: x, labels: [0, 1, 2, 0], samples: nil, seed: 1)
        XCTAssertFalse(bad.passed)
        XCTAssertEqual(bad.exitCode, 1)
        XCTAssertEqual(bad.firstFailure?.kind, "broken", "the layer to blame")
        XCTAssertEqual(bad.firstFailure?.index, 1)
        XCTAssertEqual(bad.firstFailure?.tensor, "input")
        XCTAssertTrue(bad.entries.filter { $0.index == 2 }.allSatisfy { $0.maxRelativeError < GradientCheckRun.threshold }, "the layer above is fine")
        XCTAssertTrue(bad.entries.filter { $0.kind == "broken" }.allSatisfy { $0.maxRelativeError > 0.1 })
        XCTAssertEqual(GradientCheckRun.record(bad.firstFailure!)["ok"], .string("no"))
        XCTAssertNil(good.firstFailure)
    }

    /// Max-pool windows over a constant background tie, and ReLUs sit at their kink, so
    /// perturbing a pixel below them flips a choice: those differences measure neither side's
    /// derivative and must be left out, at every layer below the kink (not only the pool's
    /// own input), or a correct CNN fails.
    func testACorrectCNNPassesOnBlackBackgroundsAndAWrongLayerStillFails() throws {
        for seed: UInt64 in 1...3 {
            let (net, kinds, x, labels) = try lenetOnBlackBackgrounds(seed: seed)
            let good = GradientCheckRun.run(net, kinds: kinds, x: x, labels: labels, samples: 20, seed: seed)
            XCTAssertTrue(good.passed, "seed \(seed): \(good.worst!)")
            XCTAssertGreaterThan(good.entries.reduce(0) { $0 + $1.skipped }, 0, "kinks were met and left out")
            XCTAssertTrue(good.entries.allSatisfy { $0.checked > 0 }, "every tensor is still compared somewhere")
            // lenet-bn: 0 conv, 1 bn, 2 relu, 3 maxpool, 4 conv, ... 14 fc.
            for wrong in [1, 4, 9] {
                let (net, kinds, x, labels) = try lenetOnBlackBackgrounds(seed: seed, wrongLayer: wrong)
                let bad = GradientCheckRun.run(net, kinds: kinds, x: x, labels: labels, samples: 20, seed: seed)
                XCTAssertFalse(bad.passed, "seed \(seed): layer \(wrong) is wrong")
                XCTAssertEqual(bad.firstFailure?.index, wrong, "seed \(seed): the layer to blame")
            }
        }
    }

    /// gradcheck moves every normalisation gain off 1 first (BatchNorm2D's too), so a
    /// BatchNorm2D backward that forgets gamma fails; at gamma = 1 it would pass.
    func testABatchNorm2DBackwardWithoutGammaFailsOnceGainsMove() throws {
        let seed: UInt64 = 2
        let (net, kinds, x, labels) = try lenetOnBlackBackgrounds(seed: seed, wrongLayer: 1, wrong: ForgetsGamma)
        XCTAssertTrue(net.layers[1].parameters[0].value.toArray().allSatisfy { $0 == 1 })
        let unmoved = GradientCheckRun.run(net, kinds: kinds, x: x, labels: labels, samples: 20, seed: seed)
        XCTAssertTrue(unmoved.passed, "at gamma = 1 the slip is invisible: \(unmoved.worst!)")
        var rng = SplitMix64(seed: seed, stream: "inputs")
        GradientCheckRun.moveGainsAndShifts(net, rng: &rng)
        for layer in [1, 5, 9, 12] {  // lenet-bn's BatchNorm2D, BatchNorm2D, BatchNorm1D, BatchNorm1D
            XCTAssertTrue(net.layers[layer].parameters.allSatisfy { p in p.value.toArray().allSatisfy { $0 != (p.role == .gain ? 1 : 0) } }, "layer \(layer)")
        }
        let bad = GradientCheckRun.run(net, kinds: kinds, x: x, labels: labels, samples: 20, seed: seed)
        XCTAssertFalse(bad.passed)
        XCTAssertEqual(bad.firstFailure?.index, 1, "the BatchNorm2D to blame")
        let (good, goodKinds, _, _) = try lenetOnBlackBackgrounds(seed: seed)
        GradientCheckRun.moveGainsAndShifts(good, rng: &rng)
        let fine = GradientCheckRun.run(good, kinds: goodKinds, x: x, labels: labels, samples: 20, seed: seed)
        XCTAssertTrue(fine.passed, "the real layers pass with moved gains: \(fine.worst!)")
    }

    /// Entries stream out as they are checked, and the plan counts the differences run takes.
    func testEntriesStreamInOrderAndThePlanCountsTheDifferences() throws {
        let (net, kinds, x, labels) = try lenetOnBlackBackgrounds(seed: 4)
        let plan = GradientCheckRun.plan(net, x: x, samples: 30)
        var streamed: [ModelGradientCheck.Entry] = []
        let outcome = GradientCheckRun.run(net, kinds: kinds, x: x, labels: labels, samples: 30, seed: 4) { streamed.append($0) }
        XCTAssertEqual(streamed.map(\.tensor), outcome.entries.map(\.tensor))
        XCTAssertEqual(streamed.map(\.index), outcome.entries.map(\.index))
        let differenced = outcome.entries.filter { $0.index < net.layers.count && !["staged-vs-simplified", "eval-formula", "eval-identity", "train-scaling"].contains($0.tensor) }
        XCTAssertEqual(plan.differences, differenced.reduce(0) { $0 + $1.checked + $1.skipped })
        XCTAssertGreaterThan(plan.seconds, 0)
    }
}
