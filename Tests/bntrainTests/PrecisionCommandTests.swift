import BNCheckpoint
import BNCore
import Foundation
import XCTest

/// --precision and --gemm through the built binary: records, resume, refusals.
final class PrecisionCommandTests: XCTestCase {
    var dir: String!
    var data: String { dir + "/tiny" }
    let small = ["--batch", "16", "--hidden", "12", "--quiet", "--seed", "5"]

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "bntrain-prec-\(UUID().uuidString)"
        try writeTinyDataset(in: data)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    func weights(_ path: String) throws -> [String: [UInt8]] {
        try Checkpoint.read(path: path).tensors.filter { !$0.key.hasPrefix("optimizer.") }.mapValues(\.bytes)
    }

    /// Each library alone and auto train; the config record names the kernels. float32 runs of
    /// the two libraries agree closely but need not be identical (different summation order).
    func testGEMMLibrariesAreRecorded() throws {
        var libraries = ["openblas"]
        if OneDNN.shared != nil { libraries += ["onednn", "auto"] }
        for lib in libraries {
            let r = try bntrain(["--data", data, "--epochs", "1", "--gemm", lib] + small)
            XCTAssertEqual(r.status, 0, r.stderr)
            let config = Run.fields(r.stdout.split(separator: "\n")[0])
            XCTAssertEqual(config["gemm"], lib)
            XCTAssertEqual(config["precision"], "fp32")
            XCTAssertEqual(config["kernels"], lib == "auto" ? "onednn-from-\(MatMul.oneDNNThreshold)+openblas" : lib)
        }
        if OneDNN.shared == nil {
            assertOneLineError(try bntrain(["--data", data, "--gemm", "onednn"]), code: 64, mentions: ["--gemm onednn", "libdnnl-dev"])
        }
    }

    /// bf16 trains, differs from fp32 at the same seed, resumes bit for bit within bf16, and
    /// a resume cannot switch precision. Without bf16 hardware it is refused with exit 64.
    /// Width 4096 so that the first layer's products (16 x 4096 x 36 multiply-adds) are large
    /// enough to run in bf16.
    func testBF16RunsResumesAndIsRefusedWhereUnsupported() throws {
        let small = ["--batch", "16", "--hidden", "4096", "--quiet", "--seed", "5"]
        guard let dnnl = OneDNN.shared, dnnl.hasBF16 else {
            let r = try bntrain(["--data", data, "--precision", "bf16"] + small)
            assertOneLineError(r, code: 64, mentions: ["--precision bf16"])
            throw XCTSkip("no oneDNN or no bf16 instructions here; checked that --precision bf16 is refused")
        }
        let (full, part, fp32) = (dir + "/full.safetensors", dir + "/part.safetensors", dir + "/fp32.safetensors")
        let r = try bntrain(["--data", data, "--epochs", "3", "--precision", "bf16", "--save", full] + small)
        XCTAssertEqual(r.status, 0, r.stderr)
        let config = Run.fields(r.stdout.split(separator: "\n")[0])
        XCTAssertEqual(config["precision"], "bf16")
        XCTAssertEqual(config["kernels"], "onednn-bf16-from-\(MatMul.oneDNNThreshold)+openblas")
        XCTAssertEqual(try bntrain(["--data", data, "--epochs", "3", "--save", fp32] + small).status, 0)
        XCTAssertTrue(try weights(full) != weights(fp32), "bf16 and fp32 runs of one seed differ")
        // 2 epochs, then resume to 3: the same weights as 3 straight.
        XCTAssertEqual(try bntrain(["--data", data, "--epochs", "2", "--precision", "bf16", "--save", part] + small).status, 0)
        assertOneLineError(try bntrain(["--resume", part, "--epochs", "3", "--precision", "fp32"]), code: 64, mentions: ["--precision fp32 (checkpoint: bf16)"])
        let resumed = try bntrain(["--resume", part, "--epochs", "3", "--save", part, "--quiet"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertTrue(try weights(part) == weights(full), "resume is bit for bit within bf16")
    }
}
