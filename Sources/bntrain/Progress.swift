import BNTraining
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A one-line progress display on stderr (batches done, loss, examples/s, ETA), drawn only
/// when stderr is a terminal and --quiet is off, at most ten times a second. Redirected
/// output never receives a carriage return.
final class Progress: ProgressDisplay {
    let enabled: Bool
    private let clock = ContinuousClock()
    private var lastDraw: ContinuousClock.Instant
    private var drawn = false

    init(quiet: Bool) {
        enabled = !quiet && isatty(STDERR_FILENO) == 1
        lastDraw = clock.now
    }

    /// Called after each step; cheap when nothing is drawn.
    @inline(__always)
    func step(epoch: Int, epochs: Int, batch: Int, batches: Int, lossSoFar: Double, examples: Int, epochStart: ContinuousClock.Instant) {
        guard enabled else { return }
        let now = clock.now
        guard now - lastDraw >= .milliseconds(100) else { return }
        lastDraw = now
        let elapsed = (now - epochStart).seconds
        let rate = Double(examples) / max(elapsed, 1e-9)
        let eta = elapsed / Double(batch) * Double(batches - batch)
        let line = String(format: "epoch %d/%d  batch %d/%d  loss %.4f  %.0f img/s  ETA %.1fs", epoch, epochs, batch, batches, lossSoFar, rate, eta)
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + line).utf8))
        drawn = true
    }

    /// Erases the line before a result or diagnostic is printed.
    func clear() {
        guard enabled, drawn else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
        drawn = false
    }
}
