import BNCheckpoint
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `--metrics FILE`: each epoch's record appended as it happens, one line each, written with
/// a single checked write(2) so a kill never leaves half a line and a full disk is an error
/// (exit 74), not a missing record. JSON lines or CSV by extension.
///
/// The file is not touched until the first record exists: then its previous content (none
/// for a fresh run; the records up to the checkpoint's epoch on `--resume`, since later ones
/// from a run killed after its last checkpoint would otherwise appear twice) and that record
/// replace it atomically, so a run that fails before its first epoch leaves an existing file
/// as it was. A CSV header is never repeated. A symbolic link is followed; a target that is
/// not a regular file is refused.
public final class MetricsFile {
    public enum Format {
        case jsonl, csv
        public init?(path: String) {
            let p = path.lowercased()
            if p.hasSuffix(".jsonl") || p.hasSuffix(".ndjson") { self = .jsonl } else if p.hasSuffix(".csv") { self = .csv } else { return nil }
        }
    }

    public let path: String
    let format: Format
    /// Lines to keep ahead of the first new record.
    private var kept: [String]
    private var fd: Int32 = -1
    private var headerWritten: Bool

    /// `resumeEpoch`: keep existing epoch records up to this epoch, and step-wise records
    /// (trace, eval) up to `resumeStep`; nil: start afresh.
    public init(path: String, resumeEpoch: Int?, resumeStep: Int? = nil) throws {
        guard let format = Format(path: path) else { throw fail("--metrics '\(path)' must end in .jsonl or .csv", kind: .usage) }
        self.path = path
        self.format = format
        do { _ = try AtomicFile.resolve(path) } catch { throw fail("--metrics: \(error)", kind: .cannotWrite) }
        kept = []
        if let resumeEpoch, let text = try? String(contentsOfFile: path, encoding: .utf8) {
            kept = MetricsFile.records(in: text, format: format, upTo: resumeEpoch, step: resumeStep ?? Int.max)
        }
        headerWritten = format == .csv && !kept.isEmpty
    }

    deinit { if fd >= 0 { close(fd) } }

    public func append(_ r: Record) throws {
        var text = ""
        switch format {
        case .jsonl: text = r.jsonLine + "\n"
        case .csv where r.kind != "epoch":
            // The CSV table holds epoch rows; step-wise records are comment lines in the text
            // format (`# trace step=... p50=...`), skipped by pandas with comment="#".
            text = "# " + r.textLine + "\n"
        case .csv:
            if !headerWritten {
                text = r.csvHeader + "\n"
                headerWritten = true
            }
            text += r.csvRow + "\n"
        }
        if fd < 0 {
            // First record: replace the file with what is kept plus this record, atomically.
            do { try AtomicFile.write(Array((kept.map { $0 + "\n" }.joined() + text).utf8), to: path) } catch {
                throw fail("--metrics: \(error)", kind: .writeFailed)
            }
            kept = []
            let real = (try? AtomicFile.resolve(path)) ?? path
            fd = open(real, O_WRONLY | O_APPEND | O_CLOEXEC)
            guard fd >= 0 else { throw fail("cannot write --metrics '\(path)': \(String(cString: strerror(errno)))", kind: .writeFailed) }
            return
        }
        let bytes = Array(text.utf8)
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        guard n == bytes.count else {
            let reason = n < 0 ? String(cString: strerror(errno)) : "only \(n) of \(bytes.count) bytes written"
            throw fail("cannot write --metrics '\(path)': \(reason)", kind: .writeFailed)
        }
    }

    /// The lines of an existing metrics file to keep on resume: epoch records up to `epoch`,
    /// step-wise records (with a `step`) up to `step` (CSV: with its header).
    static func records(in text: String, format: Format, upTo epoch: Int, step: Int = Int.max) -> [String] {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        switch format {
        case .jsonl:
            return lines.filter { line in
                guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return false }
                if let s = (obj["step"] as? NSNumber)?.intValue { return s <= step }
                guard let e = (obj["epoch"] as? NSNumber)?.intValue else { return false }
                return e <= epoch
            }
        case .csv:
            let table = lines.filter { !$0.hasPrefix("#") }
            let comments = lines.filter { line in
                guard line.hasPrefix("# "), let s = line.split(separator: " ").first(where: { $0.hasPrefix("step=") }).flatMap({ Int($0.dropFirst(5)) }) else { return false }
                return s <= step
            }
            guard let header = table.first, let col = header.split(separator: ",").firstIndex(of: "epoch") else { return comments }
            let rows = table.dropFirst().filter { row in
                let cells = row.split(separator: ",", omittingEmptySubsequences: false)
                return col < cells.count && (Int(cells[col]) ?? Int.max) <= epoch
            }
            return rows.isEmpty ? comments : [header] + rows + comments
        }
    }
}
