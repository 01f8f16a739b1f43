import BNTraining
#if canImport(Glibc)
import Glibc
#endif

/// The signal that asked the run to stop (0: none). Written by the handler, read by the
/// training loop between steps.
nonisolated(unsafe) var pendingSignal: Int32 = 0

/// SIGINT, SIGTERM and SIGQUIT stop training cleanly: the current step finishes, the
/// checkpoint is written if --save was given, and bntrain exits 128 + signal (130 for SIGINT,
/// 143 for SIGTERM, 131 for SIGQUIT, which the Swift runtime would otherwise answer with a
/// crash report and let the run carry on). A second signal while that happens exits at once, with the same code; files are
/// written atomically, so that never leaves a half-written one.
enum Interruption {
    static func install() {
        pendingSignal = 0  // initialise the global before any handler can run
        signal(SIGINT, handler)
        signal(SIGTERM, handler)
        signal(SIGQUIT, handler)
    }

    /// For commands with nothing to save (eval, predict, summary, gradcheck): SIGQUIT ends the
    /// process at once with 131, quietly, as SIGINT and SIGTERM do by default.
    static func quitQuietly() {
        signal(SIGQUIT, quietExit)
    }

    static var requested: Int32? { pendingSignal == 0 ? nil : pendingSignal }

    static func name(_ sig: Int32) -> String { signalName(sig) }
}

private let handler: @convention(c) (Int32) -> Void = { sig in
    if pendingSignal != 0 { _exit(128 + sig) }
    pendingSignal = sig
}

private let quietExit: @convention(c) (Int32) -> Void = { sig in _exit(128 + sig) }
