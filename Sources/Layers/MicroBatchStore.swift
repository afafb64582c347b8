import Tensor

/// Per-micro-batch saved state of one layer: what forward keeps for p1, or what
/// p1 keeps for p2. Missing entries are schedule errors, reported as `TwoBPError`.
public struct MicroBatchStore<Value> {
    private var entries: [(microBatch: Int, value: Value)] = []
    private let what: String

    public init(_ what: String) {
        self.what = what
    }

    public var isEmpty: Bool { entries.isEmpty }
    public var count: Int { entries.count }

    public mutating func put(_ value: Value, for microBatch: Int) throws {
        guard !entries.contains(where: { $0.microBatch == microBatch }) else {
            throw TwoBPError("\(what): micro-batch \(microBatch) is already pending")
        }
        entries.append((microBatch, value))
    }

    public mutating func take(_ microBatch: Int) throws -> Value {
        guard let index = entries.firstIndex(where: { $0.microBatch == microBatch }) else {
            throw TwoBPError("\(what): nothing pending for micro-batch \(microBatch)")
        }
        return entries.remove(at: index).value
    }

    /// Removes and returns the entries `work` selects, oldest first.
    public mutating func take(_ work: WeightGradientWork) throws -> [Value] {
        switch work {
        case .microBatch(let microBatch):
            return [try take(microBatch)]
        case .allPending:
            defer { entries.removeAll() }
            return entries.map(\.value)
        }
    }
}
