import BNCore
import CKernels
import XCTest

/// The fc weight gradient of a data-parallel step (`BLASScalar.rankUpdate`, rank_update.c):
/// one fused multiply-add chain per element, so every path (portable, AVX2, AVX-512) and every
/// split of the rows, columns or batch rows gives the same bits. OpenBLAS's sgemm does not:
/// a row range of C can round differently from the same rows in a whole product, which is why
/// the workers do not use it for dW (docs/parallel.md).
final class RankUpdateTests: XCTestCase {
    let shapes = [(200, 784, 64), (13, 37, 5), (10, 200, 33), (256, 17, 64), (1, 1, 1), (6, 64, 7), (784, 200, 32)]

    /// The definition, element by element: C[i, j] = fma(A[p, i], B[p, j], C[i, j]) for p in order.
    func chain(m: Int, n: Int, k: Int, a: Matrix<Float>, b: Matrix<Float>, c: inout [Float], accumulate: Bool) {
        for i in 0..<m {
            for j in 0..<n {
                var s: Float = accumulate ? c[i * n + j] : 0
                for p in 0..<k { s = s.addingProduct(a.data[p * m + i], b.data[p * n + j]) }
                c[i * n + j] = s
            }
        }
    }

    func run(path: Int32?, m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
             c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool) {
        if let path {
            bn_rank_update_f32_path(path, m, n, k, a, lda, b, ldb, c, ldc, accumulate ? 1 : 0)
        } else {
            Float.rankUpdate(m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: ldc, accumulate: accumulate)
        }
    }

    /// Every path this CPU can run, and the default, give the definition's bits, from zero and
    /// accumulating onto C.
    func testEveryPathIsTheChain() {
        var r = TestRandom(41)
        let paths: [Int32?] = [nil] + (0...bn_rank_update_best_path()).map { $0 }
        for (m, n, k) in shapes {
            let a: Matrix<Float> = r.matrix(k, m), b: Matrix<Float> = r.matrix(k, n), c0: Matrix<Float> = r.matrix(m, n)
            for accumulate in [false, true] {
                var want = c0.toArray()
                chain(m: m, n: n, k: k, a: a, b: b, c: &want, accumulate: accumulate)
                for path in paths {
                    let c = Matrix<Float>(rows: m, cols: n)
                    if accumulate { c.copy(from: c0) } else { c.fill(.nan) }
                    run(path: path, m: m, n: n, k: k, a: a.data, lda: m, b: b.data, ldb: n, c: c.data, ldc: n, accumulate: accumulate)
                    XCTAssertEqual(c.toArray().map(\.bitPattern), want.map(\.bitPattern), "path \(path.map(String.init) ?? "default") \(m)x\(n)x\(k) accumulate \(accumulate)")
                }
            }
        }
    }

    /// Rows cut unevenly, columns cut, and the batch rows cut in two calls (the second
    /// accumulating), in every combination: the whole product's bits. Within rounding of the
    /// Double product.
    func testAnySplitGivesTheWholeProduct() {
        var r = TestRandom(42)
        for (m, n, k) in shapes where m >= 3 && n >= 2 && k >= 2 {
            let a: Matrix<Float> = r.matrix(k, m), b: Matrix<Float> = r.matrix(k, n)
            let whole = Matrix<Float>(rows: m, cols: n)
            Float.rankUpdate(m: m, n: n, k: k, a: a.data, lda: m, b: b.data, ldb: n, c: whole.data, ldc: n, accumulate: false)
            let rowCuts = [0, m / 3, m / 3 + 1, m], colCuts = [0, n / 2 + 1, n], half = k / 2
            let split = Matrix<Float>(rows: m, cols: n)
            split.fill(.nan)
            for ri in 0..<3 where rowCuts[ri] < rowCuts[ri + 1] {
                for ci in 0..<2 where colCuts[ci] < colCuts[ci + 1] {
                    let (i0, rows, j0, cols) = (rowCuts[ri], rowCuts[ri + 1] - rowCuts[ri], colCuts[ci], colCuts[ci + 1] - colCuts[ci])
                    let c = split.data + i0 * n + j0
                    Float.rankUpdate(m: rows, n: cols, k: half, a: a.data + i0, lda: m, b: b.data + j0, ldb: n, c: c, ldc: n, accumulate: false)
                    Float.rankUpdate(m: rows, n: cols, k: k - half, a: a.data + half * m + i0, lda: m, b: b.data + half * n + j0, ldb: n,
                                     c: c, ldc: n, accumulate: true)
                }
            }
            XCTAssertEqual(split.toArray().map(\.bitPattern), whole.toArray().map(\.bitPattern), "\(m)x\(n)x\(k)")
            for i in 0..<m {
                for j in 0..<n {
                    var exact = 0.0
                    for p in 0..<k { exact += Double(a.data[p * m + i]) * Double(b.data[p * n + j]) }
                    XCTAssertEqual(Double(whole.data[i * n + j]), exact, accuracy: 1e-5 * Double(k), "\(m)x\(n)x\(k) [\(i), \(j)]")
                }
            }
        }
    }

    /// Double (the gradient checks' type): the same chain, so split-invariant too.
    func testDoubleIsSplitInvariant() {
        var r = TestRandom(43)
        let (m, n, k) = (9, 11, 8)
        let a: Matrix<Double> = r.matrix(k, m), b: Matrix<Double> = r.matrix(k, n)
        let whole = Matrix<Double>(rows: m, cols: n), split = Matrix<Double>(rows: m, cols: n)
        Double.rankUpdate(m: m, n: n, k: k, a: a.data, lda: m, b: b.data, ldb: n, c: whole.data, ldc: n, accumulate: false)
        Double.rankUpdate(m: 4, n: n, k: 3, a: a.data, lda: m, b: b.data, ldb: n, c: split.data, ldc: n, accumulate: false)
        Double.rankUpdate(m: 4, n: n, k: k - 3, a: a.data + 3 * m, lda: m, b: b.data + 3 * n, ldb: n, c: split.data, ldc: n, accumulate: true)
        Double.rankUpdate(m: m - 4, n: n, k: k, a: a.data + 4, lda: m, b: b.data, ldb: n, c: split.data + 4 * n, ldc: n, accumulate: false)
        XCTAssertEqual(split.toArray().map(\.bitPattern), whole.toArray().map(\.bitPattern))
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0
                for p in 0..<k { s = s.addingProduct(a.data[p * m + i], b.data[p * n + j]) }
                XCTAssertEqual(whole.data[i * n + j].bitPattern, s.bitPattern)
            }
        }
    }
}
