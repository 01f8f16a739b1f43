import BNCore
import XCTest

/// GroupNorm: backward against finite differences (images and vectors, gains and shifts away
/// from 1 and 0), forward against values computed by hand, and independence from the batch.
final class GroupNormTests: XCTestCase {
    func testGradientsOnImagesAndVectors() {
        // (channels, groups, plane): 2 groups of 2 channels of 3x3; one group (gn1); instance
        // norm (a group per channel); a vector of 6 features in 3 groups.
        for (k, (c, g, plane)) in [(4, 2, 9), (4, 1, 4), (3, 3, 4), (6, 3, 1)].enumerated() {
            var r = TestRandom(90 + UInt64(k))
            let gn = GroupNorm<Double>(channels: c, groups: g, plane: plane, name: "gn")
            gn.gamma.value.copy(from: r.matrix(1, c, scale: 0.5, offset: 1))
            gn.beta.value.copy(from: r.matrix(1, c, scale: 0.5))
            checkLayer(gn, x: r.matrix(3, c * plane, scale: 2, offset: 0.7), seed: 100 + UInt64(k))
        }
    }

    /// One example, 2 channels of 2 values, 1 group: mean 2.5 and biased variance 1.25 over
    /// (1, 2, 3, 4); channel 1 scaled by 2 and shifted by 1.
    func testForwardMatchesHandComputedValues() {
        let gn = GroupNorm<Double>(channels: 2, groups: 1, plane: 2, eps: 0, name: "gn")
        gn.gamma.value.data[1] = 2
        gn.beta.value.data[1] = 1
        let y = gn.forward(Matrix(rows: 1, cols: 4, values: [1, 2, 3, 4]), training: true).toArray()
        let s = 1 / 1.25.squareRoot()
        for (got, want) in zip(y, [-1.5 * s, -0.5 * s, 2 * 0.5 * s + 1, 2 * 1.5 * s + 1]) { XCTAssertEqual(got, want, accuracy: 1e-12) }
        // Two groups of one channel each: each channel normalised on its own.
        let two = GroupNorm<Double>(channels: 2, groups: 2, plane: 2, eps: 0, name: "gn")
        let z = two.forward(Matrix(rows: 1, cols: 4, values: [1, 3, 10, 14]), training: true).toArray()
        for (got, want) in zip(z, [-1.0, 1, -1, 1]) { XCTAssertEqual(got, want, accuracy: 1e-12) }
    }

    /// No batch statistics: an example's output is the same alone or in any batch, in
    /// training and evaluation alike.
    func testOutputDoesNotDependOnTheBatch() {
        var r = TestRandom(7)
        let gn = GroupNorm<Double>(channels: 4, groups: 2, plane: 4, name: "gn")
        let x: Matrix<Double> = r.matrix(5, 16)
        let all = gn.forward(x, training: true).toArray()
        let one = gn.forward(Matrix(rows: 1, cols: 16, values: Array(x.toArray()[32..<48])), training: false).toArray()
        for (a, b) in zip(all[32..<48], one) { XCTAssertEqual(a, b, accuracy: 1e-12) }
    }

    /// Float runs the C kernel (16-lane sums), Double the loops above: forward, input and
    /// parameter gradients agree to float32 rounding on planes shorter and longer than a lane
    /// block, on images and vectors, with and without the input gradient.
    func testFloatKernelMatchesTheDoubleLoops() {
        for (k, (c, g, plane)) in [(4, 2, 9), (6, 3, 35), (8, 2, 1), (3, 1, 16)].enumerated() {
            var r = TestRandom(200 + UInt64(k))
            let x: Matrix<Double> = r.matrix(5, c * plane, scale: 2, offset: 0.5), dy: Matrix<Double> = r.matrix(5, c * plane)
            let gain: Matrix<Double> = r.matrix(1, c, scale: 0.5, offset: 1), shift: Matrix<Double> = r.matrix(1, c, scale: 0.5)
            let d = GroupNorm<Double>(channels: c, groups: g, plane: plane, name: "gn")
            let f = GroupNorm<Float>(channels: c, groups: g, plane: plane, name: "gn")
            d.gamma.value.copy(from: gain)
            d.beta.value.copy(from: shift)
            f.gamma.value.copy(from: Matrix<Float>(rows: 1, cols: c, values: gain.toArray().map { Float($0) }))
            f.beta.value.copy(from: Matrix<Float>(rows: 1, cols: c, values: shift.toArray().map { Float($0) }))
            let xf = Matrix<Float>(rows: 5, cols: c * plane, values: x.toArray().map { Float($0) })
            let dyf = Matrix<Float>(rows: 5, cols: c * plane, values: dy.toArray().map { Float($0) })
            let close = { (a: [Float], b: [Double], what: String) in
                XCTAssertLessThan(maxAbsDiff(a.map { Double($0) }, b), 2e-5 * max(1, b.map(abs).max()!), "\(c)/\(g)/\(plane): \(what)")
            }
            close(f.forward(xf, training: true).toArray(), d.forward(x, training: true).toArray(), "y")
            close(f.backward(dyf).toArray(), d.backward(dy).toArray(), "dx")
            close(f.gamma.grad.toArray(), d.gamma.grad.toArray(), "dgamma")
            close(f.beta.grad.toArray(), d.beta.grad.toArray(), "dbeta")
            f.computesInputGradient = false
            _ = f.forward(xf, training: true)
            _ = f.backward(dyf)
            close(f.gamma.grad.toArray(), d.gamma.grad.toArray(), "dgamma without dx")
        }
    }
}
