import ArgumentParser
import BNCore
import BNData
import BNPlatform
import BNTraining
import Foundation

extension Initializer: ExpressibleByArgument {}
extension BatchNorm1D.RunningVariance: ExpressibleByArgument {}
extension ShuffleMode: ExpressibleByArgument {}
extension OptimizerSettings.Kind: ExpressibleByArgument {}
extension WeightDecayScope: ExpressibleByArgument {}
extension Precision: ExpressibleByArgument {}
extension GEMMLibrary: ExpressibleByArgument {}
extension ConvolutionKernels: ExpressibleByArgument {}
extension LRSchedule.Kind: ExpressibleByArgument {}
extension EarlyStopping.Monitor: ExpressibleByArgument {}
extension LogFormat: ExpressibleByArgument {}
extension ReportFormat: ExpressibleByArgument {}

/// The command tree: `train` (the default, so `bntrain --epochs 20` trains), `eval`,
/// `predict`, `summary` and `gradcheck`, each with its own flags.
struct Root: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bntrain",
        abstract: BNTrain.configuration.abstract,
        version: bntrainVersion,
        subcommands: [BNTrain.self, EvalCommand.self, PredictCommand.self, SummaryCommand.self, GradcheckCommand.self, BNReportCommand.self],
        defaultSubcommand: BNTrain.self
    )
}

@main
enum Entry {
    static func main() {
        var args = Array(CommandLine.arguments.dropFirst())
        Interruption.quitQuietly()  // training installs its saving handler in its place
        // `bntrain --help` is training's help: the flags users run most, grouped by topic,
        // with the other commands named in its discussion.
        if args == ["--help"] || args == ["-h"] { args = ["train", "--help"] }
        // `bntrain help [COMMAND]`, as git and swift have it.
        if args.first == "help" { args = (args.count > 1 ? Array(args.dropFirst()) : ["train"]) + ["--help"] }
        run(args)
    }

    /// Parses and runs one command. `--help` and `--version` print to stdout; a usage error
    /// becomes one `bntrain: error: ...` line on stderr (not swift-argument-parser's
    /// multi-line message with the usage block) and exit 64; a `Failure` thrown by `run`
    /// becomes its one line and its exit code; an interruption exits 128 + signal.
    static func run(_ args: [String]) -> Never {
        do {
            var command = try Root.parseAsRoot(args)
            try command.run()
            MPIJob.current?.finalize()
            exit(0)
        } catch let f as Failure {
            if !MPIJob.quiet { FileHandle.standardError.write(Data("bntrain: error: \(escapingControlCharacters(f.message))\n".utf8)) }
            // Every rank meets a divergence or bad data alike and may finish the job together;
            // a failure of this rank alone (a write error) must end the others, which wait in
            // the next all-gather.
            if let job = MPIJob.current {
                if f.kind == .diverged || f.kind == .badInput { job.finalize() } else { job.abort(code: ExitStatus.code(for: f.kind)) }
            }
            exit(ExitStatus.code(for: f.kind))
        } catch let TrainingStop.interrupted(signal) {
            MPIJob.current?.finalize()  // every rank stopped after the same step
            exit(128 + signal)
        } catch {
            let code = Root.exitCode(for: error)
            if code == .success {
                print(Root.fullMessage(for: error))
                exit(0)
            }
            let message = Root.message(for: error)
                .split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
                .joined(separator: "; ")
            let trimmed = message.hasSuffix(".") ? String(message.dropLast()) : message
            if !trimmed.isEmpty {
                let sub = ["eval", "predict", "summary", "gradcheck", "bn-report"].first { $0 == args.first ?? "" }
                let name = "bntrain" + (sub.map { " " + $0 } ?? "")
                FileHandle.standardError.write(Data("bntrain: error: \(escapingControlCharacters(trimmed)); see '\(name) --help'\n".utf8))
            }
            exit(code.rawValue)
        }
    }
}

/// The defaults shown in --help come from `RunConfig`, the one place they are set.
private let defaults = RunConfig()

