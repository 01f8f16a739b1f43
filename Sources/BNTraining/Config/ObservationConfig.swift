import BNCore

extension ConfigKey {
    public static let trace = ConfigKey("trace", restoredOnResume: false)
    public static let traceEvery = ConfigKey("trace_every", restoredOnResume: false)
    public static let traceExamples = ConfigKey("trace_examples", restoredOnResume: false)
    public static let evalEvery = ConfigKey("eval_every", restoredOnResume: false)
}

/// What is watched during training without changing it: an activation trace and step-wise
/// evaluation. A resumed run keeps the checkpoint's unless given new ones.
public struct ObservationConfig: ConfigGroup {
    /// `TraceSpec` as written, every `traceEvery` steps over the first `traceExamples` test
    /// images; nil is off.
    public var trace: String?
    public var traceEvery = 100
    public var traceExamples = 500
    /// Test (and validation) evaluation every N training steps; 0 is off.
    public var evalEvery = 0
    public init() {}

    public func write(to w: inout FlatWriter) {
        if let trace {
            w.write(.trace, trace)
            w.write(.traceEvery, traceEvery)
            w.write(.traceExamples, traceExamples)
        }
        if evalEvery > 0 { w.write(.evalEvery, evalEvery) }
    }

    public init(from r: FlatReader) throws {
        trace = try r.string(.trace)
        traceEvery = try r.int(.traceEvery) ?? traceEvery
        traceExamples = try r.int(.traceExamples) ?? traceExamples
        evalEvery = try r.int(.evalEvery) ?? evalEvery
    }

    public func problem() -> ConfigProblem? {
        if let t = trace {
            do { _ = try TraceSpec.parse(t) } catch let e as ModelSpec.ParseError { return ConfigProblem(.trace, e.message) } catch { return ConfigProblem(.trace, "\(error)") }
        }
        if traceEvery < 1 || traceEvery > 100_000_000 { return ConfigProblem(.traceEvery, "must be from 1 to 100000000 steps (got \(traceEvery))") }
        if traceExamples < 2 || traceExamples > 100_000 { return ConfigProblem(.traceExamples, "must be from 2 to 100000 (got \(traceExamples))") }
        if evalEvery < 0 || evalEvery > 100_000_000 { return ConfigProblem(.evalEvery, "must be from 0 (off) to 100000000 steps (got \(evalEvery))") }
        return nil
    }
}
