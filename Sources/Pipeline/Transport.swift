import Tensor

/// What a message between stages carries, and so where it goes in the receiver's schedule.
public struct MessageTag: Hashable, Sendable, CustomStringConvertible {
    public enum Kind: Int, Sendable, CaseIterable {
        case activation = 0, gradient = 1
        /// A copy of a tied parameter's gradient (see `TiedParameter`): `microBatch` is the tie's
        /// index in the model's list, `stage` the sending rank.
        case tiedGradient = 2
    }
    public let kind: Kind
    public let microBatch: Int
    /// The virtual stage that will consume the tensor (the sender's rank for a tied gradient).
    public let stage: Int

    public init(kind: Kind, microBatch: Int, stage: Int) {
        self.kind = kind
        self.microBatch = microBatch
        self.stage = stage
    }

    /// A non-negative integer unique per tag for up to 1024 virtual stages (an MPI tag).
    public var integerValue: Int { (microBatch * 1024 + stage) * Kind.allCases.count + kind.rawValue }

    public var description: String {
        switch kind {
        case .activation: "activation of micro-batch \(microBatch) for stage \(stage)"
        case .gradient: "gradient of micro-batch \(microBatch) for stage \(stage)"
        case .tiedGradient: "gradient of tied parameter \(microBatch) from rank \(stage)"
        }
    }
}

/// Moves tensors between pipeline ranks. `ThreadTransport` connects threads of one
/// process without copying; `MPITransport` connects processes through Open MPI.
///
/// Sends never block (p1's gradient leaves the moment it exists); receives block
/// until the message arrives, the timeout passes, or another rank fails, and
/// then throw a `TwoBPError` that names the rank.
public protocol Transport: AnyObject {
    var rank: Int { get }
    var worldSize: Int { get }

    func send(_ tensor: Tensor, to destination: Int, tag: MessageTag) throws
    /// Blocks for the tensor `source` sent with `tag`; `shape` is what the schedule expects.
    func receive(from source: Int, tag: MessageTag, shape: [Int]) throws -> Tensor
    /// Hint that `receive(from:tag:shape:)` will follow, so the transport may post it early.
    func expect(from source: Int, tag: MessageTag, shape: [Int])

    /// Element-wise sum over all ranks, returned on every rank.
    func allReduceSum(_ values: [Double]) throws -> [Double]
    /// Every rank's bytes, in rank order, on `root`; nil elsewhere.
    func gather(_ bytes: [UInt8], root: Int) throws -> [[UInt8]]?
    /// Blocks until every send this rank started has left (a step's end; a no-op where sends are handoffs).
    func waitForSends() throws
    /// Marks this rank failed so every other rank's blocking call ends promptly with `message`.
    func fail(_ message: String)
}

extension Transport {
    public func expect(from source: Int, tag: MessageTag, shape: [Int]) {}
    public func waitForSends() throws {}

    /// Returns once every rank has called it (an all-reduce of one value: an empty one need not synchronise).
    public func barrier() throws {
        _ = try allReduceSum([0])
    }
}
