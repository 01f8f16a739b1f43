import BNCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Why a checkpoint cannot be used; each description is one line naming the file.
public enum CheckpointError: Error, CustomStringConvertible, Equatable {
    case unreadable(path: String, reason: String)
    case malformed(path: String, reason: String)
    case missingTensor(path: String, name: String, expectedShape: [Int])
    case shapeMismatch(path: String, name: String, expected: [Int], found: [Int])
    case unwritable(path: String, reason: String)

    public var description: String {
        switch self {
        case let .unreadable(path, reason): return "cannot read checkpoint '\(path)': \(reason)"
        case let .malformed(path, reason): return "'\(path)' is not a usable safetensors checkpoint: \(reason)"
        case let .missingTensor(path, name, shape): return "checkpoint '\(path)' has no tensor '\(name)' (expected shape \(shape)); it was saved from a different network"
        case let .shapeMismatch(path, name, expected, found): return "checkpoint '\(path)': tensor '\(name)' has shape \(found) but this network needs \(expected); check --hidden, --no-batchnorm and the dataset"
        case let .unwritable(path, reason): return "cannot write '\(path)': \(reason)"
        }
    }
}

/// The architecture a checkpoint describes, read from its tensor shapes (and its metadata
/// for what shapes cannot tell: BN epsilon and momentum).
public struct ModelSpec: Equatable, Sendable {
    public var inputs: Int
    public var hidden: Int
    public var classes: Int
    public var batchNorm: Bool
    public var bnEps: Double
    public var bnMomentum: Double
    public var runningVariance: BatchNorm1D<Float>.RunningVariance

    public init(inputs: Int, hidden: Int, classes: Int, batchNorm: Bool, bnEps: Double = 1e-5, bnMomentum: Double = 0.9,
                runningVariance: BatchNorm1D<Float>.RunningVariance = .biased) {
        self.inputs = inputs
        self.hidden = hidden
        self.classes = classes
        self.batchNorm = batchNorm
        self.bnEps = bnEps
        self.bnMomentum = bnMomentum
        self.runningVariance = runningVariance
    }

    /// A freshly initialised reference network of this shape.
    public func makeNetwork(initializer: Initializer = .glorot, rng: inout SplitMix64) -> Network<Float> {
        Network<Float>.reference(
            inputs: inputs, hidden: hidden, classes: classes, batchNorm: batchNorm,
            bnMomentum: Float(bnMomentum), bnEps: Float(bnEps), runningVariance: runningVariance,
            initializer: initializer, rng: &rng)
    }
}

/// A model and training state in the safetensors format. Tensors are named and shaped as
/// PyTorch's `state_dict` of the same module would be (`fc1.weight` (200, 784), `fc1.bias`,
/// `bn.weight`, `bn.bias`, `bn.running_mean`, `bn.running_var`, `bn.num_batches_tracked`,
/// `fc2.weight`, `fc2.bias`); the metadata holds string values (configuration, epoch,
/// metrics, generator state) under keys documented in the README.
public struct Checkpoint {
    public var tensors: [String: SafeTensors.Tensor]
    public var metadata: [String: String]

    public static let eps = "bntrain.bn_eps"
    public static let momentum = "bntrain.bn_momentum"
    public static let runningVar = "bntrain.bn_running_var"

    public init(tensors: [String: SafeTensors.Tensor], metadata: [String: String]) {
        self.tensors = tensors
        self.metadata = metadata
    }

    /// Captures every parameter and buffer of `network` (plus BN's step count).
    public init(network: Network<Float>, metadata: [String: String]) {
        var t: [String: SafeTensors.Tensor] = [:]
        for p in network.parameters {
            t[p.name] = p.storedTransposed
                ? p.logicalValues().withUnsafeBufferPointer { SafeTensors.Tensor(floats: $0, shape: p.shape) }
                : SafeTensors.Tensor(floats: UnsafeBufferPointer(p.value.buffer), shape: p.shape)
        }
        for b in network.buffers { t[b.name] = SafeTensors.Tensor(floats: UnsafeBufferPointer(b.value.buffer), shape: b.shape) }
        var m = metadata
        m["format"] = "pt"  // the safetensors convention for PyTorch state dicts
        if let bn = network.layers.compactMap({ $0 as? BatchNorm1D<Float> }).first {
            t["bn.num_batches_tracked"] = SafeTensors.Tensor(int64: Int64(bn.batchesTracked))
            m[Checkpoint.eps] = "\(bn.eps)"
            m[Checkpoint.momentum] = "\(bn.momentum)"
            m[Checkpoint.runningVar] = bn.runningVariance.rawValue
        }
        self.init(tensors: t, metadata: m)
    }