struct ModelOptions: ParsableArguments {
    @Option(help: ArgumentHelp("A preset (\(ModelSpec.presetNames)) or layers joined by '-': \(ModelSpec.layerTokens); e.g. 'fc256-bn-relu-dropout0.2-fc' or 'conv32k3-bn-relu-maxpool2-fc'. 'bntrain summary' describes the presets. Default: \(defaults.model.spec).", valueName: "spec"))
    var model: String?

    @Option(help: "Hidden width of the dfn2 preset (default: \(ModelSpec.defaultHidden)); other models spell their widths in --model.")
    var hidden: Int?

    @Flag(help: "Leave out every BatchNorm layer of the model (the same net without BN, for ablations).")
    var noBatchnorm = false

    @Option(help: "Decay m of the BN running averages: running = m*running + (1-m)*batch; in [0, 1) (default: \(defaults.model.bnMomentum), PyTorch's momentum=0.1).")
    var bnMomentum: Double?

    @Option(help: "Epsilon added to the BN variance (default: \(defaults.model.bnEps)).")
    var bnEps: Double?

    @Option(help: ArgumentHelp("Variance fed into BN's running_var: biased (as normalised) or unbiased (N/(N-1), as PyTorch). Default: \(defaults.model.bnRunningVar.rawValue).", valueName: "biased|unbiased"))
    var bnRunningVar: BatchNorm1D<Float>.RunningVariance?

    @Option(help: ArgumentHelp("Weight initialisation of every fc layer: glorot (normal, var 2/(fan_in+fan_out)), he (normal, var 2/fan_in), std-normal (std 1, the published reference run). Default: \(defaults.model.initialization).", valueName: "glorot|he|std-normal"))
    var `init`: Initializer?

    @Option(help: ArgumentHelp("Start from the weights in this safetensors file (PyTorch state_dict names of the model's nn.Sequential: 0.weight, ...) instead of --init.", valueName: "file"))
    var initFrom: String?

    /// The given flags, as changes to a configuration.
    var settings: [RunConfig.Setting] {
        typealias S = RunConfig.Setting
        var s: [S] = []
        if let v = model { s.append(S(.model) { $0.model.spec = v }) }
        if let v = hidden { s.append(S(.hidden) { $0.model.hidden = v }) }
        if noBatchnorm { s.append(S(.batchNorm) { $0.model.batchNorm = false }) }
        if let v = bnMomentum { s.append(S(.bnMomentum) { $0.model.bnMomentum = v }) }
        if let v = bnEps { s.append(S(.bnEps) { $0.model.bnEps = v }) }
        if let v = bnRunningVar { s.append(S(.bnRunningVar) { $0.model.bnRunningVar = v }) }
        if let v = `init` { s.append(S(.initialization) { $0.model.initialization = v.rawValue }) }
        if let v = initFrom { s.append(S(.initialization) { $0.model.initialization = "from:" + v }) }
        return s
    }
}

struct TrainingOptions: ParsableArguments {
    @Option(help: "Passes over the training set (with --resume: the total to reach). Default: \(defaults.epochs).")
    var epochs: Int?

    @Option(help: "Minibatch size (the last batch of an epoch may be smaller). Default: \(defaults.batch).")
    var batch: Int?

    @Option(help: "Learning rate (the schedule's starting rate). Default: \(defaults.optimizer.lr).")
    var lr: Double?

    @Option(help: "Seed for the subset, validation split, weight initialisation, shuffling and dropout (independent streams). Default: \(defaults.seed).")
    var seed: UInt64?

    @Option(help: "BLAS threads (1: the same results on every machine; 2 can be faster at large batches; see docs/performance.md). Default: \(defaults.kernels.threads).")
    var threads: Int?

    @Option(help: ArgumentHelp("Matrix products in float32, or bf16 inputs with float32 accumulation (needs oneDNN and a CPU with AVX512-BF16 or AMX; docs/precision.md). Default: \(defaults.kernels.precision.rawValue).", valueName: "fp32|bf16"))
    var precision: Precision?

    @Option(help: ArgumentHelp("Library for the float32 products: openblas, onednn, or auto (oneDNN for large products, OpenBLAS for small, as measured faster; oneDNN allocates per product). Default: \(defaults.kernels.gemm.rawValue).", valueName: "auto|openblas|onednn"))
    var gemm: GEMMLibrary?

