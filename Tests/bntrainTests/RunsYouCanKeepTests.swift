import BNData
import BNCheckpoint
import Foundation
import XCTest

/// Logs, metrics files, checkpoints, resume, eval and predict, through the built binary.
final class RunsYouCanKeepTests: XCTestCase {
    var dir: String!
    var data: String { dir + "/tiny" }
    let small = ["--epochs", "4", "--batch", "16", "--lr", "0.1", "--hidden", "12"]

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "bntrain-keep-\(UUID().uuidString)"
        try writeTinyDataset(in: dir + "/tiny")
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    func read(_ name: String) throws -> String { try String(contentsOfFile: dir + "/" + name, encoding: .utf8) }

    static let timing: Set<String> = ["seconds", "test_seconds", "load_seconds", "train_seconds", "seconds_per_epoch"]

    func jsonLines(_ text: String) throws -> [[String: Any]] {
        try text.split(separator: "\n").map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
    }

    func withoutTiming(_ records: [[String: Any]]) -> [NSDictionary] {
        records.map { NSDictionary(dictionary: $0.filter { !Self.timing.contains($0.key) }) }
    }

    func testJSONLinesAndCSVOnStdout() throws {
        let j = try bntrain(["--data", data, "--log-format", "jsonl"] + small)
        XCTAssertEqual(j.status, 0, j.stderr)
        let records = try jsonLines(j.stdout)
        XCTAssertEqual(records.map { $0["kind"] as? String }, ["config", "epoch", "epoch", "epoch", "epoch", "summary"])
        XCTAssertEqual(records[0]["version"] as? String, "0.4.0")
        XCTAssertEqual(records[0]["model"] as? String, "dfn2")
        XCTAssertEqual(records[0]["spec"] as? String, "fc12-sigmoid-bn-fc")
        XCTAssertEqual(records[0]["seed"] as? String, "42")
        XCTAssertTrue(records[1]["loss_change"] is NSNull, "nan becomes null in JSON")
        XCTAssertNotNil(records[2]["test_acc"] as? Double)

        let c = try bntrain(["--data", data, "--log-format", "csv"] + small)
        let lines = c.stdout.split(separator: "\n")
        XCTAssertTrue(lines[0].hasPrefix("# config version="))
        XCTAssertEqual(lines[1], "epoch,train_loss,loss_change,lr,test_loss,test_acc,seconds,test_seconds")
        XCTAssertEqual(lines.filter { $0.first?.isNumber ?? false }.count, 4)
        XCTAssertTrue(lines.last!.hasPrefix("# summary "))
    }

    func testSameSeedGivesIdenticalLogsApartFromTiming() throws {
        let args = ["--data", data, "--log-format", "jsonl", "--val-split", "0.2"] + small
        let a = try jsonLines(try bntrain(args).stdout), b = try jsonLines(try bntrain(args).stdout)
        XCTAssertEqual(withoutTiming(a), withoutTiming(b))
        let c = try jsonLines(try bntrain(args + ["--seed", "7"]).stdout)
        XCTAssertNotEqual(withoutTiming(a), withoutTiming(c))
    }

    func testNoCarriageReturnsWhenRedirected() throws {
        let r = try bntrain(["--data", data] + small)
        XCTAssertFalse(r.stdout.contains("\r") || r.stderr.contains("\r"))
    }

