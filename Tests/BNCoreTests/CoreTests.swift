import BNCore
import XCTest

final class RandomTests: XCTestCase {
    func testSameSeedSameNumbers() {
        var a = SplitMix64(seed: 7), b = SplitMix64(seed: 7), c = SplitMix64(seed: 8)
        let xa = (0..<5).map { _ in a.next() }, xb = (0..<5).map { _ in b.next() }
        XCTAssertEqual(xa, xb)
        XCTAssertNotEqual(xa, (0..<5).map { _ in c.next() })
        // SplitMix64 reference value for seed 0 (Vigna's splitmix64.c).
        var z = SplitMix64(seed: 0)
        XCTAssertEqual(z.next(), 0xe220_a839_7b1d_cdaf)
    }

    func testStreamsAreIndependent() {
        var a = SplitMix64(seed: 1, stream: "init"), b = SplitMix64(seed: 1, stream: "shuffle")
        XCTAssertNotEqual(a.next(), b.next())
    }

    func testNormalMoments() {
        var r = SplitMix64(seed: 3)
        let xs = (0..<200_000).map { _ in r.nextNormal() }
        let mean = xs.reduce(0, +) / Double(xs.count)
        let variance = xs.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(xs.count)
        XCTAssertEqual(mean, 0, accuracy: 0.01)
        XCTAssertEqual(variance, 1, accuracy: 0.01)
    }

    func testBoundedIntsAndShuffle() {
        var r = SplitMix64(seed: 4)
        var counts = [Int](repeating: 0, count: 7)
        for _ in 0..<70_000 { counts[r.nextInt(below: 7)] += 1 }
        XCTAssertTrue(counts.allSatisfy { abs($0 - 10_000) < 500 }, "\(counts)")
        var xs = Array(0..<100)
        r.shuffle(&xs)
        XCTAssertNotEqual(xs, Array(0..<100))
        XCTAssertEqual(xs.sorted(), Array(0..<100))
    }
}

final class InitializerAndOptimizerTests: XCTestCase {
    func testInitialiserStandardDeviations() {
        for (initializer, expected) in [(Initializer.glorot, (2.0 / 500).squareRoot()), (.he, (2.0 / 300).squareRoot()), (.stdNormal, 1.0)] {
            var rng = SplitMix64(seed: 5)
            let dense = Dense<Double>(inFeatures: 300, outFeatures: 200, name: "fc")
            dense.bias.value.fill(3)
            initializer.initialize(dense, rng: &rng)
            let w = dense.weight.value.toArray()
            let std = (w.map { $0 * $0 }.reduce(0, +) / Double(w.count)).squareRoot()
            XCTAssertEqual(std, expected, accuracy: expected * 0.02, "\(initializer)")
            XCTAssertEqual(dense.bias.value.toArray(), [Double](repeating: 0, count: 200))
        }
    }

    func testSGDStep() {
        let p = Parameter<Float>(name: "p", value: Matrix(rows: 1, cols: 3, values: [1, 2, 3]))
        p.grad.copy(from: Matrix(rows: 1, cols: 3, values: [10, -20, 0]))
        SGD<Float>(learningRate: 0.1).step([p])
        XCTAssertEqual(p.value.toArray(), [0, 4, 3])
    }

    /// dfn2 as nn.Sequential(Linear, Sigmoid, BatchNorm1d, Linear) names its tensors.
    func testReferenceNetworkShapeAndNames() {
        let net: Network<Float> = network("dfn2", inputs: 784, classes: 10, seed: 6)
        XCTAssertEqual(net.parameters.map(\.name), ["0.weight", "0.bias", "2.weight", "2.bias", "3.weight", "3.bias"])
        XCTAssertEqual(net.buffers.map(\.name), ["2.running_mean", "2.running_var"])
        XCTAssertEqual(net.layers.count, 3, "the sigmoid is fused into the first Dense")
        XCTAssertEqual(net.parameterCount, 784 * 200 + 200 + 400 + 200 * 10 + 10)
        XCTAssertEqual(net.parameters[0].shape, [200, 784])  // (out, in), as PyTorch's Linear
        XCTAssertTrue(net.parameters[0].storedTransposed)  // kept as (in, out) for a faster forward product
        XCTAssertEqual(net.parameters[0].value.rows, 784)
        XCTAssertEqual(net.parameters[4].shape, [10, 200])
        XCTAssertFalse(net.parameters[4].storedTransposed)
    }

    /// A seed gives the same logical weights whichever way a layer stores them.
    func testInitialisationDoesNotDependOnTheLayout() {
        var r1 = SplitMix64(seed: 9), r2 = SplitMix64(seed: 9)
        let a = Dense<Double>(inFeatures: 5, outFeatures: 3, name: "a"), b = Dense<Double>(inFeatures: 5, outFeatures: 3, weightLayout: .inOut, name: "b")
        Initializer.glorot.initialize(a, rng: &r1)
        Initializer.glorot.initialize(b, rng: &r2)
        XCTAssertEqual(a.weight.logicalValues(), b.weight.logicalValues())
        XCTAssertEqual(a.weight.logicalValues(), a.weight.value.toArray())
        // Storage really is the transpose: logical (o, i) sits at row i, column o.
        for o in 0..<3 { for i in 0..<5 { XCTAssertEqual(b.weight.value.data[i * 3 + o], a.weight.value.data[o * 5 + i]) } }
        let c = Dense<Double>(inFeatures: 5, outFeatures: 3, weightLayout: .inOut, name: "c")
        c.weight.setLogicalValues(a.weight.logicalValues())
        XCTAssertEqual(c.weight.value.toArray(), b.weight.value.toArray())
    }

    /// A few hundred steps on a separable toy problem must drive the loss down.
    func testTrainingReducesLoss() {
        let net: Network<Float> = network("fc16-sigmoid-bn-fc", inputs: 4, classes: 2, seed: 8)
        let (x, labels) = separableBatch(seed: 8)
        let sgd = SGD<Float>(learningRate: 0.5)
        let first = net.trainStep(x, labels: labels, optimizer: sgd)
        var last = first
        for _ in 0..<200 { last = net.trainStep(x, labels: labels, optimizer: sgd) }
        XCTAssertLessThan(last, first * 0.2)
    }
}
