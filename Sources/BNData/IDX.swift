#if canImport(Glibc)
import Glibc
#endif
import BNCore
import CKernels
import CZlib

/// Images read from an IDX file: `count` images of `rows x cols` pixels, kept as the file's
/// bytes (one per pixel, image after image) and turned into bntrain's inputs, each pixel p
/// scaled to [-1, 1] by (p/255 - 0.5) * 2, only when a batch is gathered (`convert`).
/// Keeping bytes holds a quarter of the memory of float32 (47 MB instead of 188 MB for
/// 60,000 MNIST images) and a shuffled batch reads a quarter of the bytes from DRAM.
public struct ImageSet {
    public var count: Int
    public var rows: Int
    public var cols: Int
    /// (count, rows * cols) pixel bytes, row-major.
    public let bytes: PixelBytes
    public var featureCount: Int { rows * cols }

    public init(count: Int, rows: Int, cols: Int, bytes: PixelBytes) {
        precondition(bytes.count == count * rows * cols, "ImageSet: \(bytes.count) bytes for \(count) images of \(rows)x\(cols)")
        self.count = count
        self.rows = rows
        self.cols = cols
        self.bytes = bytes
    }

    /// Images from bytes held in an array (tests, fuzzing).
    public init(count: Int, rows: Int, cols: Int, bytes: [UInt8]) {
        let b = PixelBytes(count: bytes.count)
        bytes.withUnsafeBufferPointer { b.data.update(from: $0.baseAddress!, count: $0.count) }
        self.init(count: count, rows: rows, cols: cols, bytes: b)
    }

    /// The input value of pixel byte p, (p/255 - 0.5) * 2 computed in Double and rounded once
    /// to Float: the definition `convert` meets for every byte value (tested exhaustively).
    public static let pixelValues: [Float] = (0..<256).map { Float((Double($0) / 255 - 0.5) * 2) }

    /// Writes images start..<start + n, converted, into dst: (n, featureCount) floats.
    @inlinable
    public func convert(images start: Int, count n: Int, into dst: UnsafeMutablePointer<Float>) {
        precondition(start >= 0 && n >= 0 && start + n <= count, "images \(start)..<\(start + n) of \(count)")
        bn_pixels_to_f32(bytes.data + start * featureCount, dst, n * featureCount)
    }

    /// Images start..<start + n as a new (n, featureCount) matrix (one-off uses, not per step).
    public func floats(images start: Int = 0, count n: Int) -> Matrix<Float> {
        let m = Matrix<Float>(rows: n, cols: featureCount, zeroed: false)
        convert(images: start, count: n, into: m.data)
        return m
    }

    /// The input value of pixel j of image i.
    public func value(image i: Int, pixel j: Int) -> Float {
        precondition(i >= 0 && i < count && j >= 0 && j < featureCount, "pixel (\(i), \(j)) of \(count) images of \(featureCount)")
        return Self.pixelValues[Int(bytes.data[i * featureCount + j])]
    }
}

/// A fixed-size byte buffer at a stable address, shared by the copies of the `ImageSet`
/// that owns it (samplers read rows from it while training).
public final class PixelBytes: @unchecked Sendable {
    public let count: Int
    public let data: UnsafeMutablePointer<UInt8>

    /// `count` bytes, undefined until written (the decoder writes every one).
    public init(count: Int) {
        precondition(count >= 0, "PixelBytes: negative size")
        self.count = count
        data = .allocate(capacity: max(count, 1))
    }

    deinit { data.deallocate() }
}

/// The IDX format (LeCun et al.): a big-endian header `0 0 type ndims`, then `ndims` 32-bit
/// big-endian dimension sizes, then the data. bntrain reads unsigned-byte data (type 0x08):
/// images (magic 2051, 3 dimensions) and labels (magic 2049, 1 dimension).
public enum IDX {
    public static let imageMagic: UInt32 = 0x0000_0803  // 2051
    public static let labelMagic: UInt32 = 0x0000_0801  // 2049
    /// Largest data section bntrain will read (1 GiB of pixels, kept as bytes): twice the
    /// largest MNIST-style set (EMNIST ByClass, 547 MB), far below exhausting this machine.
    public static let maxDataBytes = 1 << 30

