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
        guard stat(folder, &st) == 0 else {
            let e = errno
            if e == ENOENT { throw DataError.missingFolder(path: folder, hint: hint) }
            throw DataError.unreadable(path: folder, reason: FileCheck.reason(errno: e))
        }
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

    public init(images: ImageSet, labels: [Int32]) {
        self.images = images
        self.labels = labels
    }
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

    /// A dataset assembled in memory (tests, fuzzing); `load` is the validated path from files.
    public init(files: DatasetFiles, train: Split, test: Split, classes: Int) {
        self.files = files
        self.train = train
        self.test = test
        self.classes = classes
    }

    /// Reads and cross-checks all four files. First the four headers only: the image and
    /// label counts of each split must agree, train and test image sizes must match, and the
    /// declared data must fit in memory, before any body is read or inflated (a small .gz
    /// that declares millions of images costs nothing). Then the bodies, each read exactly
    /// as far as its header declares: the training images (most of the work) on one thread
    /// while the other three files load on another. An error names the first bad file in the
    /// order train images, train labels, test images, test labels.
    public static func load(_ files: DatasetFiles, memoryLimit: Int = Memory.physicalBytes) throws -> Dataset {
        let trainImageFile = try IDX.openImages(path: files.trainImages)
        let trainLabelFile = try IDX.openLabels(path: files.trainLabels)
        let testImageFile = try IDX.openImages(path: files.testImages)
        let testLabelFile = try IDX.openLabels(path: files.testLabels)
        if trainImageFile.count != trainLabelFile.count {
            throw DataError.countMismatch(images: files.trainImages, imageCount: trainImageFile.count, labels: files.trainLabels, labelCount: trainLabelFile.count)
        }
        if testImageFile.count != testLabelFile.count {
            throw DataError.countMismatch(images: files.testImages, imageCount: testImageFile.count, labels: files.testLabels, labelCount: testLabelFile.count)
        }
        if (trainImageFile.rows, trainImageFile.cols) != (testImageFile.rows, testImageFile.cols) {
            throw DataError.shapeMismatch(
                train: files.trainImages, trainShape: (trainImageFile.rows, trainImageFile.cols),
                test: files.testImages, testShape: (testImageFile.rows, testImageFile.cols))
        }
        // Kept as read: a byte a pixel, and an Int32 a label.
        let needed = trainImageFile.dataBytes + testImageFile.dataBytes + 4 * (trainLabelFile.count + testLabelFile.count)
        if needed > memoryLimit {
            throw DataError.badHeader(path: files.trainImages, reason: "the four headers declare \(trainImageFile.count + testImageFile.count) images, \(Memory.describe(needed)) once read, more than this machine's \(Memory.describe(memoryLimit)) of memory")
        }
        var images: [Result<ImageSet, Error>?] = [nil, nil]
        var labels: [Result<[Int32], Error>?] = [nil, nil]
        images.withUnsafeMutableBufferPointer { img in
            labels.withUnsafeMutableBufferPointer { lab in
                // Each iteration writes only its own slots.
                DispatchQueue.concurrentPerform(iterations: 2) { i in
                    if i == 0 {
                        img[0] = Result { try IDX.decodeImages(trainImageFile) }
                    } else {
                        lab[0] = Result { try IDX.decodeLabels(trainLabelFile) }
                        img[1] = Result { try IDX.decodeImages(testImageFile) }
                        lab[1] = Result { try IDX.decodeLabels(testLabelFile) }
                    }
                }
            }
        }
        let trainImages = try images[0]!.get()
        let trainLabels = try labels[0]!.get()
        let testImages = try images[1]!.get()
        let testLabels = try labels[1]!.get()
        let classes = Int(trainLabels.max() ?? 0) + 1
        if Set(trainLabels).count < 2 { throw DataError.tooFewClasses(path: files.trainLabels, classes: Set(trainLabels).count) }
        try checkLabels(testLabels, classes: classes, path: files.testLabels)
        return Dataset(
            files: files,
            train: Split(images: trainImages, labels: trainLabels),
            test: Split(images: testImages, labels: testLabels),
            classes: classes)
    }

    /// What this dataset is, for telling whether a checkpoint was trained on it: image counts
    /// and sizes, and a 64-bit digest of every decoded pixel and label (train and test), so
    /// the same data gzipped or raw, or moved, is the same dataset.
    public var identity: String {
        var h: UInt64 = 0x9E37_79B9_7F4A_7C15
        func mix(_ v: UInt64) { h = (h ^ v) &* 0xFF51_AFD7_ED55_8CCD; h ^= h >> 32 }
        // The digest is over the pixels' Float32 bit patterns (as when images were stored as
        // floats), so checkpoints made before images were kept as bytes still match.
        let table = ImageSet.pixelValues.map { UInt64($0.bitPattern) }
        for split in [train, test] {
            let px = split.images.bytes.data
            let n = split.count * split.images.featureCount
            // Two Float bit patterns per 64-bit step.
            table.withUnsafeBufferPointer { bits in
                var i = 0
                while i + 1 < n {
                    mix(bits[Int(px[i])] | bits[Int(px[i + 1])] << 32)
                    i += 2
                }
                if i < n { mix(bits[Int(px[i])]) }
            }
            for l in split.labels { mix(UInt64(UInt32(bitPattern: l))) }
        }
        let hex = String(h, radix: 16)
        return "train=\(train.count) test=\(test.count) image=\(rows)x\(cols) digest=\(String(repeating: "0", count: 16 - hex.count))\(hex)"
    }

    /// Every label must lie in 0..<classes.
    public static func checkLabels(_ labels: [Int32], classes: Int, path: String) throws {
        if let i = labels.firstIndex(where: { $0 < 0 || Int($0) >= classes }) {
            throw DataError.labelOutOfRange(path: path, index: i, label: Int(labels[i]), classes: classes)
        }
    }
}

/// The machine's memory, for refusing before allocating what cannot fit.
public enum Memory {
    /// Physical memory in bytes (sysconf), or Int.max when unknown.
    public static var physicalBytes: Int {
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), size = sysconf(Int32(_SC_PAGESIZE))
        guard pages > 0, size > 0 else { return Int.max }
        let (b, o) = pages.multipliedReportingOverflow(by: size)
        return o ? Int.max : b
    }

    /// "3.2 GiB", "512 MiB".
    public static func describe(_ bytes: Int) -> String {
        let gib = Double(bytes) / Double(1 << 30)
        if gib >= 1 {
            let tenths = Int((gib * 10).rounded())
            return "\(tenths / 10).\(tenths % 10) GiB"
        }
        return "\(max(1, bytes >> 20)) MiB"
    }
}
