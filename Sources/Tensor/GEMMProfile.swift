import Foundation

/// Time and FLOPs spent inside BLAS GEMMs by the threads that make this profile current
/// (benchmarks), so a step's time — or one pipeline rank's — can be split into matrix products
/// and everything else.
public final class GEMMProfile: @unchecked Sendable {
    private let lock = NSLock()
    private var totalSeconds = 0.0
    private var totalFLOPs = 0.0
    private var totalCalls = 0

    public init() {}

    /// (seconds, FLOPs, calls) since the last reset.
    public var totals: (seconds: Double, flops: Double, calls: Int) {
        lock.withLock { (totalSeconds, totalFLOPs, totalCalls) }
    }

    public func reset() {
        lock.withLock { (totalSeconds, totalFLOPs, totalCalls) = (0, 0, 0) }
    }

    /// Runs `body` with `profile` counting this thread's GEMMs, restoring the previous one after.
    public static func withCurrent<T>(_ profile: GEMMProfile, _ body: () throws -> T) rethrows -> T {
        let previous = pthread_getspecific(currentKey)
        pthread_setspecific(currentKey, Unmanaged.passUnretained(profile).toOpaque())
        defer { pthread_setspecific(currentKey, previous) }
        return try withExtendedLifetime(profile) { try body() }
    }

    /// Runs `body`, charging its time and `flops` to the calling thread's profile if it has one.
    /// GEMMs inside one part of a parallel loop are not counted (parts run on other threads and
    /// overlap in time); a GEMM split into parts is counted once, by the wall-clock time of the whole.
    @inline(__always)
    static func measure(flops: Double, _ body: () -> Void) {
        guard let raw = pthread_getspecific(currentKey) else { return body() }
        let profile = Unmanaged<GEMMProfile>.fromOpaque(raw).takeUnretainedValue()
        let start = DispatchTime.now().uptimeNanoseconds
        body()
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        profile.lock.withLock {
            profile.totalSeconds += seconds
            profile.totalFLOPs += flops
            profile.totalCalls += 1
        }
    }

    private static let currentKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()
}
