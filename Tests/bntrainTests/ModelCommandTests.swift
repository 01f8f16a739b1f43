import BNCheckpoint
import BNData
import Foundation
import XCTest

/// The built binary with models from spec strings: --model, --no-batchnorm, summary,
/// checkpoints that carry the spec, and bntrain 0.3's dfn2 checkpoints.
final class ModelCommandTests: XCTestCase {
    var dir: String!
    var data: String { dir + "/tiny" }
    let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures").path

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "bntrain-models-\(UUID().uuidString)"
        try writeTinyDataset(in: data)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    func config(_ r: Run) -> [String: String] { Run.fields(r.stdout.split(separator: "\n").first ?? "") }

    func testPresetsAndSpecsTrainAndAreRecorded() throws {
        for (model, spec, params) in [
            ("bn-paper", "fc100-bn-sigmoid-fc100-bn-sigmoid-fc100-bn-sigmoid-fc", 36 * 100 + 100 + 200 + 2 * (10_100 + 200) + 404),
            ("fc32-ln-tanh-dropout0.25-fc", "fc32-ln-tanh-dropout0.25-fc", 36 * 32 + 32 + 64 + 132),
            ("fc32 relu fc", "fc32-relu-fc", 36 * 32 + 32 + 132),
        ] {
            let r = try bntrain(["--data", data, "--model", model, "--epochs", "3", "--batch", "16", "--lr", "0.1", "--quiet"])
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertEqual(config(r)["spec"], spec)
            XCTAssertEqual(config(r)["parameters"], "\(params)")
            XCTAssertEqual(config(r)["hidden"], nil, "hidden is dfn2's only")
            XCTAssertGreaterThan(Double(r.summary?["final_test_acc"] ?? "0") ?? 0, 0.5, "\(model) learns the tiny task")
        }
        let noBN = try bntrain(["--data", data, "--model", "mlp", "--no-batchnorm", "--epochs", "1", "--quiet"])
        XCTAssertEqual(config(noBN)["spec"], "fc256-relu-dropout0.2-fc256-relu-dropout0.2-fc")
        XCTAssertEqual(config(noBN)["batchnorm"], "off")
    }

    func testBadSpecsAreOneLineUsageErrors() throws {
        assertOneLineError(try bntrain(["--data", data, "--model", "fc64-bx-fc"]), code: 64, mentions: ["--model", "layer 2 'bx'", "unknown layer"])
        assertOneLineError(try bntrain(["--data", data, "--model", "fc64-relu"]), code: 64, mentions: ["must end with 'fc'"])
        assertOneLineError(try bntrain(["--data", data, "--model", "mlp", "--hidden", "30"]), code: 64, mentions: ["--hidden", "dfn2"])
        assertOneLineError(try bntrain(["--data", data, "--model", "fc20-fc7"]), code: 64, mentions: ["fc7", "4 classes"])
        assertOneLineError(try bntrain(["summary", "--model", "fc-fc"]), code: 64, mentions: ["only the last layer"])
    }

    func testSummary() throws {
        let presets = try bntrain(["summary"])
        XCTAssertEqual(presets.status, 0, presets.stderr)
        XCTAssertEqual(presets.stdout.split(separator: "\n").map { Run.fields($0)["name"] ?? "" }, ["dfn2", "bn-paper", "mlp", "lenet-bn", "cnn"])
        let mlp = try bntrain(["summary", "--model", "mlp"])
        let lines = mlp.stdout.split(separator: "\n")
        XCTAssertEqual(lines.count, 10)
        XCTAssertEqual(Run.fields(lines[0])["layer_kind"], "fc")
        XCTAssertEqual(Run.fields(lines[0])["parameters"], "200960")
        XCTAssertTrue(lines.last!.hasPrefix("total "))
        XCTAssertEqual(Run.fields(lines.last!)["parameters"], "270346")
        let tiny = try bntrain(["summary", "--model", "dfn2", "--hidden", "12", "--data", data, "--log-format", "jsonl"])
        let total = try JSONSerialization.jsonObject(with: Data(tiny.stdout.split(separator: "\n").last!.utf8)) as! [String: Any]
        XCTAssertEqual(total["parameters"] as? Int, 36 * 12 + 12 + 24 + 12 * 4 + 4)
        XCTAssertEqual(total["input"] as? String, "6x6")
        XCTAssertEqual(total["classes"] as? Int, 4)
    }

