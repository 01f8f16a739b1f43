import BNCore
import BNData
import RealModule

/// Evaluation-mode passes (BN running statistics) over a split.
enum Evaluation {
    struct Result {
        var loss: Double
        var accuracy: Double
    }

    /// Mean loss and accuracy over every batch of `batches` (the test set viewed in place, or
    /// the validation examples gathered).
    static func run(_ net: Network<Float>, _ batches: any BatchSource) -> Result {
        var lossSum = 0.0, correct = 0
        for b in 0..<batches.batchCount {
            batches.load(batch: b)
            let r = net.loss.evaluate(logits: net.forward(batches.x, training: false), labels: batches.batchLabels)
            lossSum += r.lossSum
            correct += r.correct
        }
        let n = Double(batches.exampleCount)
        return Result(loss: lossSum / n, accuracy: Double(correct) / n)
    }

    /// Arg-max predictions and their softmax probabilities for each row of `logits`.
    static func predictions(_ logits: Matrix<Float>) -> [(label: Int, probability: Double)] {
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

