import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// The four files of an MNIST-style dataset.
public struct DatasetFiles: Sendable, Equatable {
    public var trainImages: String
    public var trainLabels: String
    public var testImages: String
    public var testLabels: String

    public init(trainImages: String, trainLabels: String, testImages: String, testLabels: String) {
        self.trainImages = trainImages
        self.trainLabels = trainLabels
        self.testImages = testImages
        self.testLabels = testLabels
    }

    /// The file stems looked for, per role, in order of preference. A file matches a stem
    /// when its name, less an optional `.gz`, is the stem or ends with `-stem` (prefixed sets
    /// such as `emnist-digits-train-images-idx3-ubyte.gz`).
    public static let stems = (
        trainImages: ["train-images-idx3-ubyte"],
        trainLabels: ["train-labels-idx1-ubyte"],
        testImages: ["t10k-images-idx3-ubyte", "test-images-idx3-ubyte"],
        testLabels: ["t10k-labels-idx1-ubyte", "test-labels-idx1-ubyte"]
    )

    /// Finds the four files in `folder`. `hint` is appended to "not found" errors.
    public static func locate(in folder: String, hint: String) throws -> DatasetFiles {
        var st = stat()
        guard stat(folder, &st) == 0 else { throw DataError.missingFolder(path: folder, hint: hint) }
        guard (st.st_mode & S_IFMT) == S_IFDIR else {
            let parent = folder.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
            throw DataError.notAFolder(path: folder, parent: parent.isEmpty ? (folder.hasPrefix("/") ? "/" : ".") : parent)
        }
        let names = try listFolder(folder)
        func find(_ stems: [String]) throws -> String {
            for stem in stems {
                let exact = [stem, stem + ".gz"].filter { names.contains($0) }
                if let first = exact.first { return join(folder, first) }
                // Prefixed names; `x` and `x.gz` of one stem count as one match (raw preferred).
                let prefixed = names.filter { n in
                    let base = n.hasSuffix(".gz") ? String(n.dropLast(3)) : n
                    return base.hasSuffix("-" + stem)
                }
                let bases = Set(prefixed.map { $0.hasSuffix(".gz") ? String($0.dropLast(3)) : $0 })
                if bases.count > 1 {
                    throw DataError.ambiguousFile(folder: folder, pattern: "*-" + stem + "[.gz]", matches: prefixed.sorted())
                }
                if let base = bases.first {
                    return join(folder, names.contains(base) ? base : base + ".gz")
                }
            }
            throw DataError.missingFile(folder: folder, lookedFor: stems.flatMap { [$0, $0 + ".gz", "*-" + $0 + "[.gz]"] }, hint: hint)
        }
        return DatasetFiles(
            trainImages: try find(stems.trainImages), trainLabels: try find(stems.trainLabels),
            testImages: try find(stems.testImages), testLabels: try find(stems.testLabels))
    }

    static func listFolder(_ folder: String) throws -> Set<String> {
        guard let dir = opendir(folder) else {
            throw DataError.unreadable(path: folder, reason: String(cString: strerror(errno)))
        }
        defer { closedir(dir) }
        var names = Set<String>()
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.insert(name) }
        }
        return names
    }

    static func join(_ folder: String, _ name: String) -> String {
        folder.hasSuffix("/") ? folder + name : folder + "/" + name
    }
}

/// One split: images (count, features) in [-1, 1] and their labels.
public struct Split {
    public var images: ImageSet
    public var labels: [Int32]
    public var count: Int { images.count }
}

/// A loaded, validated dataset. The class count is the largest training label plus one.
public struct Dataset {
    public var files: DatasetFiles
    public var train: Split
    public var test: Split
    public var classes: Int
    public var rows: Int { train.images.rows }
    public var cols: Int { train.images.cols }
    public var featureCount: Int { train.images.featureCount }

    /// Reads and cross-checks all four files. The training images (most of the work: gunzip
    /// and decode) load on one thread while the other three files load on another; an error
    /// is reported for the first bad file in the order train images, train labels, test
    /// images, test labels, whatever order the threads finish in.
    public static func load(_ files: DatasetFiles) throws -> Dataset {
        var images: [Result<ImageSet, Error>?] = [nil, nil]
        var labels: [Result<[Int32], Error>?] = [nil, nil]
        images.withUnsafeMutableBufferPointer { img in
            labels.withUnsafeMutableBufferPointer { lab in
                // Each iteration writes only its own slots.
                DispatchQueue.concurrentPerform(iterations: 2) { i in
                    if i == 0 {
                        img[0] = Result { try IDX.readImages(path: files.trainImages) }
                    } else {
                        lab[0] = Result { try IDX.readLabels(path: files.trainLabels) }
                        img[1] = Result { try IDX.readImages(path: files.testImages) }
                        lab[1] = Result { try IDX.readLabels(path: files.testLabels) }
                    }
                }
            }
        }
        let trainImages = try images[0]!.get()
        let trainLabels = try labels[0]!.get()
        let testImages = try images[1]!.get()
        let testLabels = try labels[1]!.get()
        if trainImages.count != trainLabels.count {
            throw DataError.countMismatch(images: files.trainImages, imageCount: trainImages.count, labels: files.trainLabels, labelCount: trainLabels.count)
        }
        if testImages.count != testLabels.count {
            throw DataError.countMismatch(images: files.testImages, imageCount: testImages.count, labels: files.testLabels, labelCount: testLabels.count)
        }
        if (trainImages.rows, trainImages.cols) != (testImages.rows, testImages.cols) {
            throw DataError.shapeMismatch(
                train: files.trainImages, trainShape: (trainImages.rows, trainImages.cols),
                test: files.testImages, testShape: (testImages.rows, testImages.cols))
        }
        let classes = Int(trainLabels.max() ?? 0) + 1
        if Set(trainLabels).count < 2 { throw DataError.tooFewClasses(path: files.trainLabels, classes: Set(trainLabels).count) }
        try checkLabels(testLabels, classes: classes, path: files.testLabels)
        return Dataset(
            files: files,
            train: Split(images: trainImages, labels: trainLabels),
            test: Split(images: testImages, labels: testLabels),
            classes: classes)
    }

    /// Every label must lie in 0..<classes.
    public static func checkLabels(_ labels: [Int32], classes: Int, path: String) throws {
        if let i = labels.firstIndex(where: { $0 < 0 || Int($0) >= classes }) {
            throw DataError.labelOutOfRange(path: path, index: i, label: Int(labels[i]), classes: classes)
        }
    }
}
