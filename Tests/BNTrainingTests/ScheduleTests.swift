import BNTraining
import XCTest

final class ScheduleTests: XCTestCase {
    func testStepCosineAndWarmup() {
        let step = LRSchedule(kind: .step, baseLR: 0.1, stepEpochs: 2, gamma: 0.5)
        XCTAssertEqual((0..<5).map { step.epochRate(completed: $0, totalEpochs: 5) }, [0.1, 0.1, 0.05, 0.05, 0.025])
        let cosine = LRSchedule(kind: .cosine, baseLR: 0.1, minLR: 0.02)
        XCTAssertEqual(cosine.epochRate(completed: 0, totalEpochs: 4), 0.1, accuracy: 1e-15)
        XCTAssertEqual(cosine.epochRate(completed: 2, totalEpochs: 4), 0.06, accuracy: 1e-15)
        XCTAssertEqual(cosine.epochRate(completed: 4, totalEpochs: 4), 0.02, accuracy: 1e-15)
        // Warmup over 1 epoch of 4 steps: 1/4, 2/4, 3/4, 4/4 of the rate, then the rate.
        let warm = LRSchedule(kind: .constant, baseLR: 0.1, warmupEpochs: 1)
        for (k, expected) in [0.025, 0.05, 0.075, 0.1].enumerated() {
            XCTAssertEqual(warm.rate(completed: 0, step: k, stepsPerEpoch: 4, totalEpochs: 3), expected, accuracy: 1e-15)
        }
        XCTAssertEqual(warm.rate(completed: 1, step: 0, stepsPerEpoch: 4, totalEpochs: 3), 0.1)
    }

    /// ReduceLROnPlateau (mode min, threshold 1e-4 relative): reduce when more than `patience`
    /// epochs pass without improvement; never below the minimum.
    func testPlateau() {
        var s = LRSchedule(kind: .plateau, baseLR: 0.1, minLR: 0.03, patience: 1, factor: 0.5)
        for loss in [1.0, 0.9, 0.95] { s.endEpoch(validationLoss: loss) }
        XCTAssertEqual(s.plateauLR, 0.1, "one bad epoch is within patience")
        s.endEpoch(validationLoss: 0.96)
        XCTAssertEqual(s.plateauLR, 0.05)
        s.endEpoch(validationLoss: 0.89995)  // not below 0.9 * (1 - 1e-4) = 0.89991: still bad
        s.endEpoch(validationLoss: 0.97)
        XCTAssertEqual(s.plateauLR, 0.03, "floored at lr_min")
        XCTAssertEqual(s.epochRate(completed: 9, totalEpochs: 10), 0.03)
    }

    func testEarlyStopping() {
        var e = EarlyStopping(patience: 2, monitor: .valLoss, minDelta: 0.01)
        XCTAssertFalse(e.update(epoch: 1, loss: 1.0, accuracy: 0.5))
        XCTAssertFalse(e.update(epoch: 2, loss: 0.9, accuracy: 0.6))
        XCTAssertFalse(e.update(epoch: 3, loss: 0.895, accuracy: 0.7), "below min_delta: not an improvement")
        XCTAssertTrue(e.update(epoch: 4, loss: 0.95, accuracy: 0.7))
        XCTAssertEqual(e.bestEpoch, 2)
        var a = EarlyStopping(patience: 1, monitor: .valAcc, minDelta: 0)
        XCTAssertFalse(a.update(epoch: 1, loss: 1, accuracy: 0.5))
        XCTAssertFalse(a.update(epoch: 2, loss: 2, accuracy: 0.6))
        XCTAssertTrue(a.update(epoch: 3, loss: 0.1, accuracy: 0.6))
        XCTAssertEqual(a.bestEpoch, 2)
    }
}
