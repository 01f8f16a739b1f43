extension ConfigKey {
    public static let data = ConfigKey("data", restoredOnResume: false)
    public static let trainLimit = ConfigKey("train_limit")
    public static let valSplit = ConfigKey("val_split")
    public static let shuffle = ConfigKey("shuffle")
}

/// How the training examples are ordered each epoch.
public enum ShuffleMode: String, CaseIterable, Sendable, Codable {
    /// A fresh seeded shuffle every epoch.
    case epoch
    /// File order, every epoch (to compare step by step with other implementations).
    case none
}

/// Which images train and validate, and in what order.
public struct DataConfig: ConfigGroup {
    /// Dataset folder (resolved before the run starts; `nil`: the default search).
    public var folder: String?
    /// A seeded random subset of this many training images; nil: all.
    public var trainLimit: Int?
    /// The seeded fraction of the training images held out for validation.
    public var valSplit = 0.0
    public var shuffle = ShuffleMode.epoch
    public init() {}

    public func write(to w: inout FlatWriter) {
        if let folder { w.write(.data, folder) }
        if let n = trainLimit { w.write(.trainLimit, n) } else { w.write(.trainLimit, "all") }
        w.write(.valSplit, valSplit)
        w.write(.shuffle, shuffle)
    }

    public init(from r: FlatReader) throws {
        folder = try r.string(.data)
        trainLimit = try r.countOrAll(.trainLimit)
        valSplit = try r.double(.valSplit) ?? valSplit
        shuffle = try r.choice(.shuffle) ?? shuffle
    }

    public func problem() -> ConfigProblem? {
        if let n = trainLimit, n < 1 { return ConfigProblem(.trainLimit, "must be at least 1 (got \(n))") }
        if !(valSplit >= 0 && valSplit < 1) { return ConfigProblem(.valSplit, "must be in [0, 1) (got \(valSplit)); 0.1 holds out a tenth") }
        return nil
    }
}
