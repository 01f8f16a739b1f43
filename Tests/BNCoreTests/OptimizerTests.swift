import BNCore
import XCTest

/// Each update rule against values computed by hand for two steps, from p = (1, -2) with the
/// same gradient g = (0.5, 0.25) at both steps.
final class OptimizerTests: XCTestCase {
    func twoSteps(_ s: OptimizerSettings, shape: [Int] = [2], role: Parameter<Double>.Role = .weight) -> [[Double]] {
        let p = Parameter<Double>(name: "w", value: Matrix(rows: 1, cols: 2, values: [1, -2]), shape: shape, role: role)
        let opt = s.make(Double.self)
        var out: [[Double]] = []
        for _ in 0..<2 {
            p.grad.copy(from: Matrix(rows: 1, cols: 2, values: [0.5, 0.25]))
            opt.step([p])
            out.append(p.value.toArray())
        }
        return out
    }

    func settings(_ kind: OptimizerSettings.Kind, lr: Double, _ edit: (inout OptimizerSettings) -> Void = { _ in }) -> OptimizerSettings {
        var s = OptimizerSettings()
        s.kind = kind
        s.learningRate = lr
        edit(&s)
        return s
    }

    func assertClose(_ a: [[Double]], _ b: [[Double]], _ tol: Double = 1e-9, file: StaticString = #filePath, line: UInt = #line) {
        for (x, y) in zip(a, b) { for (u, v) in zip(x, y) { XCTAssertEqual(u, v, accuracy: tol, file: file, line: line) } }
    }

