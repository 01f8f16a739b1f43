/// bntrain's exit codes (sysexits.h values where one fits). Documented in docs/output.md and `--help`.
public enum ExitStatus {
    public static let success: Int32 = 0
    /// A flag is malformed or out of range (swift-argument-parser's ValidationError uses 64 too).
    public static let usage: Int32 = 64
    /// A data file is malformed: wrong magic, truncated, damaged gzip, counts disagree, ...
    public static let dataError: Int32 = 65
    /// The dataset folder or one of its files does not exist.
    public static let noInput: Int32 = 66
    /// Training stopped: the loss became NaN or infinite.
    public static let diverged: Int32 = 70
    /// An output file (checkpoint, metrics) cannot be created: checked before training.
    public static let cannotWrite: Int32 = 73
    /// A write failed while running (a full disk under --metrics or --save, stdout on a full device).
    public static let ioError: Int32 = 74

    public static let helpText = "exit codes: 0 success, 64 usage error, 65 bad data or checkpoint file, 66 dataset or checkpoint not found or not a regular file, 70 training diverged (non-finite loss), 73 an output file cannot be created, 74 a write failed (disk full), 141 stdout closed (bntrain | head: ended by SIGPIPE, as Unix tools are), 130/143/131 interrupted by SIGINT/SIGTERM/SIGQUIT (after saving the checkpoint, with --save)"
}

/// A refused run: `Entry.run` prints one `bntrain: error: <message>` line and exits with `code`.
public struct Failure: Error, CustomStringConvertible {
    public let message: String
    public let code: Int32
    public init(message: String, code: Int32) {
        self.message = message
        self.code = code
    }
    public var description: String { message }
}

public func fail(_ message: String, code: Int32) -> Failure { Failure(message: message, code: code) }
