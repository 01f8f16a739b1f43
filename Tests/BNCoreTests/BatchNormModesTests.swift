import BNCore
import XCTest

/// Batch renormalization (Ioffe 2017) in BatchNorm1D and BatchNorm2D: r and d against
/// hand-computed values, the backward with r and d held constant against finite differences
/// in Double, and limits (1, 0) giving plain BN.
final class BatchRenormTests: XCTestCase {
    func bn1D(_ seed: UInt64) -> BatchNorm1D<Double> { BatchNormModesSupport.bn1D(seed) }

    /// r = clip(sigma_B / sigma, 1/rmax, rmax), d = clip((mu_B - mu) / sigma, -dmax, dmax),
    /// computed here from the batch itself; y = gamma (z r + d) + beta.
    func testCorrectionAndOutputAreThePapers() {
        let bn = bn1D(1)
        bn.renorm = RenormLimits(rmax: 1.5, dmax: 0.5)
        var r = TestRandom(2)
        let x: Matrix<Double> = r.matrix(10, 6, scale: 3, offset: 2)
        let rm = bn.runningMean.value.toArray(), rv = bn.runningVar.value.toArray()
        let y = bn.forward(x, training: true).toArray()
        var clippedR = 0, clippedD = 0
        for j in 0..<6 {
            let col = (0..<10).map { x.data[$0 * 6 + j] }
            let mu = col.reduce(0, +) / 10, v = col.map { ($0 - mu) * ($0 - mu) }.reduce(0, +) / 10
            let sigmaB = (v + 1e-5).squareRoot(), sigma = (rv[j] + 1e-5).squareRoot()
            let rr = min(max(sigmaB / sigma, 1 / 1.5), 1.5), dd = min(max((mu - rm[j]) / sigma, -0.5), 0.5)
            if rr == 1.5 || rr == 1 / 1.5 { clippedR += 1 }
            if abs(dd) == 0.5 { clippedD += 1 }
            XCTAssertEqual(bn.renormR.data[j], rr, accuracy: 1e-12)
            XCTAssertEqual(bn.renormD.data[j], dd, accuracy: 1e-12)
            for i in 0..<10 {
                let want = bn.gamma.value.data[j] * ((col[i] - mu) / sigmaB * rr + dd) + bn.beta.value.data[j]
                XCTAssertEqual(y[i * 6 + j], want, accuracy: 1e-12)
            }
        }
        XCTAssertTrue(clippedR > 0 && clippedR < 6 && clippedD > 0 && clippedD < 6, "the case clips some channels, not all (r \(clippedR), d \(clippedD))")
        // The running statistics are BN's.
        XCTAssertEqual(bn.batchesTracked, 1)
    }

    func testBackwardWithConstantCorrectionsMatchesFiniteDifferences1D() {
        let bn = bn1D(3)
        bn.renorm = RenormLimits(rmax: 1.5, dmax: 0.5)
        var r = TestRandom(4)
        let x: Matrix<Double> = r.matrix(8, 6, scale: 3, offset: 2)
        _ = bn.forward(x, training: true)
        bn.freezeRenorm = true
        checkLayer(bn, x: x, seed: 5)
    }

    func testBackwardWithConstantCorrectionsMatchesFiniteDifferences2D() {
        for fused in [false, true] {
            var r = TestRandom(6)
            let bn = BatchNorm2D<Double>(shape: ImageShape(3, 3, 3), fusedReLU: fused, name: "bn")
            bn.gamma.value.copy(from: r.matrix(1, 3, offset: 1))
            bn.beta.value.copy(from: r.matrix(1, 3))
            bn.runningMean.value.copy(from: r.matrix(1, 3, scale: 1.5, offset: 2))
            for c in 0..<3 { bn.runningVar.value.data[c] = [0.3, 8, 2][c] }
            bn.renorm = RenormLimits(rmax: 1.5, dmax: 0.5)
            let x: Matrix<Double> = r.matrix(4, 27, scale: 2, offset: 1.5)
            _ = bn.forward(x, training: true)
            XCTAssertTrue((0..<3).contains { bn.renormR.data[$0] != 1 } && (0..<3).contains { bn.renormD.data[$0] != 0 })
            bn.freezeRenorm = true
            checkLayer(bn, x: x, seed: 7)
        }
    }

