import BNTraining
import Foundation

/// Records to stdout, diagnostics to stderr: the process side of what the library emits.

/// Writes records to stdout in the chosen format, flushed per line so `tee` and `tail -f`
/// see each epoch as it ends.
final class Report: RecordSink {
    let format: LogFormat
    private var csvHeaderWritten = false

    init(format: LogFormat) { self.format = format }

    func emit(_ r: Record) throws {
        switch format {
        case .text: try writeLine(r.textLine)
        case .jsonl: try writeLine(r.jsonLine)
        case .csv:
            if r.kind == "epoch" {
                if !csvHeaderWritten {
                    try writeLine(r.csvHeader)
                    csvHeaderWritten = true
                }
                try writeLine(r.csvRow)
            } else {
                try writeLine("# " + r.textLine)
            }
        }
    }
}

/// Writes `text` and a newline to stdout and flushes, checking both: a failed write (a full
/// device) is a `Failure` with exit 74 rather than records silently missing. A closed pipe
/// (`bntrain | head`) raises SIGPIPE, which ends bntrain quietly as it ends other Unix tools.
func writeLine(_ text: String) throws {
    try writeOut(text + "\n")
}

/// Writes `text` to stdout and flushes, checked (see `writeLine`).
func writeOut(_ text: String) throws {
    if fputs(text, stdout) < 0 || fflush(stdout) != 0 {
        let reason = String(cString: strerror(errno))
        clearerr(stdout)
        throw fail("cannot write to standard output: \(reason)", kind: .writeFailed)
    }
}

/// Diagnostics (stderr), one line each.
func note(_ message: String) {
    if MPIJob.quiet { return }
    FileHandle.standardError.write(Data("bntrain: \(escapingControlCharacters(message))\n".utf8))
}