    @Option(help: ArgumentHelp("How float32 convolutions run: auto (oneDNN: Winograd for 3x3 stride 1, direct otherwise; im2col for thin ones and without oneDNN), onednn (oneDNN's direct convolution throughout), or im2col (sgemm per example; allocation-free). Default: \(defaults.kernels.conv.rawValue).", valueName: "auto|onednn|im2col"))
    var conv: ConvolutionKernels?

    /// The given flags, as changes to a configuration.
    var settings: [RunConfig.Setting] {
        typealias S = RunConfig.Setting
        var s: [S] = []
        if let v = epochs { s.append(S(.epochs) { $0.epochs = v }) }
        if let v = batch { s.append(S(.batch) { $0.batch = v }) }
        if let v = lr { s.append(S(.lr) { $0.optimizer.lr = v }) }
        if let v = seed { s.append(S(.seed) { $0.seed = v }) }
        if let v = threads { s.append(S(.threads) { $0.kernels.threads = v }) }
        if let v = precision { s.append(S(.precision) { $0.kernels.precision = v }) }
        if let v = gemm { s.append(S(.gemm) { $0.kernels.gemm = v }) }
        if let v = conv { s.append(S(.conv) { $0.kernels.conv = v }) }
        return s
    }
}

struct OptimizerOptions: ParsableArguments {
    @Option(help: ArgumentHelp("sgd, adam, adamw or rmsprop, with torch.optim's update rules (docs/optimizers.md). Default: \(defaults.optimizer.rule.kind.rawValue).", valueName: "sgd|adam|adamw|rmsprop"))
    var optimizer: OptimizerSettings.Kind?

    @Option(help: "Momentum of sgd and rmsprop (torch's, dampening 0). Default: \(OptimizerRule.momentum).")
    var momentum: Double?

    @Flag(help: "Nesterov momentum (sgd with --momentum above 0).")
    var nesterov = false

    @Option(help: "Adam/AdamW decay of the first moment. Default: \(OptimizerRule.beta1).")
    var beta1: Double?

    @Option(help: "Adam/AdamW decay of the second moment. Default: \(OptimizerRule.beta2).")
    var beta2: Double?

    @Option(help: "Epsilon of adam, adamw and rmsprop. Default: \(OptimizerRule.eps).")
    var adamEps: Double?

    @Option(help: "RMSprop smoothing of the squared-gradient average. Default: \(OptimizerRule.alpha).")
    var alpha: Double?

    @Option(help: "Weight decay: L2 added to the gradient for sgd, adam and rmsprop; decoupled (p *= 1 - lr*wd) for adamw. Default: \(defaults.optimizer.weightDecay).")
    var weightDecay: Double?

    @Option(help: ArgumentHelp("Which parameters decay: all (as torch.optim) or weights (fc weights and conv kernels only; biases and BN/LayerNorm gains and shifts exempt). Default: \(defaults.optimizer.decayScope.rawValue).", valueName: "all|weights"))
    var decay: WeightDecayScope?

    @Option(help: "Clip the global L2 norm of the gradients to this value (torch.nn.utils.clip_grad_norm_); 0 is off. Default: \(defaults.optimizer.clipGradNorm).")
    var clipGradNorm: Double?

    /// The given flags, as changes to a configuration.
    var settings: [RunConfig.Setting] {
        typealias S = RunConfig.Setting
        var s: [S] = []
        if let v = optimizer { s.append(S(.optimizer) { $0.optimizer.rule = OptimizerRule(v) }) }
        if let v = momentum { s.append(S(.momentum) { try $0.optimizer.rule.set(momentum: v) }) }
        if nesterov { s.append(S(.nesterov) { try $0.optimizer.rule.set(nesterov: true) }) }
        if let v = beta1 { s.append(S(.beta1) { try $0.optimizer.rule.set(beta1: v) }) }
        if let v = beta2 { s.append(S(.beta2) { try $0.optimizer.rule.set(beta2: v) }) }
        if let v = adamEps { s.append(S(.adamEps) { try $0.optimizer.rule.set(eps: v) }) }
        if let v = alpha { s.append(S(.alpha) { try $0.optimizer.rule.set(alpha: v) }) }
        if let v = weightDecay { s.append(S(.weightDecay) { $0.optimizer.weightDecay = v }) }
        if let v = decay { s.append(S(.decay) { $0.optimizer.decayScope = v }) }
        if let v = clipGradNorm { s.append(S(.clipGradNorm) { $0.optimizer.clipGradNorm = v }) }
        return s
    }
}

