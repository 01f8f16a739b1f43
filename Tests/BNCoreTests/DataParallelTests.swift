import BNCore
import XCTest

/// Data-parallel steps: the same bits for any worker count, the unsharded gradient within
/// rounding (synchronised BN), and ghost BN's per-shard definition.
final class DataParallelTests: XCTestCase {
    struct Case {
        let spec: String
        let inputs: Int
        let image: ImageShape?
    }
    static let cases = [
        Case(spec: "fc16-sigmoid-bn-fc", inputs: 12, image: nil),
        Case(spec: "fc12-bn-relu-dropout0.2-fc10-bn-relu-dropout0.2-fc", inputs: 12, image: nil),
        Case(spec: "conv4k3-bn-relu-maxpool2-fc8-bn-relu-fc", inputs: 64, image: ImageShape(1, 8, 8)),
    ]

    /// max |a - b| over the largest reference gradient element of the whole model: a bias
    /// that feeds BN has a zero gradient up to rounding, where a relative error means nothing.
    static func scaledError(_ a: [Double], _ b: [Double], scale: Double) -> Double {
        maxAbsDiff(a, b) / scale
    }

    func parallel<T: BLASScalar>(_ c: Case, _: T.Type, shardSize: Int, maxBatch: Int, workers: Int, sync: BatchNormSync, ghostShards: Int = 0, seed: UInt64 = 5) -> DataParallel<T> {
        let plan = ShardPlan(shardSize: shardSize)
        let make = { network(c.spec, T.self, inputs: c.inputs, classes: 3, seed: seed, image: c.image) }
        let model: Network<T> = make()
        let replicas = (1..<plan.shardCount(batch: maxBatch)).map { _ in make() }
        return DataParallel(model: model, replicas: replicas, plan: plan, workers: workers, batchNormSync: sync, ghostShards: ghostShards)!
    }

    func batch<T: BLASScalar>(_ c: Case, rows: Int, seed: UInt64, _: T.Type) -> (Matrix<T>, [Int32]) {
        var r = TestRandom(seed)
        let x: Matrix<T> = r.matrix(rows, c.inputs)
        return (x, r.labels(rows, classes: 3))
    }

    /// Everything a checkpoint keeps, as bits.
    func state(_ n: Network<Float>) -> [UInt32] {
        (n.parameters.map(\.value) + n.buffers.map(\.value)).flatMap { $0.toArray().map(\.bitPattern) } + n.batchNormSteps.map { UInt32($0.steps) }
    }

    func run(_ c: Case, workers: Int, sync: BatchNormSync, optimizer: any Optimizer<Float>) -> (losses: [UInt64], state: [UInt32]) {
        let dp = parallel(c, Float.self, shardSize: 8, maxBatch: 37, workers: workers, sync: sync)
        var losses: [UInt64] = []
        // Five shards (the last of 5 rows), two, and one (the unsharded path).
        for (step, rows) in [37, 37, 13, 5].enumerated() {
            let (x, labels) = batch(c, rows: rows, seed: UInt64(step), Float.self)
            losses.append(dp.trainStep(x, labels: labels, optimizer: optimizer).bitPattern)
        }
        return (losses, state(dp.model))
    }

    func testWorkersGiveTheSameBits() {
        for c in Self.cases {
            for sync in BatchNormSync.allCases {
                for makeOptimizer in [{ SGD<Float>(learningRate: 0.1) as any Optimizer<Float> }, {
                    var a = OptimizerSettings()
                    (a.kind, a.learningRate) = (.adam, 1e-2)
                    return a.make(Float.self)
                }] {
                    let one = run(c, workers: 1, sync: sync, optimizer: makeOptimizer())
                    for w in [2, 3] {
                        let many = run(c, workers: w, sync: sync, optimizer: makeOptimizer())
                        XCTAssertEqual(one.losses, many.losses, "\(c.spec) bn-sync \(sync) workers \(w): losses")
                        XCTAssertTrue(one.state == many.state, "\(c.spec) bn-sync \(sync) workers \(w): weights and buffers differ")
                    }
                }
            }
        }
    }

    /// The shards change the arithmetic (the test above would pass trivially if every worker
    /// count ran one shard): sharded and unsharded steps differ in their low bits.
    func testShardingChangesOnlyRounding() {
        let c = Self.cases[0]
        let sharded = run(c, workers: 2, sync: .on, optimizer: SGD<Float>(learningRate: 0.1))
        let whole = parallel(c, Float.self, shardSize: 64, maxBatch: 37, workers: 1, sync: .on)
        let sgd = SGD<Float>(learningRate: 0.1)
        for (step, rows) in [37, 37, 13, 5].enumerated() {
            let (x, labels) = batch(c, rows: rows, seed: UInt64(step), Float.self)
            _ = whole.trainStep(x, labels: labels, optimizer: sgd)
        }
        let a = sharded.state, b = state(whole.model)
        XCTAssertNotEqual(a, b, "sharding should round differently")
        let fa = a.map { Float(bitPattern: $0) }, fb = b.map { Float(bitPattern: $0) }
        XCTAssertLessThan(zip(fa, fb).map { abs($0 - $1) / max(1, abs($1)) }.max()!, 1e-4)
    }

