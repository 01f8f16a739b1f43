import BNFuzzTargets
import Foundation
import XCTest

/// Replays the fuzzers' seed corpus and every input that once crashed them
/// (Corpus/regressions/TARGET-*) through the same code the fuzzers drive. A crash fails the
/// whole test run; the seeds' outcomes are checked too, so a reader that starts accepting
/// broken files (or refusing valid ones) is caught.
final class FuzzCorpusTests: XCTestCase {
    let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Corpus")

    func outcome(_ target: String, _ file: URL) throws -> String {
        let bytes = try Data(contentsOf: file)
        return bytes.withUnsafeBytes { FuzzTargets.run(target, $0) }
    }

    func files(_ folder: String) throws -> [URL] {
        try FileManager.default.contentsOfDirectory(at: corpus.appendingPathComponent(folder), includingPropertiesForKeys: nil)
            .filter { !$0.lastPathComponent.hasPrefix(".") && $0.lastPathComponent != "README" }.sorted { $0.path < $1.path }
    }

    func testIDXSeeds() throws {
        let seeds = try files("idx")
        XCTAssertGreaterThan(seeds.count, 10)
        for f in seeds {
            let o = try outcome("idx", f)
            switch f.lastPathComponent {
            case "images.idx", "images.gz": XCTAssertTrue(o.hasPrefix("images 3x2x2"), "\(f.lastPathComponent): \(o)")
            case "labels.idx", "labels.gz": XCTAssertTrue(o.hasSuffix("labels 3"), "\(f.lastPathComponent): \(o)")
            default: XCTAssertFalse(o.hasPrefix("images ") || o.hasSuffix("labels 3"), "\(f.lastPathComponent) was accepted: \(o)")
            }
        }
    }

    func testCheckpointSeeds() throws {
        for f in try files("checkpoint") {
            let o = try outcome("checkpoint", f)
            let valid = ["net.safetensors", "net-nobn.safetensors", "f64.safetensors"].contains(f.lastPathComponent)
            XCTAssertEqual(o.hasPrefix("loaded"), valid, "\(f.lastPathComponent): \(o)")
        }
    }

    func testCrashRegressions() throws {
        for f in try files("regressions") {
            let target = String(f.lastPathComponent.prefix { $0 != "-" })
            XCTAssertTrue(FuzzTargets.names.contains(target), "name regressions TARGET-...: \(f.lastPathComponent)")
            _ = try outcome(target, f)  // must return, not crash
        }
    }
}
