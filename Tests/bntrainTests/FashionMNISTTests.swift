import Foundation
import XCTest

/// End to end on the real Fashion-MNIST (installed by `Scripts/data fashion-mnist`, which the
/// README's test command runs). Fails, rather than skips, when the data is missing.
final class FashionMNISTTests: XCTestCase {
    func testThreeEpochsOn5000ImagesReachWellAboveChance() throws {
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        let folder = repo + "/Data/fashion-mnist"
        guard FileManager.default.fileExists(atPath: folder + "/train-images-idx3-ubyte.gz") else {
            return XCTFail("\(folder) is missing; run 'Scripts/data fashion-mnist' first")
        }
        let r = try bntrain(["--data", folder, "--epochs", "3", "--train-limit", "5000", "--batch", "32"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let acc = Double(r.summary?["final_test_acc"] ?? "") ?? 0
        XCTAssertGreaterThanOrEqual(acc, 0.75, r.stdout)
        XCTAssertTrue(r.stdout.contains(" train=5000 ") && r.stdout.contains(" test=10000 "), r.stdout)
        let losses = r.epochLines.compactMap { Double($0["train_loss"] ?? "") }
        XCTAssertEqual(losses.count, 3)
        XCTAssertLessThan(losses[1], losses[0])
    }
}
