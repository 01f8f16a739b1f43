import BNCheckpoint
import Foundation
import XCTest

/// Optimizer, schedule and stopping flags through the built binary.
final class OptimizerCommandTests: XCTestCase {
    var dir: String!
    var data: String { dir + "/tiny" }
    let small = ["--batch", "16", "--hidden", "12", "--quiet"]

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "bntrain-opt-\(UUID().uuidString)"
        try writeTinyDataset(in: data)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    func testFlagsThatDoNotApplyAreRefused() throws {
        assertOneLineError(try bntrain(["--data", data, "--optimizer", "adam", "--momentum", "0.9"]), code: 64, mentions: ["--momentum applies to --optimizer sgd and rmsprop"])
        assertOneLineError(try bntrain(["--data", data, "--nesterov"]), code: 64, mentions: ["--nesterov needs --optimizer sgd with --momentum"])
        assertOneLineError(try bntrain(["--data", data, "--beta1", "0.8"]), code: 64, mentions: ["--beta1 applies to --optimizer adam and adamw"])
        assertOneLineError(try bntrain(["--data", data, "--lr-schedule", "plateau"]), code: 64, mentions: ["--lr-schedule", "--val-split"])
        assertOneLineError(try bntrain(["--data", data, "--early-stop", "3"]), code: 64, mentions: ["--early-stop", "--val-split"])
        assertOneLineError(try bntrain(["--data", data, "--optimizer", "lion"]), code: 64, mentions: ["--optimizer"])
        assertOneLineError(try bntrain(["--data", data, "--weight-decay=-1"]), code: 64, mentions: ["--weight-decay"])
    }

    /// Records carry the rate and the settings; resume refuses optimizer flags that disagree.
    func testRecordsAndResumeConflicts() throws {
        let path = dir + "/a.safetensors"
        let r = try bntrain(["--data", data, "--epochs", "2", "--optimizer", "adamw", "--lr", "0.003", "--weight-decay", "0.01", "--lr-schedule", "step", "--lr-step-epochs", "1", "--lr-gamma", "0.5", "--save", path] + small)
        XCTAssertEqual(r.status, 0, r.stderr)
        let config = Run.fields(r.stdout.split(separator: "\n")[0])
        XCTAssertEqual(config["optimizer"], "adamw")
        XCTAssertEqual(config["beta2"], "0.999")
        XCTAssertEqual(config["lr_gamma"], "0.5")
        XCTAssertEqual(config["momentum"], nil, "only the settings that apply")
        XCTAssertEqual(r.epochLines.map { $0["lr"] }, ["0.003", "0.0015"])
        XCTAssertEqual(r.summary?["stopped"], "completed")
        XCTAssertNotNil(try Checkpoint.read(path: path).tensors["optimizer.0.weight.exp_avg_sq"])
        assertOneLineError(try bntrain(["--resume", path, "--epochs", "3", "--optimizer", "adam"]), code: 64, mentions: ["--optimizer adam (checkpoint: adamw)"])
        assertOneLineError(try bntrain(["--resume", path, "--epochs", "3", "--lr-gamma", "0.1"]), code: 64, mentions: ["--lr-gamma 0.1 (checkpoint: 0.5)"])
        let resumed = try bntrain(["--resume", path, "--epochs", "3", "--quiet"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertEqual(resumed.epochLines.map { $0["lr"] }, ["0.00075"])
    }

    /// Early stopping ends the run, says why, and --save-best keeps the monitor's best epoch.
    func testEarlyStoppingAndSaveBest() throws {
        let path = dir + "/best.safetensors"
        // min-delta 10: nothing after epoch 1 counts as an improvement.
        let r = try bntrain(["--data", data, "--epochs", "10", "--val-split", "0.2", "--early-stop", "2", "--min-delta", "10", "--save", path, "--save-best"] + small)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.epochLines.count, 3)
        XCTAssertEqual(r.summary?["stopped"], "early_stop")
        XCTAssertEqual(r.summary?["epochs"], "3")
        XCTAssertEqual(r.summary?["monitor"], "val_loss")
        XCTAssertEqual(r.summary?["monitor_best_epoch"], "1")
        XCTAssertEqual(try Checkpoint.read(path: path).metadata["bntrain.epoch"], "1", "the checkpoint holds the best epoch")
    }
}

/// `bntrain gradcheck` through the binary.
final class GradcheckCommandTests: XCTestCase {
    func testEveryPresetPasses() throws {
        for model in ["dfn2", "bn-paper", "mlp", "lenet-bn"] {
            let r = try bntrain(["gradcheck", "--model", model] + (model == "lenet-bn" ? ["--batch", "4", "--samples", "30"] : []))
            XCTAssertEqual(r.status, 0, "\(model): \(r.stderr)")
            let lines = r.stdout.split(separator: "\n")
            let summary = Run.fields(lines.last!)
            XCTAssertEqual(summary["verdict"], "pass", model)
            XCTAssertTrue(lines.dropLast().allSatisfy { Run.fields($0)["ok"] == "yes" }, model)
            // Every layer with tensors reports its input and each parameter.
            XCTAssertTrue(lines.contains { Run.fields($0)["layer_kind"] == "fc" && Run.fields($0)["tensor"] == "weight" })
            XCTAssertTrue(lines.contains { Run.fields($0)["tensor"] == "staged-vs-simplified" }, model)
            if model == "lenet-bn" { XCTAssertTrue(lines.contains { Run.fields($0)["layer_kind"] == "conv" && Run.fields($0)["tensor"] == "weight" }) }
        }
    }

