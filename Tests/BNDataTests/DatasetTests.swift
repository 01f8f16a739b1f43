import BNCore
@testable import BNData
import Foundation
import XCTest

final class DatasetTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "bntrain-ds-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    /// Writes a 4-file dataset of `train`/`test` 2x2 images with labels cycling over `classes`.
    func writeSet(prefix: String = "", train: Int = 6, test: Int = 3, classes: Int = 3, gzip: Bool = true,
                  trainLabels: [UInt8]? = nil, testLabels: [UInt8]? = nil, testSize: (Int, Int) = (2, 2)) throws {
        let ext = gzip ? ".gz" : ""
        try IDX.writeImages((0..<(train * 4)).map { UInt8($0 % 256) }, count: train, rows: 2, cols: 2, to: "\(dir!)/\(prefix)train-images-idx3-ubyte\(ext)", gzip: gzip)
        try IDX.writeLabels(trainLabels ?? (0..<train).map { UInt8($0 % classes) }, to: "\(dir!)/\(prefix)train-labels-idx1-ubyte\(ext)", gzip: gzip)
        try IDX.writeImages([UInt8](repeating: 9, count: test * testSize.0 * testSize.1), count: test, rows: testSize.0, cols: testSize.1, to: "\(dir!)/\(prefix)t10k-images-idx3-ubyte\(ext)", gzip: gzip)
        try IDX.writeLabels(testLabels ?? (0..<test).map { UInt8($0 % classes) }, to: "\(dir!)/\(prefix)t10k-labels-idx1-ubyte\(ext)", gzip: gzip)
    }

    func load() throws -> Dataset { try Dataset.load(try DatasetFiles.locate(in: dir, hint: "fetch it")) }

    func testLoadsAndDerivesClassCount() throws {
        try writeSet(classes: 4)
        let d = try load()
        XCTAssertEqual(d.train.count, 6)
        XCTAssertEqual(d.test.count, 3)
        XCTAssertEqual(d.classes, 4)
        XCTAssertEqual(d.featureCount, 4)
        XCTAssertTrue(d.files.trainImages.hasSuffix("train-images-idx3-ubyte.gz"))
    }

    func testPrefixedNamesWhenExactlyOneMatches() throws {
        try writeSet(prefix: "emnist-digits-", gzip: false)
        XCTAssertTrue(try load().files.testLabels.hasSuffix("emnist-digits-t10k-labels-idx1-ubyte"))
        try writeSet(prefix: "emnist-letters-")
        XCTAssertThrowsError(try load()) { e in
            guard case DataError.ambiguousFile = e else { return XCTFail("\(e)") }
        }
    }

    func testMissingFolderAndFileNameWhatWasLookedFor() throws {
        XCTAssertThrowsError(try DatasetFiles.locate(in: dir + "/nope", hint: "run X")) { e in
            XCTAssertEqual((e as? DataError)?.description, "data folder '\(dir!)/nope' does not exist; run X")
        }
        try IDX.writeLabels([1], to: dir + "/train-labels-idx1-ubyte", gzip: false)
        XCTAssertThrowsError(try DatasetFiles.locate(in: dir, hint: "run X")) { e in
            let text = (e as? DataError)?.description ?? ""
            XCTAssertTrue(text.contains("'train-images-idx3-ubyte.gz'") && text.hasSuffix("run X"), text)
        }
    }

    func testCountMismatch() throws {
        try writeSet(trainLabels: [0, 1, 2, 0, 1])
        XCTAssertThrowsError(try load()) { e in
            guard case DataError.countMismatch(_, 6, _, 5) = e else { return XCTFail("\(e)") }
        }
    }

    func testTestLabelOutOfTrainingRange() throws {
        try writeSet(testLabels: [0, 1, 7])
        XCTAssertThrowsError(try load()) { e in
            guard case DataError.labelOutOfRange(_, 2, 7, 3) = e else { return XCTFail("\(e)") }
        }
    }

    func testSingleClassIsRefused() throws {
        try writeSet(trainLabels: [1, 1, 1, 1, 1, 1], testLabels: [0, 0, 0])
        XCTAssertThrowsError(try load()) { e in
            guard case DataError.tooFewClasses = e else { return XCTFail("\(e)") }
        }
    }

    func testTrainAndTestImageSizesMustAgree() throws {
        try writeSet(testSize: (3, 3))
        XCTAssertThrowsError(try load()) { e in
            guard case DataError.shapeMismatch = e else { return XCTFail("\(e)") }
        }
    }

    func testSamplerCoversEveryExampleOncePerEpochWithPartialBatch() throws {
        try writeSet(train: 10, classes: 2)
        let d = try load()
        let sampler = MinibatchSampler(split: d.train, batchSize: 4)
        XCTAssertEqual(sampler.batchCount, 3)
        var rng = SplitMix64(seed: 1)
        sampler.shuffle(rng: &rng)
        var seen: [Float] = [], sizes: [Int] = []
        for b in 0..<sampler.batchCount {
            let n = sampler.fill(batch: b)
            sizes.append(n)
            XCTAssertEqual(sampler.x.rows, n)
            for r in 0..<n {
                let first = sampler.x[r, 0]
                seen.append(first)
                // The label travels with its image: image i starts with pixel 4i, label is i % 2.
                let i = Int((((first + 1) / 2) * 255).rounded()) / 4
                XCTAssertEqual(Int(sampler.labels[r]), i % 2)
            }
        }
        XCTAssertEqual(sizes, [4, 4, 2])
        XCTAssertEqual(Set(seen).count, 10)
        XCTAssertNotEqual(sampler.order, (0..<10).map { Int32($0) }, "shuffled")
    }

    /// The sampler's rows are the images' converted bytes, image by image.
    func testSamplerRowsAreTheConvertedImages() throws {
        try writeSet(train: 70, classes: 2)
        let d = try load()
        let sampler = MinibatchSampler(split: d.train, batchSize: 16)
        var rng = SplitMix64(seed: 2)
        sampler.shuffle(rng: &rng)
        for b in 0..<sampler.batchCount {
            let n = sampler.fill(batch: b)
            for r in 0..<n {
                let i = Int(sampler.order[b * 16 + r])
                for j in 0..<4 { XCTAssertEqual(sampler.x[r, j].bitPattern, d.train.images.value(image: i, pixel: j).bitPattern) }
            }
        }
    }

    /// The digest is the one computed when images were kept as float32 (a port of that code
    /// in Python gave this value for this set, and c30b778b1a008fca for Fashion-MNIST, as the
    /// float32 bntrain saved in its checkpoints), so older checkpoints still resume.
    func testIdentityDigestIsUnchangedFromFloat32Images() throws {
        try writeSet(train: 70, test: 3, classes: 3)
        XCTAssertEqual(try load().identity, "train=70 test=3 image=2x2 digest=24014d514a2a63b1")
    }

    func testSequentialBatchesConvertTheDataInOrder() throws {
        try writeSet(train: 10, classes: 2)
        let d = try load()
        let seq = SequentialBatches(split: d.train, batchSize: 4)
        XCTAssertEqual(seq.batchCount, 3)
        var firsts: [Float] = [], labels: [Int32] = []
        for b in 0..<seq.batchCount {
            let n = seq.select(batch: b)
            XCTAssertEqual(seq.x.rows, n)
            let expected = d.train.images.floats(images: b * 4, count: n)
            XCTAssertEqual(Array(UnsafeBufferPointer(start: seq.x.data, count: n * 4)), Array(UnsafeBufferPointer(start: expected.data, count: n * 4)))
            for r in 0..<n {
                firsts.append(seq.x[r, 0])
                labels.append(seq.labels[r])
            }
        }
        XCTAssertEqual(firsts, (0..<10).map { d.train.images.value(image: $0, pixel: 0) })
        XCTAssertEqual(labels, d.train.labels)
    }

    func testRandomSubsetIsSeededAndDistinct() {
        var a = SplitMix64(seed: 3), b = SplitMix64(seed: 3)
        let s1 = randomSubset(total: 100, limit: 30, rng: &a), s2 = randomSubset(total: 100, limit: 30, rng: &b)
        XCTAssertEqual(s1, s2)
        XCTAssertEqual(Set(s1).count, 30)
        var c = SplitMix64(seed: 3)
        XCTAssertEqual(randomSubset(total: 5, limit: nil, rng: &c), [0, 1, 2, 3, 4])
    }
}
