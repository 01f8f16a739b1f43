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
    /// Printed in scientific notation with 3 significant decimals (errors: 1.234e-09).
    case scientific(Double)
    case string(String)

    public var text: String {
        switch self {
        case let .int(i): return "\(i)"
        case let .number(x, digits): return x.isFinite ? String(format: "%.\(digits)f", x) : nonFinite(x)
        case let .exact(x): return x.isFinite ? "\(x)" : nonFinite(x)
        case let .scientific(x): return x.isFinite ? String(format: "%.3e", x) : nonFinite(x)
        case let .string(s): return logfmtQuoted(s)
        }
    }

    public var json: String {
        switch self {
        case let .int(i): return "\(i)"
        case let .number(x, digits): return x.isFinite ? String(format: "%.\(digits)f", x) : "null"
        case let .exact(x): return x.isFinite ? "\(x)" : "null"
        case let .scientific(x): return x.isFinite ? String(format: "%.3e", x) : "null"
        case let .string(s): return jsonString(s)
        }
    }

    public var csv: String {
        switch self {
        case .int, .number, .exact, .scientific: return text
        case let .string(s):
            // CSV quoting, with control characters escaped so a row stays one line.
            let t = escapingControlCharacters(s)
            return t.contains(",") || t.contains("\"") ? "\"" + t.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : t
        }
    }
}

/// `nan`, `inf` or `-inf`: never Swift's `-nan` (a NaN's sign carries no meaning).
func nonFinite(_ x: Double) -> String { x.isNaN ? "nan" : (x < 0 ? "-inf" : "inf") }

/// Control characters (newline, carriage return, tab, escape, ...) written as `\n`, `\r`,
/// `\t` or `\u{1b}`-style `\xNN` escapes, so a value can never split or rewrite a line.
public func escapingControlCharacters(_ s: String) -> String {
    guard s.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else { return s }
    var out = ""
    for u in s.unicodeScalars {
        switch u {
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where u.properties.generalCategory == .control: out += String(format: "\\x%02x", u.value)
        default: out.unicodeScalars.append(u)
        }
    }
    return out
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
        case _ where u.value < 0x20 || (0x7F...0x9F).contains(u.value): out += String(format: "\\u%04x", u.value)
        default: out.unicodeScalars.append(u)
        }
    }
    return out + "\""
}

/// One output record: a kind (config, epoch, summary, eval, ...) and ordered fields.
public struct Record: Sendable {
    public let kind: String
    public var fields: [(String, Value)]

    /// Field names are distinct and none is `kind`, which JSON lines spend on the record's
    /// own kind (a JSON reader keeps only the last of two equal keys).
    public init(_ kind: String, _ fields: [(String, Value)]) {
        assert(Set(fields.map(\.0)).count == fields.count && !fields.contains { $0.0 == "kind" }, "record '\(kind)' repeats a field name")
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
    func emit(_ r: Record) throws
}

/// Collects records in memory (in-process tests, callers that post-process).
public final class RecordList: RecordSink {
    public private(set) var records: [Record] = []
    public init() {}
    public func emit(_ r: Record) throws { records.append(r) }
}

/// A progress display the loop updates after each step (the executable's draws on a terminal).
public protocol ProgressDisplay: AnyObject {
    func step(epoch: Int, epochs: Int, batch: Int, batches: Int, lossSoFar: Double, examples: Int, epochStart: ContinuousClock.Instant)
    /// Erases the display before a result or diagnostic is printed.
    func clear()
}

/// The name of a signal in messages.
public func signalName(_ sig: Int32) -> String { sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : sig == SIGQUIT ? "SIGQUIT" : "signal \(sig)" }

/// A string as a logfmt value: as is when it is a plain token, else in double quotes with
/// `\` and `"` escaped (and a newline as `\n`, so a record stays one line). Python's
/// `shlex.split` reads such a line back into `key=value` tokens.
public func logfmtQuoted(_ s: String) -> String {
    let plain = !s.isEmpty && !s.unicodeScalars.contains(where: { $0 == " " || $0 == "\"" || $0 == "'" || $0 == "=" || $0 == "\\" || $0.properties.generalCategory == .control })
    if plain { return s }
    // Backslashes and quotes first, then the control characters (whose escapes add backslashes).
    let quoted = s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
    return "\"" + escapingControlCharacters(quoted) + "\""
}
