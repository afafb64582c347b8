import Foundation
import Tensor

/// Runs one body per pipeline rank, each on its own thread, and joins them.
///
/// When a rank throws, its error goes to the transport's `fail`, which wakes
/// every rank blocked in a receive or collective; the first error (the rank
/// that failed, not the ranks it woke) is rethrown with the rank named.
public enum RankThreads {
    /// Stages recurse through layers and keep large frames; give each thread room.
    static let stackSize = 64 << 20

    public static func run<T>(transports: [Transport], _ body: @escaping (Transport) throws -> T) throws -> [T] {
        let outcomes = Outcomes<T>(count: transports.count)
        let group = DispatchGroup()
        for transport in transports {
            let rank = transport.rank
            group.enter()
            let thread = Thread {
                defer { group.leave() }
                do {
                    outcomes.succeed(rank: rank, with: try body(transport))
                } catch {
                    if outcomes.failFirst(rank: rank, with: error) {
                        transport.fail("stage \(rank) failed: \(error)")
                    }
                }
            }
            thread.stackSize = stackSize
            thread.name = "twobp-stage-\(rank)"
            thread.start()
        }
        group.wait()
        if let firstError = outcomes.firstError {
            let message = "\(firstError.error)"
            throw TwoBPError(message.hasPrefix("stage \(firstError.rank)") ? message : "stage \(firstError.rank) failed: \(message)")
        }
        return outcomes.results.map { $0! }
    }
}

/// The ranks' results and the first failure, shared by the rank threads under a lock.
private final class Outcomes<T>: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var results: [T?]
    private(set) var firstError: (rank: Int, error: Error)?

    init(count: Int) {
        results = Array(repeating: nil, count: count)
    }

    func succeed(rank: Int, with value: T) {
        lock.withLock { results[rank] = value }
    }

    /// Records `error` if no rank failed before; returns whether it was the first.
    func failFirst(rank: Int, with error: Error) -> Bool {
        lock.withLock {
            guard firstError == nil else { return false }
            firstError = (rank, error)
            return true
        }
    }
}
