import CKernels
#if canImport(Glibc)
import Glibc
#endif

/// Work that every worker of a pool runs, handed over as an object: `WorkerPool.run(_:)`
/// with a task allocates nothing (the data-parallel step is one).
public protocol WorkerTask: AnyObject {
    func work(worker: Int, of workers: Int)
}

/// A fixed team of `count` workers that run one body together, for data-parallel steps.
///
/// The calling thread is worker 0; workers 1 ..< count are threads started once, at `init`,
/// and parked between runs on a barrier that spins briefly, then sleeps. `run` hands every
/// worker the same body and returns when all have finished it; inside the body, `barrier()`
/// synchronises the team (for the phases of a synchronised batch norm). A `WorkerTask` run
/// allocates nothing; a closure run (evaluation passes, tests) may allocate a few bytes, as
/// `withoutActuallyEscaping` checks that the closure did not escape.
public final class WorkerPool {
    public let count: Int

    /// State the threads share with the pool; each thread holds a strong reference.
    final class Team {
        let gate: OpaquePointer  // start and end of every run: count parties
        let step: OpaquePointer  // barrier() inside a body
        var body: UnsafeRawPointer?  // points at a ((Int) -> Void) for the current run
        var task: (any WorkerTask)?  // or the current run's task
        var stopping = false
        let setup: (Int) -> Void
        let count: Int

        init?(count: Int, spins: Int, setup: @escaping (Int) -> Void) {
            self.count = count
            guard let g = bn_barrier_create(Int32(count), spins) else { return nil }
            guard let s = bn_barrier_create(Int32(count), spins) else {
                bn_barrier_destroy(g)
                return nil
            }
            gate = g
            step = s
            self.setup = setup
        }

        deinit {
            bn_barrier_destroy(gate)
            bn_barrier_destroy(step)
        }

        /// Calls the run's body; any copy of the closure ends with this call, before the
        /// worker reaches the gate, so `run`'s non-escaping closure has not escaped.
        @inline(never)
        static func invoke(_ body: UnsafeRawPointer, _ worker: Int) {
            body.assumingMemoryBound(to: ((Int) -> Void).self).pointee(worker)
        }

        /// A worker thread's life: wait at the gate, run the body, wait at the gate, again.
        func serve(_ worker: Int) {
            setup(worker)
            while true {
                bn_barrier_wait(gate)
                if stopping { return }
                if let task { task.work(worker: worker, of: count) } else { Team.invoke(body!, worker) }
                bn_barrier_wait(gate)
            }
        }
    }

    final class Start {
        let team: Team
        let worker: Int
        init(team: Team, worker: Int) {
            self.team = team
            self.worker = worker
        }
    }

    private let team: Team
    private var threads: [pthread_t] = []

    /// `count` workers (>= 1). `spins`: how many times a waiting worker polls before it
    /// sleeps. The default is 50,000 (about a millisecond) when the team fits on the online
    /// cores, so that the imbalance between two shards' phases is waited out spinning rather
    /// than paid again as a wake-up; and 0 when it does not: a spinning waiter would hold the
    /// core the late worker needs (docs/parallel.md).
    /// `setup(worker)` runs once on each worker's own thread, the caller's included (to give
    /// it single-threaded kernels). Nil if threads cannot start.
    public init?(workers count: Int, spins: Int? = nil, setup: @escaping (Int) -> Void = { _ in }) {
        precondition(count >= 1, "a pool needs at least one worker")
        let cores = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        guard let team = Team(count: count, spins: spins ?? (count <= cores ? 50_000 : 0), setup: setup) else { return nil }
        self.count = count
        self.team = team
        setup(0)
        for w in 1..<count {
            let start = Unmanaged.passRetained(Start(team: team, worker: w))
            var tid = pthread_t()
            let rc = pthread_create(&tid, nil, { arg in
                let s = Unmanaged<Start>.fromOpaque(arg!).takeRetainedValue()
                s.team.serve(s.worker)
                return nil
            }, start.toOpaque())
            if rc != 0 {
                start.release()
                stopThreads()
                return nil
            }
            threads.append(tid)
        }
    }

    deinit { stopThreads() }

    /// Parks the started threads for good and joins them. When not every thread started,
    /// the gate is first cut down to the caller and the threads that did.
    private func stopThreads() {
        guard !threads.isEmpty else { return }
        team.stopping = true
        if threads.count < count - 1 { bn_barrier_set_parties(team.gate, Int32(threads.count + 1)) }
        bn_barrier_wait(team.gate)
        for t in threads { pthread_join(t, nil) }
        threads.removeAll()
    }

    /// Runs `body(worker)` on every worker, the caller as worker 0, and returns when all are done.
    public func run(_ body: (Int) -> Void) {
        if count == 1 {
            body(0)
            return
        }
        withoutActuallyEscaping(body) { f in
            withUnsafePointer(to: f) { p in
                team.body = UnsafeRawPointer(p)
                bn_barrier_wait(team.gate)
                f(0)
                bn_barrier_wait(team.gate)
                team.body = nil
            }
        }
    }

    /// Runs `task.work(worker:of:)` on every worker, the caller as worker 0; returns when all
    /// are done. Allocates nothing.
    public func run(_ task: any WorkerTask) {
        if count == 1 { return task.work(worker: 0, of: 1) }
        team.task = task
        bn_barrier_wait(team.gate)
        task.work(worker: 0, of: count)
        bn_barrier_wait(team.gate)
        team.task = nil
    }

    /// Inside a `run` body: returns once every worker has reached it.
    public func barrier() {
        if count > 1 { bn_barrier_wait(team.step) }
    }
}
