/// bfloat16: the top 16 bits of a float32 (8 exponent bits, 7 mantissa bits), stored as UInt16.
public enum BFloat16 {
    /// float32 -> bf16, rounding to nearest, ties to even (as PyTorch's and oneDNN's
    /// conversions): add 0x7FFF plus the lowest kept bit, then drop the low 16 bits. NaNs stay
    /// NaNs (quiet bit set) instead of rounding into infinity; infinities and overflow to
    /// infinity follow from the same rounding.
    @inlinable
    public static func fromFloat(_ x: Float) -> UInt16 {
        let b = x.bitPattern
        if b & 0x7FFF_FFFF > 0x7F80_0000 { return UInt16(truncatingIfNeeded: b >> 16) | 0x40 }
        return UInt16(truncatingIfNeeded: (b &+ 0x7FFF &+ ((b >> 16) & 1)) >> 16)
    }

    @inlinable
    public static func toFloat(_ h: UInt16) -> Float { Float(bitPattern: UInt32(h) << 16) }

    /// dst[i] = bf16(src[i]) for n values, 16 at a time (the scalar rule per lane).
    @inlinable
    public static func convert(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<UInt16>, _ n: Int) {
        typealias U = SIMD16<UInt32>
        let raw = UnsafeRawPointer(src), out = UnsafeMutableRawPointer(dst)
        var i = 0
        let one = U(repeating: 1), round = U(repeating: 0x7FFF), absMask = U(repeating: 0x7FFF_FFFF), inf = U(repeating: 0x7F80_0000), quiet = U(repeating: 0x40)
        while i + 16 <= n {
            let b = raw.loadUnaligned(fromByteOffset: 4 * i, as: U.self)
            var r = (b &+ round &+ ((b &>> 16) & one)) &>> 16
            r.replace(with: (b &>> 16) | quiet, where: (b & absMask) .> inf)
            out.storeBytes(of: SIMD16<UInt16>(truncatingIfNeeded: r), toByteOffset: 2 * i, as: SIMD16<UInt16>.self)
            i += 16
        }
        while i < n {
            dst[i] = fromFloat(src[i])
            i += 1
        }
    }

    /// Converts the `rows` x `cols` block of a row-major matrix with row stride `ld` into a
    /// contiguous (rows, cols) bf16 block.
    @inlinable
    public static func convert(_ src: UnsafePointer<Float>, rows: Int, cols: Int, ld: Int, into dst: UnsafeMutablePointer<UInt16>) {
        if ld == cols { return convert(src, dst, rows * cols) }
        for r in 0..<rows { convert(src + r * ld, dst + r * cols, cols) }
    }
}
