import CKernels

/// The fixed-order reduction of per-shard tensors: total = ((g0 + g1) + g2) + ..., element by
/// element, whatever worker computed a shard and however the elements are divided among the
/// workers that add them up. This order is what makes a run's numbers independent of the
/// worker count.
public enum ShardReduction {
    /// `target` += shards[0], shards[1], ... in that order, over the elements in `range`.
    /// With `target` holding shard 0's values and `shards` the rest, `target` becomes the total.
    /// `shards` holds one pointer per shard, each to at least `range.upperBound` elements.
    @inlinable
    public static func accumulate(into target: UnsafeMutablePointer<Float>, shards: UnsafeBufferPointer<UnsafePointer<Float>?>, range: Range<Int>) {
        guard !range.isEmpty, !shards.isEmpty else { return }
        bn_sum_shards_f32(target, shards.baseAddress!, shards.count, range.lowerBound, range.upperBound)
    }

    @inlinable
    public static func accumulate(into target: UnsafeMutablePointer<Double>, shards: UnsafeBufferPointer<UnsafePointer<Double>?>, range: Range<Int>) {
        guard !range.isEmpty, !shards.isEmpty else { return }
        bn_sum_shards_f64(target, shards.baseAddress!, shards.count, range.lowerBound, range.upperBound)
    }

    /// The same for any scalar: Float and Double take the C loops, others a plain loop.
    @inlinable
    public static func accumulate<T: BLASScalar>(into target: UnsafeMutablePointer<T>, shards: UnsafeBufferPointer<UnsafePointer<T>?>, range: Range<Int>) {
        guard !range.isEmpty, !shards.isEmpty else { return }
        let raw = UnsafeRawPointer(shards.baseAddress!)
        if T.self == Float.self {
            let t = UnsafeMutableRawPointer(target).assumingMemoryBound(to: Float.self)
            bn_sum_shards_f32(t, raw.assumingMemoryBound(to: UnsafePointer<Float>?.self), shards.count, range.lowerBound, range.upperBound)
        } else if T.self == Double.self {
            let t = UnsafeMutableRawPointer(target).assumingMemoryBound(to: Double.self)
            bn_sum_shards_f64(t, raw.assumingMemoryBound(to: UnsafePointer<Double>?.self), shards.count, range.lowerBound, range.upperBound)
        } else {
            for i in range { for s in shards { target[i] += s![i] } }
        }
    }
}
