import BNCore
import XCTest

/// Every layer's backward against central finite differences, in Double, with a random
/// upstream gradient G: the checked scalar is L = sum(y * G), so dL/dy = G.
/// Threshold: norm-wise relative error below 1e-6 (observed errors are around 1e-9 or less).
final class GradientTests: XCTestCase {
    let threshold = 1e-6

    func testDense() {
        var r = TestRandom(1)
        let layer = Dense<Double>(inFeatures: 6, outFeatures: 4, name: "fc")
        layer.weight.value.copy(from: r.matrix(4, 6))
        layer.bias.value.copy(from: r.matrix(1, 4))
        checkLayer(layer, x: r.matrix(5, 6), seed: 2)
    }

    func testDenseWithFusedSigmoid() {
        var r = TestRandom(31)
        let layer = Dense<Double>(inFeatures: 5, outFeatures: 6, activation: .sigmoid, name: "fc")
        layer.weight.value.copy(from: r.matrix(6, 5))
        layer.bias.value.copy(from: r.matrix(1, 6))
        checkLayer(layer, x: r.matrix(4, 5), seed: 32)
    }

    /// The transposed weight storage (fc1's) has its own products; check them the same way.
    func testDenseWithTransposedWeightStorage() {
        for activation in [Dense<Double>.Activation.identity, .sigmoid] {
            var r = TestRandom(33)
            let layer = Dense<Double>(inFeatures: 6, outFeatures: 4, activation: activation, weightLayout: .inOut, name: "fc")
            layer.weight.value.copy(from: r.matrix(6, 4))
            layer.bias.value.copy(from: r.matrix(1, 4))
            checkLayer(layer, x: r.matrix(5, 6), seed: 34)
        }
    }

    func testActivations() {
        for (i, kind) in ActivationKind.allCases.enumerated() {
            var r = TestRandom(3 + UInt64(i))
            // ReLU's kink at 0: random normal inputs are never within the step (1e-6) of it here.
            checkLayer(Activation<Double>(kind, features: 7), x: r.matrix(4, 7, scale: 2), seed: 4)
        }
    }

    func testLayerNorm() {
        var r = TestRandom(71)
        let ln = LayerNorm<Double>(features: 6, name: "ln")
        ln.gamma.value.copy(from: r.matrix(1, 6, scale: 0.5, offset: 1))
        ln.beta.value.copy(from: r.matrix(1, 6, scale: 0.5))
        checkLayer(ln, x: r.matrix(5, 6, scale: 2, offset: 0.7), seed: 72)
    }

    /// Dropout with its mask frozen after the first draw is a fixed linear map.
    func testDropoutWithAFixedMask() {
        var r = TestRandom(73)
        let d = Dropout<Double>(probability: 0.4, features: 9, stream: RandomStream(SplitMix64(seed: 74)))
        d.freezeMask = true
        checkLayer(d, x: r.matrix(6, 9), seed: 75)
    }

    func testBatchNormSimplified() {
        var r = TestRandom(5)
        let bn = BatchNorm1D<Double>(features: 6)
        bn.gamma.value.copy(from: r.matrix(1, 6, offset: 1))
        bn.beta.value.copy(from: r.matrix(1, 6))
        checkLayer(bn, x: r.matrix(8, 6, scale: 3, offset: 2), seed: 6)
    }

    func testBatchNormStaged() {
        var r = TestRandom(7)
        let bn = BatchNorm1D<Double>(features: 5, eps: 0.3)
        bn.useStagedBackward = true
        bn.gamma.value.copy(from: r.matrix(1, 5, offset: 1))
        bn.beta.value.copy(from: r.matrix(1, 5))
        checkLayer(bn, x: r.matrix(6, 5, scale: 2, offset: -4), seed: 8)
    }

    /// The two backward forms must agree to rounding: relative error below 1e-10.
    func testStagedAndSimplifiedAgree() {
        var r = TestRandom(9)
        for (n, d, eps) in [(2, 3, 1e-5), (16, 10, 1e-5), (7, 4, 0.5)] {
            let bn = BatchNorm1D<Double>(features: d, eps: eps)
            bn.gamma.value.copy(from: r.matrix(1, d, offset: 1))
            bn.beta.value.copy(from: r.matrix(1, d))
            let x: Matrix<Double> = r.matrix(n, d, scale: 5, offset: 3)
            let g: Matrix<Double> = r.matrix(n, d)
            _ = bn.forward(x, training: true)
            let simple = bn.backwardSimplified(g).toArray()
            let (dg1, db1) = (bn.gamma.grad.toArray(), bn.beta.grad.toArray())
            let staged = bn.backwardStaged(g).toArray()
            XCTAssertLessThan(GradientCheck.relativeError(simple, staged), 1e-10, "dx, N=\(n) D=\(d)")
            XCTAssertLessThan(GradientCheck.relativeError(dg1, bn.gamma.grad.toArray()), 1e-10)
            XCTAssertLessThan(GradientCheck.relativeError(db1, bn.beta.grad.toArray()), 1e-10)
        }
    }

    func testSoftmaxCrossEntropy() {
        var r = TestRandom(10)
        let ce = SoftmaxCrossEntropy<Double>(classes: 5)
        let logits: Matrix<Double> = r.matrix(6, 5, scale: 3)
        let labels = r.labels(6, classes: 5)
        labels.withUnsafeBufferPointer { lab in
            let loss = { ce.forwardBackward(logits: logits, labels: lab.baseAddress!) }
            _ = loss()
            let analytic = ce.logitsGrad.toArray()
            XCTAssertLessThan(GradientCheck.relativeError(analytic, numeric(logits, loss)), threshold)
            // Each row of (softmax - onehot)/N sums to zero.
            for i in 0..<6 { XCTAssertEqual((0..<5).reduce(0.0) { $0 + analytic[i * 5 + $1] }, 0, accuracy: 1e-15) }
        }
    }

