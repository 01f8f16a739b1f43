import CKernels
import RealModule

/// Element-wise kernels shared by the layers, written as plain loops the compiler vectorises.
public enum Elementwise {
    /// exp(x) for Float without a libm call per element, so the loop vectorises (AVX-512: 16
    /// lanes). Cephes' expf scheme: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two parts
    /// for exactness), a degree-6 polynomial for e^r, then 2^n by building the exponent bits.
    /// Max relative error about 2 ulp over [-87, 88] (tested against Double exp).
    /// Inputs are clamped to that range: exp(-100) gives about 1.2e-38, not 0.
    @inlinable @inline(__always)
    public static func fastExp(_ x: Float) -> Float {
        let xc = min(max(x, -87.33), 88.72)
        // Round to nearest by adding and subtracting 1.5 * 2^23 (exact for |v| < 2^22); the
        // integer n then sits in the low mantissa bits of the sum. Unlike `rounded()` and
        // `Int32(_:)` (a rintf call and a range check here), this keeps the loop vectorisable.
        let shifted = xc * 1.442_695_04 + 12_582_912
        let n = shifted - 12_582_912
        let ni = Int32(bitPattern: shifted.bitPattern) &- 0x4B40_0000
        var r = xc - n * 0.693_359_375
        r = r - n * -2.121_944_4e-4
        var p: Float = 1.987_569_15e-4
        p = p * r + 1.398_199_95e-3
        p = p * r + 8.333_451_9e-3
        p = p * r + 4.166_579_59e-2
        p = p * r + 1.666_666_55e-1
        p = p * r + 5.000_000_12e-1
        let er = p * r * r + r + 1
        // 2^n for n in [-126, 128]: split in two factors so neither overflows the exponent field.
        let half = ni &>> 1
        let s1 = Float(bitPattern: UInt32(bitPattern: (half &+ 127) &<< 23))
        let s2 = Float(bitPattern: UInt32(bitPattern: (ni &- half &+ 127) &<< 23))
        return er * s1 * s2
    }

    /// y = 1 / (1 + exp(-(y + b))) in place over (rows, cols), with b broadcast over rows.
    /// Float uses `fastExp`, through the C kernel `bn_bias_sigmoid_f32` (the same operations,
    /// vectorised 16 wide where Swift's loop ran 4 wide: dfn2's fc1 pass took 5% of a float32
    /// epoch); Double (gradient checks) uses the exact exp.
    @inlinable
    public static func biasSigmoid<T: BLASScalar>(_ y: UnsafeMutablePointer<T>, bias b: UnsafePointer<T>, rows: Int, cols: Int) {
        if T.self == Float.self {
            bn_bias_sigmoid_f32(float32Buffer(y), float32(b), rows, cols)
        } else {
            for i in 0..<rows {
                let row = y + i * cols
                for j in 0..<cols { row[j] = 1 / (1 + T.exp(-(row[j] + b[j]))) }
            }
        }
    }

    /// y += b, b broadcast over rows.
    @inlinable
    public static func addBias<T: BLASScalar>(_ y: UnsafeMutablePointer<T>, bias b: UnsafePointer<T>, rows: Int, cols: Int) {
        for i in 0..<rows {
            let row = y + i * cols
            for j in 0..<cols { row[j] += b[j] }
        }
    }

    /// sums[j] = sum_i m[i, j] (column sums of a row-major (rows, cols) block).
    @inlinable
    public static func columnSums<T: BLASScalar>(_ m: UnsafePointer<T>, rows: Int, cols: Int, into sums: UnsafeMutablePointer<T>) {
        sums.update(repeating: 0, count: cols)
        for i in 0..<rows {
            let row = m + i * cols
            for j in 0..<cols { sums[j] += row[j] }
        }
    }

    /// sum_i a[i] b[i] over n elements. Float sums in 16 SIMD lanes (a floating-point reduction
    /// is not vectorised by the compiler, which may not reassociate it); Double, used by the
    /// checks, keeps the plain order.
    @inlinable
    public static func dot<T: BLASScalar>(_ a: UnsafePointer<T>, _ b: UnsafePointer<T>, _ n: Int) -> T {
        if T.self == Float.self {
            let fa = UnsafeRawPointer(a).assumingMemoryBound(to: Float.self), fb = UnsafeRawPointer(b).assumingMemoryBound(to: Float.self)
            var acc = SIMD16<Float>()
            var i = 0
            while i + 16 <= n {
                acc += UnsafeRawPointer(fa + i).loadUnaligned(as: SIMD16<Float>.self) * UnsafeRawPointer(fb + i).loadUnaligned(as: SIMD16<Float>.self)
                i += 16
            }
            var s = acc.sum()
            while i < n { s += fa[i] * fb[i]; i += 1 }
            return T(s)
        }
        var s: T = 0
        for i in 0..<n { s += a[i] * b[i] }
        return s
    }

    /// sum_i a[i] (SIMD for Float, as `dot`).
    @inlinable
    public static func sum<T: BLASScalar>(_ a: UnsafePointer<T>, _ n: Int) -> T {
        if T.self == Float.self {
            let fa = UnsafeRawPointer(a).assumingMemoryBound(to: Float.self)
            var acc = SIMD16<Float>()
            var i = 0
            while i + 16 <= n {
                acc += UnsafeRawPointer(fa + i).loadUnaligned(as: SIMD16<Float>.self)
                i += 16
            }
            var s = acc.sum()
            while i < n { s += fa[i]; i += 1 }
            return T(s)
        }
        var s: T = 0
        for i in 0..<n { s += a[i] }
        return s
    }

    /// sum_i (a[i] - mu)^2 (SIMD for Float, as `dot`).
    @inlinable
    public static func squaredDeviation<T: BLASScalar>(_ a: UnsafePointer<T>, _ n: Int, from mu: T) -> T {
        if T.self == Float.self {
            let fa = UnsafeRawPointer(a).assumingMemoryBound(to: Float.self)
            let m = Float(mu), mv = SIMD16<Float>(repeating: m)
            var acc = SIMD16<Float>()
            var i = 0
            while i + 16 <= n {
                let d = UnsafeRawPointer(fa + i).loadUnaligned(as: SIMD16<Float>.self) - mv
                acc += d * d
                i += 16
            }
            var s = acc.sum()
            while i < n { s += (fa[i] - m) * (fa[i] - m); i += 1 }
            return T(s)
        }
        var s: T = 0
        for i in 0..<n { s += (a[i] - mu) * (a[i] - mu) }
        return s
    }
}
