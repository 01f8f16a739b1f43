import BNCore
import XCTest

/// BatchNorm1D against hand-computed values, plus one regression test for each pitfall in
/// shared/docs/batchnorm.md ("Mistakes seen in circulating implementations").
final class BatchNormTests: XCTestCase {
    // x: 3 examples, 2 features. Feature 0: 1, 3, 5 (mean 3, var 8/3);
    // feature 1: 2, 6, 10 (mean 6, var 32/3).
    let x = Matrix<Double>(rows: 3, cols: 2, values: [1, 2, 3, 6, 5, 10])
    let eps = 1e-5

    func testTrainForwardMatchesHandComputedValues() {
        let bn = BatchNorm1D<Double>(features: 2, eps: eps)
        bn.gamma.value.copy(from: Matrix(rows: 1, cols: 2, values: [2, 0.5]))
        bn.beta.value.copy(from: Matrix(rows: 1, cols: 2, values: [1, -1]))
        let y = bn.forward(x, training: true).toArray()
        let s0 = 1 / (8.0 / 3 + eps).squareRoot(), s1 = 1 / (32.0 / 3 + eps).squareRoot()
        let expected = [
            2 * -2 * s0 + 1, 0.5 * -4 * s1 - 1,
            2 * 0 * s0 + 1, 0.5 * 0 * s1 - 1,
            2 * 2 * s0 + 1, 0.5 * 4 * s1 - 1,
        ]
        XCTAssertLessThan(maxAbsDiff(y, expected), 1e-12)
    }

    func testRunningStatisticsAfterSeveralSteps() {
        let bn = BatchNorm1D<Double>(features: 2, momentum: 0.9, eps: eps)
        let b = Matrix<Double>(rows: 2, cols: 2, values: [0, 4, 2, 0])  // means 1, 2; vars 1, 4
        _ = bn.forward(x, training: true)  // means 3, 6; vars 8/3, 32/3
        _ = bn.forward(b, training: true)
        _ = bn.forward(x, training: true)
        // running = 0.9 * running + 0.1 * batch, from mean 0 and var 1.
        var rm = [0.0, 0.0], rv = [1.0, 1.0]
        for (mu, v) in [([3.0, 6.0], [8.0 / 3, 32.0 / 3]), ([1.0, 2.0], [1.0, 4.0]), ([3.0, 6.0], [8.0 / 3, 32.0 / 3])] {
            for j in 0..<2 {
                rm[j] = 0.9 * rm[j] + 0.1 * mu[j]
                rv[j] = 0.9 * rv[j] + 0.1 * v[j]
            }
        }
        XCTAssertLessThan(maxAbsDiff(bn.runningMean.value.toArray(), rm), 1e-12)
        XCTAssertLessThan(maxAbsDiff(bn.runningVar.value.toArray(), rv), 1e-12)
        XCTAssertEqual(bn.batchesTracked, 3)
        // Eval mode leaves them alone.
        _ = bn.forward(b, training: false)
        XCTAssertLessThan(maxAbsDiff(bn.runningVar.value.toArray(), rv), 1e-12)
    }

    func testUnbiasedRunningVarianceMatchesPyTorchConvention() {
        let bn = BatchNorm1D<Double>(features: 2, momentum: 0.9, eps: eps, runningVariance: .unbiased)
        _ = bn.forward(x, training: true)
        // PyTorch: running_var = 0.9 * 1 + 0.1 * var * N/(N-1), N = 3
        XCTAssertLessThan(maxAbsDiff(bn.runningVar.value.toArray(), [0.9 + 0.1 * 4, 0.9 + 0.1 * 16]), 1e-12)
    }

    func testEvalOutputDoesNotDependOnBatchComposition() {
        var r = TestRandom(21)
        let bn = BatchNorm1D<Float>(features: 4)
        for _ in 0..<5 { _ = bn.forward(r.matrix(8, 4, scale: 2, offset: 1), training: true) }
        let batch: Matrix<Float> = r.matrix(6, 4)
        let together = bn.forward(batch, training: false).toArray()
        for i in 0..<6 {
            let alone = Matrix<Float>(rows: 1, cols: 4, values: Array(batch.toArray()[(i * 4)..<(i * 4 + 4)]))
            let other: Matrix<Float> = r.matrix(3, 4, scale: 10)
            let mixed = Matrix<Float>(rows: 4, cols: 4, values: other.toArray() + alone.toArray())
            XCTAssertEqual(bn.forward(alone, training: false).toArray(), Array(together[(i * 4)..<(i * 4 + 4)]))
            XCTAssertEqual(Array(bn.forward(mixed, training: false).toArray()[12..<16]), Array(together[(i * 4)..<(i * 4 + 4)]))
        }
    }

    // Pitfall 1: evaluation must divide by sqrt(running_var + eps), not (running_var + eps).
    func testPitfall1EvalDividesByStandardDeviation() {
        let bn = BatchNorm1D<Double>(features: 1, eps: eps)
        bn.runningMean.value.data[0] = 1
        bn.runningVar.value.data[0] = 4
        let y = bn.forward(Matrix(rows: 1, cols: 1, values: [5]), training: false).data[0]
        XCTAssertEqual(y, 4 / (4 + eps).squareRoot(), accuracy: 1e-12)  // about 2, not 1
    }

