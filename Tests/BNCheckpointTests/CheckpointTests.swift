import BNCheckpoint
import BNCore
import Foundation
import XCTest

final class CheckpointTests: XCTestCase {
    func network(seed: UInt64, batchNorm: Bool = true) -> Network<Float> {
        var rng = SplitMix64(seed: seed)
        return ModelSpec(inputs: 12, hidden: 5, classes: 3, batchNorm: batchNorm).makeNetwork(rng: &rng)
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
        let c = Checkpoint(network: a, metadata: ["x": "y"])
        XCTAssertEqual(c.tensors["fc1.weight"]!.shape, [5, 12])
        XCTAssertEqual(c.tensors["fc1.bias"]!.shape, [5])
        XCTAssertEqual(c.tensors["bn.running_var"]!.shape, [5])
        XCTAssertEqual(c.tensors["fc2.weight"]!.shape, [3, 5])
        XCTAssertEqual(c.metadata["format"], "pt")
        let dir = NSTemporaryDirectory() + "ckpt-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try c.write(to: dir + "/m.safetensors")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["m.safetensors"], "no temporary file left")
        let r = try Checkpoint.read(path: dir + "/m.safetensors")
        XCTAssertEqual(try r.spec(path: "m"), ModelSpec(inputs: 12, hidden: 5, classes: 3, batchNorm: true))
        try r.load(into: b, path: "m")
        for (p, q) in zip(a.parameters, b.parameters) { XCTAssertEqual(p.value.toArray(), q.value.toArray(), p.name) }
        for (p, q) in zip(a.buffers, b.buffers) { XCTAssertEqual(p.value.toArray(), q.value.toArray(), p.name) }
        XCTAssertEqual(b.layers.compactMap { $0 as? BatchNorm1D<Float> }.first!.batchesTracked, 17)
    }

    func testIncompatibleCheckpointNamesTheShapes() throws {
        let c = Checkpoint(network: network(seed: 1), metadata: [:])
        var rng = SplitMix64(seed: 3)
        let wider = ModelSpec(inputs: 12, hidden: 7, classes: 3, batchNorm: true).makeNetwork(rng: &rng)
        XCTAssertThrowsError(try c.load(into: wider, path: "m.safetensors")) { e in
            XCTAssertEqual("\(e)", "checkpoint 'm.safetensors': tensor 'fc1.weight' has shape [5, 12] but this network needs [7, 12]; check --hidden, --no-batchnorm and the dataset")
        }
        let noBN = Checkpoint(network: network(seed: 1, batchNorm: false), metadata: [:])
        XCTAssertThrowsError(try noBN.load(into: network(seed: 4), path: "m")) { e in
            guard case CheckpointError.missingTensor(_, "bn.weight", [5]) = e else { return XCTFail("\(e)") }
        }
        XCTAssertFalse(try noBN.spec(path: "m").batchNorm)
    }

    func testTruncatedAndCorruptFilesAreRefused() {
        let bytes = SafeTensors.encode(Checkpoint(network: network(seed: 1), metadata: [:]).tensors, metadata: [:])
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
