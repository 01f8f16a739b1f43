import BNCheckpoint
import BNData
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Files someone else made, odd paths and failing writes, through the built binary: every
/// case ends with one error line and its documented exit code (or the correct result), fast,
/// with no temporaries left behind.
final class HostileInputTests: XCTestCase {
    var dir: String!
    var data: String { dir + "/tiny" }
    var good: String { dir + "/good.safetensors" }

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "bntrain-hostile-\(UUID().uuidString)"
        try writeTinyDataset(in: data)
        let r = try bntrain(["--data", data, "--epochs", "2", "--batch", "16", "--hidden", "8", "--save", good, "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    /// A copy of the good checkpoint with `change` applied, written under `name`.
    func variant(_ name: String, _ change: (inout Checkpoint) throws -> Void) throws -> String {
        var c = try Checkpoint.read(path: good)
        try change(&c)
        let path = dir + "/" + name
        try AtomicFile.write(SafeTensors.encode(c.tensors, metadata: c.metadata), to: path)
        return path
    }

    func config(_ c: inout Checkpoint, _ key: String, _ value: Any) throws {
        var obj = try JSONSerialization.jsonObject(with: Data(c.metadata["bntrain.config"]!.utf8)) as! [String: Any]
        obj[key] = value
        c.metadata["bntrain.config"] = String(data: try JSONSerialization.data(withJSONObject: obj), encoding: .utf8)
    }

    func floats(_ v: [Float], shape: [Int]) -> SafeTensors.Tensor { v.withUnsafeBufferPointer { SafeTensors.Tensor(floats: $0, shape: shape) } }

    func timed(_ args: [String], env: [String: String] = [:]) throws -> Run {
        let started = Date()
        let r = try bntrain(args, env: env)
        XCTAssertLessThan(Date().timeIntervalSince(started), 10, "\(args) took too long")
        return r
    }

    func leftovers() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix(".bntrain-tmp-") }
    }

    // 1. Checkpoint metadata is validated as flags are, and errors name the checkpoint.
    func testCheckpointValuesAreValidatedAndNamed() throws {
        let cases: [(String, (inout Checkpoint) throws -> Void, [String])] = [
            ("lr", { try self.config(&$0, "lr", -1) }, ["lr must be a positive finite number"]),
            ("batch", { try self.config(&$0, "batch", 0) }, ["batch must be from 1"]),
            ("valsplit", { try self.config(&$0, "val_split", 2.5) }, ["val_split must be in [0, 1)"]),
            ("limit", { try self.config(&$0, "train_limit", 1_000_000_000) }, ["its train_limit 1000000000 is larger than the 400"]),
            ("bigbatch", { try self.config(&$0, "batch", 100_000) }, ["its batch 100000 is larger than the 400"]),
            ("hidden", { try self.config(&$0, "hidden", -3) }, ["hidden must be from 1"]),
            ("seed", { try self.config(&$0, "seed", "minus one") }, ["seed"]),
            ("model", { try self.config(&$0, "model", "fc8-bogus-fc") }, ["'bogus'"]),
            ("epoch", { $0.metadata["bntrain.epoch"] = "-1" }, ["bntrain.epoch='-1'"]),
            ("step", { $0.metadata["bntrain.step"] = "99999" }, ["bntrain.step=99999 is past the 25 steps"]),
            ("rng", { $0.metadata["bntrain.shuffle_rng"] = "abc" }, ["bntrain.shuffle_rng='abc'"]),
            ("loss", { $0.metadata["bntrain.partial_loss_sum"] = "nan" }, ["bntrain.partial_loss_sum='nan'"]),
            ("steps", { $0.tensors["2.num_batches_tracked"] = .init(int64: -5) }, ["'2.num_batches_tracked' must hold one non-negative integer"]),
            ("eps", { $0.metadata[Checkpoint.eps] = "-1e-5" }, ["bntrain.bn_eps='-1e-5' is not a positive finite number"]),
        ]
        for (name, change, mentions) in cases {
            let path = try variant(name + ".safetensors", change)
            let r = try timed(["--resume", path, "--data", data, "--epochs", "5", "--quiet"])
            assertOneLineError(r, code: 65, mentions: [path] + mentions)
            XCTAssertFalse(r.stderr.hasPrefix("bntrain: error: --"), "names the checkpoint, not a flag: \(r.stderr)")
        }
    }

