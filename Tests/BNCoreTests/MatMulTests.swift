import BNCore
import RealModule
import XCTest

/// The bf16 conversion, and every product path (OpenBLAS, oneDNN float32, oneDNN bf16)
/// against a float32 reference. The oneDNN paths are skipped, saying why, where the library
/// or the CPU's bf16 instructions are missing.
final class MatMulTests: XCTestCase {
    func testBFloat16RoundsToNearestEven() {
        let cases: [(UInt32, UInt16)] = [
            (0x3F80_0000, 0x3F80),  // 1 is exact
            (0x3F80_7FFF, 0x3F80),  // below half: down
            (0x3F80_8000, 0x3F80),  // tie, kept bit even: stays
            (0x3F81_8000, 0x3F82),  // tie, kept bit odd: up to even
            (0x3F80_8001, 0x3F81),  // above half: up
            (0xBF81_8000, 0xBF82),  // negative values round the magnitude
            (0x7F7F_FFFF, 0x7F80),  // the largest float rounds to infinity
            (0x7F80_0000, 0x7F80), (0xFF80_0000, 0xFF80),  // infinities stay
            (0x0000_0001, 0x0000),  // the smallest subnormal rounds to zero
        ]
        for (bits, expected) in cases {
            XCTAssertEqual(BFloat16.fromFloat(Float(bitPattern: bits)), expected, String(bits, radix: 16))
        }
        let nan = BFloat16.fromFloat(Float(bitPattern: 0x7F80_0001))  // a NaN whose payload is all low bits
        XCTAssertTrue(BFloat16.toFloat(nan).isNaN, "a NaN must not round to infinity")
        XCTAssertEqual(BFloat16.toFloat(0x3FC0), 1.5)
        // The 16-lane conversion gives the scalar rule's bits (37 values: two blocks and a tail).
        var r = TestRandom(3)
        var values: [Float] = (0..<37).map { _ in Float(r.matrix(1, 1, as: Double.self).data[0] * 1000) }
        values[3] = .nan
        values[20] = .infinity
        values[21] = Float(bitPattern: 0x3F81_8000)
        var out = [UInt16](repeating: 0, count: 37)
        BFloat16.convert(values, &out, 37)
        XCTAssertEqual(out, values.map(BFloat16.fromFloat))
    }