    /// A synchronised sharded step's gradient and running statistics are the whole batch's, in
    /// Double within rounding.
    func testSynchronisedGradientIsTheBatchGradient() {
        for c in Self.cases where !c.spec.contains("dropout") {
            let dp = parallel(c, Double.self, shardSize: 8, maxBatch: 29, workers: 2, sync: .on)
            let whole = network(c.spec, Double.self, inputs: c.inputs, classes: 3, seed: 5, image: c.image)
            let (x, labels) = batch(c, rows: 29, seed: 9, Double.self)
            let loss = dp.trainStep(x, labels: labels, optimizer: SGD<Double>(learningRate: 0))
            let reference = whole.computeGradients(x, labels: labels)
            XCTAssertEqual(loss, reference, accuracy: 1e-12 * abs(reference))
            let scale = whole.parameters.flatMap { $0.grad.toArray().map(abs) }.max()!
            for (p, q) in zip(dp.model.parameters, whole.parameters) {
                XCTAssertLessThan(Self.scaledError(p.grad.toArray(), q.grad.toArray(), scale: scale), 1e-12, "\(c.spec): \(p.name)")
            }
            for (p, q) in zip(dp.model.buffers, whole.buffers) {
                XCTAssertLessThan(maxAbsDiff(p.value.toArray(), q.value.toArray()), 1e-12, "\(c.spec): \(p.name)")
            }
            XCTAssertEqual(dp.model.batchNormSteps.map(\.steps), whole.batchNormSteps.map(\.steps))
        }
    }

    /// Ghost BN: the loss is the sum of every shard's own-statistics loss over B, so the
    /// gradient is sum_s (B_s / B) grad_s, with grad_s the unsharded gradient of shard s alone;
    /// the running statistics take one update per shard, in shard order.
    func testGhostBatchNormIsPerShardBatchNorm() {
        for c in Self.cases where !c.spec.contains("dropout") {
            let dp = parallel(c, Double.self, shardSize: 8, maxBatch: 29, workers: 3, sync: .off)
            let reference = network(c.spec, Double.self, inputs: c.inputs, classes: 3, seed: 5, image: c.image)
            let (x, labels) = batch(c, rows: 29, seed: 9, Double.self)
            let loss = dp.trainStep(x, labels: labels, optimizer: SGD<Double>(learningRate: 0))
            var grads = reference.parameters.map { [Double](repeating: 0, count: $0.value.count) }
            var lossSum = 0.0
            for s in 0..<dp.plan.shardCount(batch: 29) {
                let r = dp.plan.rows(ofShard: s, batch: 29)
                let xs = Matrix<Double>(rows: r.count, cols: c.inputs)
                xs.data.update(from: x.data + r.lowerBound * c.inputs, count: r.count * c.inputs)
                lossSum += reference.computeGradients(xs, labels: Array(labels[r])) * Double(r.count)
                for (i, p) in reference.parameters.enumerated() {
                    for k in 0..<p.grad.count { grads[i][k] += p.grad.data[k] * Double(r.count) / 29 }
                }
            }
            XCTAssertEqual(loss, lossSum / 29, accuracy: 1e-12)
            let scale = grads.flatMap { $0.map(abs) }.max()!
            for (i, p) in dp.model.parameters.enumerated() {
                XCTAssertLessThan(Self.scaledError(p.grad.toArray(), grads[i], scale: scale), 1e-12, "\(c.spec): \(p.name)")
            }
            for (p, q) in zip(dp.model.buffers, reference.buffers) {
                XCTAssertLessThan(maxAbsDiff(p.value.toArray(), q.value.toArray()), 1e-12, "\(c.spec): \(p.name)")
            }
            XCTAssertEqual(dp.model.batchNormSteps.map(\.steps), reference.batchNormSteps.map(\.steps))
        }
    }

