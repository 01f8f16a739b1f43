import BNCore
import BNData
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
    case unexpectedTensor(path: String, name: String)
    case unwritable(path: String, reason: String)

    public var description: String {
        switch self {
        case let .unreadable(path, reason): return "cannot read checkpoint '\(path)': \(reason)"
        case let .malformed(path, reason): return "'\(path)' is not a usable safetensors checkpoint: \(reason)"
        case let .missingTensor(path, name, shape): return "checkpoint '\(path)' has no tensor '\(name)'\(shape.isEmpty ? "" : " (expected shape \(shape))"); it was saved from a different model"
        case let .shapeMismatch(path, name, expected, found): return "checkpoint '\(path)': tensor '\(name)' has shape \(found) but the model needs \(expected); it was saved from a different model or dataset"
        case let .unexpectedTensor(path, name): return "checkpoint '\(path)': tensor '\(name)' has no place in the model; it was saved from a different model"
        case let .unwritable(path, reason): return "cannot write '\(path)': \(reason)"
        }
    }
}

/// The model a checkpoint holds: its spec and the sizes and settings needed to rebuild it.
public struct StoredModel: Equatable, Sendable {
    public var spec: ModelSpec
    public var inputs: Int
    public var classes: Int
    public var options: BuildOptions
    /// The input image of a convolutional model (`bntrain.input_shape`).
    public var image: ImageShape?

    public init(spec: ModelSpec, inputs: Int, classes: Int, options: BuildOptions, image: ImageShape? = nil) {
        self.spec = spec
        self.inputs = inputs
        self.classes = classes
        self.options = options
        self.image = image
    }

    /// What this model expects that images of `rows` x `cols` pixels are not, or nil when they
    /// fit: a convolutional model needs its image's height and width (the same pixel count in
    /// another shape would run, and mean nothing); a fully connected one its pixel count.
    public func misfit(rows: Int, cols: Int) -> String? {
        if spec.isConvolutional, let image, image.h != rows || image.w != cols {
            return "expects \(image.h)x\(image.w) images (input_shape=\(image))"
        }
        return rows * cols == inputs ? nil : "expects \(inputs) pixels per image"
    }

    public static func == (a: StoredModel, b: StoredModel) -> Bool {
        a.spec == b.spec && a.inputs == b.inputs && a.classes == b.classes && a.options.bnEps == b.options.bnEps
            && a.options.bnMomentum == b.options.bnMomentum && a.options.runningVariance == b.options.runningVariance
    }

    /// A freshly built network of this model (weights to be loaded from the checkpoint).
    public func makeNetwork() throws -> Network<Float> {
        var rng = SplitMix64(seed: 0)
        return try spec.build(Float.self, inputs: inputs, classes: classes, image: image, options: options, rng: &rng)
    }
}

/// A model and training state in the safetensors format.
///
/// Tensors are named and shaped as PyTorch's `state_dict` of the equivalent `nn.Sequential`
/// (one module per spec layer, so the names are the layer indices): for dfn2,
/// `fc200-sigmoid-bn-fc`, that is `0.weight` (200, 784), `0.bias`, `2.weight`, `2.bias`,
/// `2.running_mean`, `2.running_var`, `2.num_batches_tracked`, `3.weight`, `3.bias`. The
/// metadata holds string values (the model spec, configuration, epoch, metrics, generator
/// states) under keys documented in docs/checkpoints.md. Checkpoints from bntrain 0.3 (dfn2 only, with
/// tensors named `fc1`, `bn`, `fc2` and no `bntrain.model`) are read as dfn2.
public struct Checkpoint {
    public var tensors: [String: SafeTensors.Tensor]
    public var metadata: [String: String]

