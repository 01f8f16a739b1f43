import BNCore
import CKernels
@testable import BNData
import Foundation
import XCTest

/// IDX reading on tiny files the tests write: round trips and each malformed case.
final class IDXTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "bntrain-idx-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    func path(_ name: String) -> String { dir + "/" + name }

    /// Big-endian 32-bit words followed by raw bytes.
    func bytes(_ words: [UInt32], _ data: [UInt8] = []) -> [UInt8] {
        words.flatMap { [UInt8($0 >> 24), UInt8($0 >> 16 & 0xFF), UInt8($0 >> 8 & 0xFF), UInt8($0 & 0xFF)] } + data
    }

    func writeRaw(_ name: String, _ b: [UInt8]) -> String {
        FileManager.default.createFile(atPath: path(name), contents: Data(b))
        return path(name)
    }

    func gzip(_ b: [UInt8]) throws -> [UInt8] {
        // Write through the module's own writer (zlib), then read the compressed bytes back.
        let p = path("tmp-\(UUID().uuidString)")
        FileManager.default.createFile(atPath: p + ".in", contents: Data(b))
        let proc = Process()
        proc.executableURL = URL(fileURLWithPath: "/bin/gzip")
        proc.arguments = ["-c", p + ".in"]
        let out = Pipe()
        proc.standardOutput = out
        try proc.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        proc.waitUntilExit()
        return [UInt8](data)
    }

    func assertError(_ expected: (DataError) -> Bool, _ body: () throws -> Void, _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), message, file: file, line: line) { error in
            guard let e = error as? DataError else { return XCTFail("not a DataError: \(error)", file: file, line: line) }
            XCTAssertTrue(expected(e), "unexpected error: \(e)", file: file, line: line)
            XCTAssertFalse(e.description.contains("\n"), "errors are one line", file: file, line: line)
        }
    }

    let pixels: [UInt8] = [0, 255, 128, 1, 2, 3, 4, 5, 6, 7, 8, 9]  // 2 images of 2x3

    func testRoundTripRawAndGzip() throws {
        for gz in [false, true] {
            let ip = path("img\(gz ? ".gz" : "")"), lp = path("lab\(gz ? ".gz" : "")")
            try IDX.writeImages(pixels, count: 2, rows: 2, cols: 3, to: ip, gzip: gz)
            try IDX.writeLabels([3, 9], to: lp, gzip: gz)
            let images = try IDX.readImages(path: ip)
            XCTAssertEqual([images.count, images.rows, images.cols], [2, 2, 3])
            XCTAssertEqual(Array(UnsafeBufferPointer(start: images.bytes.data, count: images.bytes.count)), pixels)
            let x = images.floats(count: 2)
            XCTAssertEqual([x.rows, x.cols], [2, 6])
            XCTAssertEqual(x.data[0], -1)
            XCTAssertEqual(x.data[1], 1)
            XCTAssertEqual(x.data[2], Float((128.0 / 255 - 0.5) * 2))
            XCTAssertEqual(images.value(image: 1, pixel: 5), Float((9.0 / 255 - 0.5) * 2))
            XCTAssertEqual(try IDX.readLabels(path: lp), [3, 9])
            let head = try [UInt8](Data(contentsOf: URL(fileURLWithPath: ip)).prefix(2))
            XCTAssertEqual(head == [0x1f, 0x8b], gz, "gzip=\(gz) writes \(gz ? "gzip" : "raw") data")
        }
    }

    /// The gather's arithmetic conversion (C, vectorized) gives the Double-computed value of
    /// every byte, so batches hold the bits images had when they were decoded to float32.
    func testPixelConversionIsExactForEveryByte() {
        for offset in 0..<3 {  // unaligned starts and a tail shorter than a vector
            let bytes = (0..<(256 + offset)).map { UInt8(($0 + 256 - offset) % 256) }
            var out = [Float](repeating: .nan, count: bytes.count)
            bn_pixels_to_f32(bytes, &out, bytes.count)
            for (b, v) in zip(bytes, out) {
                XCTAssertEqual(v.bitPattern, Float((Double(b) / 255 - 0.5) * 2).bitPattern, "byte \(b)")
                XCTAssertEqual(v.bitPattern, ImageSet.pixelValues[Int(b)].bitPattern, "byte \(b)")
            }
        }
    }

    func testWrongMagic() {
        let p = writeRaw("labels-as-images", bytes([IDX.labelMagic, 2], [1, 2]))
        assertError({ if case .wrongMagic(_, 2051, 2049) = $0 { return true }; return false }, { _ = try IDX.readImages(path: p) }, "labels read as images")
        let q = writeRaw("junk", Array("hello world, not idx".utf8))
        assertError({ if case .wrongMagic = $0 { return true }; return false }, { _ = try IDX.readLabels(path: q) }, "text")
    }

    func testNonByteElementType() {
        let p = writeRaw("floats", bytes([0x0000_0D03, 1, 1, 1], [0, 0, 0, 0]))
        assertError({ if case .badHeader = $0 { return $0.description.contains("unsigned byte") }; return false }, { _ = try IDX.readImages(path: p) }, "float IDX")
    }

    func testTruncatedRawAndGzipData() throws {
        let full = bytes([IDX.imageMagic, 2, 2, 3], pixels)
        let p = writeRaw("short", Array(full.dropLast(5)))
        assertError({ if case .truncated(_, 12, 7) = $0 { return true }; return false }, { _ = try IDX.readImages(path: p) }, "raw")
        let q = writeRaw("short.gz", try gzip(Array(full.dropLast(5))))
        assertError({ if case .truncated(_, 12, 7) = $0 { return true }; return false }, { _ = try IDX.readImages(path: q) }, "gzip of a short file")
        let h = writeRaw("header-only", bytes([IDX.imageMagic, 2]))
        assertError({ if case .truncated = $0 { return true }; return false }, { _ = try IDX.readImages(path: h) }, "cut header")
    }

    func testTrailingBytes() {
        let p = writeRaw("long", bytes([IDX.labelMagic, 2], [1, 2, 3]))
        assertError({ if case .trailingBytes(_, 1) = $0 { return true }; return false }, { _ = try IDX.readLabels(path: p) }, "extra byte")
    }

    func testCutGzipStreamAndBadCRC() throws {
        let gz = try gzip(bytes([IDX.imageMagic, 2, 2, 3], pixels))
        let cut = writeRaw("cut.gz", Array(gz.prefix(gz.count - 12)))
        assertError({ if case .corruptGzip = $0 { return true }; if case .truncated = $0 { return true }; return false }, { _ = try IDX.readImages(path: cut) }, "cut gzip")
        var bad = gz
        bad[bad.count - 8] ^= 0xFF  // the CRC32 in the trailer
        let crc = writeRaw("crc.gz", bad)
        assertError({ if case .corruptGzip = $0 { return true }; return false }, { _ = try IDX.readImages(path: crc) }, "bad CRC")
    }

    func testHTMLSavedAsGzip() {
        let p = writeRaw("train-images-idx3-ubyte.gz", Array("<!DOCTYPE html><html><head><title>404 Not Found</title></head></html>".utf8))
        assertError({ if case .notGzip = $0 { return $0.description.contains("HTML") }; return false }, { _ = try IDX.readImages(path: p) }, "HTML")
        let q = writeRaw("unpacked.gz", bytes([IDX.labelMagic, 1], [0]))
        assertError({ if case .notGzip = $0 { return $0.description.contains("unpacked IDX") }; return false }, { _ = try IDX.readLabels(path: q) }, "raw under .gz")
    }

    func testAbsurdDeclaredSizeIsRefusedBeforeAllocating() throws {
        // 100 bytes claiming 60000 x 10000 x 10000 pixels: refused from the header alone.
        let p = writeRaw("huge", bytes([IDX.imageMagic, 60_000, 10_000, 10_000], [UInt8](repeating: 0, count: 84)))
        assertError({ if case .badHeader = $0 { return true }; return false }, { _ = try IDX.readImages(path: p) }, "absurd")
        let q = writeRaw("big", bytes([IDX.imageMagic, 60_000, 28, 28], [UInt8](repeating: 0, count: 84)))
        assertError({ if case .truncated(_, 47_040_000, _) = $0 { return true }; return false }, { _ = try IDX.readImages(path: q) }, "larger than the file")
        let g = writeRaw("big.gz", try gzip(bytes([IDX.imageMagic, 60_000, 28, 28], [UInt8](repeating: 0, count: 84))))
        assertError({ if case .truncated = $0 { return true }; return false }, { _ = try IDX.readImages(path: g) }, "gzip larger than possible")
    }

    func testZeroImages() {
        let p = writeRaw("none", bytes([IDX.imageMagic, 0, 28, 28]))
        assertError({ if case .empty = $0 { return true }; return false }, { _ = try IDX.readImages(path: p) }, "zero images")
        let q = writeRaw("empty", [])
        assertError({ if case .empty = $0 { return true }; return false }, { _ = try IDX.readLabels(path: q) }, "empty file")
    }

    func testMissingFile() {
        assertError({ if case .unreadable = $0 { return $0.description.contains("it does not exist") }; return false }, { _ = try IDX.readLabels(path: self.path("nope")) }, "missing")
    }

    /// A FIFO would block forever, a folder would read as a "damaged gzip": both refused as not
    /// regular files; a link loop and a path through a file are named as such.
    func testNonRegularFilesAndOddPaths() throws {
        let fifo = path("fifo")
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        assertError({ if case .notRegularFile(_, let kind) = $0 { return kind.contains("FIFO") }; return false }, { _ = try IDX.readImages(path: fifo) }, "fifo")
        let folder = path("folder.gz")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        assertError({ if case .notRegularFile(_, let kind) = $0 { return kind == "a folder" }; return false }, { _ = try IDX.readImages(path: folder) }, "folder")
        assertError({ if case .notRegularFile(_, let kind) = $0 { return kind.contains("character device") }; return false }, { _ = try IDX.readImages(path: "/dev/zero") }, "device")
        let loop = path("loop")
        XCTAssertEqual(symlink(loop, loop), 0)
        assertError({ if case .unreadable = $0 { return $0.description.contains("loop of symbolic links") }; return false }, { _ = try IDX.readImages(path: loop) }, "loop")
        let file = writeRaw("afile", [1, 2, 3])
        assertError({ if case .unreadable = $0 { return $0.description.contains("is a file, not a folder") }; return false }, { _ = try IDX.readImages(path: file + "/x") }, "through a file")
    }

    /// Headers are checked before bodies: a small gzip declaring 200,000 images whose label
    /// file declares another count is refused without inflating the images.
    func testCountsAreCrossCheckedBeforeAnyBodyIsInflated() throws {
        let dir = path("bomb")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // 200,000 images of 28x28 zeros: 157 MB inflated, about 150 KB compressed.
        try IDX.writeImages([UInt8](repeating: 0, count: 200_000 * 784), count: 200_000, rows: 28, cols: 28, to: dir + "/train-images-idx3-ubyte.gz", gzip: true)
        try IDX.writeLabels([0, 1, 0, 1], to: dir + "/train-labels-idx1-ubyte", gzip: false)
        try IDX.writeImages([UInt8](repeating: 7, count: 4 * 784), count: 4, rows: 28, cols: 28, to: dir + "/t10k-images-idx3-ubyte", gzip: false)
        try IDX.writeLabels([0, 1, 0, 1], to: dir + "/t10k-labels-idx1-ubyte", gzip: false)
        let started = Date()
        assertError({ if case .countMismatch(_, 200_000, _, 4) = $0 { return true }; return false }, { _ = try Dataset.load(DatasetFiles.locate(in: dir, hint: "")) }, "counts")
        XCTAssertLessThan(Date().timeIntervalSince(started), 0.5, "refused from the headers, without inflating 157 MB")
        // Counts that agree but declare more than memory holds are refused from the headers too.
        try IDX.writeLabels([UInt8](repeating: 1, count: 200_000), to: dir + "/train-labels-idx1-ubyte", gzip: true)
        assertError({ if case .badHeader = $0 { return $0.description.contains("of memory") }; return false }, { _ = try Dataset.load(DatasetFiles.locate(in: dir, hint: ""), memoryLimit: 1 << 27) }, "memory")
    }
}