    /// Ghost batches of two shards (`--bn-ghost 16` over shards of 8): the loss is the sum of
    /// each group's own-statistics loss over B, the gradient sum_g (B_g / B) grad_g with
    /// grad_g the unsharded gradient of group g alone, one running-statistics update per group
    /// in order; and the same bits for 1, 2 and 3 workers.
    func testGhostBatchesOfSeveralShardsArePerGroupBatchNorm() {
        for c in Self.cases where !c.spec.contains("dropout") {
            let reference = network(c.spec, Double.self, inputs: c.inputs, classes: 3, seed: 5, image: c.image)
            let (x, labels) = batch(c, rows: 29, seed: 9, Double.self)
            var bits: [[UInt64]] = []
            for workers in [1, 2, 3] {
                let dp = parallel(c, Double.self, shardSize: 8, maxBatch: 29, workers: workers, sync: .on, ghostShards: 2)
                let loss = dp.trainStep(x, labels: labels, optimizer: SGD<Double>(learningRate: 0))
                bits.append([loss.bitPattern] + dp.model.parameters.flatMap { $0.grad.toArray().map(\.bitPattern) } + dp.model.buffers.flatMap { $0.value.toArray().map(\.bitPattern) })
                guard workers == 1 else { continue }
                var grads = reference.parameters.map { [Double](repeating: 0, count: $0.value.count) }
                var lossSum = 0.0
                for g in [0..<16, 16..<29] {
                    let xs = Matrix<Double>(rows: g.count, cols: c.inputs)
                    xs.data.update(from: x.data + g.lowerBound * c.inputs, count: g.count * c.inputs)
                    lossSum += reference.computeGradients(xs, labels: Array(labels[g])) * Double(g.count)
                    for (i, p) in reference.parameters.enumerated() {
                        for k in 0..<p.grad.count { grads[i][k] += p.grad.data[k] * Double(g.count) / 29 }
                    }
                }
                XCTAssertEqual(loss, lossSum / 29, accuracy: 1e-12)
                let scale = grads.flatMap { $0.map(abs) }.max()!
                for (i, p) in dp.model.parameters.enumerated() {
                    XCTAssertLessThan(Self.scaledError(p.grad.toArray(), grads[i], scale: scale), 1e-12, "\(c.spec): \(p.name)")
                }
                for (p, q) in zip(dp.model.buffers, reference.buffers) {
                    XCTAssertLessThan(maxAbsDiff(p.value.toArray(), q.value.toArray()), 1e-12, "\(c.spec): \(p.name)")
                }
                XCTAssertEqual(dp.model.batchNormSteps.map(\.steps), reference.batchNormSteps.map(\.steps))
            }
            XCTAssertEqual(bits[0], bits[1], "\(c.spec): 2 workers")
            XCTAssertEqual(bits[0], bits[2], "\(c.spec): 3 workers")
        }
    }

    /// Every optimizer's update applied slice by slice (3 workers' 16-aligned slices, last
    /// slice first) gives `step`'s bits: the workers each update what they reduced.
    func testSlicedOptimizerUpdateIsTheStep() {
        var kinds: [OptimizerSettings] = []
        for (kind, momentum, wd) in [(OptimizerSettings.Kind.sgd, 0.0, 0.0), (.sgd, 0.9, 1e-2), (.adam, 0, 1e-2), (.adamw, 0, 1e-2), (.rmsprop, 0.5, 1e-3)] {
            var o = OptimizerSettings()
            (o.kind, o.momentum, o.weightDecay, o.nesterov, o.learningRate) = (kind, momentum, wd, momentum > 0, 0.01)
            kinds.append(o)
        }
        for settings in kinds {
            let whole = network("fc37-bn-relu-fc", Float.self, inputs: 23, classes: 3, seed: 2)
            let sliced = network("fc37-bn-relu-fc", Float.self, inputs: 23, classes: 3, seed: 2)
            let a = settings.make(Float.self), b = settings.make(Float.self)
            var r = TestRandom(4)
            for _ in 0..<3 {
                for (p, q) in zip(whole.parameters, sliced.parameters) {
                    let g: Matrix<Float> = r.matrix(p.grad.rows, p.grad.cols)
                    p.grad.copy(from: g)
                    q.grad.copy(from: g)
                }
                a.step(whole.parameters)
                b.prepareStep(sliced.parameters)
                for i in sliced.parameters.indices.reversed() {
                    for w in (0..<3).reversed() {
                        let range = ShardPlan.slice(forWorker: w, of: 3, count: sliced.parameters[i].value.count)
                        if !range.isEmpty { b.update(sliced.parameters, parameter: i, elements: range) }
                    }
                }
            }
            XCTAssertEqual(state(whole), state(sliced), "\(settings.kind) momentum \(settings.momentum)")
            XCTAssertEqual(a.state(whole.parameters).map { $0.values.map(\.bitPattern) }, b.state(sliced.parameters).map { $0.values.map(\.bitPattern) })
        }
    }
}