    public static let modelKey = "bntrain.model"
    /// "CxHxW": the input image of a convolutional model.
    public static let inputShapeKey = "bntrain.input_shape"
    /// Tensors under this prefix hold the optimizer's state: `optimizer.step` (I64), and per
    /// parameter `optimizer.PARAM.momentum_buffer` (SGD, RMSprop with momentum),
    /// `optimizer.PARAM.exp_avg` and `.exp_avg_sq` (Adam, AdamW), `optimizer.PARAM.square_avg`
    /// (RMSprop), each in the parameter's logical shape.
    public static let optimizerPrefix = "optimizer."
    /// Training state beyond the model and the optimizer: `bn_ema.LAYER.running_mean` and
    /// `.running_var`, the EMA statistics of a `--bn-stats precise` run (its `LAYER.running_*`
    /// hold the precise ones).
    public static let bnEMAPrefix = "bn_ema."
    /// Every prefix of tensors that are bntrain's training state, not the model's.
    public static let statePrefixes = [optimizerPrefix, bnEMAPrefix]
    static func isState(_ name: String) -> Bool { statePrefixes.contains { name.hasPrefix($0) } }
    public static let eps = "bntrain.bn_eps"
    public static let momentum = "bntrain.bn_momentum"
    public static let runningVar = "bntrain.bn_running_var"

    public init(tensors: [String: SafeTensors.Tensor], metadata: [String: String]) {
        self.tensors = tensors
        self.metadata = metadata
    }

    /// Captures every parameter and buffer of `network` (plus each BN layer's step count),
    /// the model spec and the BN settings.
    public init(network: Network<Float>, spec: ModelSpec, options: BuildOptions, metadata: [String: String], optimizer: (any Optimizer<Float>)? = nil, state: [String: SafeTensors.Tensor] = [:]) {
        var t = state
        for p in network.parameters {
            t[p.name] = p.storedTransposed
                ? p.logicalValues().withUnsafeBufferPointer { SafeTensors.Tensor(floats: $0, shape: p.shape) }
                : SafeTensors.Tensor(floats: UnsafeBufferPointer(p.value.buffer), shape: p.shape)
        }
        for b in network.buffers { t[b.name] = SafeTensors.Tensor(floats: UnsafeBufferPointer(b.value.buffer), shape: b.shape) }
        for (name, steps) in network.batchNormSteps { t["\(name).num_batches_tracked"] = SafeTensors.Tensor(int64: Int64(steps)) }
        if let optimizer {
            let shapes = Dictionary(uniqueKeysWithValues: network.parameters.map { ($0.name, $0.shape) })
            for (name, values) in optimizer.state(network.parameters) {
                if name == "step" {
                    t[Checkpoint.optimizerPrefix + name] = SafeTensors.Tensor(int64: Int64(values[0]))
                } else {
                    let param = String(name[..<name.lastIndex(of: ".")!])
                    t[Checkpoint.optimizerPrefix + name] = values.withUnsafeBufferPointer { SafeTensors.Tensor(floats: $0, shape: shapes[param] ?? [values.count]) }
                }
            }
        }
        var m = metadata
        m["format"] = "pt"  // the safetensors convention for PyTorch state dicts
        m[Checkpoint.modelKey] = spec.canonical
        if let image = network.inputImage { m[Checkpoint.inputShapeKey] = image.description }
        if spec.hasBatchNorm {
            m[Checkpoint.eps] = "\(options.bnEps)"
            m[Checkpoint.momentum] = "\(options.bnMomentum)"
            m[Checkpoint.runningVar] = options.runningVariance.rawValue
        }
        self.init(tensors: t, metadata: m)
    }

    /// Whether this is a bntrain 0.3 dfn2 checkpoint (tensors `fc1.*`, `bn.*`, `fc2.*`).
    public var isLegacyDFN2: Bool { metadata[Checkpoint.modelKey] == nil && tensors["fc1.weight"] != nil }

    /// The tensors under their current names: a legacy dfn2 checkpoint's `fc1`, `bn`, `fc2`
    /// become `0`, `2`, and `3` (or `2` without BN), as `fc200-sigmoid-bn-fc` names them.
    public var normalizedTensors: [String: SafeTensors.Tensor] {
        guard isLegacyDFN2 else { return tensors }
        let hasBN = tensors["bn.weight"] != nil
        let rename = ["fc1": "0", "bn": "2", "fc2": hasBN ? "3" : "2"]
        var out: [String: SafeTensors.Tensor] = [:]
        for (name, t) in tensors {
            let parts = name.split(separator: ".", maxSplits: 1).map(String.init)
            if parts.count == 2, let to = rename[parts[0]] { out[to + "." + parts[1]] = t } else { out[name] = t }
        }
        return out
    }

