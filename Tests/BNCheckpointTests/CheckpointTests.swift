import BNCheckpoint
import BNCore
import Foundation
import XCTest

final class CheckpointTests: XCTestCase {
    func spec(_ batchNorm: Bool = true, hidden: Int = 5) -> ModelSpec {
        let s = try! ModelSpec.parse("dfn2", hidden: hidden)
        return batchNorm ? s : s.removingBatchNorm()
    }

    func network(seed: UInt64, batchNorm: Bool = true, hidden: Int = 5) -> Network<Float> {
        var rng = SplitMix64(seed: seed)
        return try! spec(batchNorm, hidden: hidden).build(Float.self, inputs: 12, classes: 3, rng: &rng)
    }

    func checkpoint(_ net: Network<Float>, batchNorm: Bool = true, hidden: Int = 5, metadata: [String: String] = [:]) -> Checkpoint {
        Checkpoint(network: net, spec: spec(batchNorm, hidden: hidden), options: BuildOptions(), metadata: metadata)
    }

    func testSafeTensorsRoundTrip() throws {
        let values: [Float] = [1.5, -2, 0, .greatestFiniteMagnitude]
        let t = values.withUnsafeBufferPointer { SafeTensors.Tensor(floats: $0, shape: [2, 2]) }
        let bytes = SafeTensors.encode(["a.weight": t, "n": .init(int64: 7)], metadata: ["k": "v w"])
        let n = bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        XCTAssertEqual((8 + Int(n)) % 8, 0, "data section 8-byte aligned")
        let (tensors, meta) = try SafeTensors.decode(bytes)
        XCTAssertEqual(tensors["a.weight"], t)
        XCTAssertEqual(tensors["a.weight"]!.floats(), values)
        XCTAssertEqual(tensors["n"]!.int64Scalar(), 7)
        XCTAssertEqual(tensors["n"]!.shape, [])
        XCTAssertEqual(meta, ["k": "v w"])
    }

    func testNetworkRoundTripIsExact() throws {
        let a = network(seed: 1), b = network(seed: 2)
        let bn = a.layers.compactMap { $0 as? BatchNorm1D<Float> }.first!
        bn.runningMean.value.fill(0.25)
        bn.batchesTracked = 17
        let c = checkpoint(a, metadata: ["x": "y"])
        XCTAssertEqual(c.tensors["0.weight"]!.shape, [5, 12])
        XCTAssertEqual(c.tensors["0.bias"]!.shape, [5])
        XCTAssertEqual(c.tensors["2.running_var"]!.shape, [5])
        XCTAssertEqual(c.tensors["2.num_batches_tracked"]!.int64Scalar(), 17)
        XCTAssertEqual(c.tensors["3.weight"]!.shape, [3, 5])
        XCTAssertEqual(c.metadata["format"], "pt")
        XCTAssertEqual(c.metadata[Checkpoint.modelKey], "fc5-sigmoid-bn-fc")
        let dir = NSTemporaryDirectory() + "ckpt-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try c.write(to: dir + "/m.safetensors")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["m.safetensors"], "no temporary file left")
        let r = try Checkpoint.read(path: dir + "/m.safetensors")
        XCTAssertEqual(try r.model(path: "m"), StoredModel(spec: spec(), inputs: 12, classes: 3, options: BuildOptions()))
        try r.load(into: b, path: "m")
        for (p, q) in zip(a.parameters, b.parameters) { XCTAssertEqual(p.value.toArray(), q.value.toArray(), p.name) }
        for (p, q) in zip(a.buffers, b.buffers) { XCTAssertEqual(p.value.toArray(), q.value.toArray(), p.name) }
        XCTAssertEqual(b.layers.compactMap { $0 as? BatchNorm1D<Float> }.first!.batchesTracked, 17)
    }

