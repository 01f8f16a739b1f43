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

    /// Real images have black backgrounds: max-pool ties and ReLUs at 0 below them. Every
    /// preset's gradients check out on them, on three seeds (cnn on a smaller batch and sample:
    /// its full-size check takes half a minute).
    func testGradcheckPassesEveryPresetOnRealImages() throws {
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        let folder = repo + "/Data/fashion-mnist"
        guard FileManager.default.fileExists(atPath: folder + "/train-images-idx3-ubyte.gz") else {
            return XCTFail("\(folder) is missing; run 'Scripts/data fashion-mnist' first")
        }
        var skipped = 0
        for model in ["dfn2", "bn-paper", "mlp", "lenet-bn", "cnn"] {
            for seed in 1...3 {
                let size = model == "cnn" ? ["--batch", "4", "--samples", "4"] : ["--samples", "40"]
                let r = try bntrain(["gradcheck", "--model", model, "--data", folder, "--seed", "\(seed)"] + size)
                XCTAssertEqual(r.status, 0, "\(model) seed \(seed): \(r.stderr)")
                let lines = r.stdout.split(separator: "\n").map { Run.fields($0) }
                XCTAssertEqual(lines.last?["verdict"], "pass", "\(model) seed \(seed): \(lines.last ?? [:])")
                skipped += lines.compactMap { Int($0["skipped"] ?? "") }.reduce(0, +)
            }
        }
        XCTAssertGreaterThan(skipped, 0, "the CNNs met kinks")
    }
}
