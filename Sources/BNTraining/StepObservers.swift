import BNCore
import BNData

/// Something that looks at the model between training steps, in evaluation mode: it reads the
/// model and changes nothing, so training is the same with or without it (tested).
protocol StepObserver {
    /// After global step `step` (from 1) of `epoch`: the records to emit (none when it is not
    /// due), or nil when a signal (`shouldStop`) ended the observation early.
    func observe(step: Int, epoch: Int, shouldStop: () -> Int32?) -> [Record]?
}

/// `--trace`: a layer's activation percentiles, mean and sd every `every` steps.
struct TraceObserver: StepObserver {
    let tracer: Tracer
    let parallel: DataParallel<Float>
    let every: Int
    /// The traced spec layer.
    let layer: Int

    func observe(step: Int, epoch: Int, shouldStop: () -> Int32?) -> [Record]? {
        guard step % every == 0 else { return [] }
        guard let (u, a) = tracer.measure(parallel, shouldStop: shouldStop) else { return nil }
        return [Record("trace", [
            ("step", .int(step)), ("epoch", .int(epoch)), ("layer", .int(layer)), ("side", .string(tracer.spec.side.rawValue)),
            ("unit", .int(tracer.spec.unit)), ("p15", .exact(u.p15)), ("p50", .exact(u.p50)), ("p85", .exact(u.p85)),
            ("mean", .exact(u.mean)), ("std", .exact(u.std)), ("all_p15", .exact(a.p15)), ("all_p50", .exact(a.p50)),
            ("all_p85", .exact(a.p85)), ("all_mean", .exact(a.mean)), ("all_std", .exact(a.std)),
        ])]
    }
}

/// `--eval-every`: validation and test loss and accuracy every `every` steps.
struct EvalObserver: StepObserver {
    let parallel: DataParallel<Float>
    let every: Int
    let validation: [MinibatchSampler]?
    let test: [SequentialBatches]

    func observe(step: Int, epoch: Int, shouldStop: () -> Int32?) -> [Record]? {
        guard step % every == 0 else { return [] }
        var fields: [(String, Value)] = [("step", .int(step)), ("epoch", .int(epoch))]
        if let validation {
            let v = Evaluation.run(parallel, validation)
            fields += [("val_loss", .number(v.loss, digits: 6)), ("val_acc", .number(v.accuracy, digits: 4))]
        }
        let t = Evaluation.run(parallel, test)
        fields += [("test_loss", .number(t.loss, digits: 6)), ("test_acc", .number(t.accuracy, digits: 4))]
        return [Record("eval", fields)]
    }
}
