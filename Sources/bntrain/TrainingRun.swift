import BNCheckpoint
import BNCore
import BNData
import BNTraining
import Foundation

/// Wires one `bntrain` invocation together: the configuration (fresh, or the checkpoint's
/// for --resume), output checks, the dataset, the trainer, signals and progress.
/// The MPI job this process joined (training only), for the exit path: rank 0 alone reports
/// a failure, and a finished run calls MPI_Finalize.
enum MPIJob {
    nonisolated(unsafe) static var current: Ranks?
    static var quiet: Bool { (current?.rank ?? 0) != 0 }
}

struct TrainingRun {
    let command: BNTrain

    func run() throws {
        var config: RunConfig
        var resume: (checkpoint: Checkpoint, path: String)?
        if let path = command.checkpoints.resume {
            let c = try readCheckpoint(path, flag: "--resume")
            let saved = try savedConfig(of: c, path: path)
            let (merged, conflicts) = try checkedFlags { try RunConfig.resuming(saved, with: command.settings) }
            if !conflicts.isEmpty {
                throw fail("--resume '\(path)' continues the saved run, but \(conflicts.joined(separator: ", ")) disagree\(conflicts.count == 1 ? "s" : "") with it; drop \(conflicts.count == 1 ? "that flag" : "those flags") to resume, or start a new run from its weights with --init-from", kind: .usage)
            }
            config = merged
            resume = (c, path)
        } else {
            config = try checkedFlags { try RunConfig.fresh(command.settings) }
        }
        var outputs = RunOutputs()
        outputs.save = command.checkpoints.save
        outputs.saveEvery = command.checkpoints.saveEvery
        outputs.saveBest = command.checkpoints.saveBest
        outputs.metrics = command.output.metrics
        outputs.allowDataChange = command.checkpoints.allowDataChange
        // Output paths are checked before any work, not after 20 epochs.
        for (flag, path) in [("--save", outputs.save), ("--metrics", outputs.metrics)] {
            if let path, let problem = AtomicFile.checkWritable(path) {
                throw fail("\(flag): \(problem); choose a writable path", kind: .cannotWrite)
            }
        }
        let initFrom = try command.modelOptions.initFrom.map { (checkpoint: try readCheckpoint($0, flag: "--init-from"), path: $0) }

        // Workers run single-threaded kernels: the BLAS thread count is process-wide.
        MatMul.setThreads(config.parallel.resolvedWorkers > 1 ? 1 : config.kernels.threads)
        let clock = ContinuousClock()
        let loadStarted = clock.now
        let (folder, dataset) = try DataLocation.load(config.data.folder)
        config.data.folder = folder
        // Under an MPI launcher, join the job; rank 0 alone writes records and files.
        let ranks: Ranks?
        do { ranks = try Ranks.join() } catch let e as Ranks.Failure { throw fail(e.description, kind: .usage) }
        MPIJob.current = ranks
        if let ranks, ranks.rank != 0 {
            outputs.save = nil
            outputs.metrics = nil
            _ = freopen("/dev/null", "w", stdout)
        }
        if let ranks, ranks.count > 1, config.parallel.workers == 0 || config.parallel.resolvedWorkers(ranksOnHost: ranks.localCount) > 1 {
            MatMul.setThreads(1)
        }
        let trainer = try Trainer(
            config: config, outputs: outputs, dataset: dataset, loadSeconds: (clock.now - loadStarted).seconds, ranks: ranks,
            resume: resume, initFrom: initFrom, sink: Report(format: command.output.logFormat), diagnostics: note)
        if let ranks, ranks.count > 1 {
            note("note: one run over \(ranks.count) MPI ranks (\(ranks.localCount) on this host), \(trainer.parallel.workers) worker\(trainer.parallel.workers == 1 ? "" : "s") each; rank 0 writes")
        }
        if let r = resume { note("resuming '\(r.path)' after epoch \(trainer.state.epoch) of \(config.epochs); configuration taken from the checkpoint") }
        Interruption.install()
        // Under MPI every rank stops after the same step: each sends its signal with every step
        // and all act on the first one any rank received.
        let parallel = trainer.parallel
        let shouldStop: () -> Int32? = ranks == nil ? { Interruption.requested } : {
            parallel.localStopSignal = Interruption.requested ?? 0
            return parallel.jobStopSignal == 0 ? nil : parallel.jobStopSignal
        }
        try trainer.run(progress: Progress(quiet: command.output.quiet || (ranks?.rank ?? 0) != 0), shouldStop: shouldStop)
        if let sig = Interruption.requested {
            // The signal came after the last step: the run is complete and saved, but a caller
            // (a shell loop, a sweep) still learns that the user asked it to stop.
            note("interrupted by \(Interruption.name(sig)) after the last step; the run completed\(outputs.save.map { " and is saved in '\($0)'" } ?? "")")
            throw TrainingStop.interrupted(signal: sig)
        }
    }

    /// The configuration stored in a checkpoint, validated as flags are.
    func savedConfig(of c: Checkpoint, path: String) throws -> RunConfig {
        guard let text = c.metadata["bntrain.config"] else {
            throw fail("'\(path)' has no bntrain training state (was it written by bntrain --save?); use --init-from to start from its weights", kind: .badInput)
        }
        let saved: RunConfig
        do { saved = try JSONDecoder().decode(RunConfig.self, from: Data(text.utf8)) } catch let p as ConfigProblem {
            throw fail("checkpoint '\(path)': its configuration's \(p.key.name) \(p.message)", kind: .badInput)
        } catch {
            throw fail("checkpoint '\(path)': its bntrain.config is unusable (\(describe(error))); use --init-from to start from its weights", kind: .badInput)
        }
        if let p = saved.problem() {
            throw fail("checkpoint '\(path)': its configuration's \(p.key.name) \(p.message)", kind: .badInput)
        }
        return saved
    }
}

/// A flag that does not apply to the run (a parameter of another optimizer or schedule) is a
/// usage error naming the flag.
func checkedFlags<R>(_ body: () throws -> R) throws -> R {
    do { return try body() } catch let p as ConfigProblem { throw fail(p.description, kind: .usage) }
}

/// A decoding error in one line: the key and what was wrong.
func describe(_ error: Error) -> String {
    switch error {
    case let DecodingError.dataCorrupted(c): return "\(c.codingPath.map(\.stringValue).joined(separator: ".")) \(c.debugDescription)"
    case let DecodingError.typeMismatch(_, c): return "\(c.codingPath.map(\.stringValue).joined(separator: ".")) has the wrong type"
    case let DecodingError.keyNotFound(k, _): return "\(k.stringValue) is missing"
    case let DecodingError.valueNotFound(_, c): return "\(c.codingPath.map(\.stringValue).joined(separator: ".")) is null"
    default: return "not JSON"
    }
}
