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
/// the absolute ||a - n||. A tensor whose gradients are small beside the rounding noise of
/// the differences themselves (see `roundingFloor`) is judged against that noise.
///
/// ReLU and max pooling are not differentiable everywhere: at a ReLU input of 0 (a zero pixel
/// through a zero-padded convolution, say) or a max-pool window whose largest entries tie (the
/// black background of MNIST-style images), a central difference straddles a kink and
/// measures neither one-sided derivative. Each difference therefore also records which side
/// of every downstream kink the network is on (each ReLU input's sign, each max-pool window's
/// winner); an entry whose +h or -h run lands on another side than the unperturbed run is not
/// compared, and is counted in `skipped`.
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
        /// Sampled entries left out because their difference crossed a kink downstream.
        public var skipped: Int

        public init(index: Int, kind: String, tensor: String, maxRelativeError: Double, checked: Int, size: Int, skipped: Int = 0) {
            self.index = index
            self.kind = kind
            self.tensor = tensor
            self.maxRelativeError = maxRelativeError
            self.checked = checked
            self.size = size
            self.skipped = skipped
        }
    }

    /// Below this norm on both sides a gradient is zero as far as differences can tell.
    public static let zeroGradient = 1e-7

    /// Norm-wise relative error, or the absolute difference for a zero gradient (see above).
    /// `floor` is the least scale divided by: a tensor whose gradients are small beside the
    /// differences' rounding noise (see `roundingFloor`) is judged against that noise instead.
    public static func error(_ a: [Double], _ n: [Double], floor: Double = 0) -> Double {
        var diff = 0.0, na = 0.0, nn = 0.0
        for (x, y) in zip(a, n) {
            diff += (x - y) * (x - y)
            na += x * x
            nn += y * y
        }
        let scale = max(na, nn).squareRoot()
        return scale < zeroGradient ? diff.squareRoot() : diff.squareRoot() / max(scale, floor)
    }

    /// The scale below which differences cannot resolve a gradient to `tolerance`: each
    /// difference (L(+h) - L(-h)) / 2h carries the rounding of L's terms, about
    /// eps * sum|logit * G| / h, and each layer's rounding on the way up adds its share (10x
    /// covers the deepest presets). Over k entries that is sqrt(k) times as much in norm;
    /// dividing by the tolerance makes an error at that noise level count as `tolerance`.
    /// (A BatchNorm input over many positions has gradients about 1/sqrt(N H W) of the
    /// logits': 26x26 maps and 8 images put them near 1e-3, where L's rounding is 1e-6 of them.)
    public static func roundingFloor(termMagnitude s: Double, entries k: Int, step h: Double, tolerance: Double = 1e-6) -> Double {
        10 * Double(k).squareRoot() * Double.ulpOfOne * s / h / tolerance
    }

    /// The differences a check of `net` on `x` takes: for each layer, the entries sampled from
    /// its input and parameters (each costs two forward passes from that layer to the output).
    public static func differences(_ net: Network<Double>, batch: Int, samples: Int?) -> [Int] {
        net.layers.map { layer in
            ([batch * layer.inFeatures] + layer.parameters.map(\.value.count)).reduce(0) { $0 + min($1, samples ?? $1) }
        }
    }

    /// `samples`: entries checked per tensor (seeded, without repetition); nil checks all.
    /// `emit` receives each tensor's entry as soon as it is checked (the input's, then each
    /// parameter's, layer by layer), so a long check shows its progress as it goes.
    public static func run(
        _ net: Network<Double>, kinds: [String], x: Matrix<Double>, upstream g: Matrix<Double>,
        samples: Int?, rng: inout SplitMix64, step h: Double = 1e-6, emit: (Entry) throws -> Void
    ) rethrows -> [Entry] {
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
        /// sum |logit * G| of the unperturbed network: the size of L's terms, whose rounding
        /// each difference carries.
        var terms = 0.0
        do {
            var y = x
            for l in layers { y = l.forward(y, training: true) }
            for k in 0..<y.count { terms += abs(y.data[k] * g.data[k]) }
        }
        /// Central differences at the sampled entries of `values`, leaving out those whose
        /// +h or -h run is on another side of a kink at layer i or after (see above).
        func check(_ values: UnsafeMutablePointer<Double>, count: Int, analytic: [Double], from i: Int, input: Matrix<Double>) -> (error: Double, checked: Int, skipped: Int) {
            let idx = samples.map { GradientCheck.sampleIndices(count: count, limit: $0, rng: &rng) } ?? Array(0..<count)
            _ = loss(from: i, input)
            let sides = kinkSides(layers[i...])
            var kept: [Int] = [], numeric: [Double] = []
            for j in idx {
                let saved = values[j]
                values[j] = saved + h
                let plus = loss(from: i, input), plusSides = kinkSides(layers[i...])
                values[j] = saved - h
                let minus = loss(from: i, input), minusSides = kinkSides(layers[i...])
                values[j] = saved
                guard plusSides == sides, minusSides == sides else { continue }
                kept.append(j)
                numeric.append((plus - minus) / (2 * h))
            }
            let floor = roundingFloor(termMagnitude: terms, entries: kept.count, step: h)
            return (error(kept.map { analytic[$0] }, numeric, floor: floor), kept.count, idx.count - kept.count)
        }
        var out: [Entry] = []
        for (i, layer) in layers.enumerated() {
            let input = inputs[i]
            let c = check(input.data, count: input.count, analytic: inputGrads[i], from: i, input: input)
            out.append(Entry(index: i, kind: kinds[i], tensor: "input", maxRelativeError: c.error, checked: c.checked, size: input.count, skipped: c.skipped))
            try emit(out[out.count - 1])
            for (p, analytic) in zip(layer.parameters, paramGrads[i]) {
                let name = String(p.name.split(separator: ".").last ?? "param")
                let c = check(p.value.data, count: p.value.count, analytic: analytic, from: i, input: input)
                out.append(Entry(index: i, kind: kinds[i], tensor: name, maxRelativeError: c.error, checked: c.checked, size: p.value.count, skipped: c.skipped))
                try emit(out[out.count - 1])
            }
        }
        return out
    }

    /// A digest of which side of each kink the last forward pass of `layers` took: the sign of
    /// every ReLU input (its output > 0) and every max-pool window's winner. Two runs with the
    /// same digest are on the same smooth piece of the function (FNV-1a over those choices).
    static func kinkSides(_ layers: ArraySlice<any Layer<Double>>) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        func mix(_ v: UInt64) { hash = (hash ^ v) &* 0x0000_0100_0000_01B3 }
        for layer in layers {
            if let a = layer as? Activation<Double>, a.kind == .relu {
                let y = a.output
                for k in 0..<y.count { mix(y.data[k] > 0 ? 1 : 2) }
            } else if let p = layer as? Pool2D<Double>, p.kind == .max {
                for k in 0..<p.out.count { mix(UInt64(UInt32(bitPattern: p.argmax[k]))) }
            }
        }
        return hash
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
