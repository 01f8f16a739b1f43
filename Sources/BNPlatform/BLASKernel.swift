import BNCore
import Foundation

/// Works around OpenBLAS releases that do not recognise a newer CPU. Debian 12's OpenBLAS
/// 0.3.21 falls back to its generic SSE3 "Prescott" kernels on this project's AVX-512 machines
/// (Sapphire Rapids), running sgemm several times slower (docs/performance.md). OpenBLAS picks its kernels when the
/// library loads, before any of our code runs, so the only fix from inside the process is to
/// set OPENBLAS_CORETYPE to the newest family the CPU supports and exec ourselves once.
/// Setting OPENBLAS_CORETYPE yourself (any value) disables this.
public enum BLASKernel {
    static let genericCores: Set<String> = ["prescott", "core2", "nehalem", "katmai", "coppermine", "northwood", "banias", "atom", "unknown"]

    /// `threads`, when given, also goes into OPENBLAS_NUM_THREADS (unless set) for the new
    /// image, so OpenBLAS does not start, and spin, worker threads that will never be used.
    public static func reexecIfUndetected(threads: Int? = nil) {
        guard getenv("OPENBLAS_CORETYPE") == nil, genericCores.contains(BLAS.coreName.lowercased()),
              let target = bestCoreType() else { return }
        setenv("OPENBLAS_CORETYPE", target, 1)
        if let threads, getenv("OPENBLAS_NUM_THREADS") == nil { setenv("OPENBLAS_NUM_THREADS", "\(threads)", 1) }
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // Only reached if exec failed: carry on with the generic kernels.
        unsetenv("OPENBLAS_CORETYPE")
    }

    /// The OpenBLAS kernel family for this CPU's instruction-set flags, if better than generic.
    public static func bestCoreType() -> String? {
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return nil }
        let flags = Set(line.split(separator: " ").map(String.init))
        if flags.isSuperset(of: ["avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"]) { return "SkylakeX" }
        if flags.isSuperset(of: ["avx2", "fma"]) { return "Haswell" }
        if flags.contains("avx") { return "Sandybridge" }
        return nil
    }
}
