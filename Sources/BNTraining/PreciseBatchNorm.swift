import BNCore
import BNData

/// Precise BN (Wu & Johnson 2021, "Rethinking Batch in BatchNorm"; fvcore's
/// `update_bn_stats`): with the weights fixed, every BN layer's running statistics are
/// replaced by averages over batches of training images, each batch's statistics computed in
/// training mode (dropout on, BN normalising with the batch).
///
/// The order is fvcore's: batch i's mean mu_i and running-variance value v_i (biased or
/// N/(N-1) times it, as `--bn-running-var` says) enter cumulative averages in batch order,
///     mean += (mu_i - mean) / (i + 1),   var += (v_i - var) / (i + 1)     (float32),
/// so the result is the plain average of the per-batch values (not the variance of the
/// pooled images, which would add the spread of the batch means). The batches are the first
/// N images of the run's training split in file order, in whole batches of the training
/// batch (a remainder smaller than a batch is left out; N below one batch is one batch of N).
///
/// Batches are divided among the workers and, under MPI, the ranks: each batch is computed
/// whole by one network with its own dropout stream (keyed by the pass and the batch), and
/// the averages are taken in batch order, so the result is the same bits for any worker and
/// rank count. The model's own dropout stream is left as it was.
///
/// The EMA values are kept beside (`ema`): training continues from them, and checkpoints
/// carry both (`bn_ema.*`), so a resumed run is bit-exact.
public final class PreciseBatchNorm {
    let parallel: DataParallel<Float>
    /// Per worker, its network's BN layers (in network order) and a sampler of the pass's images.
    let norms: [[any ShardSynchronizedNormalization<Float>]]
    let sources: [MinibatchSampler]
    /// Batches in the pass and rows per batch.
    public let batchCount: Int
    /// Per BN layer, the EMA running mean and variance while the buffers hold precise ones.
    let emaMeanStore: [UnsafeMutableBufferPointer<Float>], emaVarStore: [UnsafeMutableBufferPointer<Float>]
    /// True when the buffers hold precise statistics and `ema*Store` the EMA ones.
    public private(set) var holdsPrecise = false
    /// Per batch, every layer's mean then running-variance value (`stride` floats per batch).
    let perBatch: UnsafeMutableBufferPointer<Float>
    let offsets: [Int]
    let stride: Int

    /// The checkpoint tensor holding layer `name`'s EMA `running_mean` or `running_var`.
    public static let prefix = "bn_ema."

