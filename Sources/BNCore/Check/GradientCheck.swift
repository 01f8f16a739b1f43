/// Central finite differences, for checking analytic gradients (run it in Double).
public enum GradientCheck {
    /// dL/dv_i ~ (L(v_i + h) - L(v_i - h)) / 2h for every element of `values`, which `loss`
    /// must read. Each element is restored after its two evaluations.
    public static func numericalGradient(
        of values: UnsafeMutablePointer<Double>, count: Int, step h: Double = 1e-6, loss: () -> Double
    ) -> [Double] {
        numericalGradient(of: values, indices: Array(0..<count), step: h, loss: loss)
    }

    /// The same at the chosen `indices` only (sampled checks of large tensors).
    public static func numericalGradient(
        of values: UnsafeMutablePointer<Double>, indices: [Int], step h: Double = 1e-6, loss: () -> Double
    ) -> [Double] {
        indices.map { i in
            let saved = values[i]
            values[i] = saved + h
            let plus = loss()
            values[i] = saved - h
            let minus = loss()
            values[i] = saved
            return (plus - minus) / (2 * h)
        }
    }

    /// All of `0..<count` when it has at most `limit` elements, else `limit` distinct seeded
    /// indices in increasing order.
    public static func sampleIndices(count: Int, limit: Int, rng: inout SplitMix64) -> [Int] {
        guard count > limit else { return Array(0..<count) }
        var all = Array(0..<count)
        rng.shuffle(&all)
        return all.prefix(limit).sorted()
    }

    /// Norm-wise relative error ||a - b|| / max(||a||, ||b||); 0 when both are zero.
    public static func relativeError(_ a: [Double], _ b: [Double]) -> Double {
        precondition(a.count == b.count, "gradient sizes differ: \(a.count) vs \(b.count)")
        var diff = 0.0, na = 0.0, nb = 0.0
        for (x, y) in zip(a, b) {
            diff += (x - y) * (x - y)
            na += x * x
            nb += y * y
        }
        let scale = max(na, nb).squareRoot()
        return scale == 0 ? 0 : diff.squareRoot() / scale
    }
}
