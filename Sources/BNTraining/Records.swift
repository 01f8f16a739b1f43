import Foundation

/// Output formats for stdout (`--log-format`).
public enum LogFormat: String, CaseIterable, Sendable {
    /// `kind key=value ...` lines (epoch lines start with `epoch=`).
    case text
    /// One JSON object per line with a "kind" field.
    case jsonl
    /// `# config ...` comment, a header row, one row per epoch, `# summary ...` comment.
    case csv
}

/// Output formats of `bntrain eval` (one report with nested parts: no CSV form).
public enum ReportFormat: String, CaseIterable, Sendable {
    case text, jsonl
}

/// A typed field value, so JSON gets numbers and text gets fixed decimals.
public enum Value: Equatable, Sendable {
    case int(Int)
    /// Printed with fixed decimals (results: losses, accuracies, seconds).
    case number(Double, digits: Int)
    /// Printed exactly as given, shortest round-trip form (settings: 0.01, 1e-05).
    case exact(Double)
    case string(String)

    public var text: String {
        switch self {
        case let .int(i): return "\(i)"
        case let .number(x, digits): return x.isFinite ? String(format: "%.\(digits)f", x) : "\(x)"
        case let .exact(x): return "\(x)"
        case let .string(s): return logfmtQuoted(s)
        }
    }

    public var json: String {
        switch self {
        case let .int(i): return "\(i)"
        case let .number(x, digits): return x.isFinite ? String(format: "%.\(digits)f", x) : "null"
        case let .exact(x): return x.isFinite ? "\(x)" : "null"
        case let .string(s): return jsonString(s)
        }
    }

    public var csv: String {
        switch self {
        case .int, .number, .exact: return text
        case let .string(s): return s.contains(",") || s.contains("\"") ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
        }
    }
}

public func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
        default: out.unicodeScalars.append(u)
        }
    }
    return out + "\""
}

/// One output record: a kind (config, epoch, summary, eval, ...) and ordered fields.
public struct Record: Sendable {
    public let kind: String
    public var fields: [(String, Value)]

    public init(_ kind: String, _ fields: [(String, Value)]) {
        self.kind = kind
        self.fields = fields
    }

    /// Kinds whose text lines drop the kind word (they start with their first field: `epoch=N`, `index=N`).
    public static let bareKinds: Set<String> = ["epoch", "prediction", "class"]

    /// `kind k=v ...`, or just `k=v ...` for the bare kinds.
    public var textLine: String {
        let body = fields.map { "\($0.0)=\($0.1.text)" }.joined(separator: " ")
        return Record.bareKinds.contains(kind) ? body : kind + " " + body
    }

    public var jsonLine: String {
        "{\"kind\":\(jsonString(kind))" + fields.map { ",\(jsonString($0.0)):\($0.1.json)" }.joined() + "}"
    }

    public var csvHeader: String { fields.map(\.0).joined(separator: ",") }
    public var csvRow: String { fields.map { $0.1.csv }.joined(separator: ",") }

    public subscript(key: String) -> Value? { fields.first { $0.0 == key }?.1 }
}

/// Where a run's records go: stdout (`Report`), or a list in tests.
public protocol RecordSink: AnyObject {
    func emit(_ r: Record)
}

/// Collects records in memory (in-process tests, callers that post-process).
public final class RecordList: RecordSink {
    public private(set) var records: [Record] = []
    public init() {}
    public func emit(_ r: Record) { records.append(r) }
}

/// Writes records to stdout in the chosen format, flushed per line so `tee` and `tail -f`
/// see each epoch as it ends.
public final class Report: RecordSink {
    public let format: LogFormat
    private var csvHeaderWritten = false

    public init(format: LogFormat) { self.format = format }

    public func emit(_ r: Record) {
        switch format {
        case .text: write(r.textLine)
        case .jsonl: write(r.jsonLine)
        case .csv:
            if r.kind == "epoch" {
                if !csvHeaderWritten {
                    write(r.csvHeader)
                    csvHeaderWritten = true
                }
                write(r.csvRow)
            } else {
                write("# " + r.textLine)
            }
        }
    }

    private func write(_ line: String) {
        print(line)
        fflush(stdout)
    }
}

/// Diagnostics (stderr), one line each.
public func note(_ message: String) {
    FileHandle.standardError.write(Data("bntrain: \(message)\n".utf8))
}

/// A string as a logfmt value: as is when it is a plain token, else in double quotes with
/// `\` and `"` escaped (and a newline as `\n`, so a record stays one line). Python's
/// `shlex.split` reads such a line back into `key=value` tokens.
public func logfmtQuoted(_ s: String) -> String {
    let plain = !s.isEmpty && !s.contains(where: { $0 == " " || $0 == "\"" || $0 == "'" || $0 == "=" || $0 == "\\" || $0 == "\t" || $0.isNewline })
    if plain { return s }
    var out = "\""
    for c in s {
        switch c {
        case "\\": out += "\\\\"
        case "\"": out += "\\\""
        case "\n": out += "\\n"
        default: out.append(c)
        }
    }
    return out + "\""
}
