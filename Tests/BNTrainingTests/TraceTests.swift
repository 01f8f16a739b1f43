import BNCore
import BNData
@testable import BNTraining
import XCTest

/// A trace divided among workers: each forwards its share of the probe set's chunks through its
/// own replica, and the sorts run side by side; the statistics are the same bits on 1, 2 and 3
/// workers, and equal a plain serial pass written here.
final class TraceTests: XCTestCase {
    func testTraceIsTheSameOnAnyWorkerCount() throws {
        let spec = try ModelSpec.parse("fc16-sigmoid-bn-fc12-relu-fc")
        var rng = SplitMix64(seed: 9)
        let examples = 103, side = 5
        let pixels = (0..<(examples * side * side)).map { _ in UInt8(rng.nextInt(below: 256)) }
        let images = ImageSet(count: examples, rows: side, cols: side, bytes: pixels)
        func model() throws -> Network<Float> {
            var r = SplitMix64(seed: 3)
            return try spec.build(Float.self, inputs: side * side, classes: 4, rng: &r)
        }
        // Train mode once so that BN's running statistics are not the initial ones.
        let trained = try model()
        let x = Matrix<Float>(rows: 40, cols: side * side)
        images.convert(images: 0, count: 40, into: x.data)
        _ = trained.forward(x, training: true)
        let layer = trained.specIndices.lastIndex { $0 <= 2 }!  // the bn layer's input: the sigmoid's output
        var results: [(Summary, Summary)] = []
        for workers in [1, 2, 3] {
            let net = try model()
            for (p, q) in zip(net.parameters, trained.parameters) { p.value.copy(from: q.value) }
            for (p, q) in zip(net.buffers, trained.buffers) { p.value.copy(from: q.value) }
            let replicas = try (1..<3).map { _ in try model() }
            let parallel = try XCTUnwrap(DataParallel(model: net, replicas: replicas, plan: ShardPlan(shardSize: 32), workers: workers, batchNormSync: .on))
            XCTAssertEqual(parallel.workers, workers)
            let tracer = Tracer(spec: TraceSpec(layer: "2", side: .input, unit: 5), networkLayer: layer, useOutput: false, width: 16, images: images,
                                examples: examples, chunk: 10, workers: workers)
            let r = try XCTUnwrap(tracer.measure(parallel))
            results.append(r)
        }
        XCTAssertEqual(results[0].0, results[1].0)
        XCTAssertEqual(results[0].1, results[1].1)
        XCTAssertEqual(results[0].0, results[2].0)
        XCTAssertEqual(results[0].1, results[2].1)
        // The serial definition: chunks of 10 in order, the sigmoid output of unit 5 and of all units.
        var unit: [Float] = [], all: [Float] = []
        for start in stride(from: 0, to: examples, by: 10) {
            let n = min(10, examples - start), input = Matrix<Float>(rows: n, cols: side * side)
            images.convert(images: start, count: n, into: input.data)
            var h = input
            for l in trained.layers[..<layer] { h = l.forward(h, training: false) }
            for r in 0..<n { unit.append(h[r, 5]) }
            all += h.toArray()
        }
        XCTAssertEqual(results[0].0, Summary(&unit))
        XCTAssertEqual(results[0].1, Summary(&all))
    }

    /// A stop request seen between chunks ends the trace with nil, on several workers too.
    func testStopBetweenChunks() throws {
        let spec = try ModelSpec.parse("fc8-bn-fc")
        var rng = SplitMix64(seed: 2)
        let images = ImageSet(count: 50, rows: 4, cols: 4, bytes: (0..<800).map { _ in UInt8(rng.nextInt(below: 256)) })
        var r = SplitMix64(seed: 1)
        let net = try spec.build(Float.self, inputs: 16, classes: 3, rng: &r)
        let replica = try spec.build(Float.self, inputs: 16, classes: 3, rng: &r)
        let parallel = try XCTUnwrap(DataParallel(model: net, replicas: [replica], plan: ShardPlan(shardSize: 32), workers: 2, batchNormSync: .on))
        let tracer = Tracer(spec: TraceSpec(layer: "1"), networkLayer: 1, useOutput: false, width: 8, images: images, examples: 50, chunk: 5, workers: 2)
        XCTAssertNil(tracer.measure(parallel, shouldStop: { 15 }))
        XCTAssertNotNil(tracer.measure(parallel))
    }
}
