import BNCore

extension ConfigKey {
    public static let bnStats = ConfigKey("bn_stats")
    public static let preciseExamples = ConfigKey("precise_bn_examples")
    public static let bnGhost = ConfigKey("bn_ghost")
}

/// Where the BN statistics used for evaluation come from, and how the training statistics are
/// grouped within a batch (docs/normalization.md). Both define the run's numbers, so they are
/// kept on resume.
public struct NormalizationConfig: ConfigGroup {
    public enum Statistics: String, CaseIterable, Sendable {
        /// The running averages of training (`--bn-momentum`).
        case ema
        /// After every epoch, recomputed with the weights fixed over the training images
        /// (Wu & Johnson 2021; fvcore's `update_bn_stats`).
        case precise
    }

    public var stats = Statistics.ema
    /// Training images the precise statistics are averaged over (the first N of the run's
    /// training split, in file order); nil is all of them.
    public var preciseExamples: Int?
    /// Ghost batch norm (Hoffer et al. 2017): training statistics over consecutive groups of
    /// this many rows of each batch; nil is the whole batch.
    public var ghost: Int?
    public init() {}

    public func write(to w: inout FlatWriter) {
        w.write(.bnStats, stats)
        if stats == .precise {
            if let n = preciseExamples { w.write(.preciseExamples, n) } else { w.write(.preciseExamples, "all") }
        }
        if let g = ghost { w.write(.bnGhost, g) }
    }

    public init(from r: FlatReader) throws {
        stats = try r.choice(.bnStats) ?? stats
        preciseExamples = try r.countOrAll(.preciseExamples)
        ghost = try r.int(.bnGhost)
    }

    public static let maxExamples = 1 << 30

    public func problem() -> ConfigProblem? {
        if let n = preciseExamples {
            if n < 1 || n > Self.maxExamples { return ConfigProblem(.preciseExamples, "must be from 1 to \(Self.maxExamples) images, or all (got \(n))") }
            if stats != .precise { return ConfigProblem(.preciseExamples, "sets how many images precise BN averages over; add --bn-stats precise") }
        }
        if let g = ghost, g < 1 || g > 1 << 24 { return ConfigProblem(.bnGhost, "must be from 1 to \(1 << 24) rows (got \(g))") }
        return nil
    }
}
