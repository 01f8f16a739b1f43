import BNCheckpoint
import BNCore
import Foundation

/// Where a run stands: what a checkpoint records beyond the tensors so that `--resume`
/// continues exactly (bit for bit) where the run stopped. Stored as checkpoint metadata
/// strings under `bntrain.*` keys; every value read back is validated.
public struct TrainingState: Equatable, Sendable {
    /// Completed epochs.
    public var epoch = 0
    /// Steps already taken in the next epoch (an interrupted run), with their summed loss.
    public var step = 0
    public var partialLossSum = 0.0
    /// Generator state the next epoch's shuffle starts from.
    public var shuffleState: UInt64 = 0
    /// Generator state for the next dropout mask.
    public var dropoutState: UInt64 = 0
    public var previousLoss: Double?
    public var bestValAccuracy = -1.0
    public var bestValEpoch = 0
    public var bestTestAccuracy = -1.0
    public var bestTestEpoch = 0
    public var trainSeconds = 0.0
    /// The last epoch record, as a JSON line (informational).
    public var lastRecordJSON: String?
    /// Plateau schedule: the rate in force, the best validation loss, epochs without improvement.
    public var plateauLR: Double?
    public var plateauBest: Double?
    public var plateauBadEpochs = 0
    /// Early stopping: the best monitored value, its epoch, epochs without improvement.
    public var earlyBest: Double?
    public var earlyBestEpoch = 0
    public var earlyBadEpochs = 0

    public init() {}

    public var metadata: [String: String] {
        var m: [String: String] = [
            "bntrain.epoch": "\(epoch)", "bntrain.step": "\(step)", "bntrain.partial_loss_sum": "\(partialLossSum)",
            "bntrain.shuffle_rng": "\(shuffleState)", "bntrain.dropout_rng": "\(dropoutState)",
            "bntrain.best_val_acc": "\(bestValAccuracy)", "bntrain.best_val_epoch": "\(bestValEpoch)",
            "bntrain.best_test_acc": "\(bestTestAccuracy)", "bntrain.best_test_epoch": "\(bestTestEpoch)",
            "bntrain.train_seconds": "\(trainSeconds)",
        ]
        if let previousLoss { m["bntrain.prev_train_loss"] = "\(previousLoss)" }
        if let lastRecordJSON { m["bntrain.metrics"] = lastRecordJSON }
        if let plateauLR { m["bntrain.plateau_lr"] = "\(plateauLR)" }
        if let plateauBest { m["bntrain.plateau_best"] = "\(plateauBest)" }
        m["bntrain.plateau_bad_epochs"] = "\(plateauBadEpochs)"
        if let earlyBest { m["bntrain.early_best"] = "\(earlyBest)" }
        m["bntrain.early_best_epoch"] = "\(earlyBestEpoch)"
        m["bntrain.early_bad_epochs"] = "\(earlyBadEpochs)"
        return m
    }

    /// Reads and validates the state in `metadata`; `path` names the file in errors. Keys added
    /// after bntrain 0.3 (`dropout_rng`) may be absent.
    public init(metadata m: [String: String], path: String) throws {
        func bad(_ key: String, _ expected: String) -> CheckpointError {
            .malformed(path: path, reason: "metadata \(key)='\(m[key] ?? "")' is not \(expected)")
        }
        func int(_ key: String, required: Bool = false, range: ClosedRange<Int>) throws -> Int? {
            guard let s = m[key] else {
                if required { throw CheckpointError.malformed(path: path, reason: "no \(key) in its metadata (was it written by bntrain --save?); use --init-from to start from its weights") }
                return nil
            }
            guard let v = Int(s), range.contains(v) else { throw bad(key, "an integer from \(range.lowerBound) to \(range.upperBound)") }
            return v
        }
        func double(_ key: String, range: ClosedRange<Double>) throws -> Double? {
            guard let s = m[key] else { return nil }
            guard let v = Double(s), v.isFinite, range.contains(v) else { throw bad(key, "a number from \(range.lowerBound) to \(range.upperBound)") }
            return v
        }
        func rng(_ key: String, required: Bool) throws -> UInt64? {
            guard let s = m[key] else {
                if required { throw CheckpointError.malformed(path: path, reason: "no \(key) in its metadata (was it written by bntrain --save?); use --init-from to start from its weights") }
                return nil
            }
            guard let v = UInt64(s) else { throw bad(key, "an unsigned 64-bit integer") }
            return v
        }
        let maxEpoch = 1_000_000
        epoch = try int("bntrain.epoch", required: true, range: 0...maxEpoch)!
        step = try int("bntrain.step", range: 0...Int(Int32.max)) ?? 0
        partialLossSum = try double("bntrain.partial_loss_sum", range: 0...Double.greatestFiniteMagnitude) ?? 0
        shuffleState = try rng("bntrain.shuffle_rng", required: true)!
        dropoutState = try rng("bntrain.dropout_rng", required: false) ?? 0
        previousLoss = try double("bntrain.prev_train_loss", range: 0...Double.greatestFiniteMagnitude)
        bestValAccuracy = try double("bntrain.best_val_acc", range: -1...1) ?? -1
        bestValEpoch = try int("bntrain.best_val_epoch", range: 0...epoch) ?? 0
        bestTestAccuracy = try double("bntrain.best_test_acc", range: -1...1) ?? -1
        bestTestEpoch = try int("bntrain.best_test_epoch", range: 0...epoch) ?? 0
        trainSeconds = try double("bntrain.train_seconds", range: 0...Double.greatestFiniteMagnitude) ?? 0
        lastRecordJSON = m["bntrain.metrics"]
        plateauLR = try double("bntrain.plateau_lr", range: 0...Double.greatestFiniteMagnitude)
        plateauBest = try double("bntrain.plateau_best", range: 0...Double.greatestFiniteMagnitude)
        plateauBadEpochs = try int("bntrain.plateau_bad_epochs", range: 0...maxEpoch) ?? 0
        earlyBest = try double("bntrain.early_best", range: 0...Double.greatestFiniteMagnitude)
        earlyBestEpoch = try int("bntrain.early_best_epoch", range: 0...epoch) ?? 0
        earlyBadEpochs = try int("bntrain.early_bad_epochs", range: 0...maxEpoch) ?? 0
    }
}
