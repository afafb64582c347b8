/// Megatron's interleaved 1F1B (Narayanan et al., SC'21, arXiv 2104.04473;
/// PyTorch's `ScheduleInterleaved1F1B`): rank r holds chunks 0..<v, chunk c
/// being virtual stage `c * N + r` (`Schedule.loopedPlacement`).
///
/// Forwards go round the chunks in groups of N micro-batches (chunk 0 for
/// micro-batches 0..<N, chunk 1 for the same, ..., then chunk 0 for N..<2N);
/// backwards take the chunks in reverse. Rank r warms up with
/// `(v - 1) * N + 2 * (N - 1 - r)` forwards (capped at v * M), then alternates
/// one forward and one backward, then drains the remaining backwards.
/// M must be a multiple of N, as in Megatron; the request checks it.
///
/// With 2BP: as 1F1B, per chunk: each backward is an I, each cool-down I is
/// followed by the oldest deferred W (whatever its chunk), and the rest runs
/// at the end as one `W*` per chunk.
enum InterleavedGenerator: ScheduleGenerator {
    static func actions(rank: Int, shape: PipelineShape) -> [Action] {
        let ranks = shape.ranks
        let chunks = shape.chunksPerRank
        let passesPerKind = chunks * shape.microBatches
        /// Each hop from the last rank adds a forward and a backward of delay.
        let hopsFromLastRank = ranks - 1 - rank
        let warmup = min((chunks - 1) * ranks + 2 * hopsFromLastRank, passesPerKind)
        let steady = passesPerKind - warmup

        /// The k-th pass of a kind on this rank: which micro-batch, and which
        /// chunk counting up (forward) or down (backward).
        func microBatch(_ pass: Int) -> Int { (pass / (ranks * chunks)) * ranks + pass % ranks }
        func forwardChunk(_ pass: Int) -> Int { (pass / ranks) % chunks }
        func backwardChunk(_ pass: Int) -> Int { chunks - 1 - forwardChunk(pass) }

        func forward(_ pass: Int) -> PlannedSlot {
            .forward(microBatch: microBatch(pass), chunk: forwardChunk(pass))
        }
        func backward(_ pass: Int, inCooldown: Bool) -> PlannedSlot {
            .backward(microBatch: microBatch(pass), chunk: backwardChunk(pass), inCooldown: inCooldown)
        }

        var slots = (0..<warmup).map(forward)
        for pass in 0..<steady {
            slots.append(forward(warmup + pass))
            slots.append(backward(pass, inCooldown: false))
        }
        for pass in steady..<passesPerKind {
            slots.append(backward(pass, inCooldown: true))
        }
        return BackwardStyle.render(slots, twoBP: shape.twoBP)
    }
}