struct ScheduleOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Learning-rate schedule, stepped per epoch: constant, step (StepLR), cosine (CosineAnnealingLR over --epochs) or plateau (ReduceLROnPlateau on the validation loss; needs --val-split). Default: \(defaults.schedule.rule.kind.rawValue).", valueName: "constant|step|cosine|plateau"))
    var lrSchedule: LRSchedule.Kind?

    @Option(help: "step: multiply the rate by --lr-gamma every N epochs. Default: \(ScheduleRule.every).")
    var lrStepEpochs: Int?

    @Option(help: "step: the factor. Default: \(ScheduleRule.gamma).")
    var lrGamma: Double?

    @Option(help: "cosine and plateau: the lowest rate. Default: \(ScheduleRule.min).")
    var lrMin: Double?

    @Option(help: "Linear warmup over this many epochs, per step, from lr/(steps of the warmup) to the scheduled rate. Default: \(defaults.schedule.warmupEpochs).")
    var warmupEpochs: Double?

    @Option(help: "plateau: epochs without improvement before the rate is reduced. Default: \(ScheduleRule.patience).")
    var lrPatience: Int?

    @Option(help: "plateau: the factor. Default: \(ScheduleRule.factor).")
    var lrFactor: Double?

    @Option(help: "Stop after N epochs without a validation improvement (needs --val-split); 0 is off. Default: \(defaults.stopping.patience).")
    var earlyStop: Int?

    @Option(help: ArgumentHelp("What early stopping (and --save-best with it) watches. Default: \(StoppingConfig.monitor.rawValue).", valueName: "val_loss|val_acc"))
    var monitor: EarlyStopping.Monitor?

    @Option(help: "Early stopping: the smallest change that counts as an improvement. Default: \(StoppingConfig.minDelta).")
    var minDelta: Double?

    /// The given flags, as changes to a configuration.
    var settings: [RunConfig.Setting] {
        typealias S = RunConfig.Setting
        var s: [S] = []
        if let v = lrSchedule { s.append(S(.lrSchedule) { $0.schedule.rule = ScheduleRule(v) }) }
        if let v = lrStepEpochs { s.append(S(.lrStepEpochs) { try $0.schedule.rule.set(stepEpochs: v) }) }
        if let v = lrGamma { s.append(S(.lrGamma) { try $0.schedule.rule.set(gamma: v) }) }
        if let v = lrMin { s.append(S(.lrMin) { try $0.schedule.rule.set(min: v) }) }
        if let v = warmupEpochs { s.append(S(.warmupEpochs) { $0.schedule.warmupEpochs = v }) }
        if let v = lrPatience { s.append(S(.lrPatience) { try $0.schedule.rule.set(patience: v) }) }
        if let v = lrFactor { s.append(S(.lrFactor) { try $0.schedule.rule.set(factor: v) }) }
        if let v = earlyStop { s.append(S(.earlyStop) { $0.stopping.set(patience: v) }) }
        if let v = monitor { s.append(S(.monitor) { try $0.stopping.set(monitor: v) }) }
        if let v = minDelta { s.append(S(.minDelta) { try $0.stopping.set(minDelta: v) }) }
        return s
    }
}

