/// 1F1B, also PipeDream-Flush (Narayanan et al., 2021), the order of Megatron's
/// and PyTorch's `Schedule1F1B`:
///
/// - warm-up: rank r runs `min(N - 1 - r, M)` forwards, so the last rank
///   starts backwards at once and rank 0 holds at most N micro-batches;
/// - steady state: one forward, then the backward of the oldest micro-batch;
/// - cool-down: the remaining backwards, which on rank r are separated by the
///   wait for the next gradient from downstream.
///
/// With 2BP (the 2BP paper's 1F1B-1 / 1F1B-2): each backward is an I; each
/// cool-down I is followed by the W of the oldest deferred micro-batch, which
/// fills the wait; the rest runs at the end as one `W*`. For N = 4, M = 4,
/// rank 0 reads `F0 F1 F2 F3 I0 I1 W0 I2 W1 I3 W2 W*`.
enum OneFOneBGenerator: ScheduleGenerator {
    static func actions(rank: Int, shape: PipelineShape) -> [Action] {
        let chunk = 0
        let microBatches = shape.microBatches
        let warmup = min(shape.ranks - 1 - rank, microBatches)
        let steady = microBatches - warmup
        var slots: [PlannedSlot] = (0..<warmup).map { .forward(microBatch: $0, chunk: chunk) }
        for step in 0..<steady {
            slots.append(.forward(microBatch: warmup + step, chunk: chunk))
            slots.append(.backward(microBatch: step, chunk: chunk, inCooldown: false))
        }
        for microBatch in steady..<microBatches {
            slots.append(.backward(microBatch: microBatch, chunk: chunk, inCooldown: true))
        }
        return BackwardStyle.render(slots, twoBP: shape.twoBP)
    }
}