    /// An opened IDX file whose header has been read and checked: what it declares, and the
    /// stream positioned at its data. Nothing beyond the header has been read or inflated.
    public final class Opened {
        let src: ByteSource
        public var path: String { src.path }
        /// Examples declared (images or labels).
        public let count: Int
        /// Image size (labels: 1 x 1).
        public let rows: Int
        public let cols: Int
        /// Bytes of data the header declares.
        public var dataBytes: Int { count * rows * cols }

        init(src: ByteSource, count: Int, rows: Int, cols: Int) {
            self.src = src
            self.count = count
            self.rows = rows
            self.cols = cols
        }
    }

    /// Opens an image file and checks its header (sizes, overflow, plausibility against the
    /// file's size); the pixels are not read yet.
    public static func openImages(path: String) throws -> Opened {
        let src = try ByteSource(path: path)
        let dims = try readHeader(src, magic: imageMagic, dimensions: 3)
        let (count, rows, cols) = (dims[0], dims[1], dims[2])
        if rows == 0 || cols == 0 { throw DataError.badHeader(path: path, reason: "image size \(rows)x\(cols) has no pixels") }
        // Each dimension is below 2^32, so even rows * cols can overflow Int: check both products.
        let (pixelsPerImage, overflow1) = rows.multipliedReportingOverflow(by: cols)
        let (total, overflow2) = count.multipliedReportingOverflow(by: pixelsPerImage)
        if overflow1 || overflow2 || total > maxDataBytes {
            throw DataError.badHeader(path: path, reason: "it declares \(count) images of \(rows)x\(cols) pixels, more than the \(maxDataBytes) bytes bntrain accepts")
        }
        try checkPlausible(path: path, src: src, dataBytes: total)
        if count == 0 { throw DataError.empty(path: path) }
        return Opened(src: src, count: count, rows: rows, cols: cols)
    }

    /// Opens a label file and checks its header; the labels are not read yet.
    public static func openLabels(path: String) throws -> Opened {
        let src = try ByteSource(path: path)
        let count = try readHeader(src, magic: labelMagic, dimensions: 1)[0]
        try checkPlausible(path: path, src: src, dataBytes: count)
        if count == 0 { throw DataError.empty(path: path) }
        return Opened(src: src, count: count, rows: 1, cols: 1)
    }

    public static func readImages(path: String) throws -> ImageSet { try decodeImages(openImages(path: path)) }
    public static func readLabels(path: String) throws -> [Int32] { try decodeLabels(openLabels(path: path)) }

    /// Decodes the pixels of an opened image file, reading exactly what its header declares
    /// (and refusing a shorter or longer stream).
    public static func decodeImages(_ f: Opened) throws -> ImageSet {
        let (src, path, total) = (f.src, f.path, f.dataBytes)
        // Read straight into the image bytes: no scratch copy, no conversion pass.
        let bytes = PixelBytes(count: total)
        let done = try src.read(into: bytes.data, count: total)
        if done < total { throw DataError.truncated(path: path, expectedBytes: total, foundBytes: done) }
        let extra = try src.remaining()
        if extra > 0 { throw DataError.trailingBytes(path: path, extra: extra) }
        return ImageSet(count: f.count, rows: f.rows, cols: f.cols, bytes: bytes)
    }

    /// Decodes the labels of an opened label file.
    public static func decodeLabels(_ f: Opened) throws -> [Int32] {
        let (src, path, count) = (f.src, f.path, f.count)
        var bytes = [UInt8](repeating: 0, count: count)
        let got = try bytes.withUnsafeMutableBytes { try src.read(into: $0.baseAddress!, count: count) }
        if got < count { throw DataError.truncated(path: path, expectedBytes: count, foundBytes: got) }
        let extra = try src.remaining()
        if extra > 0 { throw DataError.trailingBytes(path: path, extra: extra) }
        return bytes.map { Int32($0) }
    }