    func testDataJSONLinesAndDropout() throws {
        let dir = NSTemporaryDirectory() + "bntrain-gc-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeTinyDataset(in: dir)
        let r = try bntrain(["gradcheck", "--model", "fc16-ln-tanh-dropout0.3-fc", "--batch", "6", "--data", dir, "--log-format", "jsonl", "--full"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let records = try r.stdout.split(separator: "\n").map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        XCTAssertEqual(records.last?["verdict"] as? String, "pass")
        XCTAssertEqual(records.last?["batch"] as? Int, 6)
        let tensors = Set(records.compactMap { $0["tensor"] as? String })
        XCTAssertTrue(tensors.isSuperset(of: ["input", "weight", "bias", "eval-identity", "train-scaling", "logits"]), "\(tensors)")
        let full = try XCTUnwrap(records.first { ($0["layer_kind"] as? String) == "fc" && ($0["tensor"] as? String) == "weight" })
        XCTAssertEqual(full["checked"] as? Int, full["of"] as? Int, "--full checks every entry")
        assertOneLineError(try bntrain(["gradcheck", "--batch", "1"]), code: 64, mentions: ["--batch"])
    }

    /// A check that cannot fit in memory, or would run for hours, is refused before it starts;
    /// one that runs says first what it will take.
    func testMemoryAndTimeAreBoundedUpFront() throws {
        assertOneLineError(try bntrain(["gradcheck", "--model", "fc1048576-fc"]), code: 64, mentions: ["fc1048576-fc", "--batch", "Double"])
        assertOneLineError(try bntrain(["gradcheck", "--model", "conv65536k64p64-conv65536k64p64-fc"]), code: 64, mentions: ["conv65536k64p64", "half of this machine"])
        assertOneLineError(try bntrain(["gradcheck", "--model", "cnn", "--full"]), code: 64, mentions: ["--max-seconds", "--full", "differences"])
        assertOneLineError(try bntrain(["gradcheck", "--model", "dfn2", "--max-seconds", "1e-9"]), code: 64, mentions: ["--max-seconds", "--samples"])
        for bad in ["0", "-1", "nan", "inf"] {
            assertOneLineError(try bntrain(["gradcheck", "--max-seconds", bad]), code: 64, mentions: ["--max-seconds"])
        }
        let r = try bntrain(["gradcheck", "--model", "fc8-relu-fc"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("differences, about"), r.stderr)
    }
}