struct DataOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Dataset folder, or a name meaning Data/NAME. Default: Data/mnist if present, else Data/fashion-mnist.", valueName: "dir|name"))
    var data: String?

    @Option(help: ArgumentHelp("Train on a seeded random subset of this many training images (default: all).", valueName: "n"))
    var trainLimit: Int?

    @Option(help: ArgumentHelp("Hold out this seeded fraction of the training images for validation, reported every epoch. Default: \(defaults.data.valSplit).", valueName: "f"))
    var valSplit: Double?

    @Option(help: ArgumentHelp("Example order each epoch: epoch (a fresh seeded shuffle) or none (file order). Default: \(defaults.data.shuffle.rawValue).", valueName: "epoch|none"))
    var shuffle: ShuffleMode?

    @Option(help: "Batch size of the test and validation passes (memory and speed only; results do not depend on it). Default (or 0): automatic, 1000 images or fewer for wide convolutional nets (activations within 128 MiB).")
    var evalBatch: Int?

    /// The given flags, as changes to a configuration.
    var settings: [RunConfig.Setting] {
        typealias S = RunConfig.Setting
        var s: [S] = []
        if let v = data { s.append(S(.data) { $0.data.folder = v }) }
        if let v = trainLimit { s.append(S(.trainLimit) { $0.data.trainLimit = v }) }
        if let v = valSplit { s.append(S(.valSplit) { $0.data.valSplit = v }) }
        if let v = shuffle { s.append(S(.shuffle) { $0.data.shuffle = v }) }
        if let v = evalBatch { s.append(S(.evalBatch) { $0.kernels.evalBatch = v }) }
        return s
    }
}

struct OutputOptions: ParsableArguments {
    @Option(help: ArgumentHelp("stdout format: text (key=value lines), jsonl or csv.", valueName: "text|jsonl|csv"))
    var logFormat: LogFormat = .text

    @Option(help: ArgumentHelp("Also write each epoch's record to this file as it happens: JSON lines (.jsonl) or CSV (.csv); appended on --resume.", valueName: "file"))
    var metrics: String?

    @Flag(help: "No progress display on stderr (it only appears when stderr is a terminal).")
    var quiet = false

    @Option(help: ArgumentHelp("Record statistics (15/50/85th percentiles, mean, sd) of a layer's input or output, for one unit and over all units: LAYER[:input|output][:unit=K], LAYER an index or last-KIND/first-KIND (last-sigmoid: the paper's view of bn-paper). Measured on the first --trace-examples test images in evaluation mode; training is unchanged.", valueName: "layer[:side][:unit=k]"))
    var trace: String?

    @Option(help: "With --trace: every N training steps. Default: \(defaults.observation.traceEvery).")
    var traceEvery: Int?

    @Option(help: "With --trace: the probe set, the first N test images. Default: \(defaults.observation.traceExamples).")
    var traceExamples: Int?

    @Option(help: "Test (and validation) loss and accuracy every N training steps, as 'eval' records; 0 is off. Default: \(defaults.observation.evalEvery).")
    var evalEvery: Int?

    /// The given flags, as changes to a configuration.
    var settings: [RunConfig.Setting] {
        typealias S = RunConfig.Setting
        var s: [S] = []
        if let v = trace { s.append(S(.trace) { $0.observation.trace = v }) }
        if let v = traceEvery { s.append(S(.traceEvery) { $0.observation.traceEvery = v }) }
        if let v = traceExamples { s.append(S(.traceExamples) { $0.observation.traceExamples = v }) }
        if let v = evalEvery { s.append(S(.evalEvery) { $0.observation.evalEvery = v }) }
        return s
    }
}

struct CheckpointOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Write a safetensors checkpoint here (atomically) after every epoch, or every --save-every epochs.", valueName: "file"))
    var save: String?

    @Option(help: ArgumentHelp("With --save: write every N epochs (and after the last).", valueName: "n"))
    var saveEvery = 1

    @Flag(help: "With --save and --val-split: write only when validation accuracy improves, so the file keeps the best epoch.")
    var saveBest = false

    @Option(help: ArgumentHelp("Continue the run saved in this checkpoint: model, weights, BN statistics, epoch, generator states and configuration; --epochs is the total to reach.", valueName: "file"))
    var resume: String?

    @Flag(help: "With --resume: continue even if the dataset differs from the one the checkpoint was trained on (its image counts, sizes and content digest).")
    var allowDataChange = false
}

