import BNCore
import BNData

/// What `bntrain bn-report` measures about a saved model's BN layers (docs/normalization.md):
/// how far each layer's running statistics are from the population statistics of the
/// training images, and the test accuracy with running, precise and batch statistics.
public struct BatchNormReport {
    public struct Layer {
        public let name: String
        public let channels: Int
        /// ||running_mean - population_mean|| / ||population_std||, and
        /// ||running_var - population_var|| / ||population_var|| (norms over channels).
        public let meanDistance: Double, varianceDistance: Double
        /// The same distances for the precise statistics.
        public let preciseMeanDistance: Double, preciseVarianceDistance: Double
        /// Test accuracy with this layer's statistics precise and every other layer's running.
        public let accuracyWithPrecise: Double
    }
    public let layers: [Layer]
    public let runningAccuracy: Double, preciseAccuracy: Double, batchAccuracy: Double
    public let runningLoss: Double, preciseLoss: Double, batchLoss: Double
    /// The layer whose precise statistics alone recover the most test accuracy.
    public var driftLayer: Layer? { layers.max { $0.accuracyWithPrecise < $1.accuracyWithPrecise } }

    static func norms(_ net: Network<Float>) -> [(index: Int, layer: any ShardSynchronizedNormalization<Float>)] {
        net.layers.enumerated().compactMap { i, l in (l as? any ShardSynchronizedNormalization<Float>).map { (i, $0) } }
    }

    /// Exact (Double) per-channel mean and biased variance of every BN layer's input over
    /// `source`'s batches, the model in evaluation mode (what inference feeds each layer).
    public static func populationStatistics(_ net: Network<Float>, _ source: any BatchSource) -> [(mean: [Double], variance: [Double])] {
        let bns = norms(net)
        let at = Dictionary(uniqueKeysWithValues: bns.enumerated().map { ($1.index, $0) })
        var sum = bns.map { [Double](repeating: 0, count: $0.layer.channels) }
        var square = sum
        var count = [Int](repeating: 0, count: bns.count)
        // Two passes: the means first, then squared deviations from them (accurate variances).
        for pass in 0..<2 {
            for b in 0..<source.batchCount {
                let n = source.load(batch: b)
                var h = source.x
                for (i, layer) in net.layers.enumerated() {
                    if let k = at[i] {
                        let c = bns[k].layer.channels, per = h.cols / c
                        for r in 0..<n {
                            let row = h.data + r * h.cols
                            for j in 0..<c {
                                for q in 0..<per {
                                    let v = Double(row[j * per + q])
                                    if pass == 0 { sum[k][j] += v } else {
                                        let d = v - sum[k][j]
                                        square[k][j] += d * d
                                    }
                                }
                            }
                        }
                        if pass == 0 { count[k] += n * per }
                    }
                    h = layer.forward(h, training: false)
                }
            }
            if pass == 0 { for k in bns.indices { for j in sum[k].indices { sum[k][j] /= Double(count[k]) } } }
        }
        return bns.indices.map { k in (sum[k], square[k].map { $0 / Double(count[k]) }) }
    }

    /// Test loss and accuracy with BN layers in training mode (normalising with each test
    /// batch's own statistics, running statistics untouched) and every other layer in
    /// evaluation mode.
    public static func batchStatisticsEvaluation(_ net: Network<Float>, _ test: any BatchSource) -> (loss: Double, accuracy: Double) {
        let bns = norms(net)
        let deferred = bns.map(\.layer.defersRunningStatistics)
        for (_, l) in bns { var l = l; l.defersRunningStatistics = true }
        defer { for ((_, l), d) in zip(bns, deferred) { var l = l; l.defersRunningStatistics = d } }
        let isNorm = Set(bns.map(\.index))
        var lossSum = 0.0, correct = 0
        for b in 0..<test.batchCount {
            test.load(batch: b)
            var h = test.x
            for (i, layer) in net.layers.enumerated() { h = layer.forward(h, training: isNorm.contains(i)) }
            let r = net.loss.evaluate(logits: h, labels: test.batchLabels)
            lossSum += r.lossSum
            correct += r.correct
        }
        let n = Double(test.exampleCount)
        return (lossSum / n, Double(correct) / n)
    }

    /// The report: `train` the training images (population statistics and the precise pass,
    /// the first `examples` of them in batches of `batch`), `test` for the accuracies.
    public static func measure(_ net: Network<Float>, train: Split, examples: Int?, batch: Int, test: Split, evalBatch: Int, seed: UInt64) -> BatchNormReport {
        let n = min(examples ?? train.count, train.count)
        let indices = (0..<Int32(n)).map { $0 }
        let bns = norms(net).map(\.layer)
        let population = populationStatistics(net, MinibatchSampler(split: train, indices: indices, batchSize: min(evalBatch, n)))
        let tests = SequentialBatches(split: test, batchSize: min(evalBatch, test.count))
        let running = Evaluation.run(net, tests)
        let runningValues = bns.map { (Array(UnsafeBufferPointer(start: $0.runningMean.value.data, count: $0.channels)), Array(UnsafeBufferPointer(start: $0.runningVar.value.data, count: $0.channels))) }
        let parallel = DataParallel(model: net, replicas: [], plan: ShardPlan(shardSize: max(batch, 1)), workers: 1, batchNormSync: .on)!
        let precise = PreciseBatchNorm(parallel: parallel, split: train, examples: indices, limit: n, batch: batch)
        precise.recompute(pass: 0, seed: seed)
        let preciseValues = bns.map { (Array(UnsafeBufferPointer(start: $0.runningMean.value.data, count: $0.channels)), Array(UnsafeBufferPointer(start: $0.runningVar.value.data, count: $0.channels))) }
        let preciseResult = Evaluation.run(net, tests)
        let batchResult = batchStatisticsEvaluation(net, SequentialBatches(split: test, batchSize: min(batch, test.count)))
        func set(_ l: Int, _ v: ([Float], [Float])) {
            bns[l].runningMean.value.data.update(from: v.0, count: v.0.count)
            bns[l].runningVar.value.data.update(from: v.1, count: v.1.count)
        }
        func distance(_ a: [Float], _ b: [Double], scale: [Double]) -> Double {
            var num = 0.0, den = 0.0
            for j in a.indices {
                num += (Double(a[j]) - b[j]) * (Double(a[j]) - b[j])
                den += scale[j] * scale[j]
            }
            return (num / max(den, .leastNormalMagnitude)).squareRoot()
        }
        var layers: [Layer] = []
        for (l, norm) in bns.enumerated() {
            for k in bns.indices { set(k, k == l ? preciseValues[k] : runningValues[k]) }
            let swapped = Evaluation.run(net, tests)
            let p = population[l], std = p.variance.map { $0.squareRoot() }
            layers.append(Layer(
                name: norm.name, channels: norm.channels,
                meanDistance: distance(runningValues[l].0, p.mean, scale: std), varianceDistance: distance(runningValues[l].1, p.variance, scale: p.variance),
                preciseMeanDistance: distance(preciseValues[l].0, p.mean, scale: std), preciseVarianceDistance: distance(preciseValues[l].1, p.variance, scale: p.variance),
                accuracyWithPrecise: swapped.accuracy))
        }
        for k in bns.indices { set(k, runningValues[k]) }
        return BatchNormReport(layers: layers, runningAccuracy: running.accuracy, preciseAccuracy: preciseResult.accuracy, batchAccuracy: batchResult.accuracy,
                               runningLoss: running.loss, preciseLoss: preciseResult.loss, batchLoss: batchResult.loss)
    }
}
