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

    /// BatchNorm2D with its ReLU fused: gradients in Double (inputs kept away from the kink),
    /// and in Float the same bits as BatchNorm2D followed by the ReLU layer, forward, backward
    /// and parameter gradients, on planes that fill whole SIMD blocks and leave a tail.
    func testBatchNorm2DWithFusedReLU() {
        var r = TestRandom(21)
        let shape = ImageShape(3, 4, 4)
        let fused = BatchNorm2D<Double>(shape: shape, fusedReLU: true, name: "b")
        fused.gamma.value.copy(from: r.matrix(1, 3, scale: 0.3, offset: 1))
        fused.beta.value.copy(from: r.matrix(1, 3, scale: 0.3))
        checkLayer(fused, x: r.matrix(4, shape.count, scale: 2, offset: 0.5), seed: 22)
        for plane in [(5, 5), (4, 8), (6, 7)] {
            let s = ImageShape(4, plane.0, plane.1)
            let a = BatchNorm2D<Float>(shape: s, fusedReLU: true, name: "a")
            let b = BatchNorm2D<Float>(shape: s, name: "b"), relu = Activation<Float>(.relu, features: s.count)
            for bn in [a, b] {
                var q = TestRandom(23)
                bn.gamma.value.copy(from: q.matrix(1, 4, scale: 0.5, offset: 1))
                bn.beta.value.copy(from: q.matrix(1, 4, scale: 0.5))
            }
            let x: Matrix<Float> = r.matrix(6, s.count, scale: 2, offset: 0.3), dy: Matrix<Float> = r.matrix(6, s.count)
            let ya = a.forward(x, training: true).toArray(), yb = relu.forward(b.forward(x, training: true), training: true).toArray()
            XCTAssertEqual(ya, yb, "forward \(s)")
            XCTAssertTrue(ya.contains(0) && ya.contains { $0 > 0 }, "the ReLU is active and inactive somewhere")
            XCTAssertEqual(a.backward(dy).toArray(), b.backward(relu.backward(dy)).toArray(), "dx \(s)")
            XCTAssertEqual(a.gamma.grad.toArray(), b.gamma.grad.toArray())
            XCTAssertEqual(a.beta.grad.toArray(), b.beta.grad.toArray())
            XCTAssertEqual(a.forward(x, training: false).toArray(), relu.forward(b.forward(x, training: false), training: false).toArray(), "evaluation \(s)")
        }
    }

    /// Float BatchNorm2D runs C kernels (CKernels' bn_planes_*): its batch statistics and
    /// output are the bits of the Swift reference written here (per-plane Elementwise.sum and
    /// squaredDeviation, added in example order), and its gradients agree with Double's, on
    /// planes of 25, 36 and 100 values (a tail only, whole 16-lane blocks and a tail, several).
    func testFloatBatchNorm2DMatchesTheReference() {
        var r = TestRandom(24)
        for plane in [(5, 5), (6, 6), (10, 10)] {
            let s = ImageShape(3, plane.0, plane.1), n = 5, hw = s.h * s.w
            let f = BatchNorm2D<Float>(shape: s, name: "f"), d = BatchNorm2D<Double>(shape: s, name: "d")
            let g: Matrix<Float> = r.matrix(1, 3, scale: 0.5, offset: 1), b: Matrix<Float> = r.matrix(1, 3, scale: 0.5)
            f.gamma.value.copy(from: g)
            f.beta.value.copy(from: b)
            for j in 0..<3 { d.gamma.value.data[j] = Double(g.data[j]); d.beta.value.data[j] = Double(b.data[j]) }
            let x: Matrix<Float> = r.matrix(n, s.count, scale: 2, offset: 0.3), dy: Matrix<Float> = r.matrix(n, s.count)
            let y = f.forward(x, training: true)
            for c in 0..<3 {
                var sum: Float = 0, dev: Float = 0
                for e in 0..<n { sum += Elementwise.sum(x.data + (e * 3 + c) * hw, hw) }
                let mu = sum / Float(n * hw)
                for e in 0..<n { dev += Elementwise.squaredDeviation(x.data + (e * 3 + c) * hw, hw, from: mu) }
                let inv = 1 / (dev / Float(n * hw) + f.eps).squareRoot()
                for e in 0..<n {
                    for i in 0..<hw {
                        let o = (e * 3 + c) * hw + i
                        XCTAssertEqual(y.data[o].bitPattern, (g.data[c] * ((x.data[o] - mu) * inv) + b.data[c]).bitPattern, "y \(s) c\(c) e\(e) i\(i)")
                    }
                }
            }
            let xd = Matrix<Double>(rows: n, cols: s.count), dyd = Matrix<Double>(rows: n, cols: s.count)
            for i in 0..<x.count { xd.data[i] = Double(x.data[i]); dyd.data[i] = Double(dy.data[i]) }
            _ = d.forward(xd, training: true)
            let dx = f.backward(dy).toArray(), dxd = d.backward(dyd).toArray()
            XCTAssertLessThan(zip(dx, dxd).map { abs(Double($0) - $1) }.max()!, 1e-5, "dx \(s)")
            for (a, e) in [(f.gamma.grad, d.gamma.grad), (f.beta.grad, d.beta.grad)] {
                for j in 0..<3 { XCTAssertEqual(Double(a.data[j]), e.data[j], accuracy: 1e-4 * max(1, abs(e.data[j])), "parameter gradient \(s)") }
            }
        }
    }

    /// The builder fuses a 2-D bn with its relu (and an fc with its sigmoid); training the fused
    /// network gives the unfused one's parameters bit for bit.
    func testFusedNetworkTrainsAsTheUnfusedOne() {
        let image = ImageShape(1, 12, 12), spec = "conv4k3-bn-relu-maxpool2-conv6k3p1-bn-relu-fc16-bn-relu-fc"
        var unfusedOptions = BuildOptions()
        unfusedOptions.fuse = false
        let fused: Network<Float> = network(spec, inputs: 144, classes: 3, seed: 5, image: image)
        let plain: Network<Float> = network(spec, inputs: 144, classes: 3, seed: 5, image: image, options: unfusedOptions)
        XCTAssertEqual(fused.layers.count + 2, plain.layers.count, "two bn-relu pairs fused")
        XCTAssertTrue(fused.batchNorms2D.allSatisfy(\.fusedReLU))
        var r = TestRandom(6)
        for optimizer in [OptimizerSettings.Kind.sgd, .adam] {
            var settings = OptimizerSettings()
            settings.kind = optimizer
            settings.learningRate = 0.01
            let (o1, o2) = (settings.make(Float.self), settings.make(Float.self))
            for _ in 0..<3 {
                let x: Matrix<Float> = r.matrix(8, 144), labels = r.labels(8, classes: 3)
                XCTAssertEqual(fused.trainStep(x, labels: labels, optimizer: o1), plain.trainStep(x, labels: labels, optimizer: o2))
            }
            XCTAssertEqual(fused.parameters.map { $0.value.toArray() }, plain.parameters.map { $0.value.toArray() }, "\(optimizer)")
        }
    }

    /// Float 2x2/2 max pooling runs in C: outputs and the gradient routing equal Double's on
    /// values with ties (small integers), NaN and odd sizes (7x9: the last row and column dropped).
    func testFloatMaxPoolMatchesDouble() {
        var r = TestRandom(12)
        for shape in [ImageShape(3, 8, 8), ImageShape(2, 7, 9), ImageShape(4, 26, 26)] {
            let f = Pool2D<Float>(.max, input: shape, kernel: 2), d = Pool2D<Double>(.max, input: shape, kernel: 2)
            let x = Matrix<Float>(rows: 3, cols: shape.count), xd = Matrix<Double>(rows: 3, cols: shape.count)
            for i in 0..<x.count { x.data[i] = Float(Int(r.rng.nextNormal() * 2)) }
            x.data[5] = .nan
            x.data[x.count - 7] = .nan
            for i in 0..<x.count { xd.data[i] = Double(x.data[i]) }
            let y = f.forward(x, training: true).toArray(), yd = d.forward(xd, training: true).toArray()
            XCTAssertEqual(y.map { $0.isNaN ? "nan" : "\($0)" }, yd.map { $0.isNaN ? "nan" : "\(Float($0))" }, "forward \(shape)")
            // Twice, so values left in dx by the first pass would show in the second.
            for pass in 0..<2 {
                let g: Matrix<Float> = r.matrix(3, f.output.count, offset: Double(pass)), gd = Matrix<Double>(rows: 3, cols: f.output.count)
                for i in 0..<g.count { gd.data[i] = Double(g.data[i]) }
                XCTAssertEqual(f.backward(g).toArray().map { Double($0) }, d.backward(gd).toArray(), "routing \(shape) pass \(pass)")
            }
        }
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
