import BNCore
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
            XCTAssertEqual(images.pixels.count, 12)
            XCTAssertEqual([images.pixels.rows, images.pixels.cols], [2, 6])
            XCTAssertEqual(images.pixels.data[0], -1)
            XCTAssertEqual(images.pixels.data[1], 1)
            XCTAssertEqual(images.pixels.data[2], Float((128.0 / 255 - 0.5) * 2))
            XCTAssertEqual(try IDX.readLabels(path: lp), [3, 9])
            let head = try [UInt8](Data(contentsOf: URL(fileURLWithPath: ip)).prefix(2))
            XCTAssertEqual(head == [0x1f, 0x8b], gz, "gzip=\(gz) writes \(gz ? "gzip" : "raw") data")
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
        assertError({ if case .unreadable = $0 { return $0.description.contains("No such file") }; return false }, { _ = try IDX.readLabels(path: self.path("nope")) }, "missing")
    }
}
