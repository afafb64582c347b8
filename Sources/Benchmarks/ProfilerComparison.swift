import Foundation
import Models
import Pipeline
import Schedules
import Tensor
import Training

/// Measured against simulated: runs a real thread pipeline (one thread per
/// rank, one BLAS thread each) for a schedule, simulates the same lowered
/// schedule from a profiled cost model, and puts the two timelines side by side.
public enum ProfilerComparison {
    public struct Result: Codable, Sendable {
        public var schedule: String
        /// Median over the measured steps (the first step is a warm-up and is dropped).
        public var measuredStepTime: Double
        public var simulatedStepTime: Double
        /// (simulated - measured) / measured.
        public var relativeError: Double
        /// The same schedule simulated with each action's median duration taken
        /// from the measured run itself: checks the simulator's model of
        /// dependencies and bubbles apart from drift between the profile and
        /// the run (other load on the cores, caches).
        public var inRunSimulatedStepTime: Double
        public var inRunRelativeError: Double
        public var measuredStepTimes: [Double]
        public var measuredBubbleRatio: [Double]
        public var simulatedBubbleRatio: [Double]
        /// Peak bytes of each rank's meter during the median step. With the thread
        /// transport a sent activation stays charged to its producer until freed.
        public var measuredPeakMemory: [Int]
        public var simulatedPeakMemory: [Int]
        /// The median step, its times from that step's first start.
        public var measured: Timeline
        public var simulated: Timeline
    }

    /// - Parameter steps: measured steps after one warm-up step.
    public static func run(model: any ModelConfig, request: ScheduleRequest, batchSize: Int, sampleLength: Int,
                           costs: CostModel, steps: Int = 3, seed: UInt64 = 1234) throws -> Result {
        guard steps >= 1 else { throw TwoBPError("the comparison needs at least one measured step") }
        let plan = try PipelinePlan(request: request, model: model, sampleLength: sampleLength)
        let simulated: Timeline
        do {
            simulated = try Simulator.simulate(plan.schedule, costs: costs)
        } catch let error as ScheduleError {
            throw TwoBPError("simulating \(plan.schedule.name) with the profiled costs: \(error.message)")
        }
        let batch = model.randomBatch(samples: batchSize, sampleLength: sampleLength, seed: seed)
        _ = try batch.split(into: plan.schedule.microBatches)
        let origin = DispatchTime.now().uptimeNanoseconds
        let perRank = try RankThreads.run(transports: ThreadTransport.group(ranks: request.ranks)) { transport -> [(events: [TimelineEvent], peak: Int)] in
            let worker = try StageWorker(plan: plan, model: model, seed: seed, transport: transport)
            var steps_: [(events: [TimelineEvent], peak: Int)] = []
            for _ in 0...steps {
                _ = try transport.allReduceSum([0])  // every rank starts the step together
                worker.meter.resetPeak()
                let result = try worker.computeGradients(batch, clockOrigin: origin)
                steps_.append((result.events, worker.meter.peakBytes))
            }
            return steps_
        }
        let measuredSteps = (1...steps).map { step -> (timeline: Timeline, peaks: [Int]) in
            let events = perRank.flatMap { $0[step].events }
            let start = events.map(\.start).min() ?? 0
            let shifted = events.map { TimelineEvent(rank: $0.rank, action: $0.action, start: $0.start - start, end: $0.end - start) }
            let peaks = perRank.map { $0[step].peak }
            return (Timeline(ranks: request.ranks, events: shifted, peakMemory: peaks), peaks)
        }
        let ordered = measuredSteps.sorted { $0.timeline.stepTime < $1.timeline.stepTime }
        let median = ordered[ordered.count / 2]
        let measured = median.timeline.stepTime
        let inRun = try Simulator.simulate(plan.schedule, costs: inRunCosts(measuredSteps.map(\.timeline), schedule: plan.schedule, profiled: costs))
        return Result(
            schedule: plan.schedule.name, measuredStepTime: measured, simulatedStepTime: simulated.stepTime,
            relativeError: measured > 0 ? (simulated.stepTime - measured) / measured : 0,
            inRunSimulatedStepTime: inRun.stepTime,
            inRunRelativeError: measured > 0 ? (inRun.stepTime - measured) / measured : 0,
            measuredStepTimes: measuredSteps.map(\.timeline.stepTime),
            measuredBubbleRatio: (0..<request.ranks).map(median.timeline.bubbleRatio(rank:)),
            simulatedBubbleRatio: (0..<request.ranks).map(simulated.bubbleRatio(rank:)),
            measuredPeakMemory: median.peaks, simulatedPeakMemory: simulated.peakMemory ?? [],
            measured: median.timeline, simulated: simulated)
    }

    /// `profiled` with each stage's F, I, W (and W* of the k seen) replaced by the median
    /// measured duration; a fused B splits in the profile's I : W proportion.
    static func inRunCosts(_ timelines: [Timeline], schedule: Schedule, profiled: CostModel) -> CostModel {
        func median(_ values: [Double]) -> Double? {
            values.isEmpty ? nil : values.sorted()[values.count / 2]
        }
        var costs = profiled
        costs.stages = (0..<schedule.virtualStages).map { stage in
            var cost = profiled.stage(stage)
            let (rank, chunk) = schedule.location(ofStage: stage)
            let events = timelines.flatMap { $0.events }.filter { $0.rank == rank && $0.action.chunk == chunk }
            func durations(_ kind: ActionKind, all: Bool = false) -> [Double] {
                events.filter { $0.action.kind == kind && (all || $0.action.microBatch != nil) }.map(\.duration)
            }
            if let forward = median(durations(.forward)) { cost.forward = forward }
            if let input = median(durations(.backwardInput)) { cost.backwardInput = input }
            if let weight = median(durations(.backwardWeight)) { cost.backwardWeight = weight }
            if let full = median(durations(.backwardFull)) {
                let share = cost.backwardFull > 0 ? cost.backwardInput / cost.backwardFull : 0.5
                cost.backwardInput = full * share
                cost.backwardWeight = full * (1 - share)
            }
            let concatenated = events.filter { $0.action.kind == .backwardWeight && $0.action.microBatch == nil }.map(\.duration)
            if let whole = median(concatenated) {
                let k = schedule.actions[rank].enumerated().first { $0.element.kind == .backwardWeight && $0.element.microBatch == nil && $0.element.chunk == chunk }
                    .flatMap { schedule.weightPassCoverage(rank: rank)[$0.offset]?.count } ?? 0
                if k >= 1 {
                    var table = cost.concatenatedBackwardWeight ?? (1...k).map { profiled.backwardWeightTime(stage: stage, microBatches: $0) }
                    if table.count < k { table += (table.count + 1...k).map { profiled.backwardWeightTime(stage: stage, microBatches: $0) } }
                    table[k - 1] = whole
                    cost.concatenatedBackwardWeight = table
                }
            }
            return cost
        }
        return costs
    }
}
