import BNData
import Foundation

/// Resolves `--data` to a folder: an existing path as given, or a dataset name meaning
/// `Data/NAME`; without `--data`, `Data/mnist` when present, else `Data/fashion-mnist`.
enum DataLocation {
    static let root = "Data"
    static let defaults = ["mnist", "fashion-mnist"]
    static let fetchHint = "run 'Scripts/data fashion-mnist' (Debian package) or 'Scripts/data mnist' (download) to fetch one"

    static func resolve(_ flag: String?) -> String {
        let fm = FileManager.default
        if let flag {
            var isDir: ObjCBool = false
            if fm.fileExists(atPath: flag, isDirectory: &isDir), isDir.boolValue { return flag }
            if !flag.contains("/") { return root + "/" + flag }
            return flag
        }
        for name in defaults {
            var isDir: ObjCBool = false
            let path = root + "/" + name
            if fm.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue { return path }
        }
        return root + "/" + defaults.last!
    }

    /// The message when no `--data` was given and no default dataset exists.
    static func noDefaultMessage() -> String {
        "no dataset found: looked for \(defaults.map { "'\(root)/\($0)'" }.joined(separator: " and ")) under '\(FileManager.default.currentDirectoryPath)'; \(fetchHint), or pass --data DIR"
    }
}
