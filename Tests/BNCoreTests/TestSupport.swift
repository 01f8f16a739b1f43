import BNCore
import XCTest

/// Random matrices and helpers shared by the core tests.
struct TestRandom {
    var rng: SplitMix64
    init(_ seed: UInt64) { rng = SplitMix64(seed: seed) }

    mutating func matrix<T: BLASScalar>(_ rows: Int, _ cols: Int, scale: Double = 1, offset: Double = 0, as _: T.Type = T.self) -> Matrix<T> {
        let m = Matrix<T>(rows: rows, cols: cols)
        for i in 0..<m.count { m.data[i] = T(rng.nextNormal() * scale + offset) }
        return m
    }

    mutating func labels(_ n: Int, classes: Int) -> [Int32] {
        (0..<n).map { _ in Int32(rng.nextInt(below: classes)) }
    }
}

/// sum_ij a_ij * b_ij: the scalar "loss" whose gradient w.r.t. a is b (random upstream gradient).
func dot(_ a: Matrix<Double>, _ b: Matrix<Double>) -> Double {
    precondition(a.count == b.count)
    var s = 0.0
    for i in 0..<a.count { s += a.data[i] * b.data[i] }
    return s
}

/// Numerical gradient of `loss` w.r.t. every element of `m`.
func numeric(_ m: Matrix<Double>, _ loss: () -> Double) -> [Double] {
    GradientCheck.numericalGradient(of: m.data, count: m.count, loss: loss)
}

/// Largest absolute difference.
func maxAbsDiff(_ a: [Double], _ b: [Double]) -> Double {
    zip(a, b).map { abs($0 - $1) }.max() ?? 0
}

/// A network built from a spec string (tests use small widths so Double checks stay fast).
func network<T: BLASScalar>(_ spec: String, _: T.Type = T.self, inputs: Int, classes: Int, seed: UInt64, image: ImageShape? = nil, options: BuildOptions = BuildOptions()) -> Network<T> {
    var rng = SplitMix64(seed: seed)
    return try! ModelSpec.parse(spec).build(T.self, inputs: inputs, classes: classes, image: image, options: options, rng: &rng, dropoutRNG: SplitMix64(seed: seed &+ 1))
}

/// 32 examples of a separable 2-class problem in 4 features (class 0 around -1, class 1 around +1).
func separableBatch(seed: UInt64) -> (x: Matrix<Float>, labels: [Int32]) {
    var rng = SplitMix64(seed: seed)
    let x = Matrix<Float>(rows: 32, cols: 4)
    var labels = [Int32](repeating: 0, count: 32)
    for i in 0..<32 {
        labels[i] = Int32(i % 2)
        for j in 0..<4 { x[i, j] = Float(rng.nextNormal()) + (i % 2 == 0 ? -1 : 1) }
    }
    return (x, labels)
}

/// Checks dx and every parameter gradient of `layer` at input `x` against central
/// differences of L = sum(y * G) for a random upstream gradient G (relative error < 1e-6).
func checkLayer(_ layer: any Layer<Double>, x: Matrix<Double>, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) {
    var r = TestRandom(seed)
    let g: Matrix<Double> = r.matrix(x.rows, layer.outFeatures)
    let loss = { dot(layer.forward(x, training: true), g) }
    _ = loss()
    let dx = layer.backward(g).toArray()
    let analytic = layer.parameters.map { $0.grad.toArray() }
    XCTAssertLessThan(GradientCheck.relativeError(dx, numeric(x, loss)), 1e-6, "dx of \(type(of: layer))", file: file, line: line)
    for (p, a) in zip(layer.parameters, analytic) {
        XCTAssertLessThan(GradientCheck.relativeError(a, numeric(p.value, loss)), 1e-6, "d\(p.name)", file: file, line: line)
    }
}