    func testSoftmaxCrossEntropyIsStableForHugeLogits() {
        let ce = SoftmaxCrossEntropy<Float>(classes: 3)
        let logits = Matrix<Float>(rows: 1, cols: 3, values: [1000, 0, -1000])
        var label: Int32 = 1
        let l = ce.forwardBackward(logits: logits, labels: &label)
        XCTAssertEqual(l, 1000, accuracy: 1e-3)
        XCTAssertTrue(ce.logitsGrad.toArray().allSatisfy { $0.isFinite })
    }

    /// Whole networks, every parameter at once: dfn2 with and without BN, the bn-paper and mlp
    /// presets as they are (BN before and after the nonlinearity, ReLU, dropout with fixed
    /// masks), and LayerNorm with tanh. Large tensors are sampled (40 seeded entries each).
    func testWholeNetworks() {
        for spec in ["dfn2", "fc5-sigmoid-fc", "bn-paper", "mlp", "fc7-ln-tanh-dropout0.3-fc6-sigmoid-bn-fc"] {
            let net: Network<Double> = network(spec, inputs: 6, classes: 3, seed: 12)
            var r = TestRandom(13)
            for bn in net.batchNorms {
                bn.gamma.value.copy(from: r.matrix(1, bn.features, scale: 0.3, offset: 1))
                bn.beta.value.copy(from: r.matrix(1, bn.features, scale: 0.3))
            }
            for case let d as Dropout<Double> in net.layers { d.freezeMask = true }
            checkNetwork(net, x: r.matrix(7, 6), labels: r.labels(7, classes: 3), samples: 40, seed: 14, name: spec)
        }
    }

    /// Every parameter gradient of `net` against central differences of the mean loss, at
    /// `samples` seeded entries per tensor. A tensor whose gradient is zero in exact arithmetic
    /// (a bias right before BN, which subtracts the batch mean) has rounding noise on both
    /// sides: it is compared absolutely.
    func checkNetwork(_ net: Network<Double>, x: Matrix<Double>, labels: [Int32], samples: Int, seed: UInt64, name: String, file: StaticString = #filePath, line: UInt = #line) {
        labels.withUnsafeBufferPointer { lab in
            let loss = { net.loss.forwardBackward(logits: net.forward(x, training: true), labels: lab.baseAddress!) }
            _ = loss()
            net.backward(net.loss.logitsGrad)
            let analytic = net.parameters.map { $0.grad.toArray() }
            var sampler = SplitMix64(seed: seed)
            for (p, a) in zip(net.parameters, analytic) {
                let idx = GradientCheck.sampleIndices(count: p.value.count, limit: samples, rng: &sampler)
                let num = GradientCheck.numericalGradient(of: p.value.data, indices: idx, loss: loss)
                let sampled = idx.map { a[$0] }
                if p.name.hasSuffix(".bias"), nextLayerIsBatchNorm(net, p) ?? false {
                    XCTAssertLessThan(maxAbsDiff(sampled, num), 1e-8, "\(name): \(p.name)", file: file, line: line)
                    XCTAssertLessThan(sampled.map(abs).max() ?? 0, 1e-12, "\(name): \(p.name) is ~0", file: file, line: line)
                    continue
                }
                XCTAssertLessThan(GradientCheck.relativeError(sampled, num), threshold, "\(name): \(p.name)", file: file, line: line)
            }
        }
    }

    /// The whole lenet-bn network (convolutions, BatchNorm2D, max pooling, the implied
    /// flatten, BatchNorm1D), every parameter tensor at 20 sampled entries.
    func testWholeLeNetBN() {
        let net: Network<Double> = network("lenet-bn", inputs: 784, classes: 10, seed: 21, image: ImageShape(1, 28, 28))
        var r = TestRandom(22)
        checkNetwork(net, x: r.matrix(3, 784), labels: r.labels(3, classes: 10), samples: 20, seed: 23, name: "lenet-bn")
    }

    /// Whether the layer owning `p` is immediately followed by a BatchNorm layer.
    func nextLayerIsBatchNorm(_ net: Network<Double>, _ p: Parameter<Double>) -> Bool? {
        guard let i = net.layers.firstIndex(where: { $0.parameters.contains { $0 === p } }), i + 1 < net.layers.count else { return nil }
        if let d = net.layers[i] as? Dense<Double>, d.activation != .identity { return false }  // a fused sigmoid sits between
        return net.layers[i + 1] is BatchNorm1D<Double> || net.layers[i + 1] is BatchNorm2D<Double>
    }

    /// The checker itself must catch a wrong gradient (so the tests above can fail).
    func testCheckerDetectsAWrongGradient() {
        let x = Matrix<Double>(rows: 1, cols: 3, values: [1, 2, 3])
        let num = numeric(x) { (0..<3).reduce(0.0) { $0 + x.data[$1] * x.data[$1] } }  // d/dx = 2x
        XCTAssertLessThan(GradientCheck.relativeError(num, [2, 4, 6]), 1e-8)
        XCTAssertGreaterThan(GradientCheck.relativeError(num, [2, 4, 6.01]), 1e-4)
    }
}
