import ArgumentParser
import BNTraining

extension NormalizationConfig.Statistics: ExpressibleByArgument {}

/// `--bn-stats`, `--precise-bn-examples`, `--bn-ghost`: where evaluation's BN statistics come
/// from and how training's are grouped (docs/normalization.md).
struct NormalizationOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Statistics BN evaluates with: ema (the running averages) or precise (after every epoch, recomputed over the training images with the weights fixed, as fvcore's update_bn_stats). Default: ema.", valueName: "ema|precise"))
    var bnStats: NormalizationConfig.Statistics?

    @Option(help: ArgumentHelp("With --bn-stats precise: average over the first N training images (whole batches of --batch). Default: all.", valueName: "N|all"))
    var preciseBnExamples: String?

    @Option(help: ArgumentHelp("Ghost batch norm: training statistics over consecutive groups of G rows of each batch, running statistics updated once per group. The shard becomes min(--shard-size, G); a G above the shard must be a multiple of it. Default: the whole batch.", valueName: "G"))
    var bnGhost: Int?

    @Flag(help: "Batch renormalization (Ioffe 2017): BN corrected by r and d (clipped, constant in backward) toward the running statistics.")
    var bnRenorm = false

    @Option(help: ArgumentHelp("With --bn-renorm: a fixed r_max (>= 1). Default: the paper's schedule, 1 until 10% of the run's steps, rising to 3 at 80%.", valueName: "R"))
    var renormRmax: Double?

    @Option(help: ArgumentHelp("With --bn-renorm: a fixed d_max (>= 0). Default: the paper's schedule, 0 until 10% of the run's steps, rising to 5 at 50%.", valueName: "D"))
    var renormDmax: Double?

    @Option(help: ArgumentHelp("From epoch E on, BN layers normalise with their running statistics in training too and stop updating them. Default: never.", valueName: "E"))
    var bnFreezeAfter: Int?

    /// `--precise-bn-examples` as a count; nil is all.
    static func exampleCount(_ text: String) throws -> Int? {
        if text == "all" { return nil }
        guard let n = Int(text), n >= 1, n <= NormalizationConfig.maxExamples else {
            throw ConfigProblem(.preciseExamples, "must be from 1 to \(NormalizationConfig.maxExamples) images, or all (got '\(text)')")
        }
        return n
    }

    var settings: [RunConfig.Setting] {
        typealias S = RunConfig.Setting
        var s: [S] = []
        if let v = bnStats { s.append(S(.bnStats) { $0.normalization.stats = v }) }
        if let v = preciseBnExamples { s.append(S(.preciseExamples) { $0.normalization.preciseExamples = try Self.exampleCount(v) }) }
        if let v = bnGhost { s.append(S(.bnGhost) { $0.normalization.ghost = v }) }
        if bnRenorm { s.append(S(.bnRenorm) { $0.normalization.renorm = true }) }
        if let v = renormRmax { s.append(S(.renormRmax) { $0.normalization.renormRmax = v }) }
        if let v = renormDmax { s.append(S(.renormDmax) { $0.normalization.renormDmax = v }) }
        if let v = bnFreezeAfter { s.append(S(.bnFreezeAfter) { $0.normalization.freezeAfter = v }) }
        return s
    }
}
