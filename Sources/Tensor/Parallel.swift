import Dispatch
import Foundation
import Synchronization

/// TwoBP's own intra-op parallelism: the threads one device's kernels split their work over.
///
/// OpenBLAS sets its thread count for the whole process (the wheel TwoBP links does not export the
/// per-thread setter), so when two pipeline stages share a process, a stage that asked OpenBLAS for
/// two threads would take the other stage's core. TwoBP therefore always runs OpenBLAS on one
/// thread per call and parallelises itself: large GEMMs are split into blocks of output rows (or
/// columns), one single-threaded GEMM each, and loops such as attention's (sequence, key/value head)
/// groups run their iterations on several threads. Every output element is computed by exactly
/// one task, in the same order as with one thread, and no task sums another's results, so the
/// results do not depend on the thread count (the GEMM blocks change only which rows a call covers).
public enum Parallel {
    /// Threads kernels may use; 1 runs everything inline on the calling thread.
    public static var threads: Int { threadCount.load(ordering: .relaxed) }

    /// Sets the threads kernels split their work over, and OpenBLAS to one thread per call.
    public static func setThreads(_ count: Int) {
        threadCount.store(max(1, count), ordering: .relaxed)
        BLAS.setLibraryThreads(1)
    }

    /// Runs `body` with `count` threads, then restores the previous count.
    public static func withThreads<T>(_ count: Int, _ body: () throws -> T) rethrows -> T {
        let previous = threads
        setThreads(count)
        defer { setThreads(previous) }
        return try body()
    }

    /// Whether the calling thread is running one part of a parallel loop (nested loops run inline).
    static var isInsidePart: Bool { pthread_getspecific(insidePartKey) != nil }

    /// Runs `body` on `parts` contiguous ranges splitting `0 ..< count` (at most `threads` of them,
    /// none shorter than `minimumPerPart`), in parallel, and returns when all are done. Tensors a
    /// part allocates are charged to the caller's `MemoryMeter`. Bodies must write disjoint memory.
    public static func forEachPart(of count: Int, minimumPerPart: Int = 1, _ body: (Range<Int>) -> Void) {
        let parts = isInsidePart ? 1 : min(threads, count / max(1, minimumPerPart))
        guard parts > 1 else {
            if count > 0 { body(0..<count) }
            return
        }
        let meter = MemoryMeter.current
        withoutActuallyEscaping(body) { body in
            DispatchQueue.concurrentPerform(iterations: parts) { part in
                let range = count * part / parts ..< count * (part + 1) / parts
                pthread_setspecific(insidePartKey, UnsafeRawPointer(bitPattern: 1))
                defer { pthread_setspecific(insidePartKey, nil) }
                MemoryMeter.withCurrent(meter) { body(range) }
            }
        }
    }

    private static let threadCount = Atomic<Int>(1)

    private static let insidePartKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()
}
