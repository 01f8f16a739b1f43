import BNCheckpoint
import BNCore
import BNData
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The functions the fuzzers drive, shared with the regression tests that replay the corpus.
/// Each takes arbitrary bytes and must return normally (an error is a fine outcome; a trap,
/// crash or hang is a bug).
public enum FuzzTargets {
    public static let names = ["idx", "checkpoint"]

    /// Runs the named target on `bytes`; returns a short outcome for logs.
    @discardableResult
    public static func run(_ name: String, _ bytes: UnsafeRawBufferPointer) -> String {
        switch name {
        case "idx": return idx(bytes)
        case "checkpoint": return checkpoint(bytes)
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

    /// The checkpoint reader: decode, infer the architecture, build it and load the tensors,
    /// then one forward pass.
    public static func checkpoint(_ bytes: UnsafeRawBufferPointer) -> String {
        do {
            let (tensors, metadata) = try SafeTensors.decode(Array(bytes))
            let c = Checkpoint(tensors: tensors, metadata: metadata)
            let model = try c.model(path: "fuzz")
            let net = try model.makeNetwork()
            try c.load(into: net, path: "fuzz")
            let x = Matrix<Float>(rows: 2, cols: model.inputs)
            _ = net.forward(x, training: false)
            return "loaded \(model.spec)"
        } catch {
            return "refused: \(error)"
        }
    }

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
