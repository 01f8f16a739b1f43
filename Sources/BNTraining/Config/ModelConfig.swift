import BNCore

extension ConfigKey {
    public static let model = ConfigKey("model")
    public static let hidden = ConfigKey("hidden")
    public static let batchNorm = ConfigKey("batchnorm", flag: "--no-batchnorm")
    public static let bnMomentum = ConfigKey("bn_momentum")
    public static let bnEps = ConfigKey("bn_eps")
    public static let bnRunningVar = ConfigKey("bn_running_var")
    public static let initialization = ConfigKey("init")
}

/// The network: its spec, dfn2's width, BN on or off and BN's settings, the initial weights.
public struct ModelConfig: ConfigGroup {
    /// A preset name or a layer spec, as given (`spec()` resolves it).
    public var spec = "dfn2"
    /// dfn2's hidden width (`nil`: 200). Not used by other models.
    public var hidden: Int?
    /// false: every BN layer of the model left out (`--no-batchnorm`).
    public var batchNorm = true
    public var bnMomentum = 0.9
    public var bnEps = 1e-5
    public var bnRunningVar = BatchNorm1D<Float>.RunningVariance.biased
    /// `glorot`, `he`, `std-normal`, or `from:PATH` (`--init-from`).
    public var initialization = Initializer.glorot.rawValue
    public init() {}

    /// The model to build: the preset or spec, with dfn2's width and --no-batchnorm applied.
    public func resolved() throws -> ModelSpec {
        let s = try ModelSpec.parse(spec, hidden: hidden ?? ModelSpec.defaultHidden)
        return batchNorm ? s : s.removingBatchNorm()
    }

    public var buildOptions: BuildOptions {
        BuildOptions(bnMomentum: bnMomentum, bnEps: bnEps, runningVariance: bnRunningVar, initializer: Initializer(rawValue: initialization) ?? .glorot)
    }

    public func write(to w: inout FlatWriter) {
        w.write(.model, spec)
        // dfn2 records its width (0.3's form); another model only when given, to be refused.
        if let h = hidden ?? (spec == "dfn2" ? ModelSpec.defaultHidden : nil) { w.write(.hidden, h) }
        w.write(.batchNorm, onOff: batchNorm)
        w.write(.bnMomentum, bnMomentum)
        w.write(.bnEps, bnEps)
        w.write(.bnRunningVar, bnRunningVar)
        w.write(.initialization, initialization)
    }

    public init(from r: FlatReader) throws {
        spec = try r.string(.model) ?? spec
        hidden = try r.int(.hidden)
        if spec == "dfn2" && hidden == ModelSpec.defaultHidden { hidden = nil }
        batchNorm = try r.onOff(.batchNorm) ?? batchNorm
        bnMomentum = try r.double(.bnMomentum) ?? bnMomentum
        bnEps = try r.double(.bnEps) ?? bnEps
        bnRunningVar = try r.choice(.bnRunningVar) ?? bnRunningVar
        initialization = try r.string(.initialization) ?? initialization
    }

    public func problem() -> ConfigProblem? {
        if let h = hidden, h < 1 || h > ModelSpec.maxWidth { return ConfigProblem(.hidden, "must be from 1 to \(ModelSpec.maxWidth) (got \(h))") }
        if !(bnMomentum >= 0 && bnMomentum < 1) { return ConfigProblem(.bnMomentum, "must be in [0, 1) (got \(bnMomentum)); it is the decay of the running average, 0.9 matches PyTorch's momentum=0.1") }
        if !(bnEps.isFinite && bnEps > 0) { return ConfigProblem(.bnEps, "must be a positive finite number (got \(bnEps))") }
        if !initialization.hasPrefix("from:") && Initializer(rawValue: initialization) == nil {
            return ConfigProblem(.initialization, "must be one of \(Initializer.allCases.map(\.rawValue).joined(separator: ", ")) (got '\(initialization)')")
        }
        do { _ = try resolved() } catch let e as ModelSpec.ParseError { return ConfigProblem(.model, e.message) } catch { return ConfigProblem(.model, "\(error)") }
        if hidden != nil && spec != "dfn2" {
            return ConfigProblem(.hidden, "sets the width of the dfn2 preset only; write the widths into the --model spec instead (fc256-...)")
        }
        return nil
    }
}