    /// The model these tensors and metadata describe: the spec from `bntrain.model` (or dfn2
    /// for a legacy checkpoint), the input width and class count from the tensor shapes, and
    /// the BN settings from the metadata. Every value is validated.
    public func model(path: String, requireBuffers: Bool = true) throws -> StoredModel {
        let tensors = normalizedTensors
        let spec: ModelSpec
        if let text = metadata[Checkpoint.modelKey] {
            do { spec = try ModelSpec.parse(text) } catch let e as ModelSpec.ParseError {
                throw CheckpointError.malformed(path: path, reason: "its model spec is unusable: \(e.message)")
            }
        } else if let w1 = tensors["0.weight"], w1.shape.count == 2, tensors["fc1.weight"] == nil {
            spec = ModelSpec(layers: [.fc(w1.shape[0]), .activation(.sigmoid)] + (tensors["2.weight"]?.shape.count == 1 ? [.batchNorm] : []) + [.fc(nil)])
        } else {
            throw CheckpointError.malformed(path: path, reason: "no '\(Checkpoint.modelKey)' metadata and no dfn2 tensors (fc1.weight); not written by bntrain")
        }
        // The input width: from the first layer that has tensors (fc: weight (out, in); bn/ln: (in)).
        func shape(_ name: String, rank: Int) throws -> [Int] {
            guard let t = tensors[name] else { throw CheckpointError.missingTensor(path: path, name: name, expectedShape: []) }
            guard t.shape.count == rank, t.shape.allSatisfy({ $0 >= 1 && $0 <= ModelSpec.maxWidth }) else {
                throw CheckpointError.malformed(path: path, reason: "tensor '\(name)' has shape \(t.shape); model '\(spec)' needs a \(rank)-D tensor of positive sizes up to \(ModelSpec.maxWidth)")
            }
            return t.shape
        }
        var image: ImageShape?
        let inputs: Int
        if spec.isConvolutional {
            // The image size cannot be read off conv weights: it is in the metadata.
            let text = metadata[Checkpoint.inputShapeKey] ?? ""
            let dims = text.split(separator: "x").compactMap { Int($0) }
            guard dims.count == 3, dims.allSatisfy({ $0 >= 1 && $0 <= 4096 }), dims[0] <= 64 else {
                throw CheckpointError.malformed(path: path, reason: "metadata \(Checkpoint.inputShapeKey)='\(text)' is not an image size CxHxW (C <= 64, H and W <= 4096)")
            }
            image = ImageShape(dims[0], dims[1], dims[2])
            inputs = image!.count
        } else {
            // The first layer whose weight says how many features it takes (its kind knows which dimension).
            guard let first = spec.layers.firstIndex(where: { $0.facts.inputFromWeight != nil }), let probe = spec.layers[first].facts.inputFromWeight else {
                throw CheckpointError.malformed(path: path, reason: "model '\(spec)' has no layer with tensors")
            }
            inputs = try shape("\(first).weight", rank: probe.rank)[probe.dimension]
        }
        let classes = try shape("\(spec.layers.count - 1).weight", rank: 2)[0]
        guard classes >= 2 else { throw CheckpointError.malformed(path: path, reason: "its last layer has \(classes) output; a classifier needs at least 2 classes") }
        var options = BuildOptions()
        if spec.hasBatchNorm {
            if let s = metadata[Checkpoint.eps] {
                guard let v = Double(s), v.isFinite, v > 0 else { throw CheckpointError.malformed(path: path, reason: "metadata \(Checkpoint.eps)='\(s)' is not a positive finite number") }
                options.bnEps = v
            }
            if let s = metadata[Checkpoint.momentum] {
                guard let v = Double(s), v >= 0, v < 1 else { throw CheckpointError.malformed(path: path, reason: "metadata \(Checkpoint.momentum)='\(s)' is not in [0, 1)") }
                options.bnMomentum = v
            }
            if let s = metadata[Checkpoint.runningVar] {
                guard let v = BatchNorm1D<Float>.RunningVariance(rawValue: s) else { throw CheckpointError.malformed(path: path, reason: "metadata \(Checkpoint.runningVar)='\(s)' is not biased or unbiased") }
                options.runningVariance = v
            }
        }
        // Every tensor's shape is compared with the spec before anything is built, so a file
        // cannot make bntrain allocate more than its own tensors hold.
        try Checkpoint.checkShapes(tensors, spec: spec, inputs: inputs, classes: classes, image: image, path: path, requireBuffers: requireBuffers)
        return StoredModel(spec: spec, inputs: inputs, classes: classes, options: options, image: image)
    }

