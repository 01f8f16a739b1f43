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
            let valid = ["net.safetensors", "net-nobn.safetensors", "f64.safetensors", "spec.safetensors"].contains(f.lastPathComponent)
            XCTAssertEqual(o.hasPrefix("loaded"), valid, "\(f.lastPathComponent): \(o)")
        }
    }

    /// Real checkpoints (0.3's dfn2, 0.4's dfn2 and a spec with BN, ReLU, dropout, LayerNorm
    /// and tanh) resume through the whole restore path.
    func testResumeSeeds() throws {
        let seeds = try files("resume")
        XCTAssertEqual(seeds.count, 3)
        for f in seeds {
            let o = try outcome("resume", f)
            XCTAssertTrue(o.hasPrefix("resumed "), "\(f.lastPathComponent): \(o)")
        }
    }

    /// The structure-aware mutator keeps the framing valid (the header length matches) and
    /// changes the header; over many seeds the mutants reach both refusals and loads, and none
    /// crashes either target.
    func testHeaderMutatorKeepsFramingAndReachesTheChecks() throws {
        let seed = [UInt8](try Data(contentsOf: corpus.appendingPathComponent("resume/spec.safetensors")))
        var outcomes: [String: Int] = [:]
        for s in 0..<300 {
            guard let m = HeaderMutator.mutate(seed, seed: UInt32(s), maxSize: 1 << 20) else { return XCTFail("seed \(s): not mutated") }
            let n = m.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
            XCTAssertLessThanOrEqual(8 + n, m.count)
            XCTAssertNotNil(try? JSONSerialization.jsonObject(with: Data(m[8..<(8 + n)])), "seed \(s): header is JSON")
            for target in ["checkpoint", "resume"] {
                let o = m.withUnsafeBytes { FuzzTargets.run(target, $0) }
                outcomes[String(o.prefix(while: { $0 != " " })), default: 0] += 1
            }
        }
        XCTAssertGreaterThan(outcomes["refused:"] ?? 0, 50, "\(outcomes)")
        XCTAssertGreaterThan((outcomes["loaded"] ?? 0) + (outcomes["resumed"] ?? 0), 50, "\(outcomes)")
    }

    func testCrashRegressions() throws {
        for f in try files("regressions") {
            let target = String(f.lastPathComponent.prefix { $0 != "-" })
            XCTAssertTrue(FuzzTargets.names.contains(target), "name regressions TARGET-...: \(f.lastPathComponent)")
            _ = try outcome(target, f)  // must return, not crash
        }
    }
}