    /// r_max = 1, d_max = 0: plain BN's output and gradients (to rounding).
    func testUnitLimitsArePlainBatchNorm() {
        var r = TestRandom(8)
        let x: Matrix<Double> = r.matrix(7, 6, scale: 2, offset: 1)
        let g: Matrix<Double> = r.matrix(7, 6)
        let plain = bn1D(9), renorm = bn1D(9)
        renorm.renorm = RenormLimits(rmax: 1, dmax: 0)
        XCTAssertLessThan(maxAbsDiff(plain.forward(x, training: true).toArray(), renorm.forward(x, training: true).toArray()), 1e-13)
        XCTAssertLessThan(maxAbsDiff(plain.backward(g).toArray(), renorm.backward(g).toArray()), 1e-13)
        XCTAssertLessThan(maxAbsDiff(plain.gamma.grad.toArray(), renorm.gamma.grad.toArray()), 1e-13)
        let image = ImageShape(2, 2, 3)
        let p2 = BatchNorm2D<Double>(shape: image, name: "a"), r2 = BatchNorm2D<Double>(shape: image, name: "b")
        r2.renorm = RenormLimits(rmax: 1, dmax: 0)
        let xi: Matrix<Double> = r.matrix(5, 12), gi: Matrix<Double> = r.matrix(5, 12)
        XCTAssertLessThan(maxAbsDiff(p2.forward(xi, training: true).toArray(), r2.forward(xi, training: true).toArray()), 1e-13)
        XCTAssertLessThan(maxAbsDiff(p2.backward(gi).toArray(), r2.backward(gi).toArray()), 1e-13)
    }
}

/// `--bn-freeze-after`: a frozen BN layer in training is evaluation's affine map of the
/// running statistics, backward through it with them as constants, and it updates nothing.
final class FrozenBatchNormTests: XCTestCase {
    func testFrozenTrainingIsEvaluationAndLeavesTheStatistics() {
        var r = TestRandom(21)
        let bn = BatchNormModesSupport.bn1D(22)
        let x: Matrix<Double> = r.matrix(9, 6, scale: 2, offset: 1)
        let eval = bn.forward(x, training: false).toArray()
        let before = bn.buffers.flatMap { $0.value.toArray() }
        bn.frozen = true
        XCTAssertLessThan(maxAbsDiff(bn.forward(x, training: true).toArray(), eval), 1e-13)
        XCTAssertEqual(bn.buffers.flatMap { $0.value.toArray() }, before)
        XCTAssertEqual(bn.batchesTracked, 0)
    }

    func testFrozenBackwardMatchesFiniteDifferences() {
        var r = TestRandom(23)
        let bn = BatchNormModesSupport.bn1D(24)
        bn.frozen = true
        checkLayer(bn, x: r.matrix(7, 6, scale: 2, offset: 1), seed: 25)
        for fused in [false, true] {
            let b2 = BatchNorm2D<Double>(shape: ImageShape(3, 2, 3), fusedReLU: fused, name: "bn")
            b2.gamma.value.copy(from: r.matrix(1, 3, offset: 1))
            b2.beta.value.copy(from: r.matrix(1, 3))
            b2.runningMean.value.copy(from: r.matrix(1, 3))
            for c in 0..<3 { b2.runningVar.value.data[c] = [0.5, 3, 1.5][c] }
            b2.frozen = true
            b2.renorm = RenormLimits(rmax: 2, dmax: 1)  // frozen wins over renormalization
            checkLayer(b2, x: r.matrix(4, 18, scale: 2), seed: 26)
        }
    }
}

/// A BatchNorm1D with random affine parameters and running statistics far from a unit batch.
enum BatchNormModesSupport {
    static func bn1D(_ seed: UInt64, features: Int = 6) -> BatchNorm1D<Double> {
        var r = TestRandom(seed)
        let bn = BatchNorm1D<Double>(features: features)
        bn.gamma.value.copy(from: r.matrix(1, features, offset: 1))
        bn.beta.value.copy(from: r.matrix(1, features))
        bn.runningMean.value.copy(from: r.matrix(1, features, scale: 1.5, offset: 2))
        for j in 0..<features { bn.runningVar.value.data[j] = [0.2, 9, 4, 1, 30, 2.5][j % 6] }
        return bn
    }
}