    /// The tensors `spec` has for `inputs` features and `classes` classes, with their logical
    /// shapes: fc `i.weight` (out, in) and `i.bias` (out); bn `i.weight`, `i.bias` and the
    /// buffers `i.running_mean`, `i.running_var` (d) and `i.num_batches_tracked` (); ln
    /// `i.weight`, `i.bias` (d).
    public static func expectedTensors(spec: ModelSpec, inputs: Int, classes: Int, image: ImageShape? = nil) throws -> [(name: String, shape: [Int], buffer: Bool)] {
        let shapes = try spec.shapes(inputs: inputs, classes: classes, image: image)
        var out: [(String, [Int], Bool)] = []
        var inShape = try spec.inputShape(inputs: inputs, image: image)
        for (i, l) in spec.layers.enumerated() {
            out += l.facts.tensors(index: i, input: inShape, output: shapes[i]).map { ($0.name, $0.shape, $0.buffer) }
            inShape = shapes[i]
        }
        return out
    }

    static func checkShapes(_ tensors: [String: SafeTensors.Tensor], spec: ModelSpec, inputs: Int, classes: Int, image: ImageShape?, path: String, requireBuffers: Bool) throws {
        let expected: [(name: String, shape: [Int], buffer: Bool)]
        do { expected = try expectedTensors(spec: spec, inputs: inputs, classes: classes, image: image) } catch let e as ModelSpec.ParseError {
            throw CheckpointError.malformed(path: path, reason: e.message)
        }
        let names = Set(expected.map(\.name))
        // Optimizer state (`optimizer.*`) is checked by the optimizer that loads it.
        if let extra = tensors.keys.sorted().first(where: { !names.contains($0) && !Checkpoint.isState($0) }) {
            throw CheckpointError.unexpectedTensor(path: path, name: extra)
        }
        for e in expected {
            guard let t = tensors[e.name] else {
                // num_batches_tracked is optional (PyTorch before 0.4.1 had none).
                if (e.buffer && !requireBuffers) || e.name.hasSuffix(".num_batches_tracked") { continue }
                throw CheckpointError.missingTensor(path: path, name: e.name, expectedShape: e.shape)
            }
            let scalarStep = e.shape.isEmpty && t.elementCount == 1
            guard t.shape == e.shape || scalarStep else { throw CheckpointError.shapeMismatch(path: path, name: e.name, expected: e.shape, found: t.shape) }
        }
    }

    /// The EMA statistics of BN layers `layers` (name, channels) from `bn_ema.*`: nil when the
    /// file has none; every layer's pair, finite and the variances non-negative, otherwise.
    public func loadBatchNormEMA(_ layers: [(name: String, channels: Int)], path: String) throws -> [(mean: [Float], variance: [Float])]? {
        let present = tensors.keys.filter { $0.hasPrefix(Checkpoint.bnEMAPrefix) }
        if present.isEmpty { return nil }
        let known = Set(layers.flatMap { ["\(Checkpoint.bnEMAPrefix)\($0.name).running_mean", "\(Checkpoint.bnEMAPrefix)\($0.name).running_var"] })
        if let extra = present.sorted().first(where: { !known.contains($0) }) { throw CheckpointError.unexpectedTensor(path: path, name: extra) }
        return try layers.map { l in
            func read(_ what: String, variance: Bool) throws -> [Float] {
                let name = "\(Checkpoint.bnEMAPrefix)\(l.name).\(what)"
                guard let t = tensors[name] else { throw CheckpointError.missingTensor(path: path, name: name, expectedShape: [l.channels]) }
                guard t.shape == [l.channels] else { throw CheckpointError.shapeMismatch(path: path, name: name, expected: [l.channels], found: t.shape) }
                guard t.dtype != .i64 else { throw CheckpointError.malformed(path: path, reason: "tensor '\(name)' is I64; it must be F32 or F64") }
                let v = t.floats()
                if let bad = v.first(where: { !$0.isFinite || (variance && $0 < 0) }) {
                    throw CheckpointError.malformed(path: path, reason: "tensor '\(name)' holds \(bad); it must be finite\(variance ? " and non-negative" : "")")
                }
                return v
            }
            return (try read("running_mean", variance: false), try read("running_var", variance: true))
        }
    }

