import BNCore
import BNData
import CKernels
import Foundation

/// `--trace LAYER[:input|output][:unit=K]`: statistics of one layer's input or output, for
/// one unit and over all units, recorded every `--trace-every` training steps.
///
/// LAYER is a spec index (`8`) or `last-KIND` / `first-KIND` (`last-sigmoid`: the paper's
/// view of `bn-paper`, the input to a sigmoid of the last hidden layer, whose index moves
/// when `--no-batchnorm` removes the BN layers). The activations are those of a fixed probe
/// set — the first `--trace-examples` test images — run through the network in evaluation
/// mode at that step (running BN statistics; no dropout), which reads the model and changes
/// nothing, so a traced run trains exactly as an untraced one.
public struct TraceSpec: Equatable, Sendable, Codable {
    public enum Side: String, Codable, Sendable { case input, output }
    /// As written: an index or `first-KIND` / `last-KIND`.
    public var layer: String
    public var side: Side
    public var unit: Int

    public init(layer: String, side: Side = .input, unit: Int = 0) {
        self.layer = layer
        self.side = side
        self.unit = unit
    }

    /// Parses `LAYER[:input|output][:unit=K]`; the message names the bad part.
    public static func parse(_ text: String) throws -> TraceSpec {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard let layer = parts.first, !layer.isEmpty else { throw ModelSpec.ParseError(message: "'\(text)': give a layer (an index, or last-KIND such as last-sigmoid)") }
        var t = TraceSpec(layer: layer)
        var sideGiven = false, unitGiven = false
        for p in parts.dropFirst() {
            if let s = Side(rawValue: p) {
                // 0:input:output would keep only the last: say which one is meant.
                guard !sideGiven else { throw ModelSpec.ParseError(message: "'\(text)': give input or output once (one trace a run)") }
                (t.side, sideGiven) = (s, true)
            } else if p.hasPrefix("unit="), p.dropFirst(5).allSatisfy({ $0.isASCII && $0.isNumber }), let u = Int(p.dropFirst(5)), u >= 0 {
                guard !unitGiven else { throw ModelSpec.ParseError(message: "'\(text)': give unit=K once (one trace a run)") }
                (t.unit, unitGiven) = (u, true)
            } else {
                throw ModelSpec.ParseError(message: "'\(text)': '\(p)' is neither input, output nor unit=K")
            }
        }
        return t
    }

    public var description: String { "\(layer):\(side.rawValue):unit=\(unit)" }

    /// The spec index this names in `spec`, and the width of the traced tensor.
    public func resolve(in spec: ModelSpec, inputs: Int, classes: Int, image: ImageShape? = nil) throws -> (index: Int, width: Int) {
        let widths = try spec.widths(inputs: inputs, classes: classes, image: image)
        let index: Int
        if layer.allSatisfy({ $0.isASCII && $0.isNumber }), let i = Int(layer) {
            guard i >= 0 && i < spec.layers.count else { throw ModelSpec.ParseError(message: "layer \(i) is outside the model's \(spec.layers.count) layers (0...\(spec.layers.count - 1)) in '\(spec)'") }
            index = i
        } else if layer.hasPrefix("last-") || layer.hasPrefix("first-") {
            let last = layer.hasPrefix("last-")
            let kind = String(layer.drop(while: { $0 != "-" }).dropFirst())
            let matches = spec.layers.indices.filter { spec.layers[$0].kind == kind }
            guard let i = last ? matches.last : matches.first else { throw ModelSpec.ParseError(message: "'\(spec)' has no \(kind) layer to trace") }
            index = i
        } else {
            throw ModelSpec.ParseError(message: "'\(layer)' is not a layer index or first-KIND / last-KIND")
        }
        let width = side == .input ? (index == 0 ? inputs : widths[index - 1]) : widths[index]
        guard unit < width else { throw ModelSpec.ParseError(message: "unit \(unit) is outside the \(width) units of layer \(index)'s \(side.rawValue)") }
        return (index, width)
    }
}

/// Percentiles and moments of a sample.
public struct Summary: Equatable, Sendable {
    public var p15: Double, p50: Double, p85: Double, mean: Double, std: Double

    /// numpy.percentile's default (linear interpolation between the closest ranks) and the
    /// population standard deviation (numpy.std, ddof 0), computed in Double. Sorts `values`.
    public init<F: BinaryFloatingPoint>(_ values: inout [F]) {
        values.sort()
        self.init(sorted: values)
    }

