// swift-tools-version:5.9
import PackageDescription

let package = Package(
    name: "bntrain",
    products: [
        .executable(name: "bntrain", targets: ["bntrain"]),
        .library(name: "BNCore", targets: ["BNCore"]),
        .library(name: "BNData", targets: ["BNData"]),
        .library(name: "BNTraining", targets: ["BNTraining"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-numerics", from: "1.1.1"),
    ],
    targets: [
        // C shims over system libraries (Debian: zlib1g-dev, libopenblas-dev).
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        // Element-wise float32 kernels in C (vectorized by clang, AVX-512 clones chosen at load).
        // -fno-math-errno: sqrtf sets no errno, so its loops vectorize (sqrtps).
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-fno-math-errno"])]),
        // Layers, loss, optimizer, network, RNG, gradient checker. No file or network I/O.
        .target(
            name: "BNCore",
            dependencies: ["COpenBLAS", "CKernels", .product(name: "RealModule", package: "swift-numerics")]
        ),
        // IDX files (raw or gzipped) -> Float datasets; minibatches.
        .target(name: "BNData", dependencies: ["CZlib", "CKernels", "BNCore"]),
        // Model checkpoints in the safetensors format; atomic file writes.
        .target(name: "BNCheckpoint", dependencies: ["BNCore", "BNData"]),
        // Process-level platform fixes shared by the executables (OpenBLAS kernel selection).
        .target(name: "BNPlatform", dependencies: ["BNCore"]),
        // The training library: run configuration, the training loop, resume, evaluation,
        // records and metrics files, data location. Everything the executable does but parse flags.
        .target(
            name: "BNTraining",
            dependencies: ["BNCore", "BNData", "BNCheckpoint", "CKernels", .product(name: "RealModule", package: "swift-numerics")]
        ),
        // The command-line tool: flags -> RunConfig, subcommands (train, eval, predict, summary), exit codes.
        .executableTarget(
            name: "bntrain",
            dependencies: [
                "BNCore", "BNData", "BNCheckpoint", "BNPlatform", "BNTraining",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Fuzz targets (IDX/gzip reader, checkpoint reader), shared by bnfuzz and the corpus tests.
        .target(name: "BNFuzzTargets", dependencies: ["BNData", "BNCheckpoint", "BNCore", "BNTraining"]),
        // libFuzzer entry point (Scripts/fuzz builds it with -sanitize=fuzzer); plain builds replay files.
        .executableTarget(name: "bnfuzz", dependencies: ["BNFuzzTargets"]),
        // Micro-benchmarks: sgemm at the training shapes vs the full training step (Scripts/bench).
        .executableTarget(name: "bnbench", dependencies: ["BNCore", "BNData", "BNPlatform", "BNTraining"]),
        .testTarget(
            name: "BNCoreTests",
            dependencies: ["BNCore", "CKernels", .product(name: "RealModule", package: "swift-numerics")]
        ),
        .testTarget(name: "BNDataTests", dependencies: ["BNData", "BNCore", "CKernels"]),
        .testTarget(name: "BNCheckpointTests", dependencies: ["BNCheckpoint", "BNCore"]),
        .testTarget(name: "FuzzCorpusTests", dependencies: ["BNFuzzTargets"], exclude: ["Corpus"]),
        .testTarget(name: "BNTrainingTests", dependencies: ["BNTraining", "BNCore", "BNData", "BNCheckpoint"]),
        .testTarget(name: "bntrainTests", dependencies: ["bntrain", "BNData", "BNCheckpoint", "BNCore"]),
    ]
)
