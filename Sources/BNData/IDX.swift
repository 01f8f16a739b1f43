#if canImport(Glibc)
import Glibc
#endif
import BNCore
import CZlib

/// Images decoded from an IDX file: `count` images of `rows x cols` pixels, each scaled to
/// [-1, 1] by (p/255 - 0.5) * 2, in one (count, rows * cols) matrix that batches can view
/// or gather from.
public struct ImageSet {
    public var count: Int
    public var rows: Int
    public var cols: Int
    public var pixels: Matrix<Float>
    public var featureCount: Int { rows * cols }

    public init(count: Int, rows: Int, cols: Int, pixels: Matrix<Float>) {
        self.count = count
        self.rows = rows
        self.cols = cols
        self.pixels = pixels
    }
}

/// The IDX format (LeCun et al.): a big-endian header `0 0 type ndims`, then `ndims` 32-bit
/// big-endian dimension sizes, then the data. bntrain reads unsigned-byte data (type 0x08):
/// images (magic 2051, 3 dimensions) and labels (magic 2049, 1 dimension).
public enum IDX {
    public static let imageMagic: UInt32 = 0x0000_0803  // 2051
    public static let labelMagic: UInt32 = 0x0000_0801  // 2049
    /// Largest data section bntrain will decode (1 GiB of pixels, 4 GiB as Float): twice the
    /// largest MNIST-style set (EMNIST ByClass, 547 MB), far below exhausting this machine.
    public static let maxDataBytes = 1 << 30

    /// (p/255 - 0.5) * 2 for every byte value, computed in Double and rounded once.
    static let pixelTable: [Float] = (0..<256).map { Float((Double($0) / 255 - 0.5) * 2) }

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
        // Decode in chunks straight into the training matrix (left unzeroed: every element
        // is written below): no full-size byte copy and no extra pass over memory.
        let pixels = Matrix<Float>(rows: f.count, cols: f.rows * f.cols, zeroed: false)
        let chunk = 1 << 16
        var scratch = [UInt8](repeating: 0, count: chunk)
        var done = 0
        try scratch.withUnsafeMutableBufferPointer { buf in
            try pixelTable.withUnsafeBufferPointer { table in
                while done < total {
                    let got = try src.read(into: buf.baseAddress!, count: min(chunk, total - done))
                    if got == 0 { break }
                    let out = pixels.data + done
                    for i in 0..<got { out[i] = table[Int(buf[i])] }
                    done += got
                }
            }
        }
        if done < total { throw DataError.truncated(path: path, expectedBytes: total, foundBytes: done) }
        let extra = try src.remaining()
        if extra > 0 { throw DataError.trailingBytes(path: path, extra: extra) }
        return ImageSet(count: f.count, rows: f.rows, cols: f.cols, pixels: pixels)
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
