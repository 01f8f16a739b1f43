import ArgumentParser
import BNCore
import BNTraining

extension BatchNormSync: ExpressibleByArgument {}

/// `--workers`, `--shard-size`, `--bn-sync`: how each minibatch is split across cores
/// (docs/parallel.md).
struct ParallelOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Workers (threads) that share each minibatch's shards, or auto (one per physical core). Any count gives the same numbers; only the speed changes. Default: 1.", valueName: "N|auto"))
    var workers: String?

    @Option(help: ArgumentHelp("Rows per shard: a batch of B is split into ceil(B/S) shards, whose gradients and BN sums are reduced in shard order. Changes rounding (kept on resume); batches of at most S rows run unsharded. Default: \(RunConfig().parallel.shardSize).", valueName: "S"))
    var shardSize: Int?

    @Option(help: ArgumentHelp("on: BN statistics over the whole batch, combined from the shards; off: each shard uses its own (ghost batch norm, the shard as the ghost batch). Default: on.", valueName: "on|off"))
    var bnSync: BatchNormSync?

    /// `--workers` as a count; 0 is auto.
    static func workerCount(_ text: String) throws -> Int {
        if text == "auto" { return 0 }
        guard let n = Int(text), n >= 1, n <= ParallelConfig.maxWorkers else {
            throw ConfigProblem(.workers, "must be from 1 to \(ParallelConfig.maxWorkers), or auto (got '\(text)')")
        }
        return n
    }

    var settings: [RunConfig.Setting] {
        typealias S = RunConfig.Setting
        var s: [S] = []
        if let v = workers { s.append(S(.workers) { $0.parallel.workers = try Self.workerCount(v) }) }
        if let v = shardSize { s.append(S(.shardSize) { $0.parallel.shardSize = v }) }
        if let v = bnSync { s.append(S(.bnSync) { $0.parallel.bnSync = v }) }
        return s
    }
}
