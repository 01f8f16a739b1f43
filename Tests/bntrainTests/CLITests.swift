import BNCore
import BNData
import Foundation
import XCTest

/// Runs the built `bntrain` binary. Output goes to files, not pipes, so a chatty child can
/// never fill a pipe buffer and deadlock `waitUntilExit()`.
struct Run {
    let status: Int32
    let stdout: String
    let stderr: String

    var epochLines: [[String: String]] {
        stdout.split(separator: "\n").filter { $0.hasPrefix("epoch=") }.map(Run.fields)
    }
    var summary: [String: String]? {
        stdout.split(separator: "\n").first { $0.hasPrefix("summary ") }.map(Run.fields)
    }

    static func fields<S: StringProtocol>(_ line: S) -> [String: String] {
        var out: [String: String] = [:]
        for token in line.split(separator: " ") where token.contains("=") {
            let parts = token.split(separator: "=", maxSplits: 1)
            out[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
        }
        return out
    }
}

var productsDirectory: URL {
    #if os(macOS)
        for bundle in Bundle.allBundles where bundle.bundlePath.hasSuffix(".xctest") {
            return bundle.bundleURL.deletingLastPathComponent()
        }
    #endif
    return Bundle.main.bundleURL
}

/// A refused run: exit `code`, exactly one stderr line starting 'bntrain: error: ' that
/// contains each of `mentions`.
func assertOneLineError(_ r: Run, code: Int32, mentions: [String], file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(r.status, code, r.stderr, file: file, line: line)
    let lines = r.stderr.split(separator: "\n")
    XCTAssertEqual(lines.count, 1, "one line: \(r.stderr)", file: file, line: line)
    XCTAssertTrue(lines.first?.hasPrefix("bntrain: error: ") ?? false, r.stderr, file: file, line: line)
    for m in mentions { XCTAssertTrue(r.stderr.contains(m), "'\(m)' missing from: \(r.stderr)", file: file, line: line) }
}

func bntrain(_ args: [String], cwd: String? = nil, env: [String: String] = [:]) throws -> Run {
    try runProgram(productsDirectory.appendingPathComponent("bntrain").path, args, cwd: cwd, env: env)
}

/// Runs any program with its output in files (see `bntrain`).
func runProgram(_ executable: String, _ args: [String], cwd: String? = nil, env: [String: String] = [:]) throws -> Run {
    let tmp = NSTemporaryDirectory() + "bntrain-run-\(UUID().uuidString)"
    FileManager.default.createFile(atPath: tmp + ".out", contents: nil)
    FileManager.default.createFile(atPath: tmp + ".err", contents: nil)
    defer {
        try? FileManager.default.removeItem(atPath: tmp + ".out")
        try? FileManager.default.removeItem(atPath: tmp + ".err")
    }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = args
    if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
    p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 }
    p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: tmp + ".out"))
    p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: tmp + ".err"))
    try p.run()
    p.waitUntilExit()
    return Run(
        status: p.terminationStatus,
        stdout: try String(contentsOfFile: tmp + ".out", encoding: .utf8),
        stderr: try String(contentsOfFile: tmp + ".err", encoding: .utf8))
}

/// A tiny learnable dataset: class k images are bright in row k (plus noise), 4 classes of
/// side x side (6x6 unless asked; 28 fits the convolutional presets).
func writeTinyDataset(in dir: String, train: Int = 400, test: Int = 200, seed: UInt64 = 1, side: Int = 6) throws {
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    var state = seed
    func noise() -> Int {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Int(state >> 58)  // 0..<64
    }
    func make(_ n: Int) -> ([UInt8], [UInt8]) {
        var px: [UInt8] = [], labels: [UInt8] = []
        for i in 0..<n {
            let k = i % 4
            labels.append(UInt8(k))
            for r in 0..<side { for _ in 0..<side { px.append(UInt8(min(255, (r == k + 1 ? 150 : 20) + noise()))) } }
        }
        return (px, labels)
    }
    let (trp, trl) = make(train), (tep, tel) = make(test)
    try IDX.writeImages(trp, count: train, rows: side, cols: side, to: dir + "/train-images-idx3-ubyte.gz", gzip: true)
    try IDX.writeLabels(trl, to: dir + "/train-labels-idx1-ubyte.gz", gzip: true)
    try IDX.writeImages(tep, count: test, rows: side, cols: side, to: dir + "/t10k-images-idx3-ubyte", gzip: false)
    try IDX.writeLabels(tel, to: dir + "/t10k-labels-idx1-ubyte", gzip: false)
}

