/// Gradient checks of a whole model, layer by layer, in Double: what `bntrain gradcheck` runs.
///
/// The scalar checked is L = sum(logits * G) for a random upstream gradient G (so every
/// gradient is checked against a direction that exercises all of it; an all-ones G would make
/// BatchNorm's dx vacuous). The network is built unfused (one network layer per spec layer),
/// run forward once in training mode with each layer's input kept; then for layer i:
/// - its input gradient dL/dx_i (from backward) against central differences of the network
///   re-run from layer i on a perturbed copy of x_i;
/// - each of its parameter gradients against central differences of the same re-run with
///   the parameter perturbed.
/// Dropout masks are frozen after the first forward, so every re-run sees the same function.
/// A tensor's error is norm-wise over the entries checked, ||a - n|| / max(||a||, ||n||): it
/// is dominated by the entries that matter and not by those at the limit of the differences'
/// resolution (a softmax probability of 1e-6). A tensor whose gradients are all below
/// `zeroGradient` in norm on both sides has a true gradient of zero (a bias right before
/// BatchNorm, which subtracts the batch mean) that rounding noise cannot divide: its error is
/// the absolute ||a - n||.
public enum ModelGradientCheck {
    public struct Entry: Sendable {
        /// Index of the layer in the network (= in the spec, when built unfused).
        public var index: Int
        public var kind: String
        /// What was checked: `input`, a parameter (`weight`, `bias`), or a named property.
        public var tensor: String
        public var maxRelativeError: Double
        public var checked: Int
        public var size: Int

        public init(index: Int, kind: String, tensor: String, maxRelativeError: Double, checked: Int, size: Int) {
            self.index = index
            self.kind = kind
            self.tensor = tensor
            self.maxRelativeError = maxRelativeError
            self.checked = checked
            self.size = size
        }
    }

    /// Below this norm on both sides a gradient is zero as far as differences can tell.
    public static let zeroGradient = 1e-7

    /// Norm-wise relative error, or the absolute difference for a zero gradient (see above).
    public static func error(_ a: [Double], _ n: [Double]) -> Double {
        var diff = 0.0, na = 0.0, nn = 0.0
        for (x, y) in zip(a, n) {
            diff += (x - y) * (x - y)
            na += x * x
            nn += y * y
        }
        let scale = max(na, nn).squareRoot()
        return scale < zeroGradient ? diff.squareRoot() : diff.squareRoot() / scale
    }

    /// `samples`: entries checked per tensor (seeded, without repetition); nil checks all.
    public static func run(
        _ net: Network<Double>, kinds: [String], x: Matrix<Double>, upstream g: Matrix<Double>,
        samples: Int?, rng: inout SplitMix64, step h: Double = 1e-6
    ) -> [Entry] {
        let layers = net.layers
        precondition(kinds.count == layers.count, "one kind per layer")
        for case let d as Dropout<Double> in layers { d.freezeMask = true }
        layers[0].computesInputGradient = true
        // Forward once, keeping every layer's input.
        var inputs: [Matrix<Double>] = []
        var hcur = x
        for l in layers {
            let copy = Matrix<Double>(rows: hcur.rows, cols: hcur.cols)
            copy.copy(from: hcur)
            inputs.append(copy)
            hcur = l.forward(hcur, training: true)
        }
        // Backward from G, keeping every layer's input gradient and parameter gradients.
        var inputGrads = [[Double]](repeating: [], count: layers.count)
        var paramGrads = [[[Double]]](repeating: [], count: layers.count)
        var grad = g
        for i in layers.indices.reversed() {
            grad = layers[i].backward(grad)
            inputGrads[i] = grad.toArray()
            paramGrads[i] = layers[i].parameters.map { $0.grad.toArray() }
        }
        /// L when the network is run from layer i on `input`.
        func loss(from i: Int, _ input: Matrix<Double>) -> Double {
            var h = input
            for l in layers[i...] { h = l.forward(h, training: true) }
            var s = 0.0
            for k in 0..<h.count { s += h.data[k] * g.data[k] }
            return s
        }
        func check(_ values: UnsafeMutablePointer<Double>, count: Int, analytic: [Double], from i: Int, input: Matrix<Double>, skip: Set<Int> = []) -> (Double, Int) {
            var idx = samples.map { GradientCheck.sampleIndices(count: count, limit: $0, rng: &rng) } ?? Array(0..<count)
            if !skip.isEmpty { idx = idx.filter { !skip.contains($0) } }
            let numeric = GradientCheck.numericalGradient(of: values, indices: idx, step: h) { loss(from: i, input) }
            return (error(idx.map { analytic[$0] }, numeric), idx.count)
        }
        var out: [Entry] = []
        for (i, layer) in layers.enumerated() {
            let input = inputs[i]
            // A max-pool input tied (within the step) with another entry of its window — ReLU's
            // zeros, typically — has no derivative there: those entries are not checked.
            let skip = (layer as? Pool2D<Double>).map { tiedEntries($0, input, tolerance: 4 * h) } ?? []
            let (e, n) = check(input.data, count: input.count, analytic: inputGrads[i], from: i, input: input, skip: skip)
            out.append(Entry(index: i, kind: kinds[i], tensor: "input", maxRelativeError: e, checked: n, size: input.count))
            for (p, analytic) in zip(layer.parameters, paramGrads[i]) {
                let name = String(p.name.split(separator: ".").last ?? "param")
                let (e, n) = check(p.value.data, count: p.value.count, analytic: analytic, from: i, input: input)
                out.append(Entry(index: i, kind: kinds[i], tensor: name, maxRelativeError: e, checked: n, size: p.value.count))
            }
        }
        return out
    }

