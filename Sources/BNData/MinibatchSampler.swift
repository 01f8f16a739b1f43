import BNCore
import CKernels

/// Anything that hands out a split's examples batch by batch in `x` and `labels`.
public protocol BatchSource: AnyObject {
    var batchCount: Int { get }
    var exampleCount: Int { get }
    /// Loads batch `b` into `x` and `labels`; returns its size.
    @discardableResult func load(batch b: Int) -> Int
    var x: Matrix<Float> { get }
    var batchLabels: UnsafePointer<Int32> { get }
}

/// Yields minibatches of (images, labels) from a chosen subset of a split, in a seeded
/// shuffled order (or in order), the last partial batch included. Owns its batch buffers:
/// `fill` converts the chosen images' bytes into them and allocates nothing. For passes over
/// a whole split in order (evaluation), `SequentialBatches`.
public final class MinibatchSampler: BatchSource, RowLoader {
    public let split: Split
    /// The examples this sampler draws from (indices into `split`), in their given order.
    public let base: [Int32]
    /// The same examples in this epoch's order.
    public private(set) var order: [Int32]
    public let batchSize: Int
    /// (batchSize, features); `rows` is set to the size of the batch last filled.
    public let x: Matrix<Float>
    /// `batchSize` labels, aligned with the rows of `x`.
    public let labels: UnsafeMutablePointer<Int32>

    public init(split: Split, indices: [Int32]? = nil, batchSize: Int) {
        precondition(batchSize > 0, "batch size must be positive")
        self.split = split
        self.base = indices ?? (0..<Int32(split.count)).map { $0 }
        self.order = base
        self.batchSize = batchSize
        x = Matrix(rows: batchSize, cols: split.images.featureCount)
        labels = .allocate(capacity: batchSize)
        labels.initialize(repeating: 0, count: batchSize)
    }

    deinit { labels.deallocate() }

    public var exampleCount: Int { order.count }
    public var batchCount: Int { (order.count + batchSize - 1) / batchSize }

    /// This epoch's order: a shuffle of the base order, which depends only on the generator's
    /// state (not on earlier epochs), so a run resumed from a saved state repeats it exactly.
    public func shuffle(rng: inout SplitMix64) {
        order.withUnsafeMutableBufferPointer { o in
            base.withUnsafeBufferPointer { o.baseAddress!.update(from: $0.baseAddress!, count: $0.count) }
        }
        rng.shuffle(&order)
    }

    public func load(batch b: Int) -> Int { fill(batch: b) }
    public var batchLabels: UnsafePointer<Int32> { UnsafePointer(labels) }

    /// Copies batch `b` into `x` and `labels`; returns its size.
    @discardableResult
    public func fill(batch b: Int) -> Int {
        let n = prepare(batch: b)
        fill(batch: b, rows: 0..<n)
        return n
    }

    /// Sizes `x` for batch `b` and returns its size: the serial half of `fill`, before
    /// `fill(batch:rows:)` runs on several threads.
    @discardableResult
    public func prepare(batch b: Int) -> Int {
        let n = min(batchSize, order.count - b * batchSize)
        precondition(n > 0, "batch \(b) is past the end")
        x.resize(rows: n)
        preparedBatch = b
        return n
    }

    /// The batch `prepare` sized last, which `loadRows` fills.
    public private(set) var preparedBatch = 0

    /// `RowLoader`: rows of the prepared batch.
    public func loadRows(_ rows: Range<Int>) { fill(batch: preparedBatch, rows: rows) }

    /// Converts rows `rows` of batch `b` (after `prepare(batch: b)`) into `x` and `labels`;
    /// disjoint row ranges may be filled at once from several threads (data-parallel workers,
    /// each its own shards).
    public func fill(batch b: Int, rows: Range<Int>) {
        let start = b * batchSize
        let d = split.images.featureCount
        let px = split.images.bytes.data, xd = x.data, out = labels
        split.labels.withUnsafeBufferPointer { lab in
            order.withUnsafeBufferPointer { ord in
                for r in rows {
                    let i = Int(ord[start + r])
                    bn_pixels_to_f32(px + i * d, xd + r * d, d)
                    out[r] = lab[i]
                }
                // The same rows of the next batch, scattered over all the image bytes (47 MB
                // at 60k, more than this machine's 32 MB last-level cache): asking for them
                // now lets the memory system fetch them while this batch trains, instead of
                // the next gather waiting on DRAM.
                let next = start + batchSize
                for r in rows where next + r < ord.count {
                    bn_prefetch(px + Int(ord[next + r]) * d, d)
                }
            }
        }
    }
}

/// A seeded random subset of `0..<total` of size `limit`, in file order (all of them when
/// `limit` is nil).
public func randomSubset(total: Int, limit: Int?, rng: inout SplitMix64) -> [Int32] {
    var all = (0..<Int32(total)).map { $0 }
    guard let limit, limit < total else { return all }
    rng.shuffle(&all)
    return Array(all.prefix(limit)).sorted()
}

/// Splits `indices` into (train, validation), the validation part a seeded random
/// `fraction` of them (rounded, at least one when the fraction is positive); both in file order.
public func validationSplit(_ indices: [Int32], fraction: Double, rng: inout SplitMix64) -> (train: [Int32], validation: [Int32]) {
    guard fraction > 0 else { return (indices, []) }
    let k = max(1, Int((Double(indices.count) * fraction).rounded()))
    var shuffled = indices
    rng.shuffle(&shuffled)
    return (Array(shuffled.dropFirst(k)).sorted(), Array(shuffled.prefix(k)).sorted())
}

/// Consecutive batches of a whole split in stored order (evaluation passes): `select`
/// converts the batch's images into `x`, sized once; no allocation per batch.
public final class SequentialBatches: BatchSource {
    public let split: Split
    public let batchSize: Int
    /// The current batch: (n, features), n = `batchSize` or fewer for the last one.
    public let x: Matrix<Float>
    /// The current batch's labels.
    public private(set) var labels: UnsafePointer<Int32>
    /// All labels, copied once into storage with a stable address.
    private let allLabels: UnsafeMutablePointer<Int32>

    public init(split: Split, batchSize: Int) {
        precondition(batchSize > 0, "batch size must be positive")
        self.split = split
        self.batchSize = batchSize
        x = Matrix(rows: 0, cols: split.images.featureCount, capacityRows: min(batchSize, max(split.count, 1)))
        let all = UnsafeMutablePointer<Int32>.allocate(capacity: max(split.count, 1))
        split.labels.withUnsafeBufferPointer { all.initialize(from: $0.baseAddress!, count: split.count) }
        allLabels = all
        labels = UnsafePointer(all)
    }

    deinit { allLabels.deallocate() }

    public var exampleCount: Int { split.count }
    public var batchCount: Int { (split.count + batchSize - 1) / batchSize }

    public func load(batch b: Int) -> Int { select(batch: b) }
    public var batchLabels: UnsafePointer<Int32> { labels }

    /// Loads batch `b` into `x` and points `labels` at its labels; returns its size.
    @discardableResult
    public func select(batch b: Int) -> Int {
        let start = b * batchSize
        let n = min(batchSize, split.count - start)
        precondition(n > 0, "batch \(b) is past the end")
        x.resize(rows: n)
        split.images.convert(images: start, count: n, into: x.data)
        labels = UnsafePointer(allLabels + start)
        return n
    }
}
