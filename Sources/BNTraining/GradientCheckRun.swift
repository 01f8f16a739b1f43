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

    /// Checks `net` (built unfused, in Double) on the batch `x` with `labels`; `kinds` names
    /// each layer. Adds the loss layer's check (softmax cross-entropy's dL/dlogits).
    public static func run(_ net: Network<Double>, kinds: [String], x: Matrix<Double>, labels: [Int32], samples: Int?, seed: UInt64) -> Outcome {
        var rng = SplitMix64(seed: seed, stream: "gradcheck")
        let g = Matrix<Double>(rows: x.rows, cols: net.classes)
        for k in 0..<g.count { g.data[k] = rng.nextNormal() }
        var entries = ModelGradientCheck.run(net, kinds: kinds, x: x, upstream: g, samples: samples, rng: &rng)
        entries += ModelGradientCheck.behaviour(net, kinds: kinds, x: x, upstream: g, rng: &rng)
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
        return Outcome(entries: entries, worst: entries.max { $0.maxRelativeError < $1.maxRelativeError })
    }

    public static func record(_ e: ModelGradientCheck.Entry) -> Record {
        Record("check", [
            ("index", .int(e.index)), ("layer_kind", .string(e.kind)), ("tensor", .string(e.tensor)),
            ("rel_error", .scientific(e.maxRelativeError)), ("checked", .int(e.checked)), ("of", .int(e.size)),
            ("ok", .string(e.maxRelativeError < threshold ? "yes" : "no")),
        ])
    }
}
