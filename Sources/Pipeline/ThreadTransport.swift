import Foundation
import Tensor

/// The default transport: pipeline ranks are threads of one process, and a
/// tensor passes from one to the next by reference, never copied.
///
/// All ranks of a group share one `ThreadExchange`. A rank that calls `fail`
/// wakes every blocked rank, which then throws with the failing rank's
/// message, so one stage's error ends the whole step promptly.
public final class ThreadTransport: Transport {
    public let rank: Int
    public var worldSize: Int { exchange.worldSize }
    private let exchange: ThreadExchange

    /// One connected transport per rank.
    public static func group(ranks: Int, receiveTimeout: Double = 300) -> [ThreadTransport] {
        let exchange = ThreadExchange(worldSize: ranks, timeout: receiveTimeout)
        return (0..<ranks).map { ThreadTransport(rank: $0, exchange: exchange) }
    }

    private init(rank: Int, exchange: ThreadExchange) {
        self.rank = rank
        self.exchange = exchange
    }

    public func send(_ tensor: Tensor, to destination: Int, tag: MessageTag) throws {
        try exchange.post(tensor, from: rank, to: destination, tag: tag)
    }

    public func receive(from source: Int, tag: MessageTag, shape: [Int]) throws -> Tensor {
        let tensor = try exchange.take(from: source, to: rank, tag: tag)
        guard tensor.shape == shape else {
            throw TwoBPError("rank \(rank): \(tag) from rank \(source) has shape \(tensor.shape), expected \(shape)")
        }
        return tensor
    }

    public func allReduceSum(_ values: [Double]) throws -> [Double] {
        let contributions = try exchange.collect(values, from: rank)
        var sum = [Double](repeating: 0, count: values.count)
        for contribution in contributions {
            guard contribution.count == sum.count else {
                throw TwoBPError("allReduceSum: ranks contributed \(sum.count) and \(contribution.count) values")
            }
            for i in sum.indices { sum[i] += contribution[i] }
        }
        return sum
    }

    public func gather(_ bytes: [UInt8], root: Int) throws -> [[UInt8]]? {
        let all = try exchange.collect(bytes, from: rank)
        return rank == root ? all : nil
    }

    public func fail(_ message: String) {
        exchange.fail(message)
    }
}

/// Mailboxes and a reusable rendezvous shared by the threads of one group.
final class ThreadExchange: @unchecked Sendable {
    struct Address: Hashable {
        let source: Int
        let destination: Int
        let tag: MessageTag
    }

    let worldSize: Int
    private let timeout: Double
    private let condition = NSCondition()
    private var mailboxes: [Address: Tensor] = [:]
    private var failure: String?
    /// Contributions to the collective in progress, and how many collectives have completed.
    private var contributions: [Any?]
    private var arrived = 0
    private var generation = 0
    private var results: [Any?] = []

    init(worldSize: Int, timeout: Double) {
        self.worldSize = worldSize
        self.timeout = timeout
        contributions = Array(repeating: nil, count: worldSize)
    }

    func post(_ tensor: Tensor, from source: Int, to destination: Int, tag: MessageTag) throws {
        guard (0..<worldSize).contains(destination) else {
            throw TwoBPError("rank \(source): send to rank \(destination) outside 0..<\(worldSize)")
        }
        condition.lock()
        defer { condition.unlock() }
        if let failure { throw TwoBPError(failure) }
        let address = Address(source: source, destination: destination, tag: tag)
        guard mailboxes[address] == nil else {
            throw TwoBPError("rank \(source): \(tag) sent twice to rank \(destination)")
        }
        mailboxes[address] = tensor
        condition.broadcast()
    }

    func take(from source: Int, to destination: Int, tag: MessageTag) throws -> Tensor {
        let address = Address(source: source, destination: destination, tag: tag)
        return try waitUntil("rank \(destination) waiting for \(tag) from rank \(source)") {
            mailboxes.removeValue(forKey: address)
        }
    }

    /// Every rank's `value` in rank order, once all ranks have called.
    func collect<T>(_ value: T, from rank: Int) throws -> [T] {
        condition.lock()
        let myGeneration = generation
        contributions[rank] = value
        arrived += 1
        if arrived == worldSize {
            results = contributions
            contributions = Array(repeating: nil, count: worldSize)
            arrived = 0
            generation += 1
            condition.broadcast()
        }
        condition.unlock()
        return try waitUntil("rank \(rank) waiting for the other ranks in a collective") {
            generation != myGeneration ? results.map { $0 as! T } : nil
        }
    }

    func fail(_ message: String) {
        condition.lock()
        if failure == nil { failure = message }
        condition.broadcast()
        condition.unlock()
    }

    /// Blocks until `ready` returns a value, another rank fails, or the timeout passes.
    private func waitUntil<T>(_ what: String, _ ready: () -> T?) throws -> T {
        let deadline = Date(timeIntervalSinceNow: timeout)
        condition.lock()
        defer { condition.unlock() }
        while true {
            if let failure { throw TwoBPError(failure) }
            if let value = ready() { return value }
            if !condition.wait(until: deadline) && Date() >= deadline {
                throw TwoBPError("timed out after \(Int(timeout)) s: \(what)")
            }
        }
    }
}
