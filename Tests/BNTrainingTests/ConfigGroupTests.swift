import BNCore
import Foundation
import XCTest

@testable import BNTraining

/// The typed configuration groups: a parameter exists only in the case that reads it, flags
/// and checkpoints go through the same setters, and the flat encoding is 0.4's.
final class ConfigGroupTests: XCTestCase {
    typealias S = RunConfig.Setting

    func testAParameterOfAnotherOptimizerOrScheduleCannotBeSet() {
        var sgd = OptimizerRule(.sgd)
        XCTAssertThrowsError(try sgd.set(beta1: 0.8)) { XCTAssertEqual(($0 as? ConfigProblem)?.key, .beta1) }
        XCTAssertNoThrow(try sgd.set(beta1: 0.9), "the default changes nothing and is accepted")
        XCTAssertNoThrow(try sgd.set(momentum: 0.5))
        XCTAssertEqual(sgd, .sgd(momentum: 0.5, nesterov: false))
        var adam = OptimizerRule(.adam)
        XCTAssertThrowsError(try adam.set(nesterov: true)) { XCTAssertEqual(($0 as? ConfigProblem)?.key, .nesterov) }
        XCTAssertThrowsError(try adam.set(alpha: 0.5)) { XCTAssertEqual(($0 as? ConfigProblem)?.message, "applies to --optimizer rmsprop, not adam") }
        var constant = ScheduleRule.constant
        XCTAssertThrowsError(try constant.set(gamma: 0.5)) { XCTAssertEqual(($0 as? ConfigProblem)?.key, .lrGamma) }
        var plateau = ScheduleRule(.plateau)
        XCTAssertNoThrow(try plateau.set(min: 1e-4))
        XCTAssertThrowsError(try plateau.set(stepEpochs: 3))
        var stop = StoppingConfig()
        XCTAssertThrowsError(try stop.set(monitor: .valAcc), "early stopping is off")
        stop.set(patience: 4)
        XCTAssertNoThrow(try stop.set(monitor: .valAcc))
        XCTAssertEqual(stop, .after(patience: 4, monitor: .valAcc, minDelta: 0))
    }

    /// Flags apply in the record's order whatever order they were given in: the optimizer
    /// before its parameters.
    func testSettingsApplyChoiceBeforeParameters() throws {
        let c = try RunConfig.fresh([S(.beta1) { try $0.optimizer.rule.set(beta1: 0.8) }, S(.optimizer) { $0.optimizer.rule = OptimizerRule(.adamw) }])
        XCTAssertEqual(c.optimizer.rule, .adamw(beta1: 0.8, beta2: 0.999, eps: 1e-8))
    }

    /// A checkpoint's key goes through the same setter as the flag: a parameter of another
    /// optimizer with a non-default value is refused naming it; the default is tolerated.
    func testCheckpointKeysAreCheckedByTheFlagsRules() throws {
        let decode = { (json: String) in try JSONDecoder().decode(RunConfig.self, from: Data(json.utf8)) }
        XCTAssertThrowsError(try decode(#"{"optimizer":"adam","momentum":0.5}"#)) { XCTAssertEqual(($0 as? ConfigProblem)?.key, .momentum) }
        XCTAssertThrowsError(try decode(#"{"lr_schedule":"cosine","lr_gamma":0.5}"#)) { XCTAssertEqual(($0 as? ConfigProblem)?.key, .lrGamma) }
        XCTAssertEqual(try decode(#"{"optimizer":"adam","momentum":0.0,"beta2":0.99}"#).optimizer.rule, .adam(beta1: 0.9, beta2: 0.99, eps: 1e-8))
        XCTAssertThrowsError(try decode(#"{"optimizer":"lion"}"#)) { error in
            guard case let DecodingError.dataCorrupted(c) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(c.debugDescription, "is 'lion', expected sgd, adam, adamw or rmsprop")
        }
    }

    /// A resumed run checks a schedule parameter against the checkpoint's schedule.
    func testResumeChecksParametersAgainstTheSavedChoice() throws {
        var saved = RunConfig()
        saved.schedule.rule = .step(every: 2, gamma: 0.5)
        let (_, conflicts) = try RunConfig.resuming(saved, with: [S(.lrGamma) { try $0.schedule.rule.set(gamma: 0.25) }])
        XCTAssertEqual(conflicts, ["--lr-gamma 0.25 (checkpoint: 0.5)"])
        XCTAssertThrowsError(try RunConfig.resuming(RunConfig(), with: [S(.lrGamma) { try $0.schedule.rule.set(gamma: 0.25) }]))
    }

    /// The record lists the keys in 0.4's order, whichever group writes them; keys added
    /// since (the parallel group's) follow.
    func testRecordOrderIsThe04Order() {
        var c = RunConfig()
        c.optimizer.rule = .rmsprop(alpha: 0.9, eps: 1e-6, momentum: 0.5)
        c.schedule.rule = .plateau(patience: 2, factor: 0.3, min: 0)
        c.stopping = .after(patience: 3, monitor: .valAcc, minDelta: 0.01)
        c.data.valSplit = 0.2
        XCTAssertEqual(c.fields.map(\.0).joined(separator: " "), "model epochs batch lr optimizer momentum adam_eps alpha weight_decay lr_schedule lr_min warmup_epochs lr_patience lr_factor early_stop monitor min_delta clip_grad_norm hidden train_limit val_split shuffle batchnorm bn_momentum bn_eps bn_running_var init seed threads precision gemm conv eval_batch workers shard_size bn_sync bn_stats")
    }
}