    /// `examples`: indices into `split` (the run's training images in file order), of which the
    /// first `limit` (all when nil) are used.
    public init(parallel: DataParallel<Float>, split: Split, examples: [Int32], limit: Int?, batch: Int) {
        self.parallel = parallel
        let n = min(limit ?? examples.count, examples.count)
        let rows = min(batch, n)
        batchCount = max(n / rows, 1)
        let used = Array(examples.prefix(batchCount * rows))
        norms = (0..<parallel.workers).map { w in
            parallel.network(forWorker: w).layers.compactMap { $0 as? any ShardSynchronizedNormalization<Float> }
        }
        sources = (0..<parallel.workers).map { _ in MinibatchSampler(split: split, indices: used, batchSize: rows) }
        let channels = norms[0].map(\.channels)
        var o: [Int] = [], at = 0
        for c in channels { o.append(at); at += 2 * c }
        offsets = o
        stride = at
        perBatch = .allocate(capacity: max(batchCount * at, 1))
        perBatch.initialize(repeating: 0)
        emaMeanStore = channels.map { let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: $0); b.initialize(repeating: 0); return b }
        emaVarStore = channels.map { let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: $0); b.initialize(repeating: 1); return b }
    }

    deinit {
        perBatch.deallocate()
        for b in emaMeanStore { b.deallocate() }
        for b in emaVarStore { b.deallocate() }
    }

    /// The model's BN layers, in network order.
    var layers: [any ShardSynchronizedNormalization<Float>] { norms[0] }

    /// The EMA statistics of layer `i` (the buffers' own when they hold EMA ones).
    public func ema(_ i: Int) -> (mean: [Float], variance: [Float]) {
        if holdsPrecise { return (Array(emaMeanStore[i]), Array(emaVarStore[i])) }
        return (Array(UnsafeBufferPointer(start: layers[i].runningMean.value.data, count: layers[i].channels)),
                Array(UnsafeBufferPointer(start: layers[i].runningVar.value.data, count: layers[i].channels)))
    }

    /// A checkpoint's `bn_ema.*` values (the buffers then hold its precise statistics).
    public func restore(ema: [(mean: [Float], variance: [Float])]) {
        precondition(ema.count == layers.count)
        for (i, e) in ema.enumerated() {
            _ = emaMeanStore[i].update(fromContentsOf: e.mean)
            _ = emaVarStore[i].update(fromContentsOf: e.variance)
        }
        holdsPrecise = true
    }

    /// Before training resumes: the buffers get the EMA statistics back.
    public func resumeTraining() {
        guard holdsPrecise else { return }
        for (i, l) in layers.enumerated() {
            l.runningMean.value.data.update(from: emaMeanStore[i].baseAddress!, count: l.channels)
            l.runningVar.value.data.update(from: emaVarStore[i].baseAddress!, count: l.channels)
        }
        holdsPrecise = false
    }

    /// Keeps the EMA statistics and writes the precise ones into the buffers; `pass` keys the
    /// dropout streams (the epoch).
    public func recompute(pass: UInt64, seed: UInt64) {
        if !holdsPrecise {
            for (i, l) in layers.enumerated() {
                emaMeanStore[i].baseAddress!.update(from: l.runningMean.value.data, count: l.channels)
                emaVarStore[i].baseAddress!.update(from: l.runningVar.value.data, count: l.channels)
            }
        }
        var keyRNG = SplitMix64(seed: seed, stream: "precise-bn")
        let key = keyRNG.next() ^ (pass &* 0xD1B5_4A32_D192_ED03)
        let model = parallel.model
        let modelStream = model.randomStream.generator
        let deferred = norms.map { $0.map(\.defersRunningStatistics) }
        for w in norms.indices { for i in norms[w].indices { norms[w][i].defersRunningStatistics = true } }
        let ranks = parallel.ranks, rankCount = ranks?.count ?? 1, me = ranks?.rank ?? 0
        perBatch.update(repeating: 0)
        let work = { (w: Int, team: Int) in
            let net = self.parallel.network(forWorker: w), source = self.sources[w]
            var b = me + w * rankCount
            while b < self.batchCount {
                var g = SplitMix64(seed: key ^ (UInt64(b + 1) &* 0x9E37_79B9_7F4A_7C15))
                _ = g.next()
                net.randomStream.generator = g
                source.fill(batch: b)
                _ = net.forward(source.x, training: true)
                let out = self.perBatch.baseAddress! + b * self.stride
                for (i, l) in self.norms[w].enumerated() {
                    let c = l.channels, m = out + self.offsets[i], v = m + c
                    m.update(from: l.batchMeanValues, count: c)
                    let n = l.statisticsRows
                    let bessel: Float = (l.runningVariance == .unbiased && n > 1) ? Float(n) / Float(n - 1) : 1
                    for j in 0..<c { v[j] = l.batchVarianceValues[j] * bessel }
                }
                b += team * rankCount
            }
        }
        if parallel.workers > 1 { parallel.onEveryWorker(work) } else { work(0, 1) }
        model.randomStream.generator = modelStream
        for w in norms.indices { for i in norms[w].indices { norms[w][i].defersRunningStatistics = deferred[w][i] } }
        if let ranks, rankCount > 1 {
            let all = ranks.allGather(Array(UnsafeRawBufferPointer(perBatch)))
            for b in 0..<batchCount where b % rankCount != me {
                all[b % rankCount].withUnsafeBytes { bytes in
                    let src = bytes.baseAddress!.assumingMemoryBound(to: Float.self) + b * stride
                    (perBatch.baseAddress! + b * stride).update(from: src, count: stride)
                }
            }
        }
        // fvcore's cumulative averages, in batch order.
        for (i, l) in layers.enumerated() {
            let c = l.channels, rm = l.runningMean.value.data, rv = l.runningVar.value.data
            rm.update(repeating: 0, count: c)
            rv.update(repeating: 0, count: c)
            for b in 0..<batchCount {
                let m = perBatch.baseAddress! + b * stride + offsets[i], v = m + c
                let k = Float(b + 1)
                for j in 0..<c {
                    rm[j] += (m[j] - rm[j]) / k
                    rv[j] += (v[j] - rv[j]) / k
                }
            }
        }
        holdsPrecise = true
    }
}
