/// Everything that can be wrong with a dataset on disk. Each description is one line that
/// names the file and says what to do.
public enum DataError: Error, CustomStringConvertible {
    case missingFolder(path: String, hint: String)
    case notAFolder(path: String, parent: String)
    case missingFile(folder: String, lookedFor: [String], hint: String)
    case ambiguousFile(folder: String, pattern: String, matches: [String])
    case unreadable(path: String, reason: String)
    case notRegularFile(path: String, kind: String)
    case notGzip(path: String, looksLike: String)
    case corruptGzip(path: String, reason: String)
    case wrongMagic(path: String, expected: UInt32, found: UInt32)
    case badHeader(path: String, reason: String)
    case truncated(path: String, expectedBytes: Int, foundBytes: Int)
    case trailingBytes(path: String, extra: Int)
    case countMismatch(images: String, imageCount: Int, labels: String, labelCount: Int)
    case labelOutOfRange(path: String, index: Int, label: Int, classes: Int)
    case empty(path: String)
    case shapeMismatch(train: String, trainShape: (Int, Int), test: String, testShape: (Int, Int))
    case tooFewClasses(path: String, classes: Int)

    public var description: String {
        switch self {
        case let .missingFolder(path, hint):
            return "data folder '\(path)' does not exist; \(hint)"
        case let .notAFolder(path, parent):
            return "--data '\(path)' is a file; --data takes the folder that holds the four IDX files (for example --data \(parent))"
        case let .missingFile(folder, names, hint):
            return "no file in '\(folder)' matches \(names.map { "'\($0)'" }.joined(separator: " or ")); \(hint)"
        case let .ambiguousFile(folder, pattern, matches):
            return "several files in '\(folder)' match '\(pattern)' (\(matches.joined(separator: ", "))); keep one or name the folder of one dataset"
        case let .unreadable(path, reason):
            return "cannot read '\(path)': \(reason)"
        case let .notRegularFile(path, kind):
            return "'\(path)' is \(kind), not a regular file; bntrain reads IDX data from regular files only"
        case let .notGzip(path, looksLike):
            return "'\(path)' is named .gz but is not gzip data (it looks like \(looksLike)); download it again, or rename it without .gz if it is a raw IDX file"
        case let .corruptGzip(path, reason):
            return "'\(path)' is a damaged gzip file (\(reason)); download or install it again"
        case let .wrongMagic(path, expected, found):
            return "'\(path)' is not an IDX \(expected == IDX.imageMagic ? "image" : "label") file: magic number \(found) (0x\(String(found, radix: 16))), expected \(expected); check that the file is what its name says"
        case let .badHeader(path, reason):
            return "'\(path)' has an unusable IDX header: \(reason)"
        case let .truncated(path, expected, found):
            return "'\(path)' is truncated: its header promises \(expected) data bytes but it holds \(found); download it again"
        case let .trailingBytes(path, extra):
            return "'\(path)' has \(extra) bytes beyond what its header declares; the file is damaged or not IDX"
        case let .countMismatch(images, imageCount, labels, labelCount):
            return "'\(images)' holds \(imageCount) images but '\(labels)' holds \(labelCount) labels; the two files must come from the same dataset split"
        case let .labelOutOfRange(path, index, label, classes):
            return "'\(path)': label \(label) at index \(index) is outside 0..<\(classes) (the classes seen in the training labels); the file is damaged or from another dataset"
        case let .empty(path):
            return "'\(path)' holds zero examples; a dataset needs at least one"
        case let .shapeMismatch(train, ts, test, ss):
            return "training images '\(train)' are \(ts.0)x\(ts.1) but test images '\(test)' are \(ss.0)x\(ss.1); use files from one dataset"
        case let .tooFewClasses(path, classes):
            return "'\(path)' has only \(classes) distinct label value(s); a classifier needs at least 2 classes"
        }
    }
}
