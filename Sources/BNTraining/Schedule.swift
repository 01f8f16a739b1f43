import Foundation

/// Learning-rate schedules, as torch.optim.lr_scheduler defines them, stepped per epoch, with
/// an optional linear warmup stepped per training step. With lr0 = --lr, e = completed epochs
/// (0 during the first), E = --epochs:
///     constant: lr0
///     step:     lr0 * gamma^floor(e / step_epochs)                          (StepLR)
///     cosine:   lr_min + (lr0 - lr_min) (1 + cos(pi e / E)) / 2             (CosineAnnealingLR, T_max = E)
///     plateau:  lr0, times `factor` whenever the validation loss has not improved (relative
///               threshold 1e-4) for more than `patience` epochs, never below lr_min
///               (ReduceLROnPlateau, mode min, cooldown 0)
///     warmup:   the rate above times min(1, (k + 1) / (W n)) at global step k (from 0), with
///               n steps per epoch and W = --warmup-epochs
public struct LRSchedule: Equatable, Sendable {
    public enum Kind: String, CaseIterable, Sendable, Codable { case constant, step, cosine, plateau }

    public var kind: Kind
    public var baseLR: Double
    public var stepEpochs: Int
    public var gamma: Double
    public var minLR: Double
    public var warmupEpochs: Double
    public var patience: Int
    public var factor: Double

    /// Plateau state: the rate in force, the best validation loss so far, epochs without
    /// improvement. Saved in checkpoints.
    public var plateauLR: Double
    public var plateauBest: Double?
    public var plateauBadEpochs = 0

    public init(kind: Kind, baseLR: Double, stepEpochs: Int = 10, gamma: Double = 0.1, minLR: Double = 0, warmupEpochs: Double = 0, patience: Int = 10, factor: Double = 0.1) {
        self.kind = kind
        self.baseLR = baseLR
        self.stepEpochs = stepEpochs
        self.gamma = gamma
        self.minLR = minLR
        self.warmupEpochs = warmupEpochs
        self.patience = patience
        self.factor = factor
        plateauLR = baseLR
    }

    /// The rate of the epoch after `completed` epochs, before warmup.
    public func epochRate(completed e: Int, totalEpochs: Int) -> Double {
        switch kind {
        case .constant: return baseLR
        case .step: return baseLR * pow(gamma, Double(e / max(stepEpochs, 1)))
        case .cosine: return minLR + (baseLR - minLR) * (1 + cos(Double.pi * Double(e) / Double(max(totalEpochs, 1)))) / 2
        case .plateau: return plateauLR
        }
    }

    /// The rate for training step `step` (from 0) of the epoch after `completed` epochs.
    public func rate(completed e: Int, step: Int, stepsPerEpoch n: Int, totalEpochs: Int) -> Double {
        let r = epochRate(completed: e, totalEpochs: totalEpochs)
        guard warmupEpochs > 0 else { return r }
        let k = Double(e) * Double(n) + Double(step)
        return r * min(1, (k + 1) / (warmupEpochs * Double(n)))
    }

    /// Feeds the epoch's validation loss to the plateau rule (other kinds ignore it).
    public mutating func endEpoch(validationLoss: Double?) {
        guard kind == .plateau, let loss = validationLoss else { return }
        if let best = plateauBest, !(loss < best * (1 - 1e-4)) {
            plateauBadEpochs += 1
        } else {
            plateauBest = loss
            plateauBadEpochs = 0
        }
        if plateauBadEpochs > patience {
            let reduced = max(plateauLR * factor, minLR)
            if plateauLR - reduced > 1e-8 { plateauLR = reduced }
            plateauBadEpochs = 0
        }
    }
}

/// `--early-stop N`: stop after N epochs without an improvement of the monitored validation
/// value by more than `minDelta` (val_loss must fall below best - min_delta; val_acc rise
/// above best + min_delta).
public struct EarlyStopping: Equatable, Sendable {
    public enum Monitor: String, CaseIterable, Sendable, Codable {
        case valLoss = "val_loss", valAcc = "val_acc"
    }

    public var patience: Int
    public var monitor: Monitor
    public var minDelta: Double
    public var best: Double?
    public var bestEpoch = 0
    public var badEpochs = 0

    public init(patience: Int, monitor: Monitor, minDelta: Double) {
        self.patience = patience
        self.monitor = monitor
        self.minDelta = minDelta
    }

    /// Records an epoch's validation loss and accuracy; true when training should stop.
    public mutating func update(epoch: Int, loss: Double, accuracy: Double) -> Bool {
        let value = monitor == .valLoss ? loss : accuracy
        let improved: Bool
        if let best {
            improved = monitor == .valLoss ? value < best - minDelta : value > best + minDelta
        } else {
            improved = true
        }
        if improved {
            best = value
            bestEpoch = epoch
            badEpochs = 0
        } else {
            badEpochs += 1
        }
        return badEpochs >= patience
    }
}

extension LRSchedule {
    /// The schedule as the run in `s` left it (a fresh run: the plateau rule at its base rate).
    public func resumed(from s: TrainingState) -> LRSchedule {
        var r = self
        r.plateauLR = s.plateauLR ?? baseLR
        r.plateauBest = s.plateauBest
        r.plateauBadEpochs = s.plateauBadEpochs
        return r
    }

    /// Its state, for a checkpoint (the plateau rate only for a plateau schedule).
    public func save(into s: inout TrainingState) {
        s.plateauLR = kind == .plateau ? plateauLR : nil
        s.plateauBest = plateauBest
        s.plateauBadEpochs = plateauBadEpochs
    }
}

extension EarlyStopping {
    /// The stopper as the run in `s` left it.
    public func resumed(from s: TrainingState) -> EarlyStopping {
        var r = self
        r.best = s.earlyBest
        r.bestEpoch = s.earlyBestEpoch
        r.badEpochs = s.earlyBadEpochs
        return r
    }

    /// Its state, for a checkpoint; a run without early stopping saves none.
    public static func save(_ e: EarlyStopping?, into s: inout TrainingState) {
        s.earlyBest = e?.best
        s.earlyBestEpoch = e?.bestEpoch ?? 0
        s.earlyBadEpochs = e?.badEpochs ?? 0
    }
}
