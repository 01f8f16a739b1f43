import BNCore

extension ConfigKey {
    public static let bnStats = ConfigKey("bn_stats")
    public static let preciseExamples = ConfigKey("precise_bn_examples")
    public static let bnGhost = ConfigKey("bn_ghost")
    public static let bnRenorm = ConfigKey("bn_renorm", flag: "--bn-renorm")
    public static let renormRmax = ConfigKey("renorm_rmax")
    public static let renormDmax = ConfigKey("renorm_dmax")
    public static let bnFreezeAfter = ConfigKey("bn_freeze_after")
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
    /// Batch renormalization (Ioffe 2017) in every BN layer.
    public var renorm = false
    /// Fixed limits; nil follows the paper's schedule (`renormLimits`).
    public var renormRmax: Double?
    public var renormDmax: Double?
    /// From this epoch (1-based) on, BN layers normalise with their running statistics in
    /// training too, and stop updating them; nil is never.
    public var freezeAfter: Int?
    public init() {}

    /// The renormalization limits for the step about to be taken (0-based `step` of `total`):
    /// the given ones, else the paper's schedule scaled to the run. Ioffe's steps 5k (plain
    /// BN until then), 25k (d_max reaches 5) and 40k (r_max reaches 3) are read as fractions
    /// of a 50k-step run (the bn-paper experiment's length): 10%, 50% and 80% of `total`,
    /// with linear ramps between.
    public func renormLimits(step: Int, total: Int) -> (rmax: Double, dmax: Double) {
        let t = Double(step), n = Double(max(total, 1))
        let start = 0.1 * n
        let rRamp = min(max((t - start) / (0.8 * n - start), 0), 1), dRamp = min(max((t - start) / (0.5 * n - start), 0), 1)
        return (renormRmax ?? 1 + 2 * rRamp, renormDmax ?? 5 * dRamp)
    }

    public func write(to w: inout FlatWriter) {
        w.write(.bnStats, stats)
        if stats == .precise {
            if let n = preciseExamples { w.write(.preciseExamples, n) } else { w.write(.preciseExamples, "all") }
        }
        if let g = ghost { w.write(.bnGhost, g) }
        if renorm {
            w.write(.bnRenorm, onOff: true)
            if let r = renormRmax { w.write(.renormRmax, r) } else { w.write(.renormRmax, "schedule") }
            if let d = renormDmax { w.write(.renormDmax, d) } else { w.write(.renormDmax, "schedule") }
        }
        if let e = freezeAfter { w.write(.bnFreezeAfter, e) }
    }

    public init(from r: FlatReader) throws {
        stats = try r.choice(.bnStats) ?? stats
        preciseExamples = try r.countOrAll(.preciseExamples)
        ghost = try r.int(.bnGhost)
        renorm = try r.onOff(.bnRenorm) ?? renorm
        renormRmax = try Self.limit(r, .renormRmax)
        renormDmax = try Self.limit(r, .renormDmax)
        freezeAfter = try r.int(.bnFreezeAfter)
    }

    /// A number, or "schedule" for none.
    static func limit(_ r: FlatReader, _ key: ConfigKey) throws -> Double? {
        if let s = try? r.string(key) {
            guard s == "schedule" else { throw r.bad(key, "is '\(s)', expected a number or \"schedule\"") }
            return nil
        }
        return try r.double(key)
    }

    public static let maxExamples = 1 << 30

    public func problem() -> ConfigProblem? {
        if let n = preciseExamples {
            if n < 1 || n > Self.maxExamples { return ConfigProblem(.preciseExamples, "must be from 1 to \(Self.maxExamples) images, or all (got \(n))") }
            if stats != .precise { return ConfigProblem(.preciseExamples, "sets how many images precise BN averages over; add --bn-stats precise") }
        }
        if let g = ghost, g < 1 || g > 1 << 24 { return ConfigProblem(.bnGhost, "must be from 1 to \(1 << 24) rows (got \(g))") }
        if let r = renormRmax {
            if !(r.isFinite && r >= 1 && r <= 1e6) { return ConfigProblem(.renormRmax, "must be from 1 (plain BN) to 1000000 (got \(r))") }
            if !renorm { return ConfigProblem(.renormRmax, "sets batch renormalization's r_max; add --bn-renorm") }
        }
        if let d = renormDmax {
            if !(d.isFinite && d >= 0 && d <= 1e6) { return ConfigProblem(.renormDmax, "must be from 0 (plain BN) to 1000000 (got \(d))") }
            if !renorm { return ConfigProblem(.renormDmax, "sets batch renormalization's d_max; add --bn-renorm") }
        }
        if let e = freezeAfter {
            if e < 1 || e > 1_000_000 { return ConfigProblem(.bnFreezeAfter, "must be an epoch from 1 to 1000000 (got \(e))") }
            if stats == .precise { return ConfigProblem(.bnFreezeAfter, "fixes the running statistics that --bn-stats precise recomputes every epoch; use one of them") }
        }
        return nil
    }
}
