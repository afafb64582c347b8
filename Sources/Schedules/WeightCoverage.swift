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
        var pending = [[Int]](repeating: [], count: chunksPerRank)
        var coverage: [Int: [Int]] = [:]
        for (step, action) in actions[rank].enumerated() where pending.indices.contains(action.chunk) {
            switch action.kind {
            case .backwardInput:
                if let microBatch = action.microBatch { pending[action.chunk].append(microBatch) }
            case .backwardWeight:
                if let microBatch = action.microBatch {
                    coverage[step] = pending[action.chunk].contains(microBatch) ? [microBatch] : []
                    pending[action.chunk].removeAll { $0 == microBatch }
                } else {
                    coverage[step] = pending[action.chunk]
                    pending[action.chunk].removeAll()
                }
            case .forward, .backwardFull, .sendActivation, .receiveActivation, .sendGradient, .receiveGradient:
                break
            }
        }
        return coverage
    }
}
