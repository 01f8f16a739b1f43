import BNTraining

/// bntrain's exit codes (sysexits.h values where one fits). Documented in docs/output.md and `--help`.
enum ExitStatus {
    static let success: Int32 = 0
    /// A flag is malformed or out of range (swift-argument-parser's ValidationError uses 64 too).
    static let usage: Int32 = 64
    /// A data file is malformed: wrong magic, truncated, damaged gzip, counts disagree, ...
    static let dataError: Int32 = 65
    /// The dataset folder or one of its files does not exist.
    static let noInput: Int32 = 66
    /// Training stopped: the loss became NaN or infinite.
    static let diverged: Int32 = 70
    /// An output file (checkpoint, metrics) cannot be created: checked before training.
    static let cannotWrite: Int32 = 73
    /// A write failed while running (a full disk under --metrics or --save, stdout on a full device).
    static let ioError: Int32 = 74

    static let helpText = "exit codes: 0 success, 64 usage error, 65 bad data or checkpoint file, 66 dataset or checkpoint not found or not a regular file, 70 training diverged (non-finite loss), 73 an output file cannot be created, 74 a write failed (disk full), 141 stdout closed (bntrain | head: ended by SIGPIPE, as Unix tools are), 130/143/131 interrupted by SIGINT/SIGTERM/SIGQUIT (after saving the checkpoint, with --save)"
}

extension ExitStatus {
    /// The exit code of a refusal of this kind.
    static func code(for kind: FailureKind) -> Int32 {
        switch kind {
        case .usage: return usage
        case .badInput: return dataError
        case .notFound: return noInput
        case .diverged: return diverged
        case .cannotWrite: return cannotWrite
        case .writeFailed: return ioError
        }
    }
}
