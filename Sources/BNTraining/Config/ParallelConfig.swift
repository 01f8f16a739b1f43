import BNCore

extension ConfigKey {
    public static let workers = ConfigKey("workers", restoredOnResume: false)
    public static let shardSize = ConfigKey("shard_size")
    public static let bnSync = ConfigKey("bn_sync")
}

/// How a minibatch is split (docs/parallel.md). The shard size and the BN mode define the
/// arithmetic, so they are kept on resume; the worker count only changes the speed.
public struct ParallelConfig: ConfigGroup {
    /// Workers computing the shards; 0 is `auto` (one per physical core this process may use).
    public var workers = 1
    /// Rows per canonical shard: a batch of B rows is ceil(B / S) shards.
    public var shardSize = 32
    public var bnSync = BatchNormSync.on
    public init() {}

    public static let maxWorkers = 1024
    public static let maxShardSize = 1 << 16

    public func write(to w: inout FlatWriter) {
        if workers == 0 { w.write(.workers, "auto") } else { w.write(.workers, workers) }
        w.write(.shardSize, shardSize)
        w.write(.bnSync, bnSync)
    }

    public init(from r: FlatReader) throws {
        if r.contains(.workers) {
            if let n = try? r.int(.workers) {
                workers = n ?? workers
            } else if try r.string(.workers) == "auto" {
                workers = 0
            } else {
                throw r.bad(.workers, "expected a worker count or \"auto\"")
            }
        }
        shardSize = try r.int(.shardSize) ?? shardSize
        bnSync = try r.choice(.bnSync) ?? bnSync
    }

    public func problem() -> ConfigProblem? {
        if workers < 0 || workers > Self.maxWorkers { return ConfigProblem(.workers, "must be from 1 to \(Self.maxWorkers), or auto (got \(workers))") }
        if shardSize < 1 || shardSize > Self.maxShardSize { return ConfigProblem(.shardSize, "must be from 1 to \(Self.maxShardSize) rows (got \(shardSize))") }
        return nil
    }

    /// The worker count to run with: `workers`, or for auto the physical cores available.
    public var resolvedWorkers: Int { resolvedWorkers(ranksOnHost: 1) }
    /// `auto` under MPI: this host's physical cores divided among its ranks (at least one each).
    public func resolvedWorkers(ranksOnHost: Int) -> Int { workers == 0 ? max(1, CPUTopology.physicalCores / max(ranksOnHost, 1)) : workers }
}