    /// C = alpha op(A) op(B) + beta C for all transpose combinations, strided A and B, in Double.
    func reference(_ tA: Bool, _ tB: Bool, _ m: Int, _ n: Int, _ k: Int, _ a: [Float], _ lda: Int, _ b: [Float], _ ldb: Int, _ c: [Float], alpha: Double, beta: Double) -> [Double] {
        var out = [Double](repeating: 0, count: m * n)
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0
                for p in 0..<k { s += Double(tA ? a[p * lda + i] : a[i * lda + p]) * Double(tB ? b[j * ldb + p] : b[p * ldb + j]) }
                out[i * n + j] = alpha * s + beta * Double(c[i * n + j])
            }
        }
        return out
    }

    /// max |got - want| / max |want|: products of random inputs are compared at the scale of
    /// the result (single elements near zero would make an element-wise relative error meaningless).
    func relativeError(_ got: [Float], _ want: [Double]) -> Double {
        let scale = want.map(abs).max()!
        return zip(got, want).map { abs(Double($0) - $1) }.max()! / scale
    }

    func check(_ precision: Precision, _ library: GEMMLibrary, tolerance: Double, file: StaticString = #filePath, line: UInt = #line) throws {
        let kernels = try Kernels(precision: precision, library: library)
        var r = TestRandom(11)
        for (tA, tB) in [(false, false), (true, false), (false, true), (true, true)] {
            for (m, n, k) in [(7, 33, 19), (64, 200, 784), (150, 100, 16), (300, 120, 40)] {
                let (ar, ac) = tA ? (k, m) : (m, k), (br, bc) = tB ? (n, k) : (k, n)
                let lda = ac + 3, ldb = bc + 1  // strided: the conversion must honour the row stride
                let a = r.matrix(ar, lda, as: Float.self).toArray(), b = r.matrix(br, ldb, as: Float.self).toArray()
                let c0 = r.matrix(m, n, as: Float.self).toArray()
                var c = c0
                a.withUnsafeBufferPointer { pa in
                    b.withUnsafeBufferPointer { pb in
                        c.withUnsafeMutableBufferPointer { pc in
                            Float.gemm(using: kernels, transA: tA, transB: tB, m: m, n: n, k: k, alpha: 0.5, a: pa.baseAddress!, lda: lda, b: pb.baseAddress!, ldb: ldb, beta: 0.25, c: pc.baseAddress!, ldc: n)
                        }
                    }
                }
                let err = relativeError(c, reference(tA, tB, m, n, k, a, lda, b, ldb, c0, alpha: 0.5, beta: 0.25))
                let name = "\(precision) \(library) tA=\(tA) tB=\(tB) \(m)x\(n)x\(k)"
                if precision == .bf16 && m * n * k >= MatMul.oneDNNThreshold {
                    XCTAssertLessThan(err, tolerance, name, file: file, line: line)
                    XCTAssertGreaterThan(err, 1e-6, "bf16 rounding must be visible (else float32 ran): \(name)", file: file, line: line)
                } else {
                    XCTAssertLessThan(err, 1e-5, "float32 (small products stay float32 under bf16): \(name)", file: file, line: line)
                }
            }
        }
    }

    func testOpenBLASAgainstTheReference() throws {
        try check(.fp32, .openblas, tolerance: 1e-5)
    }

    func testOneDNNFloat32AgainstTheReference() throws {
        guard OneDNN.shared != nil else { throw XCTSkip("oneDNN (libdnnl.so.2) is not installed") }
        try check(.fp32, .onednn, tolerance: 1e-5)
        try check(.fp32, .auto, tolerance: 1e-5)
    }

    /// bf16 inputs (8 significant bits) with float32 accumulation: within bf16's rounding.
    func testBF16AgainstTheFloat32Reference() throws {
        guard let dnnl = OneDNN.shared else { throw XCTSkip("oneDNN (libdnnl.so.2) is not installed") }
        guard dnnl.hasBF16 else {
            XCTAssertThrowsError(try Kernels(precision: .bf16, library: .auto)) { e in
                XCTAssertTrue("\(e)".contains("bf16 instructions"), "\(e)")
            }
            throw XCTSkip("this CPU has no bf16 instructions (oneDNN: \(dnnl.isaName)); checked that bf16 is refused")
        }
        try check(.bf16, .auto, tolerance: 1e-2)
        XCTAssertEqual(try Kernels(precision: .bf16, library: .auto).description, "onednn-bf16-from-\(MatMul.oneDNNThreshold)+openblas")
    }

    /// The bf16 matmul plans round A and B to bf16 (nearest even) and accumulate in float32:
    /// against a Double product of the rounded inputs they differ only by float32 summation
    /// (1e-5), for every transpose, stride, plain and accumulated (beta 0 and 1) product and
    /// an exact alpha; a learning-rate-like alpha (folded into one operand's rounding) stays
    /// within bf16's rounding of the float32 product. One plan per shape is reused.
    func testBF16MatMulPlansRoundTheInputsAndAccumulateInFloat32() throws {
        guard let dnnl = OneDNN.shared, dnnl.hasBF16 else { throw XCTSkip("needs oneDNN with bf16 instructions") }
        let kernels = try Kernels(precision: .bf16, library: .auto)
        var r = TestRandom(5)
        let rounded = { (v: [Float]) in v.map { BFloat16.toFloat(BFloat16.fromFloat($0)) } }
        for (tA, tB) in [(false, false), (true, false), (false, true), (true, true)] {
            for (m, n, k) in [(64, 200, 784), (784, 200, 64), (130, 90, 100)] {
                let (ar, ac) = tA ? (k, m) : (m, k), (br, bc) = tB ? (n, k) : (k, n)
                let lda = ac + 5, ldb = bc + 2
                let a = r.matrix(ar, lda, as: Float.self).toArray(), b = r.matrix(br, ldb, as: Float.self).toArray()
                let c0 = r.matrix(m, n, as: Float.self).toArray()
                for (alpha, beta) in [(Float(1), Float(0)), (1, 1), (0.5, 1), (-0.01, 1), (-0.01, 0)] {
                    var c = c0
                    for _ in 0..<2 {  // the second call reuses the plan and must give the same
                        c = c0
                        a.withUnsafeBufferPointer { pa in
                            b.withUnsafeBufferPointer { pb in
                                c.withUnsafeMutableBufferPointer { pc in
                                    Float.gemm(using: kernels, transA: tA, transB: tB, m: m, n: n, k: k, alpha: alpha, a: pa.baseAddress!, lda: lda, b: pb.baseAddress!, ldb: ldb, beta: beta, c: pc.baseAddress!, ldc: n)
                                }
                            }
                        }
                    }
                    let name = "tA=\(tA) tB=\(tB) \(m)x\(n)x\(k) alpha=\(alpha) beta=\(beta)"
                    let exactScale = alpha == 1 || alpha == 0.5
                    if exactScale {
                        let want = reference(tA, tB, m, n, k, rounded(a), lda, rounded(b), ldb, c0, alpha: Double(alpha), beta: Double(beta))
                        XCTAssertLessThan(relativeError(c, want), 1e-5, "inputs rounded to bf16, float32 accumulation: \(name)")
                    }
                    let exact = reference(tA, tB, m, n, k, a, lda, b, ldb, c0, alpha: Double(alpha), beta: Double(beta))
                    let err = relativeError(c, exact)
                    XCTAssertLessThan(err, 1e-2, name)
                    XCTAssertGreaterThan(err, 1e-6, "bf16 rounding must be visible: \(name)")
                }
            }
        }
        let implementations = kernels.bf16Implementations
        XCTAssertFalse(implementations.isEmpty)
        XCTAssertFalse(implementations.contains { $0.contains("ref") }, "\(implementations)")
    }

    /// Dense's bf16 forward runs the bias and the sigmoid in the matmul's epilogue: y is
    /// sigmoid(bf16(x) bf16(W) + b) within float32 summation and the library's logistic (1e-5
    /// absolute), in both weight layouts; a layer below the bf16 threshold runs float32 and
    /// gives exactly the float32 layer's output.
    func testDenseBF16ForwardFusesBiasAndSigmoid() throws {
        guard let dnnl = OneDNN.shared, dnnl.hasBF16 else { throw XCTSkip("needs oneDNN with bf16 instructions") }
        let fp32 = try Kernels(precision: .fp32, library: .openblas), bf16 = try Kernels(precision: .bf16, library: .auto)
        var r = TestRandom(9)
        let round = { (v: Float) in Double(BFloat16.toFloat(BFloat16.fromFloat(v))) }
        for (inF, outF, act, layout) in [(784, 200, Dense<Float>.Activation.sigmoid, Dense<Float>.WeightLayout.inOut), (784, 200, .identity, .outIn), (300, 120, .sigmoid, .outIn), (20, 10, .sigmoid, .inOut)] {
            // Two layers with the same weights, one on each kernel choice, side by side.
            let dense32 = Dense<Float>(inFeatures: inF, outFeatures: outF, activation: act, weightLayout: layout, name: "fc", kernels: fp32)
            let dense16 = Dense<Float>(inFeatures: inF, outFeatures: outF, activation: act, weightLayout: layout, name: "fc", kernels: bf16)
            let w = r.matrix(dense32.weight.value.rows, dense32.weight.value.cols, scale: 0.05, as: Float.self)
            let bias = r.matrix(1, outF, as: Float.self)
            for dense in [dense32, dense16] {
                dense.weight.value.data.update(from: w.data, count: w.count)
                dense.bias.value.data.update(from: bias.data, count: outF)
            }
            let x = r.matrix(64, inF, as: Float.self)
            let y32 = dense32.forward(x, training: true).toArray()
            let y16 = dense16.forward(x, training: true).toArray()
            let name = "\(inF)->\(outF) \(act) \(layout)"
            guard 64 * inF * outF >= MatMul.oneDNNThreshold else {
                XCTAssertEqual(y16, y32, "below the threshold bf16 runs float32: \(name)")
                continue
            }
            var worst = 0.0
            for i in 0..<64 {
                for j in 0..<outF {
                    var z = Double(bias.data[j])
                    for p in 0..<inF {
                        let wv = layout == .inOut ? w.data[p * outF + j] : w.data[j * inF + p]
                        z += round(x.data[i * inF + p]) * round(wv)
                    }
                    let want = act == .sigmoid ? 1 / (1 + Double.exp(-z)) : z
                    worst = max(worst, abs(Double(y16[i * outF + j]) - want))
                }
            }
            XCTAssertLessThan(worst, 1e-5, name)
            XCTAssertNotEqual(y16, y32, "bf16 ran: \(name)")
        }
    }
}