    /// The same statistics of values already in ascending order.
    public init<F: BinaryFloatingPoint>(sorted values: [F]) {
        func pct(_ q: Double) -> Double {
            let pos = q / 100 * Double(values.count - 1)
            let lo = Int(pos.rounded(.down)), hi = min(lo + 1, values.count - 1)
            let (a, b) = (Double(values[lo]), Double(values[hi]))
            return a + (b - a) * (pos - Double(lo))
        }
        p15 = pct(15)
        p50 = pct(50)
        p85 = pct(85)
        let n = Double(values.count)
        let m = values.reduce(0.0) { $0 + Double($1) } / n
        mean = m
        std = (values.reduce(0.0) { $0 + (Double($1) - m) * (Double($1) - m) } / n).squareRoot()
    }
}

/// Runs a probe set through a network and summarises the traced tensor.
///
/// Memory: the traced values of the whole probe set (examples x width floats, kept to take
/// exact percentiles) and one chunk's forward pass per worker; `Trainer.memoryEstimate`
/// counts both.
///
/// With several workers, each forwards its share of the chunks through its own network (a
/// replica sharing the model's weights) into the chunks' own rows of the values, and the two
/// sorts run side by side: the same values, the same statistics, whatever the worker count.
final class Tracer {
    let spec: TraceSpec
    /// Index in the built network whose input or output is the traced tensor.
    let networkLayer: Int
    let useOutput: Bool
    let width: Int
    let images: ImageSet
    let examples: Int
    /// Probe rows per forward pass (the automatic evaluation batch, fixed by the spec): a trace
    /// of a wide layer is bounded in memory and can be interrupted between chunks. Rows are
    /// independent in evaluation mode, but BLAS may round a product's last bit differently
    /// for another row count, so the chunk must not depend on flags such as --eval-batch.
    let chunk: Int
    /// Per worker, its chunk's input, and a view of its first rows for the last, shorter chunk.
    let inputs: [Matrix<Float>]
    let tails: [Matrix<Float>]
    var unitValues: [Float]
    var allValues: [Float]
    /// The radix sorts' second buffers (one per sort, as they may run at once).
    var scratch: [Float]
    var unitScratch: [Float]

    /// The floats the tracer keeps beyond one chunk's forward pass: the traced values and the
    /// sort's scratch, for the whole layer and for one unit.
    static func storedFloats(examples: Int, width: Int) -> Double { 2 * Double(examples) * Double(width + 1) }

    /// Maps the spec index to the built network's layers: an fc fused with its sigmoid is one
    /// layer whose output is the sigmoid's, so tracing the fc's output or the sigmoid's input
    /// (the pre-activation) needs the unfused network (likewise a 2-D bn fused with its relu);
    /// Trainer builds the network with one layer per spec token when that is the case.
    init(spec: TraceSpec, networkLayer: Int, useOutput: Bool, width: Int, images: ImageSet, examples: Int, chunk: Int, workers: Int = 1) {
        self.spec = spec
        self.networkLayer = networkLayer
        self.useOutput = useOutput
        self.width = width
        self.images = images
        self.examples = examples
        self.chunk = max(1, min(chunk, examples))
        let rows = self.chunk
        inputs = (0..<max(workers, 1)).map { _ in Matrix(rows: rows, cols: images.featureCount, zeroed: false) }
        tails = inputs.map { Matrix(viewOf: $0) }
        unitValues = [Float](repeating: 0, count: examples)
        allValues = [Float](repeating: 0, count: examples * width)
        scratch = [Float](repeating: 0, count: examples * width)
        unitScratch = [Float](repeating: 0, count: examples)
    }

    /// Sorts with a radix sort (the tensor may hold hundreds of millions of values); the
    /// order equals a comparison sort's, but for -0 and +0, which the statistics treat alike.
    static func sort(_ values: UnsafeMutableBufferPointer<Float>, scratch: UnsafeMutableBufferPointer<Float>) {
        bn_sort_f32(values.baseAddress!, scratch.baseAddress!, values.count)
    }

    /// Chunk `c`'s forward pass (evaluation mode) through `net` on worker `w`'s buffers, up to
    /// the traced tensor, copied into the chunk's rows of the values.
    func forward(chunk c: Int, worker w: Int, _ net: Network<Float>, unit: UnsafeMutablePointer<Float>, all: UnsafeMutablePointer<Float>) {
        let start = c * chunk, n = min(chunk, examples - start)
        let input = inputs[w], tail = tails[w]
        images.convert(images: start, count: n, into: input.data)
        if n < chunk { tail.view(of: input, row: 0, rows: n) }
        var h = n == chunk ? input : tail
        for (i, layer) in net.layers.enumerated() {
            if i == networkLayer && !useOutput { break }
            h = layer.forward(h, training: false)
            if i == networkLayer { break }
        }
        precondition(h.cols == width, "traced tensor has \(h.cols) columns, expected \(width)")
        for r in 0..<n { unit[start + r] = h[r, spec.unit] }
        // Rows are contiguous in both: the chunk's values are one copy.
        (all + start * width).update(from: h.data, count: n * width)
    }