    /// Restores `optimizer`'s state from the `optimizer.*` tensors (their sizes and values
    /// checked by the optimizer).
    public func loadOptimizer(_ optimizer: any Optimizer<Float>, network: Network<Float>, path: String) throws {
        var state: [String: [Float]] = [:]
        for (name, t) in tensors where name.hasPrefix(Checkpoint.optimizerPrefix) {
            let key = String(name.dropFirst(Checkpoint.optimizerPrefix.count))
            if key == "step" {
                guard let n = t.int64Scalar(), n >= 0 else { throw CheckpointError.malformed(path: path, reason: "tensor '\(name)' must hold one non-negative integer") }
                state[key] = [Float(n)]
            } else {
                guard t.dtype != .i64 else { throw CheckpointError.malformed(path: path, reason: "tensor '\(name)' is I64; it must be F32 or F64") }
                state[key] = t.floats()
            }
        }
        // Plain SGD keeps no state; a checkpoint of it has none to restore.
        if state.isEmpty && optimizer.state(network.parameters).isEmpty { return }
        do { try optimizer.load(state: state, network.parameters) } catch let e as OptimizerStateError {
            throw CheckpointError.malformed(path: path, reason: e.message + (e.doesNotFit ? " (was it saved with another --optimizer?)" : ""))
        }
    }

    /// Copies the tensors into `network`, checking that every one it needs is present with its
    /// exact shape and that none is left over (a tensor the model has no place for means the
    /// file describes another model). `requireBuffers: false` lets weights without BN
    /// statistics (for example exported from elsewhere) keep the network's initial ones.
    /// Nothing is written into the network unless every tensor fits.
    public func load(into network: Network<Float>, path: String, requireBuffers: Bool = true) throws {
        let tensors = normalizedTensors
        var expected = Set(network.parameters.map(\.name) + network.buffers.map(\.name))
        for (name, _) in network.batchNormSteps { expected.insert("\(name).num_batches_tracked") }
        if let extra = tensors.keys.sorted().first(where: { !expected.contains($0) && !Checkpoint.isState($0) }) {
            throw CheckpointError.unexpectedTensor(path: path, name: extra)
        }
        func checked(_ name: String, shape: [Int], required: Bool) throws -> SafeTensors.Tensor? {
            guard let t = tensors[name] else {
                if required { throw CheckpointError.missingTensor(path: path, name: name, expectedShape: shape) }
                return nil
            }
            guard t.shape == shape else { throw CheckpointError.shapeMismatch(path: path, name: name, expected: shape, found: t.shape) }
            guard t.dtype != .i64 else { throw CheckpointError.malformed(path: path, reason: "tensor '\(name)' is I64; it must be F32 or F64") }
            return t
        }
        var steps: [(String, Int)] = []
        for (bn, _) in network.batchNormSteps {
            let name = "\(bn).num_batches_tracked"
            guard let t = tensors[name] else { continue }
            guard t.elementCount == 1, let n = t.int64Scalar(), n >= 0 else {
                throw CheckpointError.malformed(path: path, reason: "tensor '\(name)' must hold one non-negative integer")
            }
            steps.append((bn, Int(n)))
        }
        // Check everything first, then copy. Values must be finite (a NaN weight would only
        // show up later as a NaN loss); a running variance must also be non-negative.
        func values(_ name: String, _ t: SafeTensors.Tensor) throws -> [Float] {
            let v = t.floats()
            if let bad = v.firstIndex(where: { !$0.isFinite }) {
                throw CheckpointError.malformed(path: path, reason: "tensor '\(name)' holds a non-finite value (\(v[bad].isNaN ? "NaN" : "infinity") at element \(bad))")
            }
            if name.hasSuffix(".running_var"), let bad = v.firstIndex(where: { $0 < 0 }) {
                throw CheckpointError.malformed(path: path, reason: "tensor '\(name)' holds a negative variance (\(v[bad]) at element \(bad))")
            }
            return v
        }
        let params = try network.parameters.map { p in (p, try values(p.name, try checked(p.name, shape: p.shape, required: true)!)) }
        let buffers = try network.buffers.compactMap { b in try checked(b.name, shape: b.shape, required: requireBuffers).map { (b, try values(b.name, $0)) } }
        for (p, v) in params { p.setLogicalValues(v) }
        for (b, v) in buffers {
            for i in 0..<v.count { b.value.data[i] = v[i] }
        }
        for (bn, n) in steps { network.setBatchNormSteps(bn, n) }
    }

