/// Zero Bubble's ZB-V (Qi et al., arXiv 2401.10241, newer version, section 6;
/// the order of PyTorch's `ScheduleZBVZeroBubble`).
///
/// Two chunks per rank in V placement: chunk 0 of rank r is stage r, chunk 1
/// is stage 2N - 1 - r (`Schedule.vShapePlacement`), so the forward runs down
/// the ranks on chunk 0, turns on the last rank without communication, and
/// comes back up on chunk 1; rank 0 computes the loss. With T_F = T_I = T_W
/// it has no bubble at 1F1B's peak memory.
///
/// Rank r:
/// - warm-up: `2(N - r) - 1` chunk-0 forwards; then r pairs of (chunk-1 F,
///   chunk-0 F); then `N - r` triples (chunk-1 F, I, W);
/// - steady state: (chunk-0 F while any remain, chunk-0 I, chunk-0 W,
///   chunk-1 F, chunk-1 I, chunk-1 W) until every forward has run;
/// - cool-down: r pairs (chunk-0 I, chunk-1 I); then `N - r` pairs (chunk-0 I,
///   oldest chunk-0 W); then the remaining chunk-1 W, then chunk-0 W.
///
/// The shape needs at least 2N - 1 micro-batches; with fewer we build it for
/// 2N - 1 and drop the actions of the micro-batches that do not exist (as
/// PyTorch does), which keeps every remaining dependency in order.
///
/// Split by definition; `twoBP` concatenates the closing W run into `W*`.
enum ZeroBubbleVGenerator: ScheduleGenerator {
    static let chunksPerRank = 2
    /// The chunk on the way down (stage r) and on the way up (stage 2N - 1 - r).
    static let downChunk = 0
    static let upChunk = 1

    static func actions(rank: Int, shape: PipelineShape) -> [Action] {
        let ranks = shape.ranks
        let planned = max(2 * ranks - 1, shape.microBatches)
        var actions: [Action] = []
        /// Next micro-batch per chunk for F, I and W.
        var forward = [0, 0], backward = [0, 0], weight = [0, 0]

        func run(_ kind: ActionKind, _ chunk: Int) {
            switch kind {
            case .forward:
                actions.append(Action(.forward, forward[chunk], chunk: chunk))
                forward[chunk] += 1
            case .backwardInput:
                actions.append(Action(.backwardInput, backward[chunk], chunk: chunk))
                backward[chunk] += 1
            case .backwardWeight:
                actions.append(Action(.backwardWeight, weight[chunk], chunk: chunk))
                weight[chunk] += 1
            case .backwardFull, .sendActivation, .receiveActivation, .sendGradient, .receiveGradient:
                preconditionFailure("ZB-V plans only F, I and W")
            }
        }

        for _ in 0..<(2 * (ranks - rank) - 1) {
            run(.forward, downChunk)
        }
        for _ in 0..<rank {
            run(.forward, upChunk)
            run(.forward, downChunk)
        }
        for _ in 0..<(ranks - rank) {
            run(.forward, upChunk)
            run(.backwardInput, upChunk)
            run(.backwardWeight, upChunk)
        }
        while forward[upChunk] < forward[downChunk] || forward[downChunk] < planned {
            if forward[downChunk] < planned {
                run(.forward, downChunk)
            }
            run(.backwardInput, downChunk)
            run(.backwardWeight, downChunk)
            run(.forward, upChunk)
            run(.backwardInput, upChunk)
            run(.backwardWeight, upChunk)
        }
        for _ in 0..<rank {
            run(.backwardInput, downChunk)
            run(.backwardInput, upChunk)
        }
        for _ in 0..<(ranks - rank) {
            run(.backwardInput, downChunk)
            run(.backwardWeight, downChunk)
        }
        while weight[upChunk] < backward[upChunk] {
            run(.backwardWeight, upChunk)
        }
        while weight[downChunk] < backward[downChunk] {
            run(.backwardWeight, downChunk)
        }
        return actions.filter { ($0.microBatch ?? 0) < shape.microBatches }
    }
}
