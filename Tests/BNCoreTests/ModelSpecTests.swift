import BNCore
import XCTest

/// The spec grammar, presets, canonical form, --no-batchnorm, summaries and the builder.
final class ModelSpecTests: XCTestCase {
    func parse(_ s: String, hidden: Int = 200) throws -> String { try ModelSpec.parse(s, hidden: hidden).canonical }

    func testPresets() throws {
        XCTAssertEqual(try parse("dfn2"), "fc200-sigmoid-bn-fc")
        XCTAssertEqual(try parse("dfn2", hidden: 50), "fc50-sigmoid-bn-fc")
        XCTAssertEqual(try parse("bn-paper"), "fc100-bn-sigmoid-fc100-bn-sigmoid-fc100-bn-sigmoid-fc")
        XCTAssertEqual(try parse("mlp"), "fc256-bn-relu-dropout0.2-fc256-bn-relu-dropout0.2-fc")
    }

    func testTokensSeparatorsAndCanonicalForm() throws {
        XCTAssertEqual(try parse("fc256-bn-relu-dropout0.2-fc"), "fc256-bn-relu-dropout0.2-fc")
        XCTAssertEqual(try parse("  fc64 ln  tanh -dropout0.50 - fc "), "fc64-ln-tanh-dropout0.5-fc")
        XCTAssertEqual(try parse("fc"), "fc")
        XCTAssertEqual(try parse("bn-fc10-sigmoid-fc"), "bn-fc10-sigmoid-fc")
        XCTAssertEqual(try ModelSpec.parse("mlp").removingBatchNorm().canonical, "fc256-relu-dropout0.2-fc256-relu-dropout0.2-fc")
        XCTAssertFalse(try ModelSpec.parse("mlp").removingBatchNorm().hasBatchNorm)
        // Codable as the canonical string.
        let spec = try ModelSpec.parse("fc8-ln-relu-fc")
        let data = try JSONEncoder().encode([spec])
        XCTAssertEqual(String(data: data, encoding: .utf8), "[\"fc8-ln-relu-fc\"]")
        XCTAssertEqual(try JSONDecoder().decode([ModelSpec].self, from: data), [spec])
    }

    /// Every refusal is one line naming the bad token (and never a comma-based grammar).
    func testErrorsPointAtTheToken() {
        let cases: [(String, String)] = [
            ("fc256-bx-relu-fc", "layer 2 'bx': unknown layer"),
            ("fc256--fc", "empty layer after 'fc256'"),
            ("-fc", "empty layer after the start"),
            ("fc-relu-fc", "layer 1 'fc': only the last layer"),
            ("fc100-relu", "must end with 'fc'"),
            ("fc0-fc", "layer 1 'fc0': fcN needs a width"),
            ("fc99999999999999999999-fc", "needs a width"),
            ("dropout-fc", "layer 1 'dropout': dropout needs its drop probability"),
            ("dropout1-fc", "layer 1 'dropout1': the dropout probability must be"),
            ("dropout0.5e3-fc", "must be a decimal"),
            ("fc10,fc", "layer 1 'fc10,fc'"),
            ("", "empty"),
        ]
        for (text, expected) in cases {
            XCTAssertThrowsError(try ModelSpec.parse(text), text) { e in
                let m = "\(e)"
                XCTAssertTrue(m.contains(expected), "\(text): \(m)")
                XCTAssertFalse(m.contains("\n"), "one line: \(m)")
            }
        }
        XCTAssertThrowsError(try ModelSpec.parse("fc20-fc7").widths(inputs: 4, classes: 3)) { e in
            XCTAssertTrue("\(e)".contains("ends with fc7 but the data has 3 classes"), "\(e)")
        }
    }

    func testSummaryShapesParametersAndFlops() throws {
        let rows = try ModelSpec.parse("dfn2").summary(inputs: 784, classes: 10)
        XCTAssertEqual(rows.map(\.kind), ["fc", "sigmoid", "bn", "fc"])
        XCTAssertEqual(rows.map(\.outputWidth), [200, 200, 200, 10])
        XCTAssertEqual(rows.map(\.parameters), [784 * 200 + 200, 0, 400, 2010])
        XCTAssertEqual(rows.reduce(0) { $0 + $1.parameters }, 159_410)
        XCTAssertEqual(rows[0].flops, 2 * 784 * 200 + 200)
        let mlp = try ModelSpec.parse("mlp").summary(inputs: 784, classes: 10)
        XCTAssertEqual(mlp.reduce(0) { $0 + $1.parameters }, 784 * 256 + 256 + 512 + 256 * 256 + 256 + 512 + 2570)
        let paper = try ModelSpec.parse("bn-paper").summary(inputs: 784, classes: 10)
        XCTAssertEqual(paper.reduce(0) { $0 + $1.parameters }, 100_310)
    }

