// bnfuzz: libFuzzer entry point over the IDX/gzip reader and the checkpoint reader.
//
// Fuzzing build (Scripts/fuzz does this):
//   swift build -c release --product bnfuzz --scratch-path .build-fuzz \
//     -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library -Xswiftc -DFUZZING
//   BNFUZZ_TARGET=idx .build-fuzz/release/bnfuzz CORPUS_DIR -max_total_time=600
// Ordinary build: `bnfuzz TARGET FILE...` replays inputs through the same code and prints
// each outcome (for reproducing a crash without the fuzzer).
import BNFuzzTargets
import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func bnfuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let target = ProcessInfo.processInfo.environment["BNFUZZ_TARGET"] ?? "idx"
    FuzzTargets.run(target, UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

#if FUZZING
@_silgen_name("LLVMFuzzerMutate")
func LLVMFuzzerMutate(_ data: UnsafeMutablePointer<UInt8>?, _ size: Int, _ maxSize: Int) -> Int

/// For the checkpoint targets, half the mutations edit the safetensors header as JSON
/// (HeaderMutator); the rest, and every mutation of the idx target, are libFuzzer's own.
@_cdecl("LLVMFuzzerCustomMutator")
public func bnfuzzCustomMutator(_ data: UnsafeMutablePointer<UInt8>?, _ size: Int, _ maxSize: Int, _ seed: UInt32) -> Int {
    let target = ProcessInfo.processInfo.environment["BNFUZZ_TARGET"] ?? "idx"
    if target != "idx", seed & 1 == 0, let data,
       let out = HeaderMutator.mutate(Array(UnsafeBufferPointer(start: data, count: size)), seed: seed >> 1, maxSize: maxSize) {
        out.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: out.count) }
        return out.count
    }
    return LLVMFuzzerMutate(data, size, maxSize)
}

// SwiftPM links an executable's entry point as `<product>_main`; hand control to libFuzzer's
// driver from there (LLVMFuzzerRunDriver, exported by -sanitize=fuzzer's runtime).
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

@_cdecl("bnfuzz_main")
public func bnfuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    var count = argc
    var vector = argv
    return LLVMFuzzerRunDriver(&count, &vector, bnfuzzTestOneInput)
}
#else
@main
enum Replay {
    static func main() {
        let args = Array(CommandLine.arguments.dropFirst())
        guard let target = args.first, FuzzTargets.names.contains(target), args.count >= 2 else {
            FileHandle.standardError.write(Data("usage: bnfuzz \(FuzzTargets.names.joined(separator: "|")) FILE...\n".utf8))
            exit(64)
        }
        for path in args.dropFirst() {
            let bytes = (try? Data(contentsOf: URL(fileURLWithPath: path))) ?? Data()
            let outcome = bytes.withUnsafeBytes { FuzzTargets.run(target, $0) }
            print("\(path): \(outcome)")
        }
    }
}
#endif
