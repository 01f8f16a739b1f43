import BNCheckpoint
import Foundation
import XCTest

/// `--workers`: the same records and checkpoints for 1, 2 and 3 workers on every preset, with
/// validation, step-wise evaluation and a partial last batch; resume across worker counts; and
/// the flags' refusals.
final class WorkersCommandTests: XCTestCase {
    var dir: String!
    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "bntrain-workers-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    /// stdout without timings, the config record's `workers` and the checkpoint's path.
    func stable(_ r: Run) -> [String] {
        r.stdout.split(separator: "\n").map { line in
            line.split(separator: " ").filter { token in
                let key = token.split(separator: "=", maxSplits: 1).first ?? ""
                return !key.contains("seconds") && key != "workers" && key != "saved"
            }.joined(separator: " ")
        }
    }

    func tensors(_ path: String) throws -> [String: [UInt8]] {
        let c = try Checkpoint.read(path: path)
        return c.tensors.mapValues { Array($0.bytes) }
    }

    func testEveryPresetGivesTheSameBitsOnOneTwoAndThreeWorkers() throws {
        try writeTinyDataset(in: dir + "/tiny28", train: 300, test: 100, side: 28)
        // 240 training images after the 0.2 split; batch 70: shards 32 + 32 + 6, and a last
        // batch of 30 (one shard, the unsharded step).
        let cases: [(model: String, optimizer: [String])] = [
            ("dfn2", ["--optimizer", "sgd", "--lr", "0.1"]),
            ("bn-paper", ["--optimizer", "sgd", "--momentum", "0.9", "--nesterov", "--lr", "0.05"]),
            ("mlp", ["--optimizer", "adam", "--lr", "1e-3", "--clip-grad-norm", "1"]),
            ("mlp", ["--optimizer", "rmsprop", "--lr", "1e-3", "--bn-sync", "off"]),
            ("lenet-bn", ["--optimizer", "adamw", "--lr", "1e-3", "--weight-decay", "0.01"]),
            ("cnn", ["--optimizer", "adam", "--lr", "1e-3"]),
        ]
        for (i, c) in cases.enumerated() {
            let epochs = c.model == "cnn" || c.model == "lenet-bn" ? "1" : "2"
            let args = ["--data", dir + "/tiny28", "--model", c.model, "--train-limit", "300", "--val-split", "0.2", "--batch", "70",
                        "--epochs", epochs, "--eval-every", "3", "--seed", "\(i + 1)"] + c.optimizer
            var first: (out: [String], tensors: [String: [UInt8]])?
            for w in ["1", "2", "3"] {
                let save = dir + "/\(i)-\(w).safetensors"
                let r = try bntrain(args + ["--workers", w, "--save", save])
                XCTAssertEqual(r.status, 0, "\(c.model) workers \(w): \(r.stderr)")
                let here = (stable(r), try tensors(save))
                if let first {
                    XCTAssertEqual(first.out, here.0, "\(c.model) \(c.optimizer): workers \(w) printed other numbers")
                    XCTAssertTrue(first.tensors == here.1, "\(c.model) \(c.optimizer): workers \(w) saved other tensors")
                } else {
                    first = here
                    XCTAssertTrue(r.stdout.contains("eval step=3"), r.stdout)
                }
            }
        }
    }

    /// Two epochs on 1 worker equal one epoch on 2 workers resumed for the second on 3.
    func testResumeOnAnotherWorkerCount() throws {
        try writeTinyDataset(in: dir + "/tiny")
        let args = ["--data", dir + "/tiny", "--model", "fc12-bn-relu-dropout0.2-fc", "--batch", "100", "--shard-size", "16", "--lr", "0.1", "--seed", "4"]
        let whole = try bntrain(args + ["--epochs", "2", "--workers", "1", "--save", dir + "/whole.safetensors"])
        XCTAssertEqual(whole.status, 0, whole.stderr)
        let part = try bntrain(args + ["--epochs", "1", "--workers", "2", "--save", dir + "/part.safetensors"])
        XCTAssertEqual(part.status, 0, part.stderr)
        let rest = try bntrain(["--resume", dir + "/part.safetensors", "--epochs", "2", "--workers", "3", "--save", dir + "/part.safetensors"])
        XCTAssertEqual(rest.status, 0, rest.stderr)
        XCTAssertEqual(whole.summary?["final_test_loss"], rest.summary?["final_test_loss"])
        XCTAssertTrue(try tensors(dir + "/whole.safetensors") == tensors(dir + "/part.safetensors"), "resumed on 3 workers, the weights differ")
        // The shard size defines the arithmetic: a resumed run keeps the checkpoint's.
        assertOneLineError(try bntrain(["--resume", dir + "/part.safetensors", "--epochs", "3", "--shard-size", "8"]), code: 64, mentions: ["--shard-size 8", "checkpoint: 16"])
    }

    func testBadWorkerFlagsFailWithOneLine() throws {
        for bad in ["0", "1025", "two", "-3", ""] {
            assertOneLineError(try bntrain(["--workers", bad, "--epochs", "1"]), code: 64, mentions: ["--workers"])
        }
        for bad in ["0", "65537"] {
            assertOneLineError(try bntrain(["--shard-size", bad, "--epochs", "1"]), code: 64, mentions: ["--shard-size"])
        }
        assertOneLineError(try bntrain(["--bn-sync", "maybe"]), code: 64, mentions: ["--bn-sync"])
        assertOneLineError(try bntrain(["--workers", "2", "--threads", "2"]), code: 64, mentions: ["--threads", "--workers"])
    }

    func testMoreWorkersThanShardsIsANote() throws {
        try writeTinyDataset(in: dir + "/tiny")
        let r = try bntrain(["--data", dir + "/tiny", "--epochs", "1", "--batch", "40", "--workers", "4"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("note: --workers 4 but a batch of 40 has 2 shards"), r.stderr)
        XCTAssertTrue(r.stdout.contains("workers=4"), r.stdout)
    }

    /// A diverging sharded run fails as a single worker does: the same line, exit 70, and the
    /// last checkpoint written before it still loads.
    func testDivergenceOnWorkersIsTheSingleWorkerFailure() throws {
        try writeTinyDataset(in: dir + "/tiny")
        let args = ["--data", dir + "/tiny", "--epochs", "3", "--batch", "100", "--lr", "1e38"]
        let one = try bntrain(args + ["--workers", "1"]), two = try bntrain(args + ["--workers", "2"])
        XCTAssertEqual(one.status, 70, one.stderr)
        XCTAssertEqual(two.status, 70, two.stderr)
        XCTAssertEqual(one.stderr, two.stderr)
        XCTAssertTrue(two.stderr.contains("smaller --lr"), two.stderr)
    }
}
