/// The canonical decomposition of a minibatch into shards, the unit of data parallelism.
///
/// A batch of B rows is cut, in batch order, into ceil(B / S) shards of S rows (the last one
/// may be shorter). Shards, not workers, are what gradients and normalisation sums are
/// computed over and reduced in: any number of workers computing the same shards, each shard
/// whole, gives the same bits (docs/parallel.md).
public struct ShardPlan: Equatable, Sendable {
    /// Rows per shard (S), at least 1.
    public let shardSize: Int

    public init(shardSize: Int) {
        precondition(shardSize >= 1, "a shard holds at least one example")
        self.shardSize = shardSize
    }

    /// ceil(batch / S); 0 for an empty batch.
    public func shardCount(batch: Int) -> Int { (batch + shardSize - 1) / shardSize }

    /// The rows of `batch` that shard `s` covers.
    public func rows(ofShard s: Int, batch: Int) -> Range<Int> {
        let lo = s * shardSize
        precondition(s >= 0 && lo < batch, "shard \(s) is outside a batch of \(batch)")
        return lo..<min(lo + shardSize, batch)
    }

    /// The shards worker `w` of `workers` computes: a contiguous block, the first
    /// `shards % workers` workers taking one more. Which worker computes a shard never
    /// changes the result; the blocks only balance the work.
    public static func shards(forWorker w: Int, of workers: Int, shardCount: Int) -> Range<Int> {
        precondition(workers >= 1 && w >= 0 && w < workers, "worker \(w) of \(workers)")
        let base = shardCount / workers, extra = shardCount % workers
        let lo = w * base + min(w, extra)
        return lo..<(lo + base + (w < extra ? 1 : 0))
    }

    /// The element range worker `w` of `workers` reduces out of `count`: contiguous slices cut
    /// on 16-element (64-byte for float32) boundaries, so no two workers write one cache line.
    public static func slice(forWorker w: Int, of workers: Int, count: Int) -> Range<Int> {
        precondition(workers >= 1 && w >= 0 && w < workers, "worker \(w) of \(workers)")
        let lines = (count + 15) / 16
        let block = shards(forWorker: w, of: workers, shardCount: lines)
        return min(block.lowerBound * 16, count)..<min(block.upperBound * 16, count)
    }
}
