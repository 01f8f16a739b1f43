import BNData
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Resolves `--data` to a folder: an existing path as given, or a dataset name meaning
/// `Data/NAME`; without `--data`, `Data/mnist` when present, else `Data/fashion-mnist`.
public enum DataLocation {
    public static let root = "Data"
    public static let defaults = ["mnist", "fashion-mnist"]
    public static let fetchHint = "run 'Scripts/data fashion-mnist' (Debian package) or 'Scripts/data mnist' (download) to fetch one"

    public static func resolve(_ flag: String?) -> String {
        let fm = FileManager.default
        if let flag {
            var isDir: ObjCBool = false
            if fm.fileExists(atPath: flag, isDirectory: &isDir), isDir.boolValue { return flag }
            // Something is there (a file, a link loop): use the path as given, so the error
            // says what it is rather than looking under Data/.
            var st = stat()
            if lstat(flag, &st) == 0 { return flag }
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

    /// Finds and loads the dataset, turning data errors into one-line failures with the
    /// documented exit codes (66 not found, 65 malformed).
    public static func load(_ flag: String?) throws -> (folder: String, dataset: Dataset) {
        let folder = resolve(flag)
        do {
            let files = try DatasetFiles.locate(in: folder, hint: fetchHint)
            return (folder, try Dataset.load(files))
        } catch let e as DataError {
            switch e {
            case .missingFolder where flag == nil:
                throw fail("no dataset found: looked for \(defaults.map { "'\(root)/\($0)'" }.joined(separator: " and ")) under '\(FileManager.default.currentDirectoryPath)'; \(fetchHint), or pass --data DIR", kind: .notFound)
            case .missingFolder, .missingFile, .ambiguousFile: throw fail(e.description, kind: .notFound)
            case .notAFolder: throw fail(e.description, kind: .usage)
            case .unreadable, .notRegularFile: throw fail(e.description, kind: .notFound)
            default: throw fail(e.description, kind: .badInput)
            }
        }
    }
}