    /// The built network's parameter count matches the summary, names follow nn.Sequential
    /// indices, and a seed gives the same weights.
    func testBuilderAgreesWithSummaryAndIsSeeded() throws {
        for text in ["dfn2", "bn-paper", "mlp", "fc32-ln-tanh-dropout0.1-fc"] {
            let spec = try ModelSpec.parse(text)
            let net: Network<Float> = network(text, inputs: 784, classes: 10, seed: 1)
            XCTAssertEqual(net.parameterCount, try spec.summary(inputs: 784, classes: 10).reduce(0) { $0 + $1.parameters }, text)
            let again: Network<Float> = network(text, inputs: 784, classes: 10, seed: 1)
            for (p, q) in zip(net.parameters, again.parameters) { XCTAssertEqual(p.value.toArray(), q.value.toArray()) }
        }
        let mlp: Network<Float> = network("mlp", inputs: 784, classes: 10, seed: 1)
        XCTAssertEqual(mlp.parameters.map(\.name), ["0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias", "5.weight", "5.bias", "8.weight", "8.bias"])
        XCTAssertEqual(mlp.buffers.map(\.name), ["1.running_mean", "1.running_var", "5.running_mean", "5.running_var"])
        XCTAssertEqual(mlp.batchNorms.count, 2)
    }

    /// BN before and after the nonlinearity both train (the loss falls on a separable problem).
    func testBatchNormPlacementsBothTrain() {
        for spec in ["fc16-bn-sigmoid-fc", "fc16-sigmoid-bn-fc", "fc16-bn-relu-fc", "fc16-relu-bn-fc", "fc16-ln-tanh-fc"] {
            let net: Network<Float> = network(spec, inputs: 4, classes: 2, seed: 8)
            let (x, labels) = separableBatch(seed: 9)
            let sgd = SGD<Float>(learningRate: 0.3)
            let first = net.trainStep(x, labels: labels, optimizer: sgd)
            var last = first
            for _ in 0..<200 { last = net.trainStep(x, labels: labels, optimizer: sgd) }
            XCTAssertLessThan(last, first * 0.3, spec)
        }
    }

    /// Convolution and pooling tokens, shapes through the implied flatten, and the CNN presets.
    func testConvolutionalSpecs() throws {
        XCTAssertEqual(try parse("conv32k3-bn-relu-maxpool2-fc"), "conv32k3-bn-relu-maxpool2-fc")
        XCTAssertEqual(try parse("conv6k5p2-conv16k5s2-maxpool3s2-avgpool2-gap-fc"), "conv6k5p2-conv16k5s2-maxpool3s2-avgpool2-gap-fc")
        XCTAssertEqual(try parse("conv8k3s1p0-maxpool2s2-fc"), "conv8k3-maxpool2-fc", "defaults are not written")
        let lenet = try ModelSpec.parse("lenet-bn")
        let image = ImageShape(1, 28, 28)
        let shapes = try lenet.shapes(inputs: 784, classes: 10, image: image).map(\.description)
        XCTAssertEqual(shapes[0], "6x28x28")
        XCTAssertEqual(shapes[3], "6x14x14")
        XCTAssertEqual(shapes[7], "16x5x5")
        XCTAssertEqual(shapes[8], "120", "the fc flattens 16x5x5")
        XCTAssertEqual(try lenet.summary(inputs: 784, classes: 10, image: image).reduce(0) { $0 + $1.parameters }, 62_158)
        XCTAssertEqual(try ModelSpec.parse("cnn").summary(inputs: 784, classes: 10, image: image).reduce(0) { $0 + $1.parameters }, 1_200_330)
        let net: Network<Float> = network("lenet-bn", inputs: 784, classes: 10, seed: 1, image: image)
        XCTAssertEqual(net.parameterCount, 62_158)
        XCTAssertEqual(net.batchNorms2D.count, 2)
        XCTAssertEqual(net.batchNorms.count, 2, "BN picks 1-D or 2-D from the shape it receives")
        XCTAssertEqual(net.parameters.map(\.shape)[0], [6, 1, 5, 5], "PyTorch's Conv2d layout")
        for (text, expected) in [("fc10-conv4k3-fc", "needs an image input"), ("conv4k3-ln-fc", "ln normalises a feature vector"),
                                 ("conv4k30-fc", "does not fit"), ("conv4k3x-fc", "convNkK"), ("maxpool2k2-fc", "maxpoolK")] {
            XCTAssertThrowsError(try ModelSpec.parse(text).shapes(inputs: 784, classes: 10, image: image), text) { e in
                XCTAssertTrue("\(e)".contains(expected), "\(text): \(e)")
            }
        }
    }
}
