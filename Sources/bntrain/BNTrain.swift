import ArgumentParser
import BNCore
import BNData
import BNPlatform
import Foundation

extension Initializer: ExpressibleByArgument {}
extension BatchNorm1D.RunningVariance: ExpressibleByArgument {}

/// How the training examples are ordered each epoch.
enum ShuffleMode: String, CaseIterable, ExpressibleByArgument {
    /// A fresh seeded shuffle every epoch.
    case epoch
    /// File order, every epoch (to compare step by step with other implementations).
    case none
}

/// `bntrain [flags]` trains; `bntrain eval ...` and `bntrain predict ...` are separate
/// commands dispatched by name, so that each keeps its own flags (`--log-format`,
/// `--threads`, ...) without the trainer's flags capturing them.
@main
enum Entry {
    static func main() {
        let args = Array(CommandLine.arguments.dropFirst())
        switch args.first {
        case "eval": run(EvalCommand.self, Array(args.dropFirst()))
        case "predict": run(PredictCommand.self, Array(args.dropFirst()))
        default: run(BNTrain.self, args)
        }
    }

    /// Parses and runs one command. `--help` and `--version` print to stdout; a usage error
    /// becomes one `bntrain: error: ...` line on stderr (not swift-argument-parser's
    /// multi-line message with the usage block) and exit 64; a `Failure` thrown by `run`
    /// becomes its one line and its exit code.
    static func run<Command: ParsableCommand>(_ type: Command.Type, _ args: [String]) -> Never {
        do {
            var command = try type.parseAsRoot(args)
            try command.run()
            exit(0)
        } catch let f as Failure {
            FileHandle.standardError.write(Data("bntrain: error: \(f.message)\n".utf8))
            exit(f.code)
        } catch {
            let code = type.exitCode(for: error)
            if code == .success {
                print(type.fullMessage(for: error))
                exit(0)
            }
            let message = type.message(for: error)
                .split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
                .joined(separator: "; ")
            let trimmed = message.hasSuffix(".") ? String(message.dropLast()) : message
            if !trimmed.isEmpty {
                let name = type.configuration.commandName ?? "bntrain"
                FileHandle.standardError.write(Data("bntrain: error: \(trimmed); see '\(name) --help'\n".utf8))
            }
            exit(code.rawValue)
        }
    }
}

struct BNTrain: ParsableCommand {
    static let version = "0.3.0"
    static let defaultSeed: UInt64 = 42

    static let configuration = CommandConfiguration(
        commandName: "bntrain",
        abstract: "Train a batch-normalized MLP classifier on MNIST-style IDX data.",
        discussion: """
            Network: Dense(pixels->hidden) -> Sigmoid -> BatchNorm1D -> Dense(hidden->classes) -> softmax \
            cross-entropy, minibatch SGD. stdout gets a 'config' record, one record per epoch and a 'summary' \
            record (--log-format text, jsonl or csv; documented in the README); diagnostics go to stderr.
            BatchNorm convention: running = m*running + (1-m)*batch with m = --bn-momentum (PyTorch's momentum=0.1 \
            is m=0.9); running_var takes the biased batch variance unless --bn-running-var unbiased (PyTorch's choice).
            Other commands: 'bntrain eval --model FILE' (test loss, accuracy, per-class accuracy, confusion matrix) \
            and 'bntrain predict --model FILE --images FILE'; each has its own --help.
            \(ExitStatus.helpText).
            """,
        version: version
    )

    @Option(help: ArgumentHelp("Dataset folder, or a name meaning Data/NAME. Default: Data/mnist if present, else Data/fashion-mnist.", valueName: "dir|name"))
    var data: String?

    @Option(help: "Passes over the training set (with --resume: the total to reach).")
    var epochs = 20

    @Option(help: "Minibatch size (the last batch of an epoch may be smaller).")
    var batch = 64

    @Option(help: "SGD learning rate.")
    var lr: Double = 0.01

    @Option(help: "Hidden layer width.")
    var hidden = 200

    @Option(help: ArgumentHelp("Train on a seeded random subset of this many training images (default: all).", valueName: "n"))
    var trainLimit: Int?