    /// The architecture these tensors describe.
    public func spec(path: String) throws -> ModelSpec {
        guard let w1 = tensors["fc1.weight"], w1.shape.count == 2 else { throw CheckpointError.missingTensor(path: path, name: "fc1.weight", expectedShape: [-1, -1]) }
        guard let w2 = tensors["fc2.weight"], w2.shape.count == 2 else { throw CheckpointError.missingTensor(path: path, name: "fc2.weight", expectedShape: [-1, w1.shape[0]]) }
        guard w2.shape[1] == w1.shape[0] else { throw CheckpointError.shapeMismatch(path: path, name: "fc2.weight", expected: [w2.shape[0], w1.shape[0]], found: w2.shape) }
        guard w1.shape.allSatisfy({ $0 > 0 }), w2.shape[0] >= 2 else { throw CheckpointError.malformed(path: path, reason: "empty layer shapes \(w1.shape), \(w2.shape)") }
        return ModelSpec(
            inputs: w1.shape[1], hidden: w1.shape[0], classes: w2.shape[0], batchNorm: tensors["bn.weight"] != nil,
            bnEps: metadata[Checkpoint.eps].flatMap(Double.init) ?? 1e-5,
            bnMomentum: metadata[Checkpoint.momentum].flatMap(Double.init) ?? 0.9,
            runningVariance: metadata[Checkpoint.runningVar].flatMap { BatchNorm1D<Float>.RunningVariance(rawValue: $0) } ?? .biased)
    }

    /// Copies the tensors into `network`, checking that every one it needs is present with
    /// its exact shape. `requireBuffers: false` lets weights without BN statistics (for
    /// example exported from elsewhere) keep the network's initial running statistics.
    public func load(into network: Network<Float>, path: String, requireBuffers: Bool = true) throws {
        func values(_ name: String, shape: [Int], required: Bool) throws -> [Float]? {
            guard let t = tensors[name] else {
                if required { throw CheckpointError.missingTensor(path: path, name: name, expectedShape: shape) }
                return nil
            }
            guard t.shape == shape else { throw CheckpointError.shapeMismatch(path: path, name: name, expected: shape, found: t.shape) }
            return t.floats()
        }
        for p in network.parameters { if let v = try values(p.name, shape: p.shape, required: true) { p.setLogicalValues(v) } }
        for b in network.buffers {
            if let v = try values(b.name, shape: b.shape, required: requireBuffers) { for i in 0..<v.count { b.value.data[i] = v[i] } }
        }
        if let bn = network.layers.compactMap({ $0 as? BatchNorm1D<Float> }).first, let n = tensors["bn.num_batches_tracked"]?.int64Scalar() {
            bn.batchesTracked = Int(n)
        }
    }

    // MARK: Files

    public static func read(path: String) throws -> Checkpoint {
        let bytes: [UInt8]
        do { bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) } catch {
            throw CheckpointError.unreadable(path: path, reason: FileManager.default.fileExists(atPath: path) ? "permission denied or not a file" : "no such file")
        }
        do {
            let (t, m) = try SafeTensors.decode(bytes)
            return Checkpoint(tensors: t, metadata: m)
        } catch let e as SafeTensors.DecodeError {
            throw CheckpointError.malformed(path: path, reason: e.reason)
        }
    }

    /// Writes atomically: a temporary file in the same folder, flushed to disk, then renamed
    /// over `path`, so a crash or kill at any moment leaves either the old file or the new one.
    public func write(to path: String) throws {
        try AtomicFile.write(SafeTensors.encode(tensors, metadata: metadata), to: path)
    }
}

/// Whole-file writes that never leave a half-written file under the real name.
public enum AtomicFile {
    public static func write(_ bytes: [UInt8], to path: String) throws {
        let tmp = path + ".tmp-\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw CheckpointError.unwritable(path: path, reason: String(cString: strerror(errno))) }
        var ok = true
        var reason = ""
        bytes.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + done, raw.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    ok = false
                    reason = String(cString: strerror(errno))
                    return
                }
                done += n
            }
        }
        if ok && fsync(fd) != 0 { ok = false; reason = String(cString: strerror(errno)) }
        close(fd)
        if ok && rename(tmp, path) != 0 { ok = false; reason = String(cString: strerror(errno)) }
        if !ok {
            unlink(tmp)
            throw CheckpointError.unwritable(path: path, reason: reason)
        }
    }

    /// Checks, before any work, that `path` can be created or replaced: its folder exists and
    /// is writable, and it is not a directory.
    public static func checkWritable(_ path: String) -> String? {
        let dir = (path as NSString).deletingLastPathComponent
        let folder = dir.isEmpty ? "." : dir
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue { return "'\(path)' is a directory" }
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDir), isDir.boolValue else { return "folder '\(folder)' does not exist" }
        guard access(folder, W_OK) == 0 else { return "folder '\(folder)' is not writable" }
        return nil
    }
}
