import RealModule

/// Softmax and cross-entropy on integer labels, fused and numerically stable (log-sum-exp):
///     loss_i = logsumexp(z_i) - z_i[label_i],   L = mean_i loss_i,
///     dL/dz = (softmax(z) - onehot(label)) / N.
public final class SoftmaxCrossEntropy<T: BLASScalar> {
    public let classes: Int
    /// dL/dlogits of the last `forwardBackward`: (N, C).
    public let logitsGrad: Matrix<T>

    public init(classes: Int) {
        self.classes = classes
        logitsGrad = Matrix(rows: 0, cols: classes)
    }

    /// Mean loss over the batch; writes dL/dlogits into `logitsGrad` in the same pass.
    /// logits: (N, C); labels: N values in 0..<C.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func forwardBackward(logits: Matrix<T>, labels: UnsafePointer<Int32>) -> Double {
        forwardBackwardSum(logits: logits, labels: labels, batchRows: logits.rows) / Double(logits.rows)
    }

    /// The summed loss of these rows, one shard of a batch of `batchRows`: dL/dlogits is the
    /// batch mean's, (softmax - onehot) / batchRows, so the shards' gradients add up to the
    /// batch's.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func forwardBackwardSum(logits: Matrix<T>, labels: UnsafePointer<Int32>, batchRows: Int) -> Double {
        let n = logits.rows, c = classes
        precondition(logits.cols == c, "expected \(c) logits per row, got \(logits.cols)")
        logitsGrad.resize(rows: n)
        let z = logits.data, dz = logitsGrad.data
        let invN = 1 / T(batchRows)
        var total = 0.0
        for i in 0..<n {
            let zr = z + i * c, gr = dz + i * c
            var mx = zr[0]
            for k in 1..<c where zr[k] > mx { mx = zr[k] }
            var sum: T = 0
            for k in 0..<c {
                let e = T.exp(zr[k] - mx)
                gr[k] = e
                sum += e
            }
            let label = Int(labels[i])
            total += Double(T.log(sum) + mx - zr[label])
            let scale = invN / sum
            for k in 0..<c { gr[k] *= scale }
            gr[label] -= invN
        }
        return total
    }

    /// Summed loss and number of correct arg-max predictions, without gradients (evaluation).
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    @inlinable
    public func evaluate(logits: Matrix<T>, labels: UnsafePointer<Int32>) -> (lossSum: Double, correct: Int) {
        let n = logits.rows, c = classes
        let z = logits.data
        var total = 0.0, correct = 0
        for i in 0..<n {
            let zr = z + i * c
            var mx = zr[0], arg = 0
            for k in 1..<c where zr[k] > mx {
                mx = zr[k]
                arg = k
            }
            var sum: T = 0
            for k in 0..<c { sum += T.exp(zr[k] - mx) }
            let label = Int(labels[i])
            total += Double(T.log(sum) + mx - zr[label])
            if arg == label { correct += 1 }
        }
        return (total, correct)
    }
}