    // 2. Shapes whose byte size overflows are refused, not trapped on.
    func testSafeTensorsShapeOverflow() throws {
        for shape in [[1 << 31, 1 << 31, 1 << 31], [Int(1 << 31), 1 << 31, 4]] {
            let header = #"{"0.weight":{"dtype":"F64","shape":\#(shape),"data_offsets":[0,8]}}"#
            var bytes = withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { Array($0) } + Array(header.utf8)
            bytes += [UInt8](repeating: 0, count: 8)
            let path = dir + "/overflow.safetensors"
            FileManager.default.createFile(atPath: path, contents: Data(bytes))
            assertOneLineError(try timed(["eval", "--model", path, "--data", data]), code: 65, mentions: ["0.weight", "more bytes than can be addressed"])
        }
    }

    // 3. Numeric flags that cannot work exit 64 before allocating.
    func testImpossibleSizesAreUsageErrors() throws {
        assertOneLineError(try timed(["--data", data, "--threads", "99999999999"]), code: 64, mentions: ["--threads"])
        assertOneLineError(try timed(["--data", data, "--batch", "9223372036854775807"]), code: 64, mentions: ["--batch"])
        assertOneLineError(try timed(["--data", data, "--model", "fc1048576-fc1048576-fc"]), code: 64, mentions: ["--model", "GiB", "more than half of this machine"])
        assertOneLineError(try timed(["--data", data, "--model", "fc99999999-fc"]), code: 64, mentions: ["fcN needs a width"])
        assertOneLineError(try timed(["--data", data, "--eval-batch=-1"]), code: 64, mentions: ["--eval-batch", "or 0 for automatic"])
        assertOneLineError(try timed(["--data", data, "--eval-batch", "16777217"]), code: 64, mentions: ["--eval-batch", "must be from 1 to 16777216"])
    }

    // 4. A huge sparse checkpoint is refused from its header, without reading its data.
    func testHugeSparseCheckpointIsRefusedFromItsHeader() throws {
        let bytesDeclared = 64 << 30  // 64 GiB of F32
        let header = #"{"0.weight":{"dtype":"F32","shape":[65536,262144],"data_offsets":[0,\#(bytesDeclared)]}}"#
        let head = withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { Array($0) } + Array(header.utf8)
        let path = dir + "/sparse.safetensors"
        FileManager.default.createFile(atPath: path, contents: Data(head))
        let fd = open(path, O_WRONLY)
        XCTAssertEqual(ftruncate(fd, off_t(head.count + bytesDeclared)), 0)
        close(fd)
        assertOneLineError(try timed(["eval", "--model", path, "--data", data]), code: 65, mentions: ["64.0 GiB of tensor data"])
    }

