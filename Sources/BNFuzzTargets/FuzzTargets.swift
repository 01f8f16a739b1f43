import BNCheckpoint
import BNCore
import BNData
import BNTraining
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The functions the fuzzers drive, shared with the regression tests that replay the corpus.
/// Each takes arbitrary bytes and must return normally (an error is a fine outcome; a trap,
/// crash or hang is a bug).
public enum FuzzTargets {
    public static let names = ["idx", "checkpoint", "resume"]

    /// Runs the named target on `bytes`; returns a short outcome for logs.
    @discardableResult
    public static func run(_ name: String, _ bytes: UnsafeRawBufferPointer) -> String {
        switch name {
        case "idx": return idx(bytes)
        case "checkpoint": return checkpoint(bytes)
        case "resume": return resume(bytes)
        default: return "unknown target \(name)"
        }
    }

    /// The IDX/gzip reader: the bytes as an image file and as a label file, named .gz or not
    /// as their first bytes suggest (both paths of the reader get exercised).
    public static func idx(_ bytes: UnsafeRawBufferPointer) -> String {
        let gz = bytes.count >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b
        let flip = bytes.count >= 3 && bytes[2] & 1 == 1  // sometimes lie about the name
        let path = scratchPath + ((gz != flip) ? ".gz" : "")
        guard write(bytes, to: path) else { return "scratch write failed" }
        defer { unlink(path) }
        var outcome = ""
        do {
            let images = try IDX.readImages(path: path)
            outcome += "images \(images.count)x\(images.rows)x\(images.cols); "
        } catch { outcome += "images: \(error); " }
        do {
            let labels = try IDX.readLabels(path: path)
            try Dataset.checkLabels(labels, classes: 10, path: path)
            outcome += "labels \(labels.count)"
        } catch { outcome += "labels: \(error)" }
        return outcome
    }

    /// The checkpoint reader as `eval` and `predict` use it: the file read header first
    /// (sizes, shapes against the stored spec, then data), the model rebuilt from its spec, the
    /// tensors loaded and validated, then one forward pass.
    public static func checkpoint(_ bytes: UnsafeRawBufferPointer) -> String {
        let path = scratchPath + ".safetensors"
        guard write(bytes, to: path) else { return "scratch write failed" }
        defer { unlink(path) }
        do {
            let c = try Checkpoint.read(path: path)
            let model = try c.model(path: path)
            let net = try model.makeNetwork()
            try c.load(into: net, path: path)
            let x = Matrix<Float>(rows: 2, cols: model.inputs)
            _ = net.forward(x, training: false)
            return "loaded \(model.spec)"
        } catch {
            return "refused: \(error)"
        }
    }

    /// `--resume` as the trainer does it: the checkpoint read, its configuration decoded and
    /// validated, its training state parsed, and a Trainer built from it over a tiny 6x6,
    /// 4-class dataset (which checks the restored sizes, positions and generator states
    /// against the data, loads the weights, and runs one evaluation pass). Then one epoch is
    /// trained from the restored state, so every restored counter (steps, epochs, optimizer
    /// and BatchNorm step counts, schedule and stopper state) is counted up at least once.
    public static func resume(_ bytes: UnsafeRawBufferPointer) -> String {
        let path = scratchPath + "-resume.safetensors"
        guard write(bytes, to: path) else { return "scratch write failed" }
        defer { unlink(path) }
        do {
            let c = try Checkpoint.read(path: path)
            guard let text = c.metadata["bntrain.config"] else { return "refused: no config" }
            var config = try JSONDecoder().decode(RunConfig.self, from: Data(text.utf8))
            if let problem = config.problem() { return "refused: \(problem.key.name) \(problem.message)" }
            let state = try TrainingState(metadata: c.metadata, path: path)
            config.epochs = min(state.epoch + 1, 1_000_000)
            config.data.folder = "fuzz"
            var outputs = RunOutputs()
            outputs.allowDataChange = true  // the tiny dataset is not the one any seed was trained on
            let trainer = try Trainer(config: config, outputs: outputs, dataset: tinyDataset, resume: (c, path), sink: RecordList(), diagnostics: { _ in })
            let r = Evaluation.run(trainer.network, SequentialBatches(split: tinyDataset.test, batchSize: 50))
            let resumed = "resumed \(trainer.spec) at epoch \(trainer.state.epoch) step \(trainer.state.step), test loss \(r.loss.isFinite ? "finite" : "non-finite")"
            do { try trainer.run() } catch { return resumed + "; training stopped: \(error)" }
            return resumed + "; trained to epoch \(trainer.state.epoch)"
        } catch {
            return "refused: \(error)"
        }
    }

    /// 6x6 images, 4 classes (class k bright in row k + 1), 100 training and 100 test images.
    static let tinyDataset: Dataset = {
        func split(_ n: Int, seed: UInt64) -> Split {
            var rng = SplitMix64(seed: seed)
            var px = [UInt8](repeating: 0, count: n * 36)
            var labels = [Int32](repeating: 0, count: n)
            for i in 0..<n {
                labels[i] = Int32(i % 4)
                // Pixel values about 0.8 (bright) or -0.8 (dark), plus up to 0.2 of noise.
                for j in 0..<36 { px[i * 36 + j] = UInt8((j / 6 == i % 4 + 1 ? 230 : 25) + rng.nextInt(below: 26)) }
            }
            return Split(images: ImageSet(count: n, rows: 6, cols: 6, bytes: px), labels: labels)
        }
        let files = DatasetFiles(trainImages: "fuzz/train-images", trainLabels: "fuzz/train-labels", testImages: "fuzz/test-images", testLabels: "fuzz/test-labels")
        return Dataset(files: files, train: split(100, seed: 1), test: split(100, seed: 2), classes: 4)
    }()

    static let scratchPath: String = {
        let dir = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        return dir + "/bnfuzz-\(getpid())"
    }()

    static func write(_ bytes: UnsafeRawBufferPointer, to path: String) -> Bool {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n <= 0 { return false }
            done += n
        }
        return true
    }
}