    @Option(help: ArgumentHelp("Hold out this seeded fraction of the training images for validation, reported every epoch.", valueName: "f"))
    var valSplit: Double = 0

    @Option(help: "Seed for the subset, validation split, weight initialisation and shuffling.")
    var seed: UInt64 = BNTrain.defaultSeed

    @Option(help: ArgumentHelp("Example order each epoch: epoch (a fresh seeded shuffle) or none (file order).", valueName: "epoch|none"))
    var shuffle: ShuffleMode = .epoch

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

    @Option(help: ArgumentHelp("Start from the weights in this safetensors file (PyTorch state_dict names: fc1.weight, ...) instead of --init.", valueName: "file"))
    var initFrom: String?

    @Option(help: ArgumentHelp("Write a safetensors checkpoint here (atomically) after every epoch, or every --save-every epochs.", valueName: "file"))
    var save: String?

    @Option(help: ArgumentHelp("With --save: write every N epochs (and after the last).", valueName: "n"))
    var saveEvery = 1

    @Flag(help: "With --save and --val-split: write only when validation accuracy improves, so the file keeps the best epoch.")
    var saveBest = false

    @Option(help: ArgumentHelp("Continue the run saved in this checkpoint: weights, BN statistics, epoch, generator state and configuration; --epochs is the total to reach.", valueName: "file"))
    var resume: String?

    @Option(help: ArgumentHelp("Also write each epoch's record to this file as it happens: JSON lines (.jsonl) or CSV (.csv); appended on --resume.", valueName: "file"))
    var metrics: String?

    @Option(help: ArgumentHelp("stdout format: text (key=value lines), jsonl or csv.", valueName: "text|jsonl|csv"))
    var logFormat: LogFormat = .text

    @Flag(help: "No progress display on stderr (it only appears when stderr is a terminal).")
    var quiet = false

    @Option(help: "BLAS threads (1: the same results on every machine; 2 can be faster at large batches; see the README).")
    var threads = 1

    @Option(help: "Batch size of the test and validation passes (memory only; results do not depend on it).")
    var evalBatch = 1000

    mutating func validate() throws {
        guard epochs >= 1 else { throw ValidationError("--epochs must be at least 1 (got \(epochs))") }
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1 (got \(batch))") }
        guard lr.isFinite, lr > 0 else { throw ValidationError("--lr must be a positive finite number (got \(lr))") }
        guard hidden >= 1 else { throw ValidationError("--hidden must be at least 1 (got \(hidden))") }
        if let n = trainLimit, n < 1 { throw ValidationError("--train-limit must be at least 1 (got \(n))") }
        guard valSplit >= 0, valSplit < 1 else { throw ValidationError("--val-split must be in [0, 1) (got \(valSplit)); 0.1 holds out a tenth") }
        guard bnMomentum >= 0, bnMomentum < 1 else { throw ValidationError("--bn-momentum must be in [0, 1) (got \(bnMomentum)); it is the decay of the running average, 0.9 matches PyTorch's momentum=0.1") }
        guard bnEps.isFinite, bnEps > 0 else { throw ValidationError("--bn-eps must be a positive finite number (got \(bnEps))") }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1 (got \(threads))") }
        guard evalBatch >= 1 else { throw ValidationError("--eval-batch must be at least 1 (got \(evalBatch))") }
        guard saveEvery >= 1 else { throw ValidationError("--save-every must be at least 1 (got \(saveEvery))") }
        if saveBest && save == nil { throw ValidationError("--save-best needs --save FILE") }
        if saveBest && valSplit == 0 && resume == nil { throw ValidationError("--save-best picks the epoch by validation accuracy; add --val-split (for example 0.1)") }
        if initFrom != nil && resume != nil { throw ValidationError("--init-from and --resume both set the weights; use one") }
        if let m = metrics, MetricsFile.Format(path: m) == nil { throw ValidationError("--metrics '\(m)' must end in .jsonl or .csv") }
    }

    func run() throws {
        BLASKernel.reexecIfUndetected(threads: threads)
        var run = TrainingRun(options: self)
        try run.run()
    }
}
