/// What kind of refusal a `Failure` is. The executable maps each kind to an exit code
/// (`ExitStatus` in `Sources/bntrain`); the library knows nothing of processes.
public enum FailureKind: Sendable, Equatable {
    /// A setting (flag) is malformed, out of range or contradicts another.
    case usage
    /// A data or checkpoint file is malformed: wrong magic, truncated, damaged gzip, counts disagree, ...
    case badInput
    /// The dataset folder or one of its files, or a checkpoint, does not exist or is not a regular file.
    case notFound
    /// Training stopped: the loss became NaN or infinite.
    case diverged
    /// An output file (checkpoint, metrics) cannot be created: checked before training.
    case cannotWrite
    /// A write failed while running (a full disk under --metrics or --save, stdout on a full device).
    case writeFailed
}

/// A refused run: one line saying what is wrong and how to fix it, and its kind.
public struct Failure: Error, CustomStringConvertible {
    public let message: String
    public let kind: FailureKind
    public init(message: String, kind: FailureKind) {
        self.message = message
        self.kind = kind
    }
    public var description: String { message }
}

public func fail(_ message: String, kind: FailureKind) -> Failure { Failure(message: message, kind: kind) }
