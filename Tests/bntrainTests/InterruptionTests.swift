import BNCheckpoint
import Foundation
import XCTest

/// SIGINT / SIGTERM: the step finishes, the checkpoint is written, exit 130 / 143, and the
/// saved run resumes to exactly the weights of an uninterrupted one.
final class InterruptionTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "bntrain-int-\(UUID().uuidString)"
        try writeTinyDataset(in: dir + "/tiny", train: 2000, test: 100)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    /// Starts bntrain, waits until its stdout shows `epochLine`, sends `signal`, waits.
    func interrupt(_ args: [String], after epochLine: String, with signal: Int32) throws -> (status: Int32, stderr: String) {
        let out = dir + "/run.out", err = dir + "/run.err"
        FileManager.default.createFile(atPath: out, contents: nil)
        FileManager.default.createFile(atPath: err, contents: nil)
        let p = Process()
        p.executableURL = productsDirectory.appendingPathComponent("bntrain")
        p.arguments = args
        p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
        p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: err))
        try p.run()
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, p.isRunning, !((try? String(contentsOfFile: out, encoding: .utf8)) ?? "").contains(epochLine) {
            usleep(2000)
        }
        XCTAssertTrue(p.isRunning, "the run ended before it could be interrupted; make it longer")
        kill(p.processIdentifier, signal)
        p.waitUntilExit()
        return (p.terminationStatus, try String(contentsOfFile: err, encoding: .utf8))
    }

    func testInterruptedRunResumesToTheSameWeights() throws {
        let common = ["--data", dir + "/tiny", "--batch", "16", "--hidden", "64", "--lr", "0.05", "--quiet", "--epochs", "40"]
        let full = try bntrain(common + ["--save", dir + "/full.safetensors"])
        XCTAssertEqual(full.status, 0, full.stderr)

        let r = try interrupt(common + ["--save", dir + "/part.safetensors", "--metrics", dir + "/m.jsonl"], after: "epoch=3 ", with: SIGINT)
        XCTAssertEqual(r.status, 130, r.stderr)
        XCTAssertTrue(r.stderr.contains("interrupted by SIGINT") && r.stderr.contains("checkpoint saved to"), r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, "one line: \(r.stderr)")
        let saved = try Checkpoint.read(path: dir + "/part.safetensors")
        XCTAssertLessThan(Int(saved.metadata["bntrain.epoch"] ?? "") ?? 99, 40)

        let resumed = try bntrain(["--resume", dir + "/part.safetensors", "--epochs", "40", "--save", dir + "/part.safetensors", "--metrics", dir + "/m.jsonl", "--quiet"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        let a = try Checkpoint.read(path: dir + "/full.safetensors"), b = try Checkpoint.read(path: dir + "/part.safetensors")
        for (name, t) in a.tensors { XCTAssertEqual(t.bytes, b.tensors[name]!.bytes, "\(name) differs") }
        let lines = try String(contentsOfFile: dir + "/m.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 40, "one metrics record per epoch, none repeated")
        XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: dir).contains { $0.contains(".tmp-") }, "no temporary files left")
    }

    func testInterruptionDoesNotOverwriteTheBestCheckpoint() throws {
        let path = dir + "/best.safetensors"
        let r = try interrupt(["--data", dir + "/tiny", "--batch", "16", "--hidden", "64", "--epochs", "100000", "--val-split", "0.2",
                               "--save", path, "--save-best", "--quiet"], after: "epoch=2 ", with: SIGINT)
        XCTAssertEqual(r.status, 130, r.stderr)
        XCTAssertTrue(r.stderr.contains("keeps the best epoch"), r.stderr)
        let c = try Checkpoint.read(path: path)
        XCTAssertEqual(c.metadata["bntrain.step"], "0", "a completed best epoch, not the interrupted state")
        XCTAssertEqual(c.metadata["bntrain.epoch"], c.metadata["bntrain.best_val_epoch"])
    }

    func testSIGTERMExits143AndSaysNothingWasSavedWithoutSave() throws {
        let r = try interrupt(["--data", dir + "/tiny", "--batch", "16", "--hidden", "64", "--epochs", "100000", "--quiet"], after: "epoch=1 ", with: SIGTERM)
        XCTAssertEqual(r.status, 143, r.stderr)
        XCTAssertTrue(r.stderr.contains("SIGTERM") && r.stderr.contains("nothing saved"), r.stderr)
    }

    /// SIGQUIT is a termination signal too: saved as for SIGTERM, exit 131, one line, no crash
    /// report (the Swift runtime prints one and lets the run go on unless bntrain handles it).
    func testSIGQUITSavesAndExits131WithoutACrashReport() throws {
        let path = dir + "/quit.safetensors"
        let r = try interrupt(["--data", dir + "/tiny", "--batch", "16", "--hidden", "64", "--epochs", "100000", "--save", path, "--quiet"], after: "epoch=1 ", with: SIGQUIT)
        XCTAssertEqual(r.status, 131, r.stderr)
        XCTAssertTrue(r.stderr.contains("SIGQUIT") && r.stderr.contains("checkpoint saved to"), r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, "one line: \(r.stderr)")
        XCTAssertNoThrow(try Checkpoint.read(path: path))
    }

    /// Divergence leaves the last good checkpoint in place.
    func testDivergenceKeepsTheLastGoodCheckpoint() throws {
        let path = dir + "/good.safetensors"
        XCTAssertEqual(try bntrain(["--data", dir + "/tiny", "--epochs", "1", "--save", path, "--quiet"]).status, 0)
        let good = try Data(contentsOf: URL(fileURLWithPath: path))
        let d = try bntrain(["--data", dir + "/tiny", "--init-from", path, "--epochs", "3", "--lr", "1e38", "--save", path])
        XCTAssertEqual(d.status, 70, d.stderr)
        XCTAssertTrue(d.stderr.contains("epoch 1, step") && d.stderr.contains("smaller --lr"), d.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), good, "the checkpoint from before the divergence is intact")
    }
}
