import CKernels
import Glibc

/// The processes of an MPI job, when an MPI launcher (Open MPI's `mpirun`, or `srun` with
/// PMIx) started this one: each rank computes a block of every batch's shards, and the
/// shards' sums, gradients and fc inputs are all-gathered so that every rank reduces every
/// shard in shard order, as one process does (docs/parallel.md, "Several processes").
/// Only the main thread (worker 0) calls MPI.
public final class Ranks {
    public let rank: Int
    public let count: Int
    /// This rank's host (MPI_Get_processor_name), for messages.
    public let host: String
    /// Ranks on this host, as the launcher says (for `--workers auto`), and this rank's index among them.
    public let localCount: Int

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Whether a launcher's environment is present: Open MPI's `OMPI_COMM_WORLD_SIZE`, or
    /// PMIx's `PMIX_RANK` (srun --mpi=pmix).
    public static var launched: Bool { getenv("OMPI_COMM_WORLD_SIZE") != nil || getenv("PMIX_RANK") != nil }

    static func environment(_ name: String) -> Int? { getenv(name).flatMap { Int(String(cString: $0)) } }

    /// Joins the job when a launcher started this process; nil otherwise. Throws (one line)
    /// when libmpi cannot be loaded or initialised.
    /// `BNTRAIN_MPI_TIMEOUT`: seconds an exchange may wait for the other ranks before the job
    /// ends (default 120; 0 waits for ever).
    public static func timeoutSetting() throws -> Int {
        guard let raw = getenv("BNTRAIN_MPI_TIMEOUT").map({ String(cString: $0) }) else { return 120 }
        guard let v = Int(raw), v >= 0, v <= 86_400 else {
            throw Failure(description: "BNTRAIN_MPI_TIMEOUT '\(raw)' is not a number of seconds from 0 to 86400; unset it for the default of 120")
        }
        return v
    }

    public static func join() throws -> Ranks? {
        guard launched else { return nil }
        let timeout = try timeoutSetting()
        var error = [CChar](repeating: 0, count: 512)
        // BNTRAIN_LIBMPI: another Open MPI 4 library (a cluster's own build) than libmpi.so.40.
        let path = getenv("BNTRAIN_LIBMPI").map { String(cString: $0) }
        if bn_mpi_load(path, &error, error.count) != 0 {
            let which = path.map { "BNTRAIN_LIBMPI '\($0)'" } ?? "Open MPI's libmpi.so.40"
            throw Failure(description: "started by an MPI launcher, but \(which) could not be loaded (\(String(cString: error))); install openmpi-bin (Scripts/setup)\(path == nil ? "" : " or fix BNTRAIN_LIBMPI")")
        }
        var rank: Int32 = 0, size: Int32 = 1
        if bn_mpi_init(&rank, &size, &error, error.count) != 0 {
            throw Failure(description: "MPI_Init failed: \(String(cString: error))")
        }
        var name = [CChar](repeating: 0, count: 256)
        bn_mpi_processor_name(&name, name.count)
        let local = environment("OMPI_COMM_WORLD_LOCAL_SIZE") ?? environment("SLURM_NTASKS_PER_NODE") ?? Int(size)
        let ranks = Ranks(rank: Int(rank), count: Int(size), host: String(cString: name), localCount: max(1, local))
        ranks.watchPeers(timeoutSeconds: timeout)
        return ranks
    }

    /// Starts the watch (`bn_mpi_watch`): a killed peer on this host ends the job within a
    /// fraction of a second, with one line naming it; an exchange that waits longer than the
    /// timeout (a rank on another host lost its network) ends it too.
    func watchPeers(timeoutSeconds: Int) {
        guard count > 1 else { return }
        var mine = [UInt8](repeating: 0, count: 8 + 64)
        withUnsafeBytes(of: Int64(getpid()).littleEndian) { for i in 0..<8 { mine[i] = $0[i] } }
        for (i, b) in host.utf8.prefix(63).enumerated() { mine[8 + i] = b }
        var pids: [Int] = [], ranks: [Int32] = []
        for (r, theirs) in allGather(mine).enumerated() where r != rank && theirs[8...] == mine[8...] {
            pids.append(Int(theirs.prefix(8).withUnsafeBytes { Int64(littleEndian: $0.loadUnaligned(as: Int64.self)) }))
            ranks.append(Int32(r))
        }
        _ = bn_mpi_watch(pids, ranks, Int32(pids.count), Int32(rank), host, Int64(timeoutSeconds) * 1000)
    }

    init(rank: Int, count: Int, host: String, localCount: Int) {
        self.rank = rank
        self.count = count
        self.host = host
        self.localCount = localCount
    }

    /// receive = every rank's `bytes` bytes of `send`, in rank order. A failure (a rank that
    /// died or lost its network) ends this process with one line and exit 75: the step
    /// cannot continue, and the last checkpoint is untouched.
    public func allGather(_ send: UnsafeRawPointer, bytes: Int, into receive: UnsafeMutableRawPointer) {
        if bn_mpi_allgather(send, bytes, receive, errorText, 256) != 0 { lost(String(cString: errorText)) }
    }

    /// MPI's message for a failed exchange (allocated once: a step allocates nothing).
    let errorText: UnsafeMutablePointer<CChar> = {
        let p = UnsafeMutablePointer<CChar>.allocate(capacity: 256)
        p.initialize(repeating: 0, count: 256)
        return p
    }()
    deinit { errorText.deallocate() }

    /// Every rank's copy of `bytes` bytes (rank order), for checks at start.
    public func allGather(_ bytes: [UInt8]) -> [[UInt8]] {
        var out = [UInt8](repeating: 0, count: bytes.count * count)
        bytes.withUnsafeBytes { s in out.withUnsafeMutableBytes { allGather(s.baseAddress!, bytes: bytes.count, into: $0.baseAddress!) } }
        return (0..<count).map { Array(out[($0 * bytes.count)..<(($0 + 1) * bytes.count)]) }
    }

    func lost(_ why: String) -> Never {
        fputs("bntrain: error: rank \(rank) (\(host)): MPI communication failed (\(why)); another rank of the job ended; the last checkpoint is intact\n", stderr)
        exit(75)
    }

    /// Ends every rank of the job (after a failure on this one).
    public func abort(code: Int32) { bn_mpi_abort(code) }

    /// Leaves the job (once; later calls do nothing).
    public func finalize() { bn_mpi_finalize() }

    /// Leaves the job when the process exits normally (tools that exit from many places).
    public func finalizeAtExit() { atexit { bn_mpi_finalize() } }
}
