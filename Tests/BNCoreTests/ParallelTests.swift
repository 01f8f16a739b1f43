import BNCore
import XCTest

final class ParallelTests: XCTestCase {
    func testShardPlanCutsTheBatchInOrder() {
        let plan = ShardPlan(shardSize: 32)
        XCTAssertEqual(plan.shardCount(batch: 64), 2)
        XCTAssertEqual(plan.shardCount(batch: 70), 3)
        XCTAssertEqual(plan.shardCount(batch: 5), 1)
        XCTAssertEqual(plan.shardCount(batch: 0), 0)
        XCTAssertEqual(plan.rows(ofShard: 2, batch: 70), 64..<70)
        XCTAssertEqual(plan.rows(ofShard: 0, batch: 5), 0..<5)
        // Every shard goes to exactly one worker, in order, for any team size.
        for shards in 0...9 {
            for workers in 1...5 {
                let blocks = (0..<workers).map { ShardPlan.shards(forWorker: $0, of: workers, shardCount: shards) }
                XCTAssertEqual(blocks.flatMap { Array($0) }, Array(0..<shards), "\(shards) shards, \(workers) workers")
                XCTAssertLessThanOrEqual((blocks.map(\.count).max() ?? 0) - (blocks.map(\.count).min() ?? 0), 1)
            }
        }
        // Reduction slices cover every element once and start on 64-byte boundaries.
        for count in [0, 1, 15, 16, 17, 1000, 159_010] {
            for workers in 1...4 {
                let slices = (0..<workers).map { ShardPlan.slice(forWorker: $0, of: workers, count: count) }
                XCTAssertEqual(slices.flatMap { Array($0) }, Array(0..<count))
                for s in slices where !s.isEmpty { XCTAssertEqual(s.lowerBound % 16, 0) }
            }
        }
    }

    /// Values whose sum depends on the order of addition (magnitudes from 1e-8 to 1e8), so a
    /// reduction that reassociated would show.
    private func shardGradients(shards: Int, count: Int, seed: UInt64) -> [[Float]] {
        var g = SplitMix64(seed: seed)
        return (0..<shards).map { _ in
            (0..<count).map { _ in
                let u = Double(g.next() >> 11) / Double(1 << 53)
                let e = Double(g.next() % 17) - 8
                return Float((u - 0.5) * pow(10, e))
            }
        }
    }

    private func reduced(_ grads: [[Float]], workers: Int) -> [Float] {
        var target = grads[0]
        let rest = grads.dropFirst().map { $0 }
        let pool = WorkerPool(workers: workers)!
        let count = target.count
        rest.withUnsafeBufferPointers { ptrs in
            target.withUnsafeMutableBufferPointer { t in
                pool.run { w in
                    ShardReduction.accumulate(into: t.baseAddress!, shards: ptrs, range: ShardPlan.slice(forWorker: w, of: workers, count: count))
                }
            }
        }
        return target
    }

    func testReductionGivesTheSameBitsForAnyWorkerCount() {
        let grads = shardGradients(shards: 5, count: 10_007, seed: 7)
        // The reference: ((g0 + g1) + g2) + ... one element at a time.
        var chain = grads[0]
        for s in 1..<grads.count { for i in chain.indices { chain[i] += grads[s][i] } }
        // The test can tell orders apart: g0 + (g1 + (g2 + ...)) differs somewhere.
        var other = grads[grads.count - 1]
        for s in stride(from: grads.count - 2, through: 0, by: -1) { for i in other.indices { other[i] = grads[s][i] + other[i] } }
        XCTAssertNotEqual(chain.map(\.bitPattern), other.map(\.bitPattern))
        for workers in 1...4 {
            XCTAssertEqual(reduced(grads, workers: workers).map(\.bitPattern), chain.map(\.bitPattern), "\(workers) workers")
        }
    }

    func testPoolRunsEveryWorkerAndItsBarrierHolds() {
        // 4 workers on a 2-core machine, and no spinning: the sleeping path is exercised too.
        for (workers, spins) in [(1, 4000), (2, 4000), (3, 0), (4, 0)] {
            let pool = WorkerPool(workers: workers, spins: spins)!
            let slots = UnsafeMutablePointer<Int>.allocate(capacity: workers)
            slots.initialize(repeating: -1, count: workers)
            defer { slots.deallocate() }
            let seen = UnsafeMutablePointer<Int>.allocate(capacity: workers)
            seen.initialize(repeating: 0, count: workers)
            defer { seen.deallocate() }
            for run in 0..<50 {
                pool.run { w in
                    for round in 0..<20 {
                        slots[w] = run * 100 + round
                        pool.barrier()
                        // Every worker wrote this round before anyone read.
                        var ok = true
                        for k in 0..<workers where slots[k] != run * 100 + round { ok = false }
                        if ok { seen[w] += 1 }
                        pool.barrier()
                    }
                }
            }
            for w in 0..<workers { XCTAssertEqual(seen[w], 50 * 20, "\(workers) workers, worker \(w)") }
        }
    }

    func testSetupRunsOnEachWorkersOwnThread() {
        let ids = UnsafeMutablePointer<UInt>.allocate(capacity: 3)
        ids.initialize(repeating: 0, count: 3)
        defer { ids.deallocate() }
        let pool = WorkerPool(workers: 3, setup: { w in ids[w] = UInt(pthread_self()) })!
        let ran = UnsafeMutablePointer<UInt>.allocate(capacity: 3)
        defer { ran.deallocate() }
        pool.run { w in ran[w] = UInt(pthread_self()) }
        XCTAssertEqual(Set((0..<3).map { ids[$0] }).count, 3)
        for w in 0..<3 { XCTAssertEqual(ids[w], ran[w]) }
    }
}

extension Array where Element == [Float] {
    func withUnsafeBufferPointers<R>(_ body: (UnsafeBufferPointer<UnsafePointer<Float>?>) -> R) -> R {
        let ptrs = UnsafeMutablePointer<UnsafePointer<Float>?>.allocate(capacity: Swift.max(count, 1))
        defer { ptrs.deallocate() }
        // Copies held alive for the call: each row's storage pointer is stable while `copies` lives.
        let copies = map { row -> UnsafeMutablePointer<Float> in
            let p = UnsafeMutablePointer<Float>.allocate(capacity: Swift.max(row.count, 1))
            p.initialize(from: row, count: row.count)
            return p
        }
        defer { copies.forEach { $0.deallocate() } }
        for (i, p) in copies.enumerated() { ptrs[i] = UnsafePointer(p) }
        return body(UnsafeBufferPointer(start: ptrs, count: count))
    }
}