    /// Every rank's block of chunks into every rank's values: the unit's values and all units'
    /// of each block's rows, padded to the largest block, all-gathered, and copied into place.
    func gather(_ ranks: Ranks, chunks: Int) {
        let blocks = (0..<ranks.count).map { ShardPlan.shards(forWorker: $0, of: ranks.count, shardCount: chunks) }
        let rows = { (b: Range<Int>) in min(b.upperBound * self.chunk, self.examples) - min(b.lowerBound * self.chunk, self.examples) }
        let most = blocks.map(rows).max() ?? 0, stride = most * (width + 1)
        guard stride > 0 else { return }
        var send = [Float](repeating: 0, count: stride), receive = [Float](repeating: 0, count: stride * ranks.count)
        let first = min(blocks[ranks.rank].lowerBound * chunk, examples), n = rows(blocks[ranks.rank])
        for i in 0..<n { send[i] = unitValues[first + i] }
        for i in 0..<(n * width) { send[most + i] = allValues[first * width + i] }
        send.withUnsafeBytes { s in receive.withUnsafeMutableBytes { ranks.allGather(s.baseAddress!, bytes: s.count, into: $0.baseAddress!) } }
        for (r, b) in blocks.enumerated() where r != ranks.rank {
            let start = min(b.lowerBound * chunk, examples), count = rows(b), base = r * stride
            for i in 0..<count { unitValues[start + i] = receive[base + i] }
            for i in 0..<(count * width) { allValues[start * width + i] = receive[base + most + i] }
        }
    }

    /// Evaluation-mode forward of the probe set up to the traced tensor, and its statistics;
    /// nil when `shouldStop` (asked on worker 0, between its chunks) reports a signal. The
    /// chunks are divided among `parallel`'s workers, each with its own network.
    func measure(_ parallel: DataParallel<Float>, shouldStop: () -> Int32? = { nil }) -> (unit: Summary, all: Summary)? {
        let chunks = (examples + chunk - 1) / chunk
        // Under MPI, this rank's block of the chunks (its workers divide it); the blocks are
        // all-gathered after the forward passes.
        let ranks = parallel.ranks.flatMap { $0.count > 1 ? $0 : nil }
        let mine = ranks.map { ShardPlan.shards(forWorker: $0.rank, of: $0.count, shardCount: chunks) } ?? 0..<chunks
        let stopped = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
        stopped.initialize(to: 0)
        defer { stopped.deallocate() }
        unitValues.withUnsafeMutableBufferPointer { unit in
            allValues.withUnsafeMutableBufferPointer { all in
                let (u, a) = (unit.baseAddress!, all.baseAddress!)
                parallel.onEveryWorker { w, workers in
                    let net = parallel.network(forWorker: w)
                    let own = ShardPlan.shards(forWorker: w, of: workers, shardCount: mine.count)
                    for c in (mine.lowerBound + own.lowerBound)..<(mine.lowerBound + own.upperBound) {
                        if w == 0, c > 0, shouldStop() != nil { bn_atomic_store_i32(stopped, 1) }
                        if bn_atomic_load_i32(stopped) != 0 { return }
                        forward(chunk: c, worker: w, net, unit: u, all: a)
                    }
                }
            }
        }
        if let ranks { gather(ranks, chunks: chunks) }
        // Sorting every value takes a while for a wide layer: one more chance to stop first.
        if stopped.pointee != 0 || shouldStop() != nil { return nil }
        unitValues.withUnsafeMutableBufferPointer { unit in
            allValues.withUnsafeMutableBufferPointer { all in
                scratch.withUnsafeMutableBufferPointer { s in
                    unitScratch.withUnsafeMutableBufferPointer { us in
                        let (u, a, s, us) = (unit, all, s, us)
                        parallel.onEveryWorker { w, workers in
                            if w == 0 { Tracer.sort(a, scratch: s) }
                            if w == min(1, workers - 1) { Tracer.sort(u, scratch: us) }
                        }
                    }
                }
            }
        }
        return (Summary(sorted: unitValues), Summary(sorted: allValues))
    }
}
