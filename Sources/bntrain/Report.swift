import Foundation

/// Writes result lines to stdout: an optional record kind, then space-separated key=value
/// fields (values never contain spaces), flushed per line so `tee` and `tail -f` see each epoch.
final class Report {
    func line(_ kind: String?, _ fields: [(String, String)]) {
        var s = kind.map { $0 + " " } ?? ""
        s += fields.map { "\($0.0)=\($0.1.replacingOccurrences(of: " ", with: "_"))" }.joined(separator: " ")
        print(s)
        fflush(stdout)
    }

    static func fixed(_ x: Double, _ digits: Int) -> String {
        x.isFinite ? String(format: "%.\(digits)f", x) : "\(x)"
    }
}
