import BNCore
import XCTest

final class DropoutTests: XCTestCase {
    func dropout(_ p: Double, seed: UInt64 = 1, features: Int = 1000) -> Dropout<Double> {
        Dropout<Double>(probability: p, features: features, stream: RandomStream(SplitMix64(seed: seed)))
    }

    func testEvaluationIsTheIdentity() {
        var r = TestRandom(1)
        let x: Matrix<Double> = r.matrix(8, 1000)
        let y = dropout(0.5).forward(x, training: false)
        XCTAssertTrue(y === x, "evaluation returns its input unchanged")
    }

    /// Survivors are scaled by 1/(1-p): every output is 0 or x/(1-p), about p of them are
    /// zero, and the mean over many elements matches the input's.
    func testTrainingPreservesTheExpectation() {
        let x = Matrix<Double>(rows: 50, cols: 1000, values: Array(repeating: 2.0, count: 50_000))
        for p in [0.1, 0.5, 0.8] {
            let y = dropout(p).forward(x, training: true).toArray()
            let zeros = y.filter { $0 == 0 }.count
            XCTAssertTrue(y.allSatisfy { $0 == 0 || abs($0 - 2 / (1 - p)) < 1e-12 })
            XCTAssertEqual(Double(zeros) / 50_000, p, accuracy: 0.01, "p=\(p)")
            XCTAssertEqual(y.reduce(0, +) / 50_000, 2, accuracy: 0.05, "p=\(p)")
        }
        XCTAssertEqual(dropout(0).forward(x, training: true).toArray(), x.toArray())
    }

    func testSameSeedSameMasksAndTheStreamMoves() {
        let x = Matrix<Double>(rows: 4, cols: 1000, values: Array(repeating: 1.0, count: 4000))
        let a = dropout(0.3, seed: 5), b = dropout(0.3, seed: 5), c = dropout(0.3, seed: 6)
        let ya = a.forward(x, training: true).toArray()
        XCTAssertEqual(ya, b.forward(x, training: true).toArray())
        XCTAssertNotEqual(ya, c.forward(x, training: true).toArray())
        XCTAssertNotEqual(ya, a.forward(x, training: true).toArray(), "each step draws a new mask")
        // Restoring the stream's state replays the masks (what resume relies on).
        let state = a.stream.generator.state
        let next = a.forward(x, training: true).toArray()
        a.stream.generator.state = state
        XCTAssertEqual(a.forward(x, training: true).toArray(), next)
    }

    func testBackwardUsesTheForwardMask() {
        var r = TestRandom(2)
        let d = dropout(0.5, features: 20)
        let x: Matrix<Double> = r.matrix(3, 20), g: Matrix<Double> = r.matrix(3, 20)
        let y = d.forward(x, training: true).toArray()
        let dx = d.backward(g).toArray()
        for i in 0..<60 { XCTAssertEqual(dx[i], y[i] == 0 ? 0 : g.data[i] * 2, accuracy: 1e-12) }
    }

    /// Float dropout draws its mask in C (vectorized SplitMix64): the same mask as the
    /// generator's next() loop, the stream left where n calls leave it, y = x m and dx = g m.
    func testFloatMaskIsTheGeneratorsSequence() {
        var r = TestRandom(3)
        for p in [0.25, 0.5] {
            let d = Dropout<Float>(probability: p, features: 1037, stream: RandomStream(SplitMix64(seed: 9)))
            let x: Matrix<Float> = r.matrix(3, 1037), g: Matrix<Float> = r.matrix(3, 1037)
            var reference = SplitMix64(seed: 9)
            let t = UInt64(p * 18_446_744_073_709_551_616.0), s = Float(1 / (1 - p))
            for step in 0..<2 {
                let y = d.forward(x, training: true).toArray(), dx = d.backward(g).toArray()
                for i in 0..<x.count {
                    let m: Float = reference.next() < t ? 0 : s
                    if y[i].bitPattern != (x.data[i] * m).bitPattern || dx[i].bitPattern != (g.data[i] * m).bitPattern {
                        return XCTFail("p \(p) step \(step) element \(i): y \(y[i]) dx \(dx[i]), mask \(m)")
                    }
                }
                XCTAssertEqual(d.stream.generator.state, reference.state, "p \(p) step \(step)")
            }
        }
    }
}

final class LayerNormTests: XCTestCase {
    /// One row by hand: x = (1, 2, 3, 6): mu = 3, var = (4+1+0+9)/4 = 3.5.
    func testForwardMatchesHandComputedValues() {
        let ln = LayerNorm<Double>(features: 4, name: "ln")
        ln.gamma.value.copy(from: Matrix(rows: 1, cols: 4, values: [1, 2, 1, 1]))
        ln.beta.value.copy(from: Matrix(rows: 1, cols: 4, values: [0, 0, 0.5, 0]))
        let x = Matrix<Double>(rows: 2, cols: 4, values: [1, 2, 3, 6, 5, 5, 5, 5])
        let y = ln.forward(x, training: true).toArray()
        let s = 1 / (3.5 + 1e-5).squareRoot()
        let expected = [-2 * s, -1 * 2 * s, 0.5, 3 * s]
        for j in 0..<4 { XCTAssertEqual(y[j], expected[j], accuracy: 1e-12) }
        // A constant row normalises to beta (variance 0, eps keeps it finite).
        XCTAssertEqual(Array(y[4...]), [0, 0, 0.5, 0])
        // Training and evaluation compute the same thing; the result does not depend on the batch.
        XCTAssertEqual(ln.forward(x, training: false).toArray(), y)
        let one = Matrix<Double>(rows: 1, cols: 4, values: [1, 2, 3, 6])
        XCTAssertEqual(ln.forward(one, training: false).toArray(), Array(y[0..<4]))
    }
}
