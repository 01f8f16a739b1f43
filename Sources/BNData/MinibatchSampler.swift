import BNCore

/// Yields minibatches of (images, labels) from a chosen subset of a split, in a seeded
/// shuffled order (or in order), the last partial batch included. Owns its batch buffers:
/// `fill` copies rows into them and allocates nothing.
public final class MinibatchSampler {
    public let split: Split
    /// The examples this sampler draws from (indices into `split`), in this epoch's order.
    public private(set) var order: [Int32]
    public let batchSize: Int
    /// (batchSize, features); `rows` is set to the size of the batch last filled.
    public let x: Matrix<Float>
    /// `batchSize` labels, aligned with the rows of `x`.
    public let labels: UnsafeMutablePointer<Int32>

    public init(split: Split, indices: [Int32]? = nil, batchSize: Int) {
        precondition(batchSize > 0, "batch size must be positive")
        self.split = split
        self.order = indices ?? (0..<Int32(split.count)).map { $0 }
        self.batchSize = batchSize
        x = Matrix(rows: batchSize, cols: split.images.featureCount)
        labels = .allocate(capacity: batchSize)
        labels.initialize(repeating: 0, count: batchSize)
    }

    deinit { labels.deallocate() }

    public var exampleCount: Int { order.count }
    public var batchCount: Int { (order.count + batchSize - 1) / batchSize }

    /// Shuffles the order for a new epoch.
    public func shuffle(rng: inout SplitMix64) { rng.shuffle(&order) }

    /// Copies batch `b` into `x` and `labels`; returns its size.
    @discardableResult
    public func fill(batch b: Int) -> Int {
        let start = b * batchSize
        let n = min(batchSize, order.count - start)
        precondition(n > 0, "batch \(b) is past the end")
        let d = split.images.featureCount
        x.resize(rows: n)
        split.images.pixels.withUnsafeBufferPointer { px in
            split.labels.withUnsafeBufferPointer { lab in
                order.withUnsafeBufferPointer { ord in
                    for r in 0..<n {
                        let i = Int(ord[start + r])
                        (x.data + r * d).update(from: px.baseAddress! + i * d, count: d)
                        labels[r] = lab[i]
                    }
                }
            }
        }
        return n
    }
}

/// A seeded random subset of `0..<total` of size `limit` (all of them, in order, when `limit` is nil).
public func randomSubset(total: Int, limit: Int?, rng: inout SplitMix64) -> [Int32] {
    var all = (0..<Int32(total)).map { $0 }
    guard let limit, limit < total else { return all }
    rng.shuffle(&all)
    return Array(all.prefix(limit))
}