    // MARK: Files

    /// Reads a checkpoint, header first: the header's sizes are checked against the file's
    /// size, and when the header names a model (`bntrain.model`, or 0.3's dfn2 tensors) every
    /// tensor's shape is compared with that model before a byte of tensor data is read, so a
    /// huge or sparse file is refused for the cost of its header. Only regular files are read.
    public static func read(path: String) throws -> Checkpoint {
        var st = stat()
        guard stat(path, &st) == 0 else { throw CheckpointError.unreadable(path: path, reason: FileCheck.reason(errno: errno)) }
        guard st.st_mode & S_IFMT == S_IFREG else {
            throw CheckpointError.unreadable(path: path, reason: "it is \(FileCheck.describe(mode: st.st_mode & S_IFMT)), not a regular file")
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CheckpointError.unreadable(path: path, reason: FileCheck.reason(errno: errno)) }
        defer { close(fd) }
        var fst = stat()
        guard fstat(fd, &fst) == 0, fst.st_mode & S_IFMT == S_IFREG else { throw CheckpointError.unreadable(path: path, reason: "it changed while being opened") }
        let fileBytes = Int(fst.st_size)
        func readExactly(_ count: Int, at offset: Int) throws -> [UInt8] {
            var out = [UInt8](repeating: 0, count: count)
            var done = 0
            try out.withUnsafeMutableBytes { raw in
                while done < count {
                    let n = pread(fd, raw.baseAddress! + done, count - done, off_t(offset + done))
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { throw CheckpointError.malformed(path: path, reason: "the file ended \(offset + done) bytes in; truncated?") }
                    done += n
                }
            }
            return out
        }
        do {
            let n = try SafeTensors.headerLength(try readExactly(min(8, fileBytes), at: 0), fileBytes: fileBytes)
            let dataStart = 8 + n
            let dataCount = fileBytes - dataStart
            let (entries, metadata) = try SafeTensors.decodeHeader(try readExactly(n, at: 8), dataCount: dataCount)
            // Tensor data is read whole: refuse what could not be held (a huge, perhaps sparse,
            // file) from its header alone.
            if dataCount > Memory.physicalBytes / 2 {
                throw CheckpointError.malformed(path: path, reason: "it declares \(Memory.describe(dataCount)) of tensor data, more than half of this machine's \(Memory.describe(Memory.physicalBytes)) of memory")
            }
            let used = entries.values.map(\.end).max() ?? 0
            if used != dataCount {
                throw CheckpointError.malformed(path: path, reason: "its tensors use \(used) data bytes but the file holds \(dataCount) after the header; the file is damaged")
            }
            // Shapes against the model the header names, before any data is read.
            let shapesOnly = Checkpoint(
                tensors: entries.mapValues { SafeTensors.Tensor(dtype: $0.dtype, shape: $0.shape, bytes: []) }, metadata: metadata)
            if metadata[modelKey] != nil || shapesOnly.isLegacyDFN2 {
                _ = try shapesOnly.model(path: path, requireBuffers: false)
            }
            let data = try readExactly(dataCount, at: dataStart)
            var tensors: [String: SafeTensors.Tensor] = [:]
            for (name, e) in entries { tensors[name] = SafeTensors.Tensor(dtype: e.dtype, shape: e.shape, bytes: Array(data[e.begin..<e.end])) }
            return Checkpoint(tensors: tensors, metadata: metadata)
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