    // Pitfall 2: running_var must move (not running_mean updated twice).
    func testPitfall2RunningVarianceMoves() {
        let bn = BatchNorm1D<Double>(features: 2, momentum: 0.9, eps: eps)
        _ = bn.forward(x, training: true)
        XCTAssertLessThan(maxAbsDiff(bn.runningMean.value.toArray(), [0.3, 0.6]), 1e-12)
        XCTAssertLessThan(maxAbsDiff(bn.runningVar.value.toArray(), [0.9 + 0.8 / 3, 0.9 + 3.2 / 3]), 1e-12)
    }

    // Pitfall 3: dgamma = sum(dy * xhat) lands in gamma's slot and dbeta = sum(dy) in beta's.
    func testPitfall3GammaAndBetaGradientsInTheirOwnSlots() {
        let bn = BatchNorm1D<Double>(features: 2, eps: eps)
        let dy = Matrix<Double>(rows: 3, cols: 2, values: [1, 0, 2, 1, 4, 3])
        _ = bn.forward(x, training: true)
        _ = bn.backward(dy)
        let s0 = 1 / (8.0 / 3 + eps).squareRoot(), s1 = 1 / (32.0 / 3 + eps).squareRoot()
        XCTAssertLessThan(maxAbsDiff(bn.beta.grad.toArray(), [7, 4]), 1e-12)
        XCTAssertLessThan(maxAbsDiff(bn.gamma.grad.toArray(), [(-2 * 1 + 0 * 2 + 2 * 4) * s0, (-4 * 0 + 0 * 1 + 4 * 3) * s1]), 1e-12)
    }

    // Pitfall 4: the staged backward's (var + eps)^-1 and its dmean term (x - mu, not mu).
    // A large eps and a large mean make either mistake visible against finite differences.
    func testPitfall4StagedBackwardWithLargeEpsAndMean() {
        var r = TestRandom(22)
        let bn = BatchNorm1D<Double>(features: 3, eps: 2.0)
        bn.useStagedBackward = true
        let xs: Matrix<Double> = r.matrix(5, 3, scale: 1, offset: 50)
        let g: Matrix<Double> = r.matrix(5, 3)
        let loss = { dot(bn.forward(xs, training: true), g) }
        _ = loss()
        let dx = bn.backward(g).toArray()
        XCTAssertLessThan(GradientCheck.relativeError(dx, numeric(xs, loss)), 1e-6)
    }

    // Pitfall 5: statistics per feature (axis 0), and division by sqrt(var + eps).
    func testPitfall5PerFeatureStatistics() {
        var r = TestRandom(23)
        let bn = BatchNorm1D<Double>(features: 3, eps: 1e-12)
        let xs = Matrix<Double>(rows: 64, cols: 3)
        for i in 0..<64 {  // three features on very different scales
            xs[i, 0] = r.rng.nextNormal() * 0.01
            xs[i, 1] = r.rng.nextNormal() * 100 + 7
            xs[i, 2] = r.rng.nextNormal() * 3 - 2
        }
        let y = bn.forward(xs, training: true)
        for j in 0..<3 {
            let xc = (0..<64).map { xs[$0, j] }
            let xm = xc.reduce(0, +) / 64
            let xv = xc.map { ($0 - xm) * ($0 - xm) }.reduce(0, +) / 64
            let col = (0..<64).map { y[$0, j] }
            let mean = col.reduce(0, +) / 64
            let variance = col.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 64
            XCTAssertEqual(mean, 0, accuracy: 1e-10, "feature \(j)")
            // var(xhat_j) = var_j / (var_j + eps): only the feature's own variance enters.
            XCTAssertEqual(variance, xv / (xv + 1e-12), accuracy: 1e-12, "feature \(j)")
        }
    }

    // Pitfall 6: gamma starts at one (beta, running mean at zero; running var at one).
    func testPitfall6InitialValues() {
        let bn = BatchNorm1D<Float>(features: 5)
        XCTAssertEqual(bn.gamma.value.toArray(), [1, 1, 1, 1, 1])
        XCTAssertEqual(bn.beta.value.toArray(), [0, 0, 0, 0, 0])
        XCTAssertEqual(bn.runningMean.value.toArray(), [0, 0, 0, 0, 0])
        XCTAssertEqual(bn.runningVar.value.toArray(), [1, 1, 1, 1, 1])
        XCTAssertEqual(bn.gamma.name, "bn.weight")
        XCTAssertEqual(bn.runningVar.name, "bn.running_var")
    }

    // Pitfall 7: backward uses the statistics of the forward it follows, not a stale or
    // since-modified input.
    func testPitfall7BackwardUsesTheLastForwardsStatistics() {
        var r = TestRandom(24)
        let a: Matrix<Double> = r.matrix(4, 3, scale: 5, offset: 2)
        let b: Matrix<Double> = r.matrix(4, 3)
        let g: Matrix<Double> = r.matrix(4, 3)
        let fresh = BatchNorm1D<Double>(features: 3)
        _ = fresh.forward(b, training: true)
        let expected = fresh.backward(g).toArray()

        let bn = BatchNorm1D<Double>(features: 3)
        _ = bn.forward(a, training: true)
        let input = Matrix<Double>(rows: 4, cols: 3)
        input.copy(from: b)
        _ = bn.forward(input, training: true)
        input.copy(from: a)  // the caller reuses its buffer before backward
        XCTAssertEqual(bn.backward(g).toArray(), expected)
        XCTAssertEqual(bn.backwardStaged(g).toArray().count, expected.count)
        XCTAssertLessThan(GradientCheck.relativeError(bn.backwardStaged(g).toArray(), expected), 1e-10)
    }
}
