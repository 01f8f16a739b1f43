import BNCore
import RealModule
import XCTest

/// Fast paths against their plain references.
final class FusionTests: XCTestCase {
    func testFastExpAccuracy() {
        var worst = 0.0
        var x: Float = -87
        while x <= 88 {
            let exact = Double.exp(Double(x))
            worst = max(worst, abs(Double(Elementwise.fastExp(x)) - exact) / exact)
            x += 0.0137
        }
        XCTAssertLessThan(worst, 3e-7, "max relative error \(worst)")  // about 2 ulp
        XCTAssertEqual(Elementwise.fastExp(0), 1)
        XCTAssertEqual(Elementwise.fastExp(-1000), Elementwise.fastExp(-87.33))  // clamped, finite
        XCTAssertTrue(Elementwise.fastExp(1000).isFinite)
    }

    /// The C kernel behind Float's biasSigmoid gives the bits of the Swift loop
    /// 1 / (1 + fastExp(-(y + b))): random values over and past the clamp, zeros of both signs,
    /// infinities and NaN, on shapes whose rows are not a multiple of the vector width.
    func testFloatBiasSigmoidIsTheSwiftLoopsBits() {
        var r = TestRandom(7)
        let special: [Float] = [0, -0, 1, -1, 87.33, -87.33, 88.72, -88.72, 100, -100, 1e30, -1e30, .infinity, -.infinity, .nan, 1e-40, -1e-40]
        for (rows, cols) in [(1, 1), (3, 17), (64, 200), (5, 33)] {
            let n = rows * cols
            var y = (0..<n).map { _ in Float(r.rng.nextUniform() * 200 - 100) }
            for (k, v) in special.enumerated() where k < n { y[(k * 7) % n] = v }
            let b = (0..<cols).map { _ in Float(r.rng.nextUniform() * 4 - 2) }
            var expected = y
            for i in 0..<rows {
                for j in 0..<cols { expected[i * cols + j] = 1 / (1 + Elementwise.fastExp(-(y[i * cols + j] + b[j]))) }
            }
            y.withUnsafeMutableBufferPointer { yp in
                b.withUnsafeBufferPointer { Elementwise.biasSigmoid(yp.baseAddress!, bias: $0.baseAddress!, rows: rows, cols: cols) }
            }
            for k in 0..<n {
                XCTAssertEqual(y[k].bitPattern, expected[k].bitPattern, "(\(rows), \(cols)) element \(k): \(y[k]) against \(expected[k])")
            }
        }
    }

    /// Dense(activation: .sigmoid) is Dense followed by Sigmoid, forward and backward.
    func testFusedSigmoidMatchesSeparateLayers() {
        var r = TestRandom(41)
        let fused = Dense<Double>(inFeatures: 7, outFeatures: 5, activation: .sigmoid, name: "a")
        let plain = Dense<Double>(inFeatures: 7, outFeatures: 5, name: "b")
        let sig = Activation<Double>(.sigmoid, features: 5)
        let w: Matrix<Double> = r.matrix(5, 7), b: Matrix<Double> = r.matrix(1, 5)
        for layer in [fused, plain] {
            layer.weight.value.copy(from: w)
            layer.bias.value.copy(from: b)
        }
        let x: Matrix<Double> = r.matrix(6, 7), g: Matrix<Double> = r.matrix(6, 5)
        XCTAssertLessThan(maxAbsDiff(fused.forward(x, training: true).toArray(), sig.forward(plain.forward(x, training: true), training: true).toArray()), 1e-15)
        let dxFused = fused.backward(g).toArray()
        let dxPlain = plain.backward(sig.backward(g)).toArray()
        XCTAssertLessThan(maxAbsDiff(dxFused, dxPlain), 1e-14)
        XCTAssertLessThan(maxAbsDiff(fused.weight.grad.toArray(), plain.weight.grad.toArray()), 1e-14)
        XCTAssertLessThan(maxAbsDiff(fused.bias.grad.toArray(), plain.bias.grad.toArray()), 1e-14)
    }

    /// The two weight layouts compute the same layer: forward, dx, dW (in logical order) and the
    /// fused SGD update agree to rounding.
    func testWeightLayoutsAgree() {
        var r = TestRandom(43)
        let a = Dense<Double>(inFeatures: 7, outFeatures: 5, activation: .sigmoid, name: "a")
        let b = Dense<Double>(inFeatures: 7, outFeatures: 5, activation: .sigmoid, weightLayout: .inOut, name: "b")
        let w: Matrix<Double> = r.matrix(5, 7), bias: Matrix<Double> = r.matrix(1, 5)
        for layer in [a, b] {
            layer.weight.setLogicalValues(w.toArray())
            layer.bias.value.copy(from: bias)
        }
        let x: Matrix<Double> = r.matrix(6, 7), g: Matrix<Double> = r.matrix(6, 5)
        XCTAssertLessThan(maxAbsDiff(a.forward(x, training: true).toArray(), b.forward(x, training: true).toArray()), 1e-14)
        XCTAssertLessThan(maxAbsDiff(a.backward(g).toArray(), b.backward(g).toArray()), 1e-14)
        let gradB = (0..<35).map { b.weight.grad.data[b.weight.logicalIndex($0)] }
        XCTAssertLessThan(maxAbsDiff(a.weight.grad.toArray(), gradB), 1e-14)
        _ = a.forward(x, training: true); _ = b.forward(x, training: true)
        _ = a.backward(g, sgdLearningRate: 0.5); _ = b.backward(g, sgdLearningRate: 0.5)
        XCTAssertLessThan(maxAbsDiff(a.weight.logicalValues(), b.weight.logicalValues()), 1e-14)
        XCTAssertGreaterThan(maxAbsDiff(a.weight.logicalValues(), w.toArray()), 1e-3, "the step moved the weights")
    }