    /// Tensors that do not fit the model are refused, naming the tensor, before anything is copied.
    func testIncompatibleCheckpointNamesTheTensor() throws {
        let c = checkpoint(network(seed: 1))
        let wider = network(seed: 3, hidden: 7)
        let before = wider.parameters[0].value.toArray()
        XCTAssertThrowsError(try c.load(into: wider, path: "m.safetensors")) { e in
            XCTAssertEqual("\(e)", "checkpoint 'm.safetensors': tensor '0.weight' has shape [5, 12] but the model needs [7, 12]; it was saved from a different model or dataset")
        }
        XCTAssertEqual(wider.parameters[0].value.toArray(), before, "nothing copied")
        let noBN = checkpoint(network(seed: 1, batchNorm: false), batchNorm: false)
        XCTAssertThrowsError(try noBN.load(into: network(seed: 4), path: "m")) { e in
            guard case CheckpointError.shapeMismatch(_, "2.weight", [5], [3, 5]) = e else { return XCTFail("\(e)") }
        }
        XCTAssertFalse(try noBN.model(path: "m").spec.hasBatchNorm)
        // The spec says one thing, the tensors another.
        var lying = c
        lying.metadata[Checkpoint.modelKey] = "fc5-sigmoid-fc"
        XCTAssertThrowsError(try lying.model(path: "m")) { e in XCTAssertTrue("\(e)".contains("tensor '2.weight' has shape [5]"), "\(e)") }
        lying.metadata[Checkpoint.modelKey] = "fc5-sigmoid-bn-fc-fc"  // not a valid spec: refused before the tensors
        XCTAssertThrowsError(try lying.model(path: "m"))
        lying.metadata[Checkpoint.modelKey] = "fc5-relu-bn-fc"  // same tensors, different spec: fits
        XCTAssertNoThrow(try lying.model(path: "m"))
        var extra = c
        extra.tensors["9.weight"] = extra.tensors["0.bias"]
        XCTAssertThrowsError(try extra.model(path: "m")) { e in
            guard case CheckpointError.unexpectedTensor(_, "9.weight") = e else { return XCTFail("\(e)") }
        }
        lying.metadata[Checkpoint.modelKey] = "fc6-sigmoid-bn-fc"
        XCTAssertThrowsError(try lying.model(path: "m")) { e in
            guard case CheckpointError.shapeMismatch(_, "0.weight", [6, 12], [5, 12]) = e else { return XCTFail("\(e)") }
        }
        lying.metadata[Checkpoint.modelKey] = "fc5-bogus-fc"
        XCTAssertThrowsError(try lying.model(path: "m")) { e in XCTAssertTrue("\(e)".contains("'bogus'"), "\(e)") }
        var missing = c
        missing.tensors["3.bias"] = nil
        XCTAssertThrowsError(try missing.model(path: "m")) { e in
            guard case CheckpointError.missingTensor(_, "3.bias", [3]) = e else { return XCTFail("\(e)") }
        }
    }

    /// bntrain 0.3 named dfn2's tensors fc1, bn, fc2 and stored no spec: read as dfn2.
    func testLegacyDFN2NamesLoad() throws {
        let a = network(seed: 1)
        var legacy = checkpoint(a)
        legacy.metadata[Checkpoint.modelKey] = nil
        let rename = ["0": "fc1", "2": "bn", "3": "fc2"]
        legacy.tensors = Dictionary(uniqueKeysWithValues: legacy.tensors.map { name, t in
            let parts = name.split(separator: ".", maxSplits: 1)
            return (rename[String(parts[0])]! + "." + parts[1], t)
        })
        XCTAssertTrue(legacy.isLegacyDFN2)
        let model = try legacy.model(path: "old")
        XCTAssertEqual(model.spec.canonical, "fc5-sigmoid-bn-fc")
        let b = try model.makeNetwork()
        try legacy.load(into: b, path: "old")
        for (p, q) in zip(a.parameters, b.parameters) { XCTAssertEqual(p.value.toArray(), q.value.toArray(), p.name) }
    }

    func testTruncatedAndCorruptFilesAreRefused() {
        let bytes = SafeTensors.encode(checkpoint(network(seed: 1)).tensors, metadata: [:])
        for cut in [0, 5, 8, 40, bytes.count / 2, bytes.count - 1] {
            XCTAssertThrowsError(try SafeTensors.decode(Array(bytes.prefix(cut))), "cut at \(cut)")
        }
        var huge = bytes
        huge.replaceSubrange(0..<8, with: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F])
        XCTAssertThrowsError(try SafeTensors.decode(huge)) { e in XCTAssertTrue("\(e)".contains("implausible"), "\(e)") }
        var garbled = bytes
        garbled[9] = 0x00
        XCTAssertThrowsError(try SafeTensors.decode(garbled))
        XCTAssertThrowsError(try SafeTensors.decode(Array("not a checkpoint at all".utf8)))
    }
}
