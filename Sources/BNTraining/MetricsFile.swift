import BNCheckpoint
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `--metrics FILE`: each epoch's record appended as it happens, one line each, written with
/// a single write(2) so a kill never leaves half a line. JSON lines or CSV by extension.
///
/// A fresh run replaces the file. On `--resume` the file keeps its records up to the
/// checkpoint's epoch (later ones, from a run interrupted after its last checkpoint, would
/// otherwise appear twice) and new records are appended: a CSV header is never repeated.
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
    private let fd: Int32
    private var headerWritten: Bool

    /// `resumeEpoch`: keep existing records up to this epoch and append; nil: start afresh.
    public init(path: String, resumeEpoch: Int?) throws {
        guard let format = Format(path: path) else { throw fail("--metrics '\(path)' must end in .jsonl or .csv", code: ExitStatus.usage) }
        self.path = path
        self.format = format
        var kept: [String] = []
        if let resumeEpoch, let text = try? String(contentsOfFile: path, encoding: .utf8) {
            kept = MetricsFile.records(in: text, format: format, upTo: resumeEpoch)
            do { try AtomicFile.write(Array((kept.map { $0 + "\n" }.joined()).utf8), to: path) } catch {
                throw fail("\(error)", code: ExitStatus.cannotWrite)
            }
        }
        headerWritten = format == .csv && !kept.isEmpty
        let flags = O_WRONLY | O_CREAT | O_APPEND | (resumeEpoch == nil ? O_TRUNC : 0)
        fd = open(path, flags, 0o644)
        guard fd >= 0 else { throw fail("cannot write --metrics '\(path)': \(String(cString: strerror(errno)))", code: ExitStatus.cannotWrite) }
    }

    deinit { close(fd) }

    public func append(_ r: Record) {
        var text = ""
        switch format {
        case .jsonl: text = r.jsonLine + "\n"
        case .csv:
            if !headerWritten {
                text = r.csvHeader + "\n"
                headerWritten = true
            }
            text += r.csvRow + "\n"
        }
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
    }

    /// The lines of an existing metrics file whose epoch is at most `epoch` (CSV: with its header).
    static func records(in text: String, format: Format, upTo epoch: Int) -> [String] {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        switch format {
        case .jsonl:
            return lines.filter { line in
                guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                      let e = (obj["epoch"] as? NSNumber)?.intValue else { return false }
                return e <= epoch
            }
        case .csv:
            guard let header = lines.first, let col = header.split(separator: ",").firstIndex(of: "epoch") else { return [] }
            let rows = lines.dropFirst().filter { row in
                let cells = row.split(separator: ",", omittingEmptySubsequences: false)
                return col < cells.count && (Int(cells[col]) ?? Int.max) <= epoch
            }
            return rows.isEmpty ? [] : [header] + rows
        }
    }
}