    /// A small CNN on the 6x6 data: trains, saves its input shape, evaluates, predicts, resumes.
    func testConvolutionalModelEndToEnd() throws {
        let path = dir + "/cnn.safetensors"
        let spec = "conv4k3p1-bn-relu-maxpool2-fc16-bn-relu-fc"
        let r = try bntrain(["--data", data, "--model", spec, "--epochs", "3", "--batch", "16", "--optimizer", "adam", "--lr", "0.01", "--save", path, "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertGreaterThan(Double(r.summary?["final_test_acc"] ?? "0") ?? 0, 0.6)
        let c = try Checkpoint.read(path: path)
        XCTAssertEqual(c.metadata[Checkpoint.inputShapeKey], "1x6x6")
        XCTAssertEqual(c.tensors["0.weight"]?.shape, [4, 1, 3, 3])
        XCTAssertEqual(c.tensors["1.running_var"]?.shape, [4], "BatchNorm2D: per channel")
        XCTAssertEqual(c.tensors["4.weight"]?.shape, [16, 36], "the fc takes the flattened 4x3x3")
        let e = try bntrain(["eval", "--model", path, "--data", data])
        XCTAssertEqual(Run.fields(e.stdout.split(separator: "\n")[0])["test_acc"], r.summary?["final_test_acc"], e.stderr)
        let p = try bntrain(["predict", "--model", path, "--images", data + "/t10k-images-idx3-ubyte"])
        XCTAssertEqual(p.stdout.split(separator: "\n").count, 200, p.stderr)
        let more = try bntrain(["--resume", path, "--epochs", "4", "--quiet"])
        XCTAssertEqual(more.status, 0, more.stderr)
        let s = try bntrain(["summary", "--model", spec, "--data", data])
        XCTAssertEqual(Run.fields(s.stdout.split(separator: "\n")[0])["output"], "4x6x6")
        assertOneLineError(try bntrain(["--data", data, "--model", "conv4k7-fc"]), code: 64, mentions: ["does not fit"])
    }

    /// A saved model carries its spec: eval and predict rebuild it; resume refuses another model.
    func testCheckpointsCarryTheSpec() throws {
        let path = dir + "/m.safetensors"
        let args = ["--data", data, "--model", "fc24-bn-relu-dropout0.1-fc16-ln-tanh-fc", "--batch", "16", "--lr", "0.1", "--quiet", "--save", path]
        let r = try bntrain(args + ["--epochs", "2"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let c = try Checkpoint.read(path: path)
        XCTAssertEqual(c.metadata[Checkpoint.modelKey], "fc24-bn-relu-dropout0.1-fc16-ln-tanh-fc")
        XCTAssertEqual(Set(c.tensors.keys), ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked",
                                             "4.weight", "4.bias", "5.weight", "5.bias", "7.weight", "7.bias"])
        let e = try bntrain(["eval", "--model", path, "--data", data])
        XCTAssertEqual(e.status, 0, e.stderr)
        XCTAssertEqual(Run.fields(e.stdout.split(separator: "\n")[0])["test_acc"], r.summary?["final_test_acc"])
        let p = try bntrain(["predict", "--model", path, "--images", data + "/t10k-images-idx3-ubyte"])
        XCTAssertEqual(p.status, 0, p.stderr)
        XCTAssertEqual(p.stdout.split(separator: "\n").count, 200)
        assertOneLineError(try bntrain(["--resume", path, "--epochs", "3", "--model", "mlp"]), code: 64, mentions: ["--model mlp (checkpoint: fc24-"])
        let resumed = try bntrain(["--resume", path, "--epochs", "3", "--quiet"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        // Tensors that do not fit the stored spec: refused, naming the tensor.
        var lying = c
        lying.metadata[Checkpoint.modelKey] = "fc24-bn-relu-dropout0.1-fc17-ln-tanh-fc"
        try lying.write(to: dir + "/lying.safetensors")
        assertOneLineError(try bntrain(["eval", "--model", dir + "/lying.safetensors", "--data", data]), code: 65, mentions: ["'4.weight'", "[16, 24]", "[17, 24]"])
        var extra = c
        extra.tensors["9.weight"] = c.tensors["0.bias"]
        try extra.write(to: dir + "/extra.safetensors")
        assertOneLineError(try bntrain(["--resume", dir + "/extra.safetensors", "--epochs", "3"]), code: 65, mentions: ["'9.weight'", "no place in the model"])
    }

    func noTiming<S: StringProtocol>(_ s: S) -> [String: String] { Run.fields(s).filter { !$0.key.contains("seconds") } }

    /// dfn2 with the same flags and seed gives the records bntrain 0.3 gave (a log it wrote):
    /// epochs and summary identical apart from timing; the config record only gains fields.
    func testDFN2RecordsAreThoseOfRelease03() throws {
        let old = try String(contentsOfFile: fixtures + "/dfn2-v0.3.0-run.txt", encoding: .utf8).split(separator: "\n")
        let r = try bntrain(["--data", "tiny", "--hidden", "8", "--epochs", "3", "--batch", "16", "--lr", "0.1", "--seed", "3", "--val-split", "0.1", "--quiet"], cwd: fixtures)
        XCTAssertEqual(r.status, 0, r.stderr)
        let new = r.stdout.split(separator: "\n")
        XCTAssertEqual(new.count, old.count)
        // Every field 0.3 wrote has its value; later releases only add fields: the epoch's
        // rate (`lr`) and why the run stopped.
        for (a, b) in zip(old.dropFirst(), new.dropFirst()) {
            let (was, now) = (noTiming(a), noTiming(b))
            XCTAssertEqual(now.filter { was[$0.key] != nil }, was)
            XCTAssertTrue(Set(now.keys).subtracting(was.keys).isSubset(of: ["lr", "stopped"]), "\(now.keys)")
        }
        let oldConfig = noTiming(old[0]), newConfig = noTiming(new[0])
        for (k, v) in oldConfig where k != "version" && k != "blas_core" { XCTAssertEqual(newConfig[k], v, k) }
        XCTAssertEqual(Set(newConfig.keys).subtracting(oldConfig.keys), ["model", "spec", "optimizer", "momentum", "nesterov", "weight_decay", "lr_schedule", "warmup_epochs", "early_stop", "clip_grad_norm",
                                                                                  "precision", "gemm", "kernels", "onednn", "conv", "conv_kernels", "elementwise", "workers", "shard_size", "bn_sync", "bn_stats"])
    }

    /// A checkpoint written by bntrain 0.3 (dfn2, tensors fc1/bn/fc2, no spec) evaluates,
    /// initialises and resumes: resumed to epoch 3 it gives the 0.3 release's own epoch-3 record.
    func testCheckpointsFromRelease03StillLoad() throws {
        let old = fixtures + "/dfn2-v0.3.0.safetensors", oldData = fixtures + "/tiny"
        let e = try bntrain(["eval", "--model", old, "--data", oldData])
        XCTAssertEqual(e.status, 0, e.stderr)
        XCTAssertEqual(Run.fields(e.stdout.split(separator: "\n")[0])["spec"], "fc8-sigmoid-bn-fc")
        XCTAssertEqual(Run.fields(e.stdout.split(separator: "\n")[0])["test_loss"], "0.071629")  // as 0.3 evaluated it
        let r = try bntrain(["--resume", old, "--data", oldData, "--epochs", "3", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let expected = try String(contentsOfFile: fixtures + "/dfn2-v0.3.0-run.txt", encoding: .utf8).split(separator: "\n")
        let epoch3 = r.stdout.split(separator: "\n").first { $0.hasPrefix("epoch=3 ") }!
        XCTAssertEqual(noTiming(epoch3).filter { $0.key != "lr" }, noTiming(expected[3]))
        XCTAssertEqual(noTiming(r.stdout.split(separator: "\n").last!).filter { $0.key != "stopped" }, noTiming(expected[4]))
        let i = try bntrain(["--init-from", old, "--data", oldData, "--hidden", "8", "--epochs", "1", "--quiet"])
        XCTAssertEqual(i.status, 0, i.stderr)
    }
}
