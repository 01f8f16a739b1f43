/// Weight initialisation schemes for Dense layers (biases start at zero).
public enum Initializer: String, CaseIterable, Sendable {
    /// Glorot/Xavier normal: std = sqrt(2 / (fan_in + fan_out)).
    case glorot
    /// He/Kaiming normal: std = sqrt(2 / fan_in).
    case he
    /// Standard normal, std = 1 (the published reference run; saturates the sigmoid).
    case stdNormal = "std-normal"

    public func standardDeviation(fanIn: Int, fanOut: Int) -> Double {
        switch self {
        case .glorot: return (2.0 / Double(fanIn + fanOut)).squareRoot()
        case .he: return (2.0 / Double(fanIn)).squareRoot()
        case .stdNormal: return 1
        }
    }

    /// Fills `dense.weight` with N(0, std^2) draws in the logical (out, in) row-major order,
    /// whatever the storage layout, so a seed gives the same weights either way; zeroes the bias.
    public func initialize<T: BLASScalar>(_ dense: Dense<T>, rng: inout SplitMix64) {
        let std = standardDeviation(fanIn: dense.inFeatures, fanOut: dense.outFeatures)
        let p = dense.weight
        var draws = [T](repeating: 0, count: p.value.count)
        for k in draws.indices { draws[k] = T(rng.nextNormal() * std) }
        p.setLogicalValues(draws)
        dense.bias.value.fill(0)
    }

    /// Conv weights as PyTorch's xavier_normal_ sees them: fan_in = C k k, fan_out = O k k,
    /// drawn in (O, C, k, k) order; the bias starts at zero.
    public func initialize<T: BLASScalar>(_ conv: Conv2D<T>, rng: inout SplitMix64) {
        let kk = conv.kernel * conv.kernel
        let std = standardDeviation(fanIn: conv.input.c * kk, fanOut: conv.output.c * kk)
        for k in 0..<conv.weight.value.count { conv.weight.value.data[k] = T(rng.nextNormal() * std) }
        conv.bias.value.fill(0)
    }
}
