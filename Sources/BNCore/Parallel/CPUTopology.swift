import CKernels
import Foundation

/// The cores this process may run on, for `--workers auto`.
public enum CPUTopology {
    /// The logical CPUs in this process's affinity mask (taskset, cgroups' cpusets), or the
    /// online CPUs if the mask cannot be read.
    public static var usableCPUs: [Int] {
        var cpus = [Int32](repeating: 0, count: 1024)
        let n = Int(bn_usable_cpus(&cpus, Int32(cpus.count)))
        if n > 0 { return cpus[0..<n].map(Int.init) }
        return Array(0..<max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }

    /// Physical cores among `usableCPUs`: hyperthreads of one core (the same package and core
    /// id in sysfs) count once. Without sysfs, every usable CPU counts.
    public static var physicalCores: Int {
        var cores = Set<String>()
        let cpus = usableCPUs
        for cpu in cpus {
            let dir = "/sys/devices/system/cpu/cpu\(cpu)/topology/"
            guard let core = try? String(contentsOfFile: dir + "core_id", encoding: .utf8),
                let package = try? String(contentsOfFile: dir + "physical_package_id", encoding: .utf8)
            else { return cpus.count }
            cores.insert(package.trimmingCharacters(in: .whitespacesAndNewlines) + "/" + core.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        return max(1, cores.count)
    }
}
