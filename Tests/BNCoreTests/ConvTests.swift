import BNCore
import XCTest

/// Conv2D against the naive reference; every image layer's gradients against central
/// differences in Double with a random upstream gradient (relative error < 1e-6).
final class ConvTests: XCTestCase {
    func conv(_ input: ImageShape, out: Int, k: Int, s: Int, p: Int, seed: UInt64) -> Conv2D<Double> {
        var r = TestRandom(seed)
        let c = Conv2D<Double>(input: input, outChannels: out, kernel: k, stride: s, padding: p, name: "c")
        c.weight.value.copy(from: r.matrix(out, input.c * k * k))
        c.bias.value.copy(from: r.matrix(1, out))
        return c
    }

    func testForwardMatchesTheNaiveReference() {
        var r = TestRandom(1)
        for (input, out, k, s, p) in [(ImageShape(1, 7, 6), 3, 3, 1, 0), (ImageShape(2, 9, 9), 4, 5, 2, 2), (ImageShape(3, 5, 8), 2, 1, 1, 0), (ImageShape(2, 6, 6), 3, 3, 2, 1)] {
            let c = conv(input, out: out, k: k, s: s, p: p, seed: 7)
            let x: Matrix<Double> = r.matrix(3, input.count)
            let y = c.forward(x, training: true)
            for e in 0..<3 {
                let ref = referenceConv2D(Array(x.toArray()[(e * input.count)..<((e + 1) * input.count)]), input: input, weight: c.weight.value.toArray(), bias: c.bias.value.toArray(), outChannels: out, kernel: k, stride: s, padding: p)
                XCTAssertLessThan(maxAbsDiff(Array(y.toArray()[(e * c.output.count)..<((e + 1) * c.output.count)]), ref), 1e-12, "\(input) k\(k) s\(s) p\(p)")
            }
        }
    }

    func testConvGradients() {
        var r = TestRandom(2)
        for (k, s, p) in [(3, 1, 0), (3, 2, 0), (3, 1, 1), (2, 2, 1)] {
            let input = ImageShape(2, 6, 5)
            checkLayer(conv(input, out: 3, k: k, s: s, p: p, seed: 3), x: r.matrix(3, input.count), seed: 4)
        }
    }

    func testBatchNorm2DGradientsAndStatistics() {
        var r = TestRandom(5)
        let shape = ImageShape(3, 4, 4)
        let bn = BatchNorm2D<Double>(shape: shape, name: "b")
        bn.gamma.value.copy(from: r.matrix(1, 3, scale: 0.3, offset: 1))
        bn.beta.value.copy(from: r.matrix(1, 3, scale: 0.3))
        checkLayer(bn, x: r.matrix(4, shape.count, scale: 2, offset: 0.5), seed: 6)
        // Per channel over N, H, W: channel 1 of a batch is normalised to mean 0, variance 1.
        let x: Matrix<Double> = r.matrix(5, shape.count, scale: 3, offset: 2)
        let fresh = BatchNorm2D<Double>(shape: shape, name: "b")
        let y = fresh.forward(x, training: true).toArray()
        var vals: [Double] = []
        for e in 0..<5 { vals += y[(e * 48 + 16)..<(e * 48 + 32)] }
        let mean = vals.reduce(0, +) / Double(vals.count)
        XCTAssertEqual(mean, 0, accuracy: 1e-12)
        XCTAssertEqual(vals.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(vals.count), 1, accuracy: 1e-4)
        // Evaluation uses the running statistics and does not depend on the batch.
        let one = Matrix<Double>(rows: 1, cols: shape.count, values: Array(x.toArray()[0..<48]))
        XCTAssertLessThan(maxAbsDiff(fresh.forward(one, training: false).toArray(), Array(fresh.forward(x, training: false).toArray()[0..<48])), 1e-15)
    }

    func testPoolingGradients() {
        // Distinct values (no ties) so the max's derivative is defined.
        var r = TestRandom(8)
        let shape = ImageShape(2, 6, 6)
        let x = Matrix<Double>(rows: 2, cols: shape.count)
        var perm = Array(0..<x.count)
        r.rng.shuffle(&perm)
        for i in 0..<x.count { x.data[i] = Double(perm[i]) * 0.1 + 0.01 * r.rng.nextNormal() }
        checkLayer(Pool2D<Double>(.max, input: shape, kernel: 2), x: x, seed: 9)
        checkLayer(Pool2D<Double>(.max, input: shape, kernel: 3, stride: 2), x: x, seed: 9)
        checkLayer(Pool2D<Double>(.average, input: shape, kernel: 2), x: x, seed: 10)
        checkLayer(Pool2D<Double>(.average, input: shape, kernel: nil), x: x, seed: 11)
        let m = Pool2D<Double>(.max, input: ImageShape(1, 2, 2), kernel: 2)
        XCTAssertEqual(m.forward(Matrix(rows: 1, cols: 4, values: [1, 5, 3, 2]), training: true).toArray(), [5])
        let g = Pool2D<Double>(.average, input: ImageShape(2, 2, 2), kernel: nil)
        XCTAssertEqual(g.forward(Matrix(rows: 1, cols: 8, values: [1, 2, 3, 4, 10, 10, 10, 10]), training: true).toArray(), [2.5, 10])
    }
}
