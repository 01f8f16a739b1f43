import BNCore
import BNData
import RealModule

/// The one evaluation path (evaluation mode: BN running statistics, dropout off), used by
/// training (validation and test passes), `bntrain eval` and `bntrain predict`.
public enum Evaluation {
    public struct Result {
        public var loss: Double
        public var accuracy: Double
        /// confusion[true][predicted] counts, when asked for.
        public var confusion: [[Int]]?
    }

    /// Mean loss and accuracy over every batch of `batches` (the test set viewed in place, or
    /// the validation examples gathered); with `confusion`, the confusion matrix too.
    public static func run(_ net: Network<Float>, _ batches: any BatchSource, confusion: Bool = false) -> Result {
        var lossSum = 0.0, correct = 0
        let c = net.classes
        var matrix = confusion ? [[Int]](repeating: [Int](repeating: 0, count: c), count: c) : nil
        for b in 0..<batches.batchCount {
            let r = evaluate(net, batches, batch: b, confusion: confusion) { matrix![$0][$1] += 1 }
            lossSum += r.lossSum
            correct += r.correct
        }
        let n = Double(batches.exampleCount)
        return Result(loss: lossSum / n, accuracy: Double(correct) / n, confusion: matrix)
    }

    /// `run`'s result with the batches divided among `parallel`'s workers (and, under MPI, its
    /// ranks): rank r takes batches r, r + R, ... and its worker w every W-th of those, with its
    /// own network and `sources[w]` (each a source of the same batches). Every batch is
    /// computed as `run` computes it and the per-batch sums are added in batch order, so the
    /// result is the same bits for any worker and rank count.
    public static func run(_ parallel: DataParallel<Float>, _ sources: [any BatchSource], confusion: Bool = false) -> Result {
        let team = parallel.workers, ranks = parallel.ranks
        let rankCount = ranks?.count ?? 1, me = ranks?.rank ?? 0
        guard (team > 1 && sources.count >= team) || rankCount > 1 else { return run(parallel.model, sources[0], confusion: confusion) }
        let workers = sources.count >= team ? team : 1
        let batches = sources[0].batchCount, c = parallel.model.classes
        // Per batch: its loss sum and correct count (zero where another rank computed it).
        let losses = UnsafeMutableBufferPointer<Double>.allocate(capacity: max(batches, 1))
        let corrects = UnsafeMutableBufferPointer<Int64>.allocate(capacity: max(batches, 1))
        losses.initialize(repeating: 0)
        corrects.initialize(repeating: 0)
        // One confusion matrix per worker, added up after (integers: any order is exact).
        let counts = UnsafeMutableBufferPointer<Int64>.allocate(capacity: confusion ? workers * c * c : 1)
        counts.initialize(repeating: 0)
        defer {
            losses.deallocate()
            corrects.deallocate()
            counts.deallocate()
        }
        let work = { (w: Int, workers: Int) in
            let net = parallel.network(forWorker: w), source = sources[w]
            var b = me + w * rankCount
            while b < batches {
                let r = evaluate(net, source, batch: b, confusion: confusion) { counts[(w * c + $0) * c + $1] += 1 }
                (losses[b], corrects[b]) = (r.lossSum, Int64(r.correct))
                b += workers * rankCount
            }
        }
        if workers > 1 { parallel.onEveryWorker(work) } else { work(0, 1) }
        var lossSum = 0.0, correct: Int64 = 0
        var matrix: [[Int]]?
        if let ranks, rankCount > 1 {
            // Every rank's per-batch values, each batch taken from the rank that computed it.
            let allLosses = ranks.allGather(Array(UnsafeRawBufferPointer(losses)))
            let allCorrects = ranks.allGather(Array(UnsafeRawBufferPointer(corrects)))
            for b in 0..<batches {
                let owner = b % rankCount
                lossSum += allLosses[owner].withUnsafeBytes { $0.load(fromByteOffset: 8 * b, as: Double.self) }
                correct += allCorrects[owner].withUnsafeBytes { $0.load(fromByteOffset: 8 * b, as: Int64.self) }
            }
            if confusion {
                let all = ranks.allGather(Array(UnsafeRawBufferPointer(counts)))
                matrix = (0..<c).map { t in
                    (0..<c).map { p in
                        all.reduce(0) { sum, bytes in
                            sum + (0..<workers).reduce(0) { s, w in s + Int(bytes.withUnsafeBytes { $0.load(fromByteOffset: 8 * ((w * c + t) * c + p), as: Int64.self) }) }
                        }
                    }
                }
            }
        } else {
            for b in 0..<batches {
                lossSum += losses[b]
                correct += corrects[b]
            }
            if confusion {
                matrix = (0..<c).map { t in (0..<c).map { p in (0..<workers).reduce(0) { $0 + Int(counts[($1 * c + t) * c + p]) } } }
            }
        }
        let n = Double(sources[0].exampleCount)
        return Result(loss: lossSum / n, accuracy: Double(correct) / n, confusion: matrix)
    }

    /// Batch `b` of `source` through `net` in evaluation mode: its summed loss and correct
    /// count; with `confusion`, `count(true label, predicted label)` for each example.
    static func evaluate(_ net: Network<Float>, _ source: any BatchSource, batch b: Int, confusion: Bool, count: (Int, Int) -> Void) -> (lossSum: Double, correct: Int) {
        let n = source.load(batch: b)
        let logits = net.forward(source.x, training: false)
        let r = net.loss.evaluate(logits: logits, labels: source.batchLabels)
        if confusion {
            for (i, p) in predictions(logits).enumerated() where i < n { count(Int(source.batchLabels[i]), p.label) }
        }
        return r
    }

    /// The evaluation batch when none is given: 1000 images, or as many as keep one batch's
    /// forward activations (`floatsPerImage`: the input and every layer's output, float32)
    /// within 128 MiB, at least 32. dfn2, mlp and lenet-bn keep 1000 (5-90 KB per image);
    /// cnn's 780 KB per image gives 172, which lowers a cnn run's peak memory and its time
    /// (fewer page faults of first touching the buffers; docs/performance.md).
    public static func automaticBatch(floatsPerImage: Double) -> Int {
        max(32, min(1000, Int(Double(128 << 20) / 4 / max(floatsPerImage, 1))))
    }

    /// Arg-max predictions and their softmax probabilities for each row of `logits`.
    public static func predictions(_ logits: Matrix<Float>) -> [(label: Int, probability: Double)] {
        (0..<logits.rows).map { i in
            let row = logits.data + i * logits.cols
            var best = 0
            for k in 1..<logits.cols where row[k] > row[best] { best = k }
            var sum = 0.0
            for k in 0..<logits.cols { sum += Double.exp(Double(row[k] - row[best])) }
            return (best, 1 / sum)
        }
    }
}
