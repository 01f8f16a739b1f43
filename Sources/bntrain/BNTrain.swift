import ArgumentParser
import BNCore
import BNData
import BNPlatform
import Foundation

extension Initializer: ExpressibleByArgument {}
extension BatchNorm1D.RunningVariance: ExpressibleByArgument {}

@main
struct BNTrain: ParsableCommand {
    static let version = "0.1.0"
    static let defaultSeed: UInt64 = 42

    static let configuration = CommandConfiguration(
        commandName: "bntrain",
        abstract: "Train a batch-normalized MLP classifier on MNIST-style IDX data.",
        discussion: """
            Network: Dense(pixels->hidden) -> Sigmoid -> BatchNorm1D -> Dense(hidden->classes) -> softmax \
            cross-entropy, minibatch SGD. stdout gets one 'config' line, one 'epoch=N ...' line per epoch and a \
            'summary' line (key=value fields, documented in the README); diagnostics go to stderr.
            BatchNorm convention: running = m*running + (1-m)*batch with m = --bn-momentum (PyTorch's momentum=0.1 \
            is m=0.9); running_var takes the biased batch variance unless --bn-running-var unbiased (PyTorch's choice).
            \(ExitStatus.helpText).
            """,
        version: version
    )

    @Option(help: ArgumentHelp("Dataset folder, or a name meaning Data/NAME. Default: Data/mnist if present, else Data/fashion-mnist.", valueName: "dir|name"))
    var data: String?

    @Option(help: "Passes over the training set.")
    var epochs = 20

    @Option(help: "Minibatch size (the last batch of an epoch may be smaller).")
    var batch = 64

    @Option(help: "SGD learning rate.")
    var lr: Double = 0.01

    @Option(help: "Hidden layer width.")
    var hidden = 200

    @Option(help: ArgumentHelp("Train on a seeded random subset of this many training images (default: all).", valueName: "n"))
    var trainLimit: Int?

    @Option(help: "Seed for the subset, weight initialisation and shuffling.")
    var seed: UInt64 = BNTrain.defaultSeed

    @Option(help: "Decay m of the BN running averages: running = m*running + (1-m)*batch; in [0, 1).")
    var bnMomentum: Double = 0.9

    @Option(help: "Epsilon added to the BN variance.")
    var bnEps: Double = 1e-5

    @Option(help: ArgumentHelp("Variance fed into BN's running_var: biased (as normalised) or unbiased (N/(N-1), as PyTorch).", valueName: "biased|unbiased"))
    var bnRunningVar: BatchNorm1D<Float>.RunningVariance = .biased

    @Flag(help: "Leave out the BatchNorm1D layer (the same net without BN, for ablations).")
    var noBatchnorm = false

    @Option(help: ArgumentHelp("Weight initialisation: glorot (normal, var 2/(fan_in+fan_out)), he (normal, var 2/fan_in), std-normal (std 1, the published reference run).", valueName: "glorot|he|std-normal"))
    var `init`: Initializer = .glorot

    @Option(help: "BLAS threads.")
    var threads = 1

    @Option(help: "Batch size of the test pass (memory only; results do not depend on it).")
    var evalBatch = 1000

    mutating func validate() throws {
        guard epochs >= 1 else { throw ValidationError("--epochs must be at least 1 (got \(epochs))") }
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1 (got \(batch))") }
        guard lr.isFinite, lr > 0 else { throw ValidationError("--lr must be a positive finite number (got \(lr))") }
        guard hidden >= 1 else { throw ValidationError("--hidden must be at least 1 (got \(hidden))") }
        if let n = trainLimit, n < 1 { throw ValidationError("--train-limit must be at least 1 (got \(n))") }
        guard bnMomentum >= 0, bnMomentum < 1 else { throw ValidationError("--bn-momentum must be in [0, 1) (got \(bnMomentum)); it is the decay of the running average, 0.9 matches PyTorch's momentum=0.1") }
        guard bnEps.isFinite, bnEps > 0 else { throw ValidationError("--bn-eps must be a positive finite number (got \(bnEps))") }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1 (got \(threads))") }
        guard evalBatch >= 1 else { throw ValidationError("--eval-batch must be at least 1 (got \(evalBatch))") }
    }

    func run() throws {
        BLASKernel.reexecIfUndetected(threads: threads)
        do {
            try TrainingRun(options: self).run()
        } catch let f as Failure {
            FileHandle.standardError.write(Data("bntrain: error: \(f.message)\n".utf8))
            throw ExitCode(f.code)
        }
    }
}