    /// Equal bit for bit; a failure names the first differing element (not two long arrays).
    func assertSameBits(_ a: [Float], _ b: [Float], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, what, file: file, line: line)
        if let j = a.indices.first(where: { j in j < b.count && a[j].bitPattern != b[j].bitPattern }) {
            XCTFail("\(what): element \(j) is \(a[j]), expected \(b[j])", file: file, line: line)
        }
    }

    func testPlainSGD() {
        assertClose(twoSteps(settings(.sgd, lr: 0.1)), [[0.95, -2.025], [0.9, -2.05]])
    }

    /// d = g + wd p; b = d (first), mu b + d; p -= lr b.
    func testSGDMomentumAndWeightDecay() {
        let s = settings(.sgd, lr: 0.1) { $0.momentum = 0.9; $0.weightDecay = 0.1 }
        assertClose(twoSteps(s), [[0.94, -2.005], [0.8266, -2.01445]])
    }

    /// Nesterov: p -= lr (d + mu b).
    func testSGDNesterov() {
        let s = settings(.sgd, lr: 0.1) { $0.momentum = 0.9; $0.weightDecay = 0.1; $0.nesterov = true }
        assertClose(twoSteps(s), [[0.886, -2.0095], [0.725566, -2.0228695]])
    }

    /// With a constant gradient, bias-corrected Adam moves every weight by lr a step (less eps):
    /// a wrong bias correction would not.
    func testAdam() {
        assertClose(twoSteps(settings(.adam, lr: 0.1)), [[0.9, -2.1], [0.8, -2.2]], 1e-7)
    }

    /// Float Adam/AdamW run vectorized C (CKernels, AVX-512 where the CPU has it): the same
    /// bits as the scalar rule written out here, on 37 and 1037 values (full vectors and a
    /// tail), over three steps with weight decay.
    func testFloatAdamMatchesTheScalarRule() {
        for kind in [OptimizerSettings.Kind.adam, .adamw] {
          for n in [37, 1037] {
            var r = TestRandom(40)
            let p = Parameter<Float>(name: "w", value: r.matrix(1, n))
            var w = p.value.toArray(), m = [Float](repeating: 0, count: n), v = m
            let s = settings(kind, lr: 0.01) { $0.weightDecay = 0.05 }
            let opt = s.make(Float.self)
            let (b1, b2, lr, wd, e) = (Float(s.beta1), Float(s.beta2), Float(0.01), Float(0.05), Float(s.eps))
            for t in 1...3 {
                let g: Matrix<Float> = r.matrix(1, n)
                p.grad.copy(from: g)
                opt.step([p])
                let bc1 = 1 - Float.pow(b1, Float(t)), bc2 = 1 - Float.pow(b2, Float(t))
                let coupled: Float = kind == .adam ? wd : 0, shrink: Float = kind == .adamw ? 1 - lr * wd : 1
                for j in 0..<n {
                    let d = g.data[j] + coupled * w[j]
                    m[j] = b1 * m[j] + (1 - b1) * d
                    v[j] = b2 * v[j] + (1 - b2) * d * d
                    w[j] = w[j] * shrink - lr / bc1 * m[j] / (v[j].squareRoot() / bc2.squareRoot() + e)
                }
                assertSameBits(p.value.toArray(), w, "\(kind) n \(n) step \(t)")
            }
          }
        }
    }

    /// Plain float32 SGD is one multiply and one subtraction per value, each rounded, on every
    /// CPU and BLAS kernel family: w = 1, g = 10, lr = 0.1 gives exactly 0 (a fused
    /// multiply-add, as OpenBLAS's saxpy does over full vectors, gives -1.49e-8). 1037 values
    /// take both the vector loop and its tail; random values add cases where only the rounding
    /// order tells the two apart.
    func testFloatPlainSGDRoundsTheProductThenTheDifference() {
        let n = 1037
        var r = TestRandom(42)
        let lr: Float = 0.1
        var w0 = [Float](repeating: 1, count: n), g = [Float](repeating: 10, count: n)
        for j in stride(from: 1, to: n, by: 2) {
            w0[j] = Float(r.rng.nextNormal())
            g[j] = Float(r.rng.nextNormal())
        }
        let p = Parameter<Float>(name: "w", value: Matrix(rows: 1, cols: n, values: w0))
        p.grad.copy(from: Matrix(rows: 1, cols: n, values: g))
        settings(.sgd, lr: 0.1).make(Float.self).step([p])
        let expected = (0..<n).map { j -> Float in
            let product = lr * g[j]
            return w0[j] - product
        }
        XCTAssertEqual(p.value.toArray()[0], 0)
        assertSameBits(p.value.toArray(), expected, "plain sgd")
    }

    /// Float RMSprop (with and without momentum) and SGD with momentum, Nesterov and weight
    /// decay run vectorized C too: the same bits as the scalar rules written out here.
    func testFloatRMSpropAndMomentumSGDMatchTheScalarRules() {
        let cases: [(OptimizerSettings.Kind, Double, Bool)] = [(.rmsprop, 0, false), (.rmsprop, 0.9, false), (.sgd, 0.9, false), (.sgd, 0.9, true), (.sgd, 0, false)]
        for (kind, momentum, nesterov) in cases {
            let n = 1037
            var r = TestRandom(41)
            let p = Parameter<Float>(name: "w", value: r.matrix(1, n))
            var w = p.value.toArray(), v = [Float](repeating: 0, count: n), b = v
            let s = settings(kind, lr: 0.01) { $0.weightDecay = 0.05; $0.momentum = momentum; $0.nesterov = nesterov }
            let opt = s.make(Float.self)
            let (a, lr, wd, e, mu) = (Float(s.alpha), Float(0.01), Float(0.05), Float(s.eps), Float(momentum))
            for t in 1...3 {
                let g: Matrix<Float> = r.matrix(1, n)
                p.grad.copy(from: g)
                opt.step([p])
                for j in 0..<n {
                    var d = g.data[j] + wd * w[j]
                    if kind == .rmsprop {
                        v[j] = a * v[j] + (1 - a) * d * d
                        if mu != 0 {
                            b[j] = mu * b[j] + d / (v[j].squareRoot() + e)
                            w[j] -= lr * b[j]
                        } else {
                            w[j] -= lr * d / (v[j].squareRoot() + e)
                        }
                    } else {
                        if mu != 0 {
                            b[j] = t == 1 ? d : mu * b[j] + d
                            d = nesterov ? d + mu * b[j] : b[j]
                        }
                        w[j] -= lr * d
                    }
                }
                assertSameBits(p.value.toArray(), w, "\(kind) momentum \(momentum) nesterov \(nesterov) step \(t)")
            }
        }
    }

    /// AdamW shrinks p by (1 - lr wd) before the Adam step; Adam's L2 enters the gradient.
    func testAdamWAndAdamWeightDecayDiffer() {
        assertClose(twoSteps(settings(.adamw, lr: 0.1) { $0.weightDecay = 0.1 }), [[0.89, -2.08], [0.7811, -2.1592]], 1e-7)
        let coupled = twoSteps(settings(.adam, lr: 0.1) { $0.weightDecay = 0.1 })
        XCTAssertEqual(coupled[0][0], 0.9, accuracy: 1e-7, "first Adam step: still lr in size")
        XCTAssertGreaterThan(abs(coupled[1][0] - 0.7811), 1e-4)
    }

    /// v = alpha v + (1 - alpha) g^2; p -= lr g / (sqrt(v) + eps).
    func testRMSprop() {
        let v1 = [0.01 * 0.25, 0.01 * 0.0625], v2 = [0.99 * v1[0] + 0.01 * 0.25, 0.99 * v1[1] + 0.01 * 0.0625]
        let p1 = [1 - 0.01 * 0.5 / (v1[0].squareRoot() + 1e-8), -2 - 0.01 * 0.25 / (v1[1].squareRoot() + 1e-8)]
        let p2 = [p1[0] - 0.01 * 0.5 / (v2[0].squareRoot() + 1e-8), p1[1] - 0.01 * 0.25 / (v2[1].squareRoot() + 1e-8)]
        assertClose(twoSteps(settings(.rmsprop, lr: 0.01)), [p1, p2])
        // With momentum: b = mu b + g / (sqrt(v) + eps); p -= lr b.
        let b1 = [0.5 / (v1[0].squareRoot() + 1e-8)], b2 = [0.5 * b1[0] + 0.5 / (v2[0].squareRoot() + 1e-8)]
        let m = twoSteps(settings(.rmsprop, lr: 0.01) { $0.momentum = 0.5 })
        XCTAssertEqual(m[0][0], 1 - 0.01 * b1[0], accuracy: 1e-9)
        XCTAssertEqual(m[1][0], 1 - 0.01 * b1[0] - 0.01 * b2[0], accuracy: 1e-9)
    }

    /// --decay weights: only the weights of linear maps decay, whatever their shape (a conv
    /// kernel is 4-D); biases, gains and shifts do not.
    func testDecayScope() {
        func run(_ role: Parameter<Double>.Role, shape: [Int]) -> [[Double]] {
            twoSteps(settings(.sgd, lr: 0.1) { $0.weightDecay = 0.1; $0.decayScope = .weights }, shape: shape, role: role)
        }
        for role in [Parameter<Double>.Role.bias, .gain, .shift] {
            assertClose(run(role, shape: [2]), [[0.95, -2.025], [0.9, -2.05]])  // exempt: no decay
        }
        for shape in [[1, 2], [1, 2, 1, 1], [2]] {
            XCTAssertEqual(run(.weight, shape: shape)[0][0], 1 - 0.1 * (0.5 + 0.1), accuracy: 1e-12, "\(shape)")
        }
    }

    /// torch.nn.utils.clip_grad_norm_: scale by max / (norm + 1e-6) when the norm exceeds max.
    func testClipGradientNorm() {
        let p = Parameter<Double>(name: "w", value: Matrix(rows: 1, cols: 2, values: [0, 0]))
        p.grad.copy(from: Matrix(rows: 1, cols: 2, values: [3, 4]))
        XCTAssertEqual(clipGradientNorm([p], maxNorm: 1), 5, accuracy: 1e-12)
        XCTAssertEqual(p.grad.toArray()[0], 3 / (5 + 1e-6), accuracy: 1e-12)
        XCTAssertEqual(p.grad.toArray()[1], 4 / (5 + 1e-6), accuracy: 1e-12)
        XCTAssertEqual(clipGradientNorm([p], maxNorm: 10), 1, accuracy: 1e-5)
        XCTAssertEqual(p.grad.toArray()[0], 3 / (5 + 1e-6), accuracy: 1e-12, "under the limit: unchanged")
    }

    /// State round trip: an optimizer restored from another's state continues identically.
    func testStateRoundTrip() throws {
        for kind in OptimizerSettings.Kind.allCases {
            let s = settings(kind, lr: 0.01) { if kind == .sgd || kind == .rmsprop { $0.momentum = 0.9 } }
            let a = s.make(Double.self), b = s.make(Double.self)
            let pa = Parameter<Double>(name: "w", value: Matrix(rows: 1, cols: 2, values: [1, -2]))
            let pb = Parameter<Double>(name: "w", value: Matrix(rows: 1, cols: 2, values: [1, -2]))
            for _ in 0..<3 {
                pa.grad.copy(from: Matrix(rows: 1, cols: 2, values: [0.5, 0.25]))
                a.step([pa])
            }
            pb.value.copy(from: pa.value)
            try b.load(state: Dictionary(uniqueKeysWithValues: a.state([pa]).map { ($0.name, $0.values) }), [pb])
            for (o, p) in [(a, pa), (b, pb)] {
                p.grad.copy(from: Matrix(rows: 1, cols: 2, values: [-0.1, 0.3]))
                o.step([p])
            }
            XCTAssertEqual(pa.value.toArray(), pb.value.toArray(), "\(kind)")
            XCTAssertThrowsError(try b.load(state: ["step": [1]], [pb]), "\(kind): missing buffers refused")
        }
    }
}
