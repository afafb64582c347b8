/// Zero Bubble's ZB-H2 (Qi et al., arXiv 2401.10241, section 2.2): spend
/// memory (up to 2N - 1 micro-batches in flight, against 1F1B's N) to fill
/// the warm-up with extra forwards and push W passes to the tail, so that no
/// rank idles between its first and its last action.
///
/// The paper draws ZB-H2 by hand under equal costs T_F = T_I = T_W. We derive
/// it the same way, as a list schedule in unit time slots: in each slot every
/// rank runs, in priority order,
/// 1. the I of its oldest micro-batch whose gradient has arrived (the I chain
///    is the critical path: every rank upstream waits for it);
/// 2. else the F of its next micro-batch, if its activation has arrived and
///    fewer than `2N - 1` micro-batches are in flight on the rank (F done,
///    W not yet: their activations are still held);
/// 3. else the W of its oldest micro-batch whose I has run;
/// 4. else nothing.
/// The resulting order has the ZB-H2 shape (rank 0 warms up with 2N - 1
/// forwards, the last rank alternates F and I and ends with its W passes) and,
/// for M >= 2N - 1, no idle slot inside any rank's span in unit time (tested
/// in `ScheduleGeneratorTimingTests`). The order is all we keep; the
/// simulator times it with real costs.
///
/// Split by definition; `twoBP` concatenates the closing W run into `W*`.
enum ZeroBubbleH2Generator: ScheduleGenerator {
    /// Micro-batches a rank may hold (forward done, weight gradient not yet).
    static func inFlightLimit(ranks: Int) -> Int { 2 * ranks - 1 }

    static func actions(rank: Int, shape: PipelineShape) -> [Action] {
        allActions(ranks: shape.ranks, microBatches: shape.microBatches)[rank]
    }

    /// The whole pipeline's unit-time list schedule; rank r's order is entry r.
    static func allActions(ranks: Int, microBatches: Int) -> [[Action]] {
        let chunk = 0
        let lastRank = ranks - 1
        let limit = inFlightLimit(ranks: ranks)
        /// The slot at whose start each result exists, per rank and micro-batch.
        var forwardReady = Array(repeating: [Int?](repeating: nil, count: microBatches), count: ranks)
        var inputGradientReady = forwardReady
        var nextForward = [Int](repeating: 0, count: ranks)
        var nextBackward = [Int](repeating: 0, count: ranks)
        var nextWeight = [Int](repeating: 0, count: ranks)
        var actions = [[Action]](repeating: [], count: ranks)

        var slot = 0
        while nextWeight.contains(where: { $0 < microBatches }) {
            var chosen = [Action?](repeating: nil, count: ranks)
            for rank in 0..<ranks {
                func arrived(_ ready: Int?) -> Bool { ready.map { $0 <= slot } ?? false }
                let backward = nextBackward[rank]
                let forward = nextForward[rank]
                if backward < forward,
                   rank == lastRank || arrived(inputGradientReady[rank + 1][backward]) {
                    chosen[rank] = Action(.backwardInput, backward, chunk: chunk)
                } else if forward < microBatches, forward - nextWeight[rank] < limit,
                          rank == 0 || arrived(forwardReady[rank - 1][forward]) {
                    chosen[rank] = Action(.forward, forward, chunk: chunk)
                } else if nextWeight[rank] < backward {
                    chosen[rank] = Action(.backwardWeight, nextWeight[rank], chunk: chunk)
                }
            }
            for rank in 0..<ranks {
                guard let action = chosen[rank], let microBatch = action.microBatch else { continue }
                actions[rank].append(action)
                switch action.kind {
                case .forward:
                    forwardReady[rank][microBatch] = slot + 1
                    nextForward[rank] += 1
                case .backwardInput:
                    inputGradientReady[rank][microBatch] = slot + 1
                    nextBackward[rank] += 1
                case .backwardWeight:
                    nextWeight[rank] += 1
                case .backwardFull, .sendActivation, .receiveActivation, .sendGradient, .receiveGradient:
                    preconditionFailure("ZB-H2 plans only F, I and W")
                }
            }
            slot += 1
            /// Every slot some rank progresses; 3 passes per micro-batch per rank bound the loop.
            precondition(slot <= 3 * microBatches * ranks + ranks, "ZB-H2 list schedule made no progress")
        }
        return actions
    }
}