    /// A transposed parameter's bulk copies (checkpoints, optimizer state, initialisation) put
    /// every element where `logicalIndex` says, for shapes that are not whole 32 x 32 tiles.
    func testTransposedBulkCopiesFollowLogicalIndex() {
        func check<T: BLASScalar>(_: T.Type, out: Int, inputs: Int) {
            let d = Dense<T>(inFeatures: inputs, outFeatures: out, activation: .identity, weightLayout: .inOut, name: "d")
            let p = d.weight
            XCTAssertTrue(p.storedTransposed)
            for k in 0..<p.value.count { p.value.data[k] = T(k) }
            let expected = (0..<p.value.count).map { p.value.data[p.logicalIndex($0)] }
            XCTAssertEqual(p.logicalValues(), expected, "\(T.self) \(out)x\(inputs)")
            let logical = (0..<p.value.count).map { T($0 * 3 + 1) }
            p.setLogicalValues(logical)
            XCTAssertEqual((0..<p.value.count).map { p.value.data[p.logicalIndex($0)] }, logical)
            XCTAssertEqual(p.logicalValues(), logical)
            p.setLogicalValues(logical.lazy.map { $0 + 1 })  // a collection without contiguous storage
            XCTAssertEqual(p.logicalValues(), logical.map { $0 + 1 })
        }
        for (out, inputs) in [(1, 5), (5, 1), (37, 70), (64, 33), (33, 64), (10, 784)] {
            check(Float.self, out: out, inputs: inputs)
            check(Double.self, out: out, inputs: inputs)
        }
    }

    /// trainStep (backward fused with the update) gives the same parameters as
    /// computeGradients followed by SGD.step.
    func testFusedTrainStepMatchesGradientsThenSGD() {
        // dfn2 with and without BN, BN before the sigmoid, LayerNorm and tanh: fused Dense
        // layers and layers updated right after their own backward.
        for spec in ["fc6-sigmoid-bn-fc", "fc6-sigmoid-fc", "fc6-bn-sigmoid-fc5-bn-sigmoid-fc", "fc6-ln-tanh-fc5-relu-fc"] {
            let a: Network<Double> = network(spec, inputs: 8, classes: 4, seed: 51)
            let b: Network<Double> = network(spec, inputs: 8, classes: 4, seed: 51)
            var r = TestRandom(52)
            let sgd = SGD<Double>(learningRate: 0.3)
            for _ in 0..<3 {
                let x: Matrix<Double> = r.matrix(5, 8)
                let labels = r.labels(5, classes: 4)
                let la = a.trainStep(x, labels: labels, optimizer: sgd)
                let lb = b.computeGradients(x, labels: labels)
                sgd.step(b.parameters)
                XCTAssertEqual(la, lb, accuracy: 1e-14)
            }
            for (p, q) in zip(a.parameters, b.parameters) {
                XCTAssertLessThan(maxAbsDiff(p.value.toArray(), q.value.toArray()), 1e-14, "\(spec) \(p.name)")
            }
            // The fused update rounds differently in the last bit (W += -lr dW in one GEMM), so
            // later steps' batch statistics agree to rounding, not bit for bit.
            for (p, q) in zip(a.buffers, b.buffers) {
                XCTAssertLessThan(maxAbsDiff(p.value.toArray(), q.value.toArray()), 1e-14, "\(spec) \(p.name)")
            }
        }
    }

    /// The Float network's loss tracks the Double network's on the same data and weights.
    func testFloatTracksDouble() {
        let f: Network<Float> = network("fc16-sigmoid-bn-fc", inputs: 20, classes: 3, seed: 61)
        let d: Network<Double> = network("fc16-sigmoid-bn-fc", inputs: 20, classes: 3, seed: 61)
        var r = TestRandom(62)
        for _ in 0..<20 {
            let x: Matrix<Double> = r.matrix(8, 20)
            let labels = r.labels(8, classes: 3)
            let lf = f.trainStep(x.converted(to: Float.self), labels: labels, optimizer: SGD(learningRate: 0.1))
            let ld = d.trainStep(x, labels: labels, optimizer: SGD(learningRate: 0.1))
            XCTAssertEqual(lf, ld, accuracy: 1e-4 * max(1, ld))
        }
    }

    /// The SIMD reductions (Float) agree with Double sums, tails included.
    func testSIMDReductions() {
        var r = TestRandom(71)
        for n in [0, 1, 15, 16, 17, 100, 784] {
            let a: Matrix<Double> = r.matrix(1, max(n, 1)), b: Matrix<Double> = r.matrix(1, max(n, 1))
            let fa = a.converted(to: Float.self), fb = b.converted(to: Float.self)
            var dot = 0.0, sum = 0.0, dev = 0.0
            for i in 0..<n {
                dot += Double(fa.data[i]) * Double(fb.data[i])
                sum += Double(fa.data[i])
                dev += (Double(fa.data[i]) - 0.25) * (Double(fa.data[i]) - 0.25)
            }
            XCTAssertEqual(Double(Elementwise.dot(fa.data, fb.data, n)), dot, accuracy: 1e-4 * max(1, abs(dot)), "n=\(n)")
            XCTAssertEqual(Double(Elementwise.sum(fa.data, n)), sum, accuracy: 1e-4 * max(1, abs(sum)), "n=\(n)")
            XCTAssertEqual(Double(Elementwise.squaredDeviation(fa.data, n, from: Float(0.25))), dev, accuracy: 1e-4 * max(1, dev), "n=\(n)")
            XCTAssertEqual(Elementwise.dot(a.data, b.data, n), (0..<n).reduce(0.0) { $0 + a.data[$1] * b.data[$1] }, "Double keeps the plain order")
        }
    }
}