    /// Reads and checks the header; returns the dimension sizes.
    static func readHeader(_ src: ByteSource, magic: UInt32, dimensions: Int) throws -> [Int] {
        let path = src.path
        let headBytes = 4 + 4 * dimensions
        var head = [UInt8](repeating: 0, count: headBytes)
        let got = try head.withUnsafeMutableBytes { try src.read(into: $0.baseAddress!, count: headBytes) }
        func word(_ i: Int) -> UInt32 {
            UInt32(head[i]) << 24 | UInt32(head[i + 1]) << 16 | UInt32(head[i + 2]) << 8 | UInt32(head[i + 3])
        }
        if got < 4 {
            throw got == 0 ? DataError.empty(path: path) : DataError.truncated(path: path, expectedBytes: head.count, foundBytes: got)
        }
        let found = word(0)
        if found != magic {
            // Same layout, other element type or rank: say precisely what differs.
            if head[0] == 0 && head[1] == 0 && found & 0xFF == magic & 0xFF && head[2] != 0x08 {
                throw DataError.badHeader(path: path, reason: "element type 0x\(String(head[2], radix: 16)) is not unsigned byte (0x08); bntrain reads 8-bit IDX files")
            }
            throw DataError.wrongMagic(path: path, expected: magic, found: found)
        }
        if got < head.count { throw DataError.truncated(path: path, expectedBytes: head.count, foundBytes: got) }
        return (0..<dimensions).map { Int(word(4 + 4 * $0)) }
    }

    /// Refuses, before allocating, a declared size the file cannot hold: larger than the file
    /// (raw), than deflate's best ratio allows (gzip, at most about 1032:1), or than `maxDataBytes`.
    static func checkPlausible(path: String, src: ByteSource, dataBytes: Int) throws {
        if dataBytes > maxDataBytes {
            throw DataError.badHeader(path: path, reason: "it declares \(dataBytes) data bytes, more than the \(maxDataBytes) bntrain accepts")
        }
        var st = stat()
        guard stat(path, &st) == 0 else { return }
        let fileBytes = Int(st.st_size)
        let ceiling = src.isRaw ? fileBytes : fileBytes &* 1032 &+ 1024
        if dataBytes > ceiling {
            let held = src.isRaw ? max(fileBytes - 4, 0) : ceiling
            throw DataError.truncated(path: path, expectedBytes: dataBytes, foundBytes: min(held, dataBytes - 1))
        }
    }

    // MARK: Writing (tests, tools)

    /// Writes an IDX image file (magic 2051) atomically; gzipped when `gzip` is true.
    public static func writeImages(_ pixels: [UInt8], count: Int, rows: Int, cols: Int, to path: String, gzip: Bool) throws {
        precondition(pixels.count == count * rows * cols, "pixel count does not match the dimensions")
        try write(header: [imageMagic, UInt32(count), UInt32(rows), UInt32(cols)], data: pixels, to: path, gzip: gzip)
    }

    /// Writes an IDX label file (magic 2049) atomically; gzipped when `gzip` is true.
    public static func writeLabels(_ labels: [UInt8], to path: String, gzip: Bool) throws {
        try write(header: [labelMagic, UInt32(labels.count)], data: labels, to: path, gzip: gzip)
    }

    static func write(header: [UInt32], data: [UInt8], to path: String, gzip: Bool) throws {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(header.count * 4 + data.count)
        for w in header { bytes += [UInt8(w >> 24), UInt8(w >> 16 & 0xFF), UInt8(w >> 8 & 0xFF), UInt8(w & 0xFF)] }
        bytes += data
        let tmp = path + ".tmp-\(getpid())"
        guard let f = bn_gzopen(tmp, gzip ? "wb6" : "wbT") else {
            throw DataError.unreadable(path: tmp, reason: "cannot create: \(String(cString: strerror(errno)))")
        }
        let written = bytes.withUnsafeBytes { gzwrite(f, $0.baseAddress, UInt32($0.count)) }
        let closed = gzclose(f)
        guard written == bytes.count, closed == Z_OK, rename(tmp, path) == 0 else {
            unlink(tmp)
            throw DataError.unreadable(path: path, reason: "write failed: \(String(cString: strerror(errno)))")
        }
    }
}
