import RealModule

/// SplitMix64 (Steele, Lea & Flood 2014): a small, fast, seedable generator owned by the
/// project, so that a seed means the same numbers on every platform and toolchain release.
/// Its whole state is one `UInt64`, which makes it trivial to checkpoint.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    /// An independent stream for a named purpose ("init", "shuffle", ...) derived from a seed,
    /// so that changing how one stream is used does not move the others.
    public init(seed: UInt64, stream: String) {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a over the stream name
        for byte in stream.utf8 { h = (h ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        var mixer = SplitMix64(seed: seed ^ h)
        state = mixer.next()
    }

    @inlinable
    public mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    @inlinable
    public mutating func nextUniform() -> Double {
        Double(next() >> 11) * 0x1.0p-53
    }

    /// Uniform integer in 0..<bound, unbiased (Lemire's multiply-and-reject).
    @inlinable
    public mutating func nextInt(below bound: Int) -> Int {
        precondition(bound > 0, "bound must be positive")
        let b = UInt64(bound)
        var m = next().multipliedFullWidth(by: b)
        if m.low < b {
            let threshold = (0 &- b) % b
            while m.low < threshold { m = next().multipliedFullWidth(by: b) }
        }
        return Int(m.high)
    }

    /// Standard normal sample (Box-Muller; one of the pair is used, so the state stays one word).
    public mutating func nextNormal() -> Double {
        let u1 = 1.0 - nextUniform()  // (0, 1]: log is finite
        let u2 = nextUniform()
        return (-2.0 * Double.log(u1)).squareRoot() * Double.cos(2.0 * Double.pi * u2)
    }

    /// Fisher-Yates shuffle in place.
    public mutating func shuffle<C: MutableCollection & RandomAccessCollection>(_ c: inout C) where C.Index == Int {
        let n = c.count
        guard n > 1 else { return }
        let start = c.startIndex
        for i in stride(from: n - 1, to: 0, by: -1) {
            let j = nextInt(below: i + 1)
            if i != j { c.swapAt(start + i, start + j) }
        }
    }
}