    /// Entries of a max-pool input that share their window's maximum (within `tolerance`)
    /// with another entry.
    static func tiedEntries(_ pool: Pool2D<Double>, _ x: Matrix<Double>, tolerance: Double) -> Set<Int> {
        guard pool.kind == .max else { return [] }
        var tied = Set<Int>()
        let s = pool.input, o = pool.output
        for e in 0..<x.rows {
            for c in 0..<s.c {
                for i in 0..<o.h {
                    for j in 0..<o.w {
                        var members: [Int] = []
                        for u in 0..<pool.kernelH {
                            for v in 0..<pool.kernelW { members.append(e * s.count + (c * s.h + pool.stride * i + u) * s.w + pool.stride * j + v) }
                        }
                        let m = members.map { x.data[$0] }.max() ?? 0
                        let near = members.filter { m - x.data[$0] <= tolerance }
                        if near.count > 1 { tied.formUnion(near) }
                    }
                }
            }
        }
        return tied
    }

    /// What learners get wrong most, as checks with errors: BatchNorm's staged and simplified
    /// backward agreeing; BatchNorm's evaluation output against its formula (the square root,
    /// the running statistics, independent of the batch); dropout's evaluation being the
    /// identity and its training outputs being 0 or x / (1 - p).
    public static func behaviour(_ net: Network<Double>, kinds: [String], x: Matrix<Double>, upstream g: Matrix<Double>, rng: inout SplitMix64) -> [Entry] {
        var out: [Entry] = []
        var h = x
        for (i, layer) in net.layers.enumerated() {
            if let bn = layer as? BatchNorm1D<Double> {
                let d = bn.features
                // Staged vs simplified backward on a random upstream gradient.
                let dy = Matrix<Double>(rows: h.rows, cols: d)
                for k in 0..<dy.count { dy.data[k] = rng.nextNormal() }
                _ = bn.forward(h, training: true)
                let simple = bn.backwardSimplified(dy).toArray()
                let staged = bn.backwardStaged(dy).toArray()
                let e = error(simple, staged)
                out.append(Entry(index: i, kind: kinds[i], tensor: "staged-vs-simplified", maxRelativeError: e, checked: simple.count, size: simple.count))
                // Evaluation mode against gamma (x - mean) / sqrt(var + eps) + beta, one example at a time too.
                let y = bn.forward(h, training: false).toArray()
                var worst = 0.0
                let rm = bn.runningMean.value.data, rv = bn.runningVar.value.data, ga = bn.gamma.value.data, be = bn.beta.value.data
                for r in 0..<h.rows {
                    let one = Matrix<Double>(rows: 1, cols: d)
                    for j in 0..<d { one.data[j] = h.data[r * d + j] }
                    let alone = bn.forward(one, training: false).toArray()
                    for j in 0..<d {
                        let expected = ga[j] * (h.data[r * d + j] - rm[j]) / (rv[j] + bn.eps).squareRoot() + be[j]
                        worst = max(worst, abs(y[r * d + j] - expected) / max(abs(expected), 1e-8), abs(alone[j] - expected) / max(abs(expected), 1e-8))
                    }
                }
                out.append(Entry(index: i, kind: kinds[i], tensor: "eval-formula", maxRelativeError: worst, checked: h.count, size: h.count))
            }
            if let dr = layer as? Dropout<Double> {
                let e = dr.forward(h, training: false)
                let identity = (0..<h.count).map { abs(e.data[$0] - h.data[$0]) }.max() ?? 0
                out.append(Entry(index: i, kind: kinds[i], tensor: "eval-identity", maxRelativeError: identity, checked: h.count, size: h.count))
                let t = dr.forward(h, training: true)
                let scale = 1 / (1 - dr.probability)
                let scaling = (0..<h.count).map { k -> Double in
                    t.data[k] == 0 ? 0 : abs(t.data[k] - h.data[k] * scale) / max(abs(h.data[k] * scale), 1e-8)
                }.max() ?? 0
                out.append(Entry(index: i, kind: kinds[i], tensor: "train-scaling", maxRelativeError: scaling, checked: h.count, size: h.count))
            }
            h = layer.forward(h, training: true)
        }
        return out
    }
}
