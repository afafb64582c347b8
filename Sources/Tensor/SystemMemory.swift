import Foundation

/// How much memory this process can still get: the kernel's `MemAvailable`, lowered to what the
/// cgroup's `memory.max` leaves (containers). Commands compare their estimated need with it before
/// allocating, so a model too large for the machine is a message, not "failed to allocate" or the OOM killer.
public enum SystemMemory {
    /// Bytes available now, or nil where the platform does not say.
    public static var availableBytes: Int? {
        let fromKernel = meminfoAvailable()
        let fromCgroup = cgroupRemaining()
        switch (fromKernel, fromCgroup) {
        case let (kernel?, cgroup?): return min(kernel, cgroup)
        case let (kernel, cgroup): return kernel ?? cgroup
        }
    }

    private static func meminfoAvailable() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
            let fields = line.split(separator: " ")
            guard fields.count >= 2, let kibibytes = Int(fields[1]) else { return nil }
            return kibibytes * 1024
        }
        return nil
    }

    private static func cgroupRemaining() -> Int? {
        func number(_ path: String) -> Int? {
            (try? String(contentsOfFile: path, encoding: .utf8)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
        guard let limit = number("/sys/fs/cgroup/memory.max") else { return nil }  // "max": no limit
        return max(0, limit - (number("/sys/fs/cgroup/memory.current") ?? 0))
    }
}