    func testValidationSplitIsReported() throws {
        let r = try bntrain(["--data", data, "--val-split", "0.25"] + small)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("train=300 val=100"), r.stdout)
        XCTAssertNotNil(r.epochLines.first?["val_acc"])
        XCTAssertNotNil(r.summary?["best_val_acc"])
    }

    /// A 4-epoch run, and a 2-epoch run resumed to 4, end with the same weights bit for bit,
    /// the same epoch records, and a metrics file without a repeated header.
    func testResumeIsBitForBitAndMetricsAppend() throws {
        let common = ["--data", data, "--val-split", "0.2", "--quiet"] + small.dropFirst(2)
        let full = try bntrain(common + ["--epochs", "4", "--save", dir + "/full.safetensors", "--metrics", dir + "/full.csv"])
        XCTAssertEqual(full.status, 0, full.stderr)
        let first = try bntrain(common + ["--epochs", "2", "--save", dir + "/part.safetensors", "--metrics", dir + "/part.csv"])
        XCTAssertEqual(first.status, 0, first.stderr)
        // Repeating the run's own flags is allowed (a re-run of the same command line).
        let rest = try bntrain(common + ["--resume", dir + "/part.safetensors", "--epochs", "4", "--save", dir + "/part.safetensors", "--metrics", dir + "/part.csv"])
        XCTAssertEqual(rest.status, 0, rest.stderr)
        XCTAssertTrue(rest.stderr.contains("resuming"), rest.stderr)

        let a = try Checkpoint.read(path: dir + "/full.safetensors"), b = try Checkpoint.read(path: dir + "/part.safetensors")
        XCTAssertEqual(a.tensors.keys.sorted(), b.tensors.keys.sorted())
        for (name, t) in a.tensors { XCTAssertEqual(t.bytes, b.tensors[name]!.bytes, "\(name) differs after resume") }
        XCTAssertEqual(b.metadata["bntrain.epoch"], "4")

        let strip = { (r: Run) in r.epochLines.map { $0.filter { !Self.timing.contains($0.key) } } }
        XCTAssertEqual(strip(full).suffix(2), strip(rest)[...])
        let csvFull = try read("full.csv").split(separator: "\n"), csvPart = try read("part.csv").split(separator: "\n")
        XCTAssertEqual(csvPart.filter { $0.hasPrefix("epoch,") }.count, 1, "one header")
        XCTAssertEqual(csvPart.count, 5)
        let noTime = { (lines: [Substring]) in lines.map { $0.split(separator: ",").dropLast(2).joined(separator: ",") } }
        XCTAssertEqual(noTime(csvFull), noTime(csvPart))
    }

    /// A flag that disagrees with the checkpoint's configuration is refused, not silently
    /// overridden; flags left out come from the checkpoint (the config record shows them).
    func testResumeRefusesConflictingFlags() throws {
        let first = try bntrain(["--data", data, "--quiet", "--init", "he", "--seed", "5", "--no-batchnorm", "--save", dir + "/c.safetensors"] + small.dropFirst(2) + ["--epochs", "1"])
        XCTAssertEqual(first.status, 0, first.stderr)
        let resume = ["--resume", dir + "/c.safetensors", "--epochs", "2", "--quiet"]
        assertOneLineError(try bntrain(resume + ["--lr", "0.5"]), code: 64, mentions: ["--lr 0.5", "checkpoint: 0.1", "--init-from"])
        assertOneLineError(try bntrain(resume + ["--batch=32", "--seed", "6"]), code: 64, mentions: ["--batch 32 (checkpoint: 16)", "--seed 6 (checkpoint: 5)"])
        assertOneLineError(try bntrain(resume + ["--init", "glorot"]), code: 64, mentions: ["--init glorot (checkpoint: he)"])
        let ok = try bntrain(resume + ["--lr", "0.1", "--no-batchnorm"])
        XCTAssertEqual(ok.status, 0, ok.stderr)
        let config = ok.stdout.split(separator: "\n").first.map(String.init) ?? ""
        for field in ["init=he", "seed=5", "batchnorm=off", "batch=16", "hidden=12"] {
            XCTAssertTrue(config.contains(" \(field) ") || config.hasSuffix(" \(field)"), "\(field) in \(config)")
        }
    }

    /// Metrics written after the checkpoint's epoch (a run killed between the two) are dropped on resume.
    func testResumeDropsMetricsPastTheCheckpoint() throws {
        let args = ["--data", data, "--quiet", "--save", dir + "/m.safetensors", "--metrics", dir + "/m.jsonl", "--save-every", "2"] + small.dropFirst(2)
        XCTAssertEqual(try bntrain(args + ["--epochs", "3"]).status, 0)  // checkpoint at 2, metrics to 3
        XCTAssertEqual(try jsonLines(try read("m.jsonl")).count, 3)
        let r = try bntrain(["--resume", dir + "/m.safetensors", "--epochs", "4", "--metrics", dir + "/m.jsonl", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try jsonLines(try read("m.jsonl")).map { $0["epoch"] as? Int }, [1, 2, 3, 4])
    }

    func testSaveBestKeepsTheBestValidationEpoch() throws {
        let r = try bntrain(["--data", data, "--val-split", "0.2", "--save", dir + "/best.safetensors", "--save-best", "--quiet"] + small)
        XCTAssertEqual(r.status, 0, r.stderr)
        let best = Int(r.summary?["best_val_epoch"] ?? "") ?? -1
        XCTAssertEqual(try Checkpoint.read(path: dir + "/best.safetensors").metadata["bntrain.epoch"], "\(best)")
        let bad = try bntrain(["--data", data, "--save", dir + "/x.safetensors", "--save-best"])
        XCTAssertEqual(bad.status, 64)
        XCTAssertTrue(bad.stderr.contains("--val-split"), bad.stderr)
    }

    func testEvalAndPredict() throws {
        let t = try bntrain(["--data", data, "--save", dir + "/m.safetensors", "--quiet"] + small)
        XCTAssertEqual(t.status, 0, t.stderr)
        let e = try bntrain(["eval", "--model", dir + "/m.safetensors", "--data", data])
        XCTAssertEqual(e.status, 0, e.stderr)
        let head = Run.fields(e.stdout.split(separator: "\n")[0])
        XCTAssertEqual(head["test_acc"], t.summary?["final_test_acc"], "eval reproduces the run's test accuracy")
        XCTAssertEqual(e.stdout.split(separator: "\n").filter { $0.hasPrefix("class=") }.count, 4)
        let confusion = e.stdout.split(separator: "\n").filter { $0.hasPrefix("confusion ") }
        XCTAssertEqual(confusion.count, 4)
        let total = confusion.map { Run.fields($0)["predicted"]!.split(separator: ",").compactMap { Int($0) }.reduce(0, +) }.reduce(0, +)
        XCTAssertEqual(total, 200)

        let j = try bntrain(["eval", "--model", dir + "/m.safetensors", "--data", data, "--log-format", "jsonl"])
        let obj = try JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as! [String: Any]
        XCTAssertEqual((obj["confusion"] as? [[Int]])?.count, 4)

        let p = try bntrain(["predict", "--model", dir + "/m.safetensors", "--images", data + "/t10k-images-idx3-ubyte"])
        XCTAssertEqual(p.status, 0, p.stderr)
        let rows = p.stdout.split(separator: "\n").map(Run.fields)
        XCTAssertEqual(rows.count, 200)
        XCTAssertEqual(rows[3]["index"], "3")
        let prob = Double(rows[0]["prob"] ?? "") ?? 0
        XCTAssertTrue(prob > 0.25 && prob <= 1, "\(prob)")
        // Images are class i % 4; most predictions must say so.
        let right = rows.enumerated().filter { Int($0.element["label"] ?? "") == $0.offset % 4 }.count
        XCTAssertGreaterThan(right, 100)

        // CSV: a header, then the same predictions as the text lines.
        let csv = try bntrain(["predict", "--model", dir + "/m.safetensors", "--images", data + "/t10k-images-idx3-ubyte", "--log-format", "csv"])
        XCTAssertEqual(csv.status, 0, csv.stderr)
        let csvLines = csv.stdout.split(separator: "\n").map(String.init)
        XCTAssertEqual(csvLines.first, "index,label,prob")
        XCTAssertEqual(Array(csvLines.dropFirst()), rows.map { "\($0["index"]!),\($0["label"]!),\($0["prob"]!)" })
    }

    func testInitFromAndShuffleNoneAreDeterministicAndUseTheWeights() throws {
        XCTAssertEqual(try bntrain(["--data", data, "--epochs", "1", "--hidden", "12", "--save", dir + "/w.safetensors", "--quiet"]).status, 0)
        let args = ["--data", data, "--init-from", dir + "/w.safetensors", "--shuffle", "none", "--quiet"] + small
        let a = try bntrain(args + ["--seed", "1"]), b = try bntrain(args + ["--seed", "2"])
        XCTAssertEqual(a.status, 0, a.stderr)
        // Same weights and file order: the seed no longer matters.
        XCTAssertEqual(a.epochLines.map { $0["train_loss"] }, b.epochLines.map { $0["train_loss"] })
        let wrong = try bntrain(["--data", data, "--init-from", dir + "/w.safetensors", "--hidden", "30"])
        XCTAssertEqual(wrong.status, 65)
        XCTAssertTrue(wrong.stderr.contains("[12, 36]") && wrong.stderr.contains("[30, 36]"), wrong.stderr)
    }

    func testUnwritableOutputsAreRefusedBeforeTraining() throws {
        let r = try bntrain(["--data", data, "--save", dir + "/no/such/dir/m.safetensors"] + small)
        XCTAssertEqual(r.status, 73)
        XCTAssertTrue(r.stderr.contains("--save") && r.stdout.isEmpty, r.stderr)
        let m = try bntrain(["--data", data, "--metrics", dir + "/m.txt"])
        XCTAssertEqual(m.status, 64)
    }
}

