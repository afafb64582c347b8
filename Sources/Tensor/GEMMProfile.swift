import Foundation

/// Time and FLOPs spent inside BLAS GEMMs, counted only while enabled (benchmarks),
/// so a step's time can be split into matrix products and everything else.
public final class GEMMProfile: @unchecked Sendable {
    public static let shared = GEMMProfile()

    private let lock = NSLock()
    private var enabledFlag = false
    private var totalSeconds = 0.0
    private var totalFLOPs = 0.0
    private var totalCalls = 0

    public var isEnabled: Bool {
        get { lock.withLock { enabledFlag } }
        set { lock.withLock { enabledFlag = newValue } }
    }

    /// (seconds, FLOPs, calls) since the last reset, over all threads.
    public var totals: (seconds: Double, flops: Double, calls: Int) {
        lock.withLock { (totalSeconds, totalFLOPs, totalCalls) }
    }

    public func reset() {
        lock.withLock { (totalSeconds, totalFLOPs, totalCalls) = (0, 0, 0) }
    }

    /// Runs `body`, charging its time and `flops` when enabled. GEMMs inside one part of a
    /// parallel loop are not counted (their parts overlap in time); a GEMM split into parts is
    /// counted once, by the wall-clock time of the whole.
    @inline(__always)
    func measure(flops: Double, _ body: () -> Void) {
        guard enabledFlag, !Parallel.isInsidePart else { return body() }
        let start = DispatchTime.now().uptimeNanoseconds
        body()
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        lock.withLock {
            totalSeconds += seconds
            totalFLOPs += flops
            totalCalls += 1
        }
    }
}
