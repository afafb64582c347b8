extension Schedule {
    /// For each W action of `rank`, keyed by its step: the micro-batches whose
    /// p2 it runs, in the order their I ran.
    ///
    /// `W m` runs [m]; `W*` runs every micro-batch of its chunk whose I has run
    /// and whose W has not (2BP's concatenated GEMM), which is what a runner
    /// concatenates and what a simulator charges for. Communication actions
    /// are ignored; a W with nothing to cover maps to an empty list (the
    /// validator rejects such schedules).
    public func weightPassCoverage(rank: Int) -> [Int: [Int]] {
        var pending = [PendingWeights](repeating: PendingWeights(), count: chunksPerRank)
        var coverage: [Int: [Int]] = [:]
        for (step, action) in actions[rank].enumerated() where pending.indices.contains(action.chunk) {
            switch action.kind {
            case .backwardInput:
                if let microBatch = action.microBatch { pending[action.chunk].append(microBatch) }
            case .backwardWeight:
                if let microBatch = action.microBatch {
                    coverage[step] = pending[action.chunk].remove(microBatch) ? [microBatch] : []
                } else {
                    coverage[step] = pending[action.chunk].removeAll()
                }
            case .forward, .backwardFull, .sendActivation, .receiveActivation, .sendGradient, .receiveGradient:
                break
            }
        }
        return coverage
    }
}

/// One chunk's micro-batches whose I has run and W has not, in I order, with O(1) removal of a
/// given micro-batch, so covering thousands of micro-batches stays linear (a list's
/// `contains` and `removeAll(where:)` made it quadratic).
private struct PendingWeights {
    private var order: [(microBatch: Int, pending: Bool)] = []
    private var positions: [Int: [Int]] = [:]

    mutating func append(_ microBatch: Int) {
        positions[microBatch, default: []].append(order.count)
        order.append((microBatch, true))
    }

    /// Removes every entry of `microBatch`; whether there was one.
    mutating func remove(_ microBatch: Int) -> Bool {
        guard let indices = positions.removeValue(forKey: microBatch) else { return false }
        for index in indices { order[index].pending = false }
        return true
    }

    /// Every pending micro-batch in I order; none remains.
    mutating func removeAll() -> [Int] {
        defer {
            order.removeAll()
            positions.removeAll()
        }
        return order.filter(\.pending).map(\.microBatch)
    }
}