    // 5. Writes go to the real file: through links, never into devices, with exclusive random
    // temporaries that are cleaned up, keeping permissions.
    func testCheckpointWritesFollowLinksKeepModesAndLeaveNoTemporaries() throws {
        let target = dir + "/target.safetensors", link = dir + "/link.safetensors"
        FileManager.default.createFile(atPath: target, contents: Data("old".utf8))
        XCTAssertEqual(chmod(target, 0o600), 0)
        XCTAssertEqual(symlink(target, link), 0)
        // A temporary left by a bntrain that died (pid 2^22 + 7 is above Linux's default maximum).
        FileManager.default.createFile(atPath: dir + "/.bntrain-tmp-4194311-Ab12Cd", contents: Data())
        let r = try timed(["--data", data, "--epochs", "1", "--hidden", "8", "--save", link, "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: link), target, "the link still points at its target")
        XCTAssertNoThrow(try Checkpoint.read(path: target), "the target holds the new checkpoint")
        var st = stat()
        XCTAssertEqual(stat(target, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o600, "permissions kept")
        XCTAssertEqual(try leftovers(), [], "no temporaries, and the stale one removed")
        assertOneLineError(try timed(["--data", data, "--epochs", "1", "--save", "/dev/null"]), code: 73, mentions: ["character device, not a regular file"])
        try FileManager.default.createDirectory(atPath: dir + "/adir", withIntermediateDirectories: true)
        assertOneLineError(try timed(["--data", data, "--epochs", "1", "--save", dir + "/adir"]), code: 73, mentions: ["a folder"])
        let fifo = dir + "/fifo.jsonl"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        assertOneLineError(try timed(["--data", data, "--epochs", "1", "--metrics", fifo]), code: 73, mentions: ["FIFO"])
    }

    /// Runs `script` in bash with $B the bntrain binary; returns (status, stdout, stderr).
    func bash(_ script: String) throws -> Run {
        let bin = productsDirectory.appendingPathComponent("bntrain").path
        return try runProgram("/bin/bash", ["-c", "B='\(bin)'; " + script])
    }

    // 6. Failed writes are errors (74); a closed pipe ends the run quietly (SIGPIPE, 141).
    func testWriteErrorsAreReported() throws {
        let full = try bash("$B --data '\(data)' --epochs 1 --quiet > /dev/full")
        assertOneLineError(full, code: 74, mentions: ["cannot write to standard output", "No space left on device"])
        // A disk that fills up under --metrics: a file-size limit makes the second write fail
        // (SIGXFSZ ignored, so the write returns EFBIG as on a full disk).
        let metrics = dir + "/m.jsonl"
        let limited = try bash("trap '' XFSZ; ulimit -f 1; $B --data '\(data)' --epochs 40 --batch 16 --hidden 8 --quiet --metrics '\(metrics)' > /dev/null")
        assertOneLineError(limited, code: 74, mentions: ["--metrics", metrics])
        let pipe = try bash("$B --data '\(data)' --epochs 200 --batch 16 | head -1 > /dev/null; echo \"status=${PIPESTATUS[0]}\"")
        XCTAssertTrue(pipe.stdout.contains("status=141"), pipe.stdout + pipe.stderr)
        XCTAssertEqual(pipe.stderr, "", "quietly")
    }

    // 7. Promises kept: --save-best needs validation data, an early failure keeps the old
    // metrics, long names work, and a checkpoint resumes only on its own data.
    func testPromisesAreKept() throws {
        assertOneLineError(try timed(["--resume", good, "--epochs", "3", "--save-best", "--save", dir + "/b.safetensors"]), code: 64, mentions: ["--save-best", "no validation data"])
        let metrics = dir + "/old.jsonl"
        FileManager.default.createFile(atPath: metrics, contents: Data("{\"epoch\":1,\"kept\":true}\n".utf8))
        let diverged = try timed(["--data", data, "--epochs", "1", "--lr", "1e30", "--metrics", metrics, "--quiet"])
        XCTAssertEqual(diverged.status, 70, diverged.stderr)
        XCTAssertEqual(try String(contentsOfFile: metrics, encoding: .utf8), "{\"epoch\":1,\"kept\":true}\n", "an early failure leaves the old file")
        let long = dir + "/" + String(repeating: "a", count: 240) + ".safetensors"
        let ok = try timed(["--data", data, "--epochs", "1", "--hidden", "8", "--save", long, "--quiet"])
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertTrue(ok.summary?["saved"] != nil)
        // Another dataset (one test pixel differs): refused unless the user says so.
        let other = dir + "/other"
        try writeTinyDataset(in: other, seed: 2)
        assertOneLineError(try timed(["--resume", good, "--data", other, "--epochs", "3"]), code: 64, mentions: ["trained on other data", "--allow-data-change"])
        let allowed = try timed(["--resume", good, "--data", other, "--epochs", "3", "--allow-data-change", "--quiet"])
        XCTAssertEqual(allowed.status, 0, allowed.stderr)
        XCTAssertEqual(try leftovers(), [])
    }

    // 8. Impossible model values are refused on load; nothing prints -nan.
    func testNonFiniteAndImpossibleValuesAreRefused() throws {
        let nanWeight = try variant("nan.safetensors") { c in
            var v = c.tensors["0.weight"]!.floats()
            v[5] = .nan
            c.tensors["0.weight"] = self.floats(v, shape: c.tensors["0.weight"]!.shape)
        }
        let negVar = try variant("negvar.safetensors") { c in
            c.tensors["2.running_var"] = self.floats([Float](repeating: -1, count: 8), shape: [8])
        }
        let infBias = try variant("inf.safetensors") { c in c.tensors["3.bias"] = self.floats([.infinity, 0, 0, 0], shape: [4]) }
        for (path, what) in [(nanWeight, "'0.weight' holds a non-finite value (NaN"), (negVar, "'2.running_var' holds a negative variance"), (infBias, "'3.bias' holds a non-finite value (infinity")] {
            assertOneLineError(try timed(["eval", "--model", path, "--data", data]), code: 65, mentions: [what])
            assertOneLineError(try timed(["predict", "--model", path, "--images", data + "/t10k-images-idx3-ubyte"]), code: 65, mentions: [what])
            assertOneLineError(try timed(["--init-from", path, "--data", data, "--hidden", "8"]), code: 65, mentions: [what])
        }
        let r = try timed(["--data", data, "--epochs", "1", "--quiet"])
        XCTAssertFalse(r.stdout.contains("-nan"))
        XCTAssertTrue(r.stdout.contains("loss_change=nan"))
    }

    // 9. Odd paths: control characters never split a record; non-regular data files are
    // refused at once; errors say what a path really is.
    func testOddPathsAndNames() throws {
        let weird = dir + "/we\nird\rname"
        try writeTinyDataset(in: weird)
        let r = try timed(["--data", weird, "--epochs", "1", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout.split(separator: "\n").count, 3, "config, epoch, summary: one line each")
        XCTAssertTrue(r.stdout.contains(#"we\nird\rname"#), r.stdout)
        XCTAssertFalse(r.stdout.contains("\r"))
        let j = try timed(["--data", weird, "--epochs", "1", "--quiet", "--log-format", "jsonl"])
        XCTAssertNoThrow(try JSONSerialization.jsonObject(with: Data(j.stdout.split(separator: "\n")[0].utf8)))
        let missing = try timed(["--data", dir + "/no\nsuch"])
        XCTAssertEqual(missing.stderr.split(separator: "\n").count, 1, "an error is one line: \(missing.stderr)")
        // A FIFO named like a data file would block forever: refused at once.
        let fifoData = dir + "/fifo"
        try writeTinyDataset(in: fifoData)
        try FileManager.default.removeItem(atPath: fifoData + "/t10k-labels-idx1-ubyte")
        XCTAssertEqual(mkfifo(fifoData + "/t10k-labels-idx1-ubyte", 0o600), 0)
        assertOneLineError(try timed(["--data", fifoData]), code: 66, mentions: ["FIFO (named pipe), not a regular file"])
        // A folder where a data file should be: not a "damaged gzip".
        try FileManager.default.removeItem(atPath: fifoData + "/t10k-labels-idx1-ubyte")
        try FileManager.default.createDirectory(atPath: fifoData + "/t10k-labels-idx1-ubyte", withIntermediateDirectories: false)
        assertOneLineError(try timed(["--data", fifoData]), code: 66, mentions: ["is a folder, not a regular file"])
        let loop = dir + "/loop"
        XCTAssertEqual(symlink(loop, loop), 0)
        assertOneLineError(try timed(["--resume", loop]), code: 66, mentions: ["loop of symbolic links"])
        assertOneLineError(try timed(["--data", loop]), code: 66, mentions: ["loop of symbolic links"])
        assertOneLineError(try timed(["eval", "--model", good + "/x", "--data", data]), code: 66, mentions: ["is a file, not a folder"])
        assertOneLineError(try timed(["--resume", dir + "/none.safetensors"]), code: 66, mentions: ["does not exist"])
    }
    // 10. Counters restored at their type's maximum, then counted up, never trap. BatchNorm's
    // num_batches_tracked saturates at 2^63-1 (PyTorch loads any int64 and counts on); the
    // optimizer's step and the training-state counters are refused by their ranges, naming
    // the tensor or field.
    func testRestoredCountersAtTheirMaximum() throws {
        let maxed = try variant("maxed.safetensors") { $0.tensors["2.num_batches_tracked"] = .init(int64: .max) }
        let out = dir + "/counted.safetensors"
        for start in [["--init-from", maxed, "--hidden", "8"], ["--resume", maxed]] {
            let r = try timed(start + ["--data", data, "--epochs", "3", "--batch", "16", "--quiet", "--save", out])
            XCTAssertEqual(r.status, 0, "\(start): \(r.stderr)")
            XCTAssertEqual(try Checkpoint.read(path: out).tensors["2.num_batches_tracked"]?.int64Scalar(), .max, "\(start)")
        }
        let adam = dir + "/adam.safetensors"
        let a = try timed(["--data", data, "--epochs", "1", "--batch", "16", "--hidden", "8", "--optimizer", "adam", "--lr", "0.001", "--save", adam, "--quiet"])
        XCTAssertEqual(a.status, 0, a.stderr)
        var c = try Checkpoint.read(path: adam)
        c.tensors["optimizer.step"] = .init(int64: .max)
        try AtomicFile.write(SafeTensors.encode(c.tensors, metadata: c.metadata), to: adam)
        assertOneLineError(try timed(["--resume", adam, "--data", data, "--epochs", "2", "--quiet"]), code: 65,
                           mentions: [adam, "optimizer state 'step' must be an integer from 0 to 1000000000000000"])
        let top = String(Int64.max)
        for key in ["epoch", "step", "best_val_epoch", "best_test_epoch", "plateau_bad_epochs", "early_best_epoch", "early_bad_epochs"] {
            let path = try variant("max-\(key).safetensors") { $0.metadata["bntrain.\(key)"] = top }
            assertOneLineError(try timed(["--resume", path, "--data", data, "--epochs", "3", "--quiet"]), code: 65, mentions: [path, "bntrain.\(key)"])
        }
    }
    // 11. A convolutional checkpoint refuses images of another shape with the same pixel
    // count (16x49 or 784x1 for 28x28): exit 65 naming both shapes, for eval and predict.
    func testConvolutionalModelsRefuseImagesOfAnotherShape() throws {
        let model = dir + "/conv.safetensors"
        let t = try timed(["--data", data, "--model", "conv2k3p1-maxpool2-fc", "--epochs", "1", "--batch", "16", "--save", model, "--quiet"])
        XCTAssertEqual(t.status, 0, t.stderr)
        let other = dir + "/other"
        try FileManager.default.createDirectory(atPath: other, withIntermediateDirectories: true)
        let px = [UInt8](repeating: 100, count: 10 * 36), labels = (0..<10).map { UInt8($0 % 4) }
        for (name, count) in [("train", 10), ("t10k", 10)] {
            try IDX.writeImages(px, count: count, rows: 4, cols: 9, to: "\(other)/\(name)-images-idx3-ubyte", gzip: false)
            try IDX.writeLabels(labels, to: "\(other)/\(name)-labels-idx1-ubyte", gzip: false)
        }
        let says = ["expects 6x6 images (input_shape=1x6x6)", "has 4x9 = 36"]
        assertOneLineError(try timed(["eval", "--model", model, "--data", other]), code: 65, mentions: [model] + says)
        assertOneLineError(try timed(["predict", "--model", model, "--images", other + "/t10k-images-idx3-ubyte"]), code: 65, mentions: [model] + says)
        // The right shape still works.
        XCTAssertEqual(try timed(["eval", "--model", model, "--data", data]).status, 0)
    }

    // 5. A trace keeps every traced value of its probe set: that memory is in the estimate,
    // so a trace too large for the machine is refused up front, naming --trace-examples.
    func testATraceTooLargeForTheMachineIsRefusedUpFront() throws {
        // conv65536k1 on 6x6 images: 2,359,296 values per example; 8 bytes each (the values
        // and the sort's scratch). Enough test images that the trace alone exceeds the memory.
        let width = 65536 * 36
        let examples = min(100_000, Int(ProcessInfo.processInfo.physicalMemory / UInt64(8 * width)) + 1)
        let wide = dir + "/wide"
        try writeTinyDataset(in: wide, train: 64, test: examples)
        let run = ["--data", wide, "--model", "conv65536k1-fc", "--batch", "16", "--epochs", "1", "--quiet"]
        assertOneLineError(try timed(run + ["--trace", "0:output", "--trace-examples", "\(examples)"]), code: 64, mentions: ["--trace of \(examples) examples", "--trace-examples", "more than half of this machine's"])
    }

    // 12. Input that would be silently ignored or misread is refused, naming the flag: a flag
    // only another flag (or another schedule) reads, a sign in a width, a repeated trace part.
    func testIgnoredOrMisreadInputIsRefused() throws {
        let run = ["--data", data, "--epochs", "1", "--quiet"]
        assertOneLineError(try timed(run + ["--trace-every", "5"]), code: 64, mentions: ["--trace-every", "--trace LAYER:WHAT"])
        assertOneLineError(try timed(run + ["--trace-examples", "5"]), code: 64, mentions: ["--trace-examples", "--trace"])
        assertOneLineError(try timed(run + ["--lr-step-epochs", "3"]), code: 64, mentions: ["--lr-step-epochs", "--lr-schedule step", "constant"])
        assertOneLineError(try timed(run + ["--lr-schedule", "cosine", "--lr-gamma", "0.5"]), code: 64, mentions: ["--lr-gamma", "step", "cosine"])
        assertOneLineError(try timed(run + ["--lr-patience", "2"]), code: 64, mentions: ["--lr-patience", "plateau"])
        XCTAssertEqual(try timed(run + ["--lr-schedule", "step", "--lr-step-epochs", "3", "--lr-gamma", "0.5"]).status, 0)
        XCTAssertEqual(try timed(run + ["--trace", "1:output", "--trace-every", "5"]).status, 0)
        for spec in ["fc+5-fc", "fc-5-fc", "fc 5-fc"] {
            assertOneLineError(try timed(["summary", "--model", spec]), code: 64, mentions: ["fcN"])
        }
        for trace in ["0:input:output", "0:output:output", "0:unit=1:unit=2", "0:unit=+1"] {
            assertOneLineError(try timed(run + ["--trace", trace]), code: 64, mentions: ["--trace", trace])
        }
        assertOneLineError(try timed(run + ["--trace", "+0:output"]), code: 64, mentions: ["--trace '+0' is not a layer index"])
    }
}
