import CKernels
import XCTest

/// bn_sort_f32 (the trace's radix sort) orders floats as a comparison sort does: negative and
/// positive values, infinities, subnormals, duplicates, any length.
final class SortKernelTests: XCTestCase {
    func sorted(_ values: [Float]) -> [Float] {
        var v = values, scratch = [Float](repeating: 0, count: values.count)
        v.withUnsafeMutableBufferPointer { p in scratch.withUnsafeMutableBufferPointer { bn_sort_f32(p.baseAddress!, $0.baseAddress!, p.count) } }
        return v
    }

    func testRadixSortMatchesAComparisonSort() {
        var state: UInt64 = 7
        func next() -> UInt32 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return UInt32(truncatingIfNeeded: state >> 32)
        }
        let special: [Float] = [.infinity, -.infinity, .leastNonzeroMagnitude, -.leastNonzeroMagnitude, .greatestFiniteMagnitude, -.greatestFiniteMagnitude, 1, -1, 0.5, 0.5]
        for n in [0, 1, 2, 3, 31, 2048, 5000] {
            var values: [Float] = (0..<n).map { _ in
                let f = Float(bitPattern: next())
                return f.isNaN ? Float(Int32(bitPattern: next())) / 1e5 : f
            }
            if n >= 31 { values.replaceSubrange(0..<special.count, with: special) }
            XCTAssertEqual(sorted(values), values.sorted(), "n = \(n)")
        }
        // Zeros of both signs sort together, -0 first; the statistics treat them alike.
        XCTAssertEqual(sorted([0, -1, -0.0, 2, 0, -0.0]).map(\.bitPattern), ([-1, -0.0, -0.0, 0, 0, 2] as [Float]).map(\.bitPattern))
    }
}