final class CLITests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "bntrain-cli-\(UUID().uuidString)"
        try writeTinyDataset(in: dir + "/tiny")
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    func testHelpDocumentsEveryFlag() throws {
        let r = try bntrain(["--help"])
        XCTAssertEqual(r.status, 0)
        for flag in ["--data", "--epochs", "--batch", "--lr", "--hidden", "--train-limit", "--seed", "--bn-momentum",
                     "--bn-eps", "--no-batchnorm", "--init", "--threads", "--bn-running-var", "exit codes"] {
            XCTAssertTrue(r.stdout.contains(flag), "--help lacks \(flag)")
        }
    }

    /// `train` is the default subcommand: `bntrain FLAGS` and `bntrain train FLAGS` are one
    /// run; `bntrain --help` is training's help and names the commands; `bntrain help CMD`
    /// is that command's help; a usage error points at the command's own help.
    func testTrainIsTheDefaultSubcommand() throws {
        let flags = ["--data", dir + "/tiny", "--epochs", "1", "--seed", "3", "--quiet"]
        let stable = { (out: String) in out.split(separator: "\n").filter { !$0.hasPrefix("config") }.map { $0.split(separator: " ").filter { !$0.contains("seconds") }.joined(separator: " ") } }
        let plain = try bntrain(flags), named = try bntrain(["train"] + flags)
        XCTAssertEqual(plain.status, 0)
        XCTAssertEqual(named.status, 0)
        XCTAssertEqual(stable(named.stdout), stable(plain.stdout))
        XCTAssertTrue(stable(plain.stdout).last?.hasPrefix("summary") ?? false)
        let help = try bntrain(["--help"])
        XCTAssertTrue(help.stdout.contains("--epochs"))
        for command in ["summary", "gradcheck", "eval", "predict"] { XCTAssertTrue(help.stdout.contains("bntrain \(command)"), command) }
        XCTAssertEqual(try bntrain(["train", "--help"]).stdout, help.stdout)
        let evalHelp = try bntrain(["help", "eval"])
        XCTAssertEqual(evalHelp.status, 0)
        XCTAssertTrue(evalHelp.stdout.contains("USAGE: bntrain eval --model <file>"), evalHelp.stdout)
        assertOneLineError(try bntrain(["summary", "--bogus"]), code: 64, mentions: ["--bogus", "bntrain summary --help"])
        XCTAssertTrue(try bntrain(["--version"]).stdout.hasPrefix("0."))
    }

    /// --model's help names every preset and every layer kind, from the same lists the
    /// parser uses; the overview does not call every model an MLP.
    func testModelHelpNamesEveryPresetAndLayerKind() throws {
        let flat = try bntrain(["--help"]).stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        for preset in ModelSpec.presets { XCTAssertTrue(flat.contains(preset.name), "--help lacks the preset \(preset.name)") }
        for kind in ["fcN", "sigmoid", "tanh", "relu", "bn", "ln", "dropoutP", "convNkK", "maxpoolK", "avgpoolK", "gap"] {
            XCTAssertTrue(flat.contains(kind), "--help lacks the layer \(kind)")
        }
        XCTAssertFalse(flat.contains("MLP"), "the overview says every model is an MLP")
    }

    func testUsageErrorsExit64WithOneLineNamingTheFlag() throws {
        for (args, flag) in [(["--batch", "0"], "--batch"), (["--lr=-1"], "--lr"), (["--bn-momentum", "1"], "--bn-momentum"),
                             (["--epochs", "0"], "--epochs"), (["--init", "uniform"], "--init"), (["--bogus"], "--bogus")] {
            let r = try bntrain(["--data", dir + "/tiny"] + args)
            assertOneLineError(r, code: 64, mentions: [flag, "--help"])
            XCTAssertEqual(r.stdout, "", "nothing on stdout for \(args)")
        }
        assertOneLineError(try bntrain(["eval"]), code: 64, mentions: ["--model", "bntrain eval --help"])
        assertOneLineError(try bntrain(["--data", dir + "/tiny/train-images-idx3-ubyte.gz"]), code: 64, mentions: ["is a file", "--data " + dir + "/tiny"])
        let big = try bntrain(["--data", dir + "/tiny", "--train-limit", "401"])
        XCTAssertEqual(big.status, 64)
        XCTAssertTrue(big.stderr.contains("--train-limit 401 is larger than the 400"), big.stderr)
        let batch = try bntrain(["--data", dir + "/tiny", "--batch", "500"])
        XCTAssertEqual(batch.status, 64)
    }

    func testShortRunOnTinyDataBeatsChance() throws {
        let r = try bntrain(["--data", dir + "/tiny", "--epochs", "5", "--batch", "16", "--lr", "0.1", "--hidden", "16"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let lines = r.stdout.split(separator: "\n")
        XCTAssertTrue(lines.first?.hasPrefix("config version=") ?? false)
        XCTAssertEqual(r.epochLines.count, 5)
        for (i, e) in r.epochLines.enumerated() {
            XCTAssertEqual(e["epoch"], "\(i + 1)")
            for key in ["train_loss", "loss_change", "test_loss", "test_acc", "seconds", "test_seconds"] { XCTAssertNotNil(e[key], key) }
        }
        let acc = Double(r.summary?["final_test_acc"] ?? "") ?? 0
        XCTAssertGreaterThan(acc, 0.5, "4 classes: chance is 0.25")
        XCTAssertTrue(r.stdout.contains("classes=4") && r.stdout.contains("image=6x6"))
    }

    func testSameSeedSameResults() throws {
        let args = ["--data", dir + "/tiny", "--epochs", "2", "--batch", "32", "--hidden", "8", "--train-limit", "300"]
        let a = try bntrain(args), b = try bntrain(args), c = try bntrain(args + ["--seed", "5"])
        let strip = { (r: Run) in r.epochLines.map { $0.filter { !$0.key.hasSuffix("seconds") } } }
        XCTAssertEqual(strip(a), strip(b))
        XCTAssertNotEqual(strip(a), strip(c))
    }

    func testMissingDataNamesTheFetchCommand() throws {
        let empty = dir + "/empty"
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        let r = try bntrain([], cwd: empty)
        XCTAssertEqual(r.status, 66)
        XCTAssertTrue(r.stderr.contains("Scripts/data fashion-mnist"), r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, "one line: \(r.stderr)")
        let named = try bntrain(["--data", dir + "/nowhere"])
        XCTAssertEqual(named.status, 66)
        XCTAssertTrue(named.stderr.contains("/nowhere"), named.stderr)
    }

    func testBadDataFileExits65() throws {
        try "<html>oops</html>".write(toFile: dir + "/tiny/train-labels-idx1-ubyte.gz", atomically: true, encoding: .utf8)
        let r = try bntrain(["--data", dir + "/tiny"])
        XCTAssertEqual(r.status, 65)
        XCTAssertTrue(r.stderr.contains("train-labels-idx1-ubyte.gz") && r.stderr.contains("HTML"), r.stderr)
    }

    /// Text records quote values that are not plain tokens (logfmt), so a path with a space
    /// or a quote survives: `data="…/tiny data's"`.
    func testTextValuesWithSpacesAreQuoted() throws {
        let odd = dir + "/tiny data's"
        try FileManager.default.createSymbolicLink(atPath: odd, withDestinationPath: dir + "/tiny")
        let r = try bntrain(["--data", odd, "--epochs", "1", "--batch", "16", "--hidden", "8", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains(" data=\"\(odd)\" "), r.stdout)
        XCTAssertTrue(r.stdout.contains(" batchnorm=on ") && r.stdout.contains(" init=glorot "), "plain tokens stay unquoted: \(r.stdout)")
    }

    func testDivergenceStopsWithExit70() throws {
        let r = try bntrain(["--data", dir + "/tiny", "--epochs", "3", "--lr", "1e38"])
        XCTAssertEqual(r.status, 70, r.stdout + r.stderr)
        XCTAssertTrue(r.stderr.contains("smaller --lr") && r.stderr.contains("epoch 1"), r.stderr)
        XCTAssertTrue(r.stderr.contains("became NaN") || r.stderr.contains("became infinite"), r.stderr)
    }
}