/// Bad checkpoints and odd flags through the binary: one line, the documented exit code.
final class BadInputTests: XCTestCase {
    var dir: String!
    var data: String { dir + "/tiny" }

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "bntrain-bad-\(UUID().uuidString)"
        try writeTinyDataset(in: dir + "/tiny")
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    func testNonFiniteLearningRates() throws {
        for lr in ["nan", "inf", "0"] {
            let r = try bntrain(["--data", data, "--lr", lr])
            XCTAssertEqual(r.status, 64, lr)
            XCTAssertTrue(r.stderr.contains("--lr"), r.stderr)
        }
    }

    func testMissingTruncatedAndIncompatibleCheckpoints() throws {
        assertOneLineError(try bntrain(["--data", data, "--resume", dir + "/none.safetensors"]), code: 66, mentions: ["--resume", "none.safetensors", "does not exist"])
        assertOneLineError(try bntrain(["eval", "--model", dir + "/none.safetensors", "--data", data]), code: 66, mentions: ["--model"])

        XCTAssertEqual(try bntrain(["--data", data, "--epochs", "1", "--hidden", "12", "--save", dir + "/m.safetensors", "--quiet"]).status, 0)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: dir + "/m.safetensors"))
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: dir + "/cut.safetensors"))
        assertOneLineError(try bntrain(["--data", data, "--resume", dir + "/cut.safetensors"]), code: 65, mentions: ["cut.safetensors", "truncated"])
        assertOneLineError(try bntrain(["predict", "--model", dir + "/cut.safetensors", "--images", data + "/t10k-images-idx3-ubyte"]), code: 65, mentions: ["cut.safetensors"])
        try Data("<html>not a model</html>".utf8).write(to: URL(fileURLWithPath: dir + "/html.safetensors"))
        assertOneLineError(try bntrain(["eval", "--model", dir + "/html.safetensors", "--data", data]), code: 65, mentions: ["html.safetensors"])

        // A model for 36-pixel images given 784-pixel ones.
        try IDX.writeImages([UInt8](repeating: 0, count: 2 * 28 * 28), count: 2, rows: 28, cols: 28, to: dir + "/big.idx", gzip: false)
        assertOneLineError(try bntrain(["predict", "--model", dir + "/m.safetensors", "--images", dir + "/big.idx"]), code: 65, mentions: ["expects 36 pixels", "784"])
        // Weights-only files (no training state) cannot be resumed.
        assertOneLineError(try bntrain(["--resume", dir + "/m.safetensors", "--epochs", "1"]), code: 64, mentions: ["already trained 1 epochs"])
    }

    func testResumeNeedsMoreEpochs() throws {
        XCTAssertEqual(try bntrain(["--data", data, "--epochs", "2", "--save", dir + "/m.safetensors", "--quiet"]).status, 0)
        assertOneLineError(try bntrain(["--resume", dir + "/m.safetensors", "--epochs", "2"]), code: 64, mentions: ["--epochs greater than 2"])
    }
}
