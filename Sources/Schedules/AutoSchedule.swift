/// Builds a 2BP schedule for given costs and memory, Zero Bubble style:
/// several greedy passes that put p2 (`W`) work into the bubbles, each timed
/// by the simulator, the fastest one that fits the memory limit kept.
///
/// The result has one chunk per rank (stage r on rank r) and only F, I and W
/// actions (a trailing `W*` where concatenating the leftover p2 is faster).
public enum AutoSchedule {
    public struct Result: Sendable {
        public let schedule: Schedule
        /// The simulated timeline of `schedule` under the costs it was built for.
        public let timeline: Timeline
        /// How many candidate schedules were simulated to pick this one.
        public let candidatesTried: Int
    }

    /// - Parameter memoryLimit: bytes per rank, static bytes included; nil
    ///   uses `costs.memoryLimit`, and no limit when that is nil too.
    public static func build(ranks: Int, microBatches: Int, costs: CostModel, memoryLimit: Int? = nil) throws -> Result {
        guard ranks > 0, microBatches > 0 else {
            throw ScheduleError(.invalidRequest, "the auto scheduler needs at least one rank and one micro-batch, got \(ranks) and \(microBatches)")
        }
        try ScheduleRequest.checkMicroBatchBound(microBatches)
        try costs.check(virtualStages: ranks)
        let limit = memoryLimit ?? costs.memoryLimit
        let budget = try (0..<ranks).map { rank -> Int? in
            guard let limit else { return nil }
            let stage = costs.stage(rank)
            let smallest = stage.staticBytes + stage.activationBytes + max(0, stage.stashBytes - stage.activationBytes)
            guard smallest <= limit else {
                throw ScheduleError(.invalidRequest, "memory limit \(RenderStyle.bytes(limit)) per rank is below what rank \(rank) needs for one micro-batch in flight (\(RenderStyle.bytes(smallest)): static \(RenderStyle.bytes(stage.staticBytes)), activations \(RenderStyle.bytes(stage.activationBytes)), stash \(RenderStyle.bytes(stage.stashBytes)))")
            }
            return limit - stage.staticBytes
        }

        var best: (schedule: Schedule, timeline: Timeline, peak: Int)?
        var tried = 0
        for policy in policies(ranks: ranks, microBatches: microBatches) {
            var greedy = AutoScheduleGreedy(ranks: ranks, microBatches: microBatches, costs: costs, budget: budget, policy: policy)
            guard let actions = greedy.run() else { continue }
            let schedule = Schedule(name: "auto", ranks: ranks, chunksPerRank: 1, microBatches: microBatches,
                                    placement: Schedule.loopedPlacement(ranks: ranks, chunksPerRank: 1), actions: actions)
            let timeline = try Simulator.simulate(schedule, costs: costs)
            tried += 1
            let peak = timeline.peakMemory?.max() ?? 0
            if let limit, peak > limit { continue }
            if let current = best, (current.timeline.stepTime, current.peak) <= (timeline.stepTime, peak) { continue }
            best = (schedule, timeline, peak)
        }
        guard let best else {
            throw ScheduleError(.invalidRequest, "no schedule of \(microBatches) micro-batches on \(ranks) ranks fits a memory limit of \(limit.map(RenderStyle.bytes) ?? "none") per rank")
        }
        return Result(schedule: best.schedule, timeline: best.timeline, candidatesTried: tried)
    }

    /// The candidates: in-flight depths from 1F1B's (p - r) through deeper
    /// warm-ups (up to Zero Bubble H2's 2(p - r) - 1 and beyond, up to
    /// unlimited), each with every W-filling rule and both ways to end the step.
    static func policies(ranks: Int, microBatches: Int) -> [AutoSchedulePolicy] {
        var depths: [[Int]] = []
        for extra in 0..<ranks {
            depths.append((0..<ranks).map { rank in min(microBatches, ranks - rank + extra) })
        }
        depths.append((0..<ranks).map { rank in min(microBatches, 2 * (ranks - rank) - 1) })
        depths.append(Array(repeating: microBatches, count: ranks))
        var seen = Set<[Int]>()
        let distinct = depths.filter { seen.insert($0).inserted }
        return distinct.flatMap { inFlight in
            AutoSchedulePolicy.WeightFill.allCases.flatMap { fill in
                [true, false].map { AutoSchedulePolicy(inFlight: inFlight, fill: fill, concatenateTail: $0) }
            }
        }
    }
}
