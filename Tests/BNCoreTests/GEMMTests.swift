import BNCore
import XCTest

/// The BLAS path against the naive reference product, for every transpose combination.
final class GEMMTests: XCTestCase {
    func check<T: BLASScalar>(_: T.Type, tolerance: Double) {
        var r = TestRandom(11)
        let (m, n, k) = (7, 5, 9)
        for transA in [false, true] {
            for transB in [false, true] {
                let a: Matrix<T> = transA ? r.matrix(k, m) : r.matrix(m, k)
                let b: Matrix<T> = transB ? r.matrix(n, k) : r.matrix(k, n)
                let c0: Matrix<T> = r.matrix(m, n)
                let fast = Matrix<T>(rows: m, cols: n), slow = Matrix<T>(rows: m, cols: n)
                fast.copy(from: c0)
                slow.copy(from: c0)
                T.gemm(using: Kernels(), transA: transA, transB: transB, m: m, n: n, k: k, alpha: 0.5, a: a.data, lda: a.cols,
                       b: b.data, ldb: b.cols, beta: 2, c: fast.data, ldc: n)
                referenceGEMM(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 0.5, a: a.data, lda: a.cols,
                              b: b.data, ldb: b.cols, beta: 2, c: slow.data, ldc: n)
                let diff = maxAbsDiff(fast.toArray().map(Double.init), slow.toArray().map(Double.init))
                XCTAssertLessThan(diff, tolerance, "transA=\(transA) transB=\(transB)")
                // And beta = 0 must ignore whatever C held (even NaN).
                fast.fill(.nan)
                T.gemm(using: Kernels(), transA: transA, transB: transB, m: m, n: n, k: k, alpha: 1, a: a.data, lda: a.cols,
                       b: b.data, ldb: b.cols, beta: 0, c: fast.data, ldc: n)
                XCTAssertTrue(fast.toArray().allSatisfy { $0.isFinite })
            }
        }
    }

    func testFloatMatchesReference() { check(Float.self, tolerance: 1e-4) }
    func testDoubleMatchesReference() { check(Double.self, tolerance: 1e-12) }

    func testKnownProduct() {
        // [[1,2],[3,4]] x [[5,6],[7,8]] = [[19,22],[43,50]]
        let a = Matrix<Float>(rows: 2, cols: 2, values: [1, 2, 3, 4])
        let b = Matrix<Float>(rows: 2, cols: 2, values: [5, 6, 7, 8])
        let c = Matrix<Float>(rows: 2, cols: 2)
        Float.gemm(using: Kernels(), transA: false, transB: false, m: 2, n: 2, k: 2, alpha: 1, a: a.data, lda: 2, b: b.data, ldb: 2, beta: 0, c: c.data, ldc: 2)
        XCTAssertEqual(c.toArray(), [19, 22, 43, 50])
    }
}
