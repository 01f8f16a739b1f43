#if canImport(Glibc)
import Glibc
#endif

/// The signal that asked the run to stop (0: none). Written by the handler, read by the
/// training loop between steps.
nonisolated(unsafe) var pendingSignal: Int32 = 0

/// SIGINT and SIGTERM stop training cleanly: the current step finishes, the checkpoint is
/// written if --save was given, and bntrain exits 128 + signal (130 for SIGINT, 143 for
/// SIGTERM). A second signal while that happens exits at once, with the same code; files are
/// written atomically, so that never leaves a half-written one.
public enum Interruption {
    public static func install() {
        pendingSignal = 0  // initialise the global before any handler can run
        signal(SIGINT, handler)
        signal(SIGTERM, handler)
    }

    public static var requested: Int32? { pendingSignal == 0 ? nil : pendingSignal }

    public static func name(_ sig: Int32) -> String { sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "signal \(sig)" }
}

private let handler: @convention(c) (Int32) -> Void = { sig in
    if pendingSignal != 0 { _exit(128 + sig) }
    pendingSignal = sig
}
