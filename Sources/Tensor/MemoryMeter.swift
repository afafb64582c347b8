import Foundation

/// Live and peak bytes of every `Tensor` allocated while this meter is current.
///
/// Each pipeline stage owns one meter and makes it current on its thread, so a
/// stage's peak memory is a measured number, not an estimate. Tensors remember
/// the meter they were charged to and credit it when freed, whichever thread
/// frees them (an activation sent downstream is freed by the receiver).
public final class MemoryMeter: @unchecked Sendable {
    public let name: String
    private let lock = NSLock()
    private var live = 0
    private var peak = 0

    public init(name: String) {
        self.name = name
    }

    public var liveBytes: Int { lock.withLock { live } }
    public var peakBytes: Int { lock.withLock { peak } }

    /// Starts a new peak measurement from the bytes alive now.
    public func resetPeak() {
        lock.withLock { peak = live }
    }

    func charge(_ bytes: Int) {
        lock.withLock {
            live += bytes
            if live > peak { peak = live }
        }
    }

    func release(_ bytes: Int) {
        lock.withLock { live -= bytes }
    }

    /// The meter of all allocations made on threads that set none.
    public static let process = MemoryMeter(name: "process")

    /// The meter new tensors on this thread are charged to.
    public static var current: MemoryMeter {
        guard let raw = pthread_getspecific(currentKey) else { return process }
        return Unmanaged<MemoryMeter>.fromOpaque(raw).takeUnretainedValue()
    }

    /// Runs `body` with `meter` current on this thread, restoring the previous one after.
    public static func withCurrent<T>(_ meter: MemoryMeter, _ body: () throws -> T) rethrows -> T {
        let previous = pthread_getspecific(currentKey)
        pthread_setspecific(currentKey, Unmanaged.passUnretained(meter).toOpaque())
        defer { pthread_setspecific(currentKey, previous) }
        return try withExtendedLifetime(meter) { try body() }
    }

    private static let currentKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()
}
