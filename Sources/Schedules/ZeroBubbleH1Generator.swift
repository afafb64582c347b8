/// Zero Bubble's handcrafted ZB-H1 (Qi et al., "Zero Bubble Pipeline
/// Parallelism", arXiv 2401.10241, section 2.1; the order of PyTorch's
/// `ScheduleInterleavedZeroBubble` with one stage per rank).
///
/// 1F1B's shape with the backward split: rank r warms up with
/// `min(N - 1 - r, M)` forwards like 1F1B, then runs F, I pairs, and starts
/// following each I with the W of the oldest micro-batch only after its first
/// r pairs. Delaying W by r on rank r lets every rank's first I start as early
/// as the I chain allows, and the delayed W passes fill the tail, where 1F1B
/// idles: about a third of 1F1B's bubble at the same peak memory (rank r holds
/// at most N micro-batches: N - 1 - r warm-up forwards, the one of its current
/// pair, and r deferred W).
/// In the cool-down each I is followed by one W; the remaining W close the step.
///
/// Split by definition; `twoBP` concatenates the closing W run into `W*`.
enum ZeroBubbleH1Generator: ScheduleGenerator {
    static func actions(rank: Int, shape: PipelineShape) -> [Action] {
        let chunk = 0
        let microBatches = shape.microBatches
        let warmup = min(shape.ranks - 1 - rank, microBatches)
        let steady = microBatches - warmup
        /// Steady-state pairs that run without a W before W passes start.
        let delayedWeightPasses = rank
        var actions: [Action] = (0..<warmup).map { Action(.forward, $0, chunk: chunk) }
        var nextBackward = 0
        var nextWeight = 0
        func backwardThenMaybeWeight(pairIndex: Int) {
            actions.append(Action(.backwardInput, nextBackward, chunk: chunk))
            nextBackward += 1
            if pairIndex >= delayedWeightPasses {
                actions.append(Action(.backwardWeight, nextWeight, chunk: chunk))
                nextWeight += 1
            }
        }
        for pair in 0..<steady {
            actions.append(Action(.forward, warmup + pair, chunk: chunk))
            backwardThenMaybeWeight(pairIndex: pair)
        }
        for cooldownIndex in 0..<warmup {
            backwardThenMaybeWeight(pairIndex: steady + cooldownIndex)
        }
        while nextWeight < nextBackward {
            actions.append(Action(.backwardWeight, nextWeight, chunk: chunk))
            nextWeight += 1
        }
        return actions
    }
}
