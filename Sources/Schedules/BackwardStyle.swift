/// One slot of a 1F1B-family plan, before the backward style is chosen.
///
/// The generators for naive, GPipe, 1F1B and interleaved 1F1B decide the
/// order of forwards and backwards; `BackwardStyle.render` then writes each
/// backward as a fused B (plain) or as I plus deferred W (2BP). Keeping the
/// decision in one place is what makes "2BP is a property of the schedule"
/// true in code: the same plan, two renderings.
enum PlannedSlot: Equatable, Sendable {
    case forward(microBatch: Int, chunk: Int)
    /// `inCooldown`: the backward belongs to the drain phase, where the rank
    /// would otherwise idle between backwards; 2BP fills that gap with one p2.
    case backward(microBatch: Int, chunk: Int, inCooldown: Bool)
}

enum BackwardStyle {
    /// Plain: every backward is a fused B (p1 then p2 of one micro-batch, and
    /// only then the gradient leaves for the previous stage).
    ///
    /// 2BP (Rae et al., arXiv 2405.18047): every backward is an I, whose result
    /// goes upstream at once; its W is deferred. Each cool-down I is followed
    /// by the W of the oldest deferred micro-batch (any chunk), which fills the
    /// cool-down bubble; everything still deferred runs at the end of the step
    /// as one `W*` per chunk (ascending chunk), each a single GEMM over the
    /// concatenated micro-batches.
    static func render(_ slots: [PlannedSlot], twoBP: Bool) -> [Action] {
        var actions: [Action] = []
        var deferred: [(microBatch: Int, chunk: Int)] = []
        for slot in slots {
            switch slot {
            case let .forward(microBatch, chunk):
                actions.append(Action(.forward, microBatch, chunk: chunk))
            case let .backward(microBatch, chunk, inCooldown):
                guard twoBP else {
                    actions.append(Action(.backwardFull, microBatch, chunk: chunk))
                    continue
                }
                actions.append(Action(.backwardInput, microBatch, chunk: chunk))
                deferred.append((microBatch, chunk))
                if inCooldown {
                    let oldest = deferred.removeFirst()
                    actions.append(Action(.backwardWeight, oldest.microBatch, chunk: oldest.chunk))
                }
            }
        }
        let chunksLeft = Set(deferred.map(\.chunk)).sorted()
        actions += chunksLeft.map { Action(.backwardWeight, nil, chunk: $0) }
        return actions
    }

    /// The 2BP pass for schedules that are already split (Zero Bubble): the run
    /// of per-micro-batch W passes that ends a rank's step becomes one `W*` per
    /// chunk, in the order the chunks first appear in that run. Nothing waits
    /// on those W passes, so concatenating them changes no dependency.
    static func concatenatingTrailingWeightPasses(_ actions: [Action]) -> [Action] {
        let tailStart = actions.lastIndex { $0.kind != .backwardWeight }.map { $0 + 1 } ?? 0
        let tail = actions[tailStart...]
        guard !tail.isEmpty else { return actions }
        var chunks: [Int] = []
        for action in tail where !chunks.contains(action.chunk) {
            chunks.append(action.chunk)
        }
        return Array(actions[..<tailStart]) + chunks.map { Action(.backwardWeight, nil, chunk: $0) }
    }
}
