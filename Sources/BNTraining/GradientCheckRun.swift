import BNCore

/// `bntrain gradcheck`: every layer's gradients and the behaviours learners get wrong, as
/// records, with a verdict against a stated threshold (exit 0 pass, 1 fail).
public enum GradientCheckRun {
    /// Largest relative error accepted (central differences in Double with step 1e-6 give
    /// errors around 1e-9 for correct layers).
    public static let threshold = 1e-6

    public struct Outcome {
        public var entries: [ModelGradientCheck.Entry]
        public var worst: ModelGradientCheck.Entry?
        public var passed: Bool { (worst?.maxRelativeError ?? 0) < GradientCheckRun.threshold }
        /// The layer to blame: a wrong input gradient makes every layer below it fail too, so
        /// the failing check nearest the output (the first backprop reaches) is where the bug is.
        public var firstFailure: ModelGradientCheck.Entry? {
            entries.filter { $0.maxRelativeError >= GradientCheckRun.threshold }.max { ($0.index, $0.maxRelativeError) < ($1.index, $1.maxRelativeError) }
        }
        /// 0 when every error is under the threshold, 1 when one is not.
        public var exitCode: Int32 { passed ? 0 : 1 }
    }

    /// What a check will cost, before it runs.
    public struct Plan {
        /// Central differences: entries checked, over every layer's input and parameters.
        public var differences: Int
        /// Two forward passes from each difference's layer to the output, at the speed one
        /// timed pass of `x` through the network runs here.
        public var seconds: Double
    }

    /// Moves every normalisation gain and shift (the parameters whose layers declare them
    /// `.gain` and `.shift`: BatchNorm1D, BatchNorm2D, LayerNorm) off its initial 1 and 0, to
    /// 1 + 0.3 z and 0.3 z (z standard normal, gain and shift of a feature in turn), so a
    /// backward that forgets gamma cannot pass as it would at gamma = 1.
    public static func moveGainsAndShifts(_ net: Network<Double>, rng: inout SplitMix64) {
        for layer in net.layers {
            let gains = layer.parameters.filter { $0.role == .gain }, shifts = layer.parameters.filter { $0.role == .shift }
            precondition(gains.count == shifts.count, "a normalisation layer declares a shift per gain")
            for (g, s) in zip(gains, shifts) {
                for j in 0..<g.value.count {
                    g.value.data[j] = 1 + 0.3 * rng.nextNormal()
                    s.value.data[j] = 0.3 * rng.nextNormal()
                }
            }
        }
    }

    /// Times one training forward pass of `x` layer by layer, then prices layer i's
    /// differences at two passes through layers i... each.
    public static func plan(_ net: Network<Double>, x: Matrix<Double>, samples: Int?) -> Plan {
        let clock = ContinuousClock()
        _ = net.forward(x, training: true)  // first touches of the buffers, not timed
        var seconds = [Double](repeating: 0, count: net.layers.count)
        var h = x
        for (i, layer) in net.layers.enumerated() {
            let start = clock.now
            h = layer.forward(h, training: true)
            let d = start.duration(to: clock.now).components
            seconds[i] = Double(d.seconds) + Double(d.attoseconds) * 1e-18
        }
        let counts = ModelGradientCheck.differences(net, batch: x.rows, samples: samples)
        var total = 0.0, fromHere = 0.0
        for i in net.layers.indices.reversed() {
            fromHere += seconds[i]
            total += Double(counts[i]) * 2 * fromHere
        }
        return Plan(differences: counts.reduce(0, +), seconds: total)
    }

    /// Bytes a check of `spec` on `batch` examples holds: the training estimate's tensors in
    /// Double (twice float32's bytes), with the analytic gradients and every layer's input
    /// kept once more beside them.
    public static func memoryNeeded(spec: ModelSpec, inputs: Int, image: ImageShape, classes: Int, batch: Int) -> Double {
        2 * Trainer.memoryEstimate(spec: spec, inputs: inputs, image: image, classes: classes, batch: batch, evalBatch: batch)
    }

    /// Checks `net` (built unfused, in Double) on the batch `x` with `labels`; `kinds` names
    /// each layer. Adds the loss layer's check (softmax cross-entropy's dL/dlogits). `emit`
    /// receives each entry as soon as it is known.
    public static func run(_ net: Network<Double>, kinds: [String], x: Matrix<Double>, labels: [Int32], samples: Int?, seed: UInt64) -> Outcome {
        run(net, kinds: kinds, x: x, labels: labels, samples: samples, seed: seed) { _ in }
    }

    public static func run(_ net: Network<Double>, kinds: [String], x: Matrix<Double>, labels: [Int32], samples: Int?, seed: UInt64, emit: (ModelGradientCheck.Entry) throws -> Void) rethrows -> Outcome {
        var rng = SplitMix64(seed: seed, stream: "gradcheck")
        let g = Matrix<Double>(rows: x.rows, cols: net.classes)
        for k in 0..<g.count { g.data[k] = rng.nextNormal() }
        var entries = try ModelGradientCheck.run(net, kinds: kinds, x: x, upstream: g, samples: samples, rng: &rng, emit: emit)
        let behaviour = ModelGradientCheck.behaviour(net, kinds: kinds, x: x, upstream: g, rng: &rng)
        for e in behaviour { try emit(e) }
        entries += behaviour
        // The loss: mean cross-entropy of the logits, against central differences.
        let logits = Matrix<Double>(rows: x.rows, cols: net.classes)
        for k in 0..<logits.count { logits.data[k] = 3 * rng.nextNormal() }
        labels.withUnsafeBufferPointer { lab in
            _ = net.loss.forwardBackward(logits: logits, labels: lab.baseAddress!)
            let analytic = net.loss.logitsGrad.toArray()
            let numeric = GradientCheck.numericalGradient(of: logits.data, count: logits.count) {
                net.loss.evaluate(logits: logits, labels: lab.baseAddress!).lossSum / Double(x.rows)
            }
            let e = ModelGradientCheck.error(analytic, numeric)
            entries.append(.init(index: net.layers.count, kind: "softmax-ce", tensor: "logits", maxRelativeError: e, checked: logits.count, size: logits.count))
        }
        try emit(entries[entries.count - 1])
        return Outcome(entries: entries, worst: entries.max { $0.maxRelativeError < $1.maxRelativeError })
    }

    public static func record(_ e: ModelGradientCheck.Entry) -> Record {
        Record("check", [
            ("index", .int(e.index)), ("layer_kind", .string(e.kind)), ("tensor", .string(e.tensor)),
            ("rel_error", .scientific(e.maxRelativeError)), ("checked", .int(e.checked)), ("of", .int(e.size)), ("skipped", .int(e.skipped)),
            ("ok", .string(e.maxRelativeError < threshold ? "yes" : "no")),
        ])
    }
}