struct BNTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train an MNIST-style image classifier (fully connected or convolutional, described by --model; batch norm by default) on IDX data.",
        discussion: """
            Default model: dfn2, fc200-sigmoid-bn-fc (Dense -> Sigmoid -> BatchNorm1D -> Dense -> softmax \
            cross-entropy), minibatch SGD. stdout gets a 'config' record, one record per epoch and a 'summary' \
            record (--log-format text, jsonl or csv; documented in docs/output.md); diagnostics go to stderr.
            BatchNorm convention: running = m*running + (1-m)*batch with m = --bn-momentum (PyTorch's momentum=0.1 \
            is m=0.9); running_var takes the biased batch variance unless --bn-running-var unbiased (PyTorch's choice).
            'bntrain --epochs 20' is 'bntrain train --epochs 20': train is the default command. \
            Other commands: 'bntrain summary --model SPEC' (layers, shapes, parameters, FLOPs), 'bntrain gradcheck --model SPEC' \
            (every layer's gradients against finite differences), 'bntrain eval --model FILE' \
            (test loss, accuracy, per-class accuracy, confusion matrix) and 'bntrain predict --model FILE --images FILE'; \
            each has its own --help.
            \(ExitStatus.helpText).
            """,
        version: bntrainVersion
    )

    @OptionGroup(title: "Model") var modelOptions: ModelOptions
    @OptionGroup(title: "Training") var training: TrainingOptions
    @OptionGroup(title: "Optimizer") var optimizerOptions: OptimizerOptions
    @OptionGroup(title: "Schedule and stopping") var scheduleOptions: ScheduleOptions
    @OptionGroup(title: "Data") var dataOptions: DataOptions
    @OptionGroup(title: "Batch norm") var normalizationOptions: NormalizationOptions
    @OptionGroup(title: "Cores") var parallelOptions: ParallelOptions
    @OptionGroup(title: "Output") var output: OutputOptions
    @OptionGroup(title: "Checkpoints") var checkpoints: CheckpointOptions

    /// The flags given on the command line, as changes to a configuration. Flags not given
    /// leave the defaults, or the checkpoint's values.
    var settings: [RunConfig.Setting] {
        modelOptions.settings + training.settings + optimizerOptions.settings + scheduleOptions.settings + dataOptions.settings + normalizationOptions.settings + parallelOptions.settings + output.settings
    }

    mutating func validate() throws {
        // Range checks shared with checkpoints: the values as the flags set them. A parameter
        // of another optimizer or schedule is refused here for a fresh run; a resumed run
        // checks it against the checkpoint's choice (`RunConfig.resuming`).
        do {
            if let p = try RunConfig.fresh(settings).problem() { throw ValidationError(p.description) }
        } catch let p as ConfigProblem {
            if checkpoints.resume == nil { throw ValidationError(p.description) }
        }
        if let t = training.threads, t > 1, let w = parallelOptions.workers, w != "1" {
            throw ValidationError("--threads \(t) and --workers \(w) both use the cores: workers run single-threaded products; drop --threads")
        }
        let c = checkpoints
        guard c.saveEvery >= 1 else { throw ValidationError("--save-every must be at least 1 (got \(c.saveEvery))") }
        if c.saveBest && c.save == nil { throw ValidationError("--save-best needs --save FILE") }
        if c.saveBest && (dataOptions.valSplit ?? 0) == 0 && c.resume == nil { throw ValidationError("--save-best picks the epoch by validation accuracy; add --val-split (for example 0.1)") }
        if c.allowDataChange && c.resume == nil { throw ValidationError("--allow-data-change goes with --resume") }
        if modelOptions.initFrom != nil && c.resume != nil { throw ValidationError("--init-from and --resume both set the weights; use one") }
        if modelOptions.initFrom != nil && modelOptions.`init` != nil { throw ValidationError("--init and --init-from both set the initial weights; use one") }
        if let m = output.metrics, MetricsFile.Format(path: m) == nil { throw ValidationError("--metrics '\(m)' must end in .jsonl or .csv") }
        // A flag that only another flag reads would be silently ignored without it (a resumed
        // run takes the missing one from its checkpoint).
        if c.resume == nil {
            if output.trace == nil, let flag = [("--trace-every", output.traceEvery != nil), ("--trace-examples", output.traceExamples != nil)].first(where: \.1)?.0 {
                throw ValidationError("\(flag) sets how --trace samples, but there is no --trace; add --trace LAYER:WHAT (for example 1:output) or drop \(flag)")
            }
        }
    }

    func run() throws {
        BLASKernel.reexecIfUndetected(threads: training.threads ?? 1)
        try TrainingRun(command: self).run()
    }
}
