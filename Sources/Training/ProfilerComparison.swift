import Foundation
import Models
import Pipeline
import Schedules
import Tensor

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
    public static func run(model: LlamaConfig, request: ScheduleRequest, batchSize: Int, sequenceLength: Int,
                           costs: CostModel, steps: Int = 3, seed: UInt64 = 1234) throws -> Result {
        guard steps >= 1 else { throw TwoBPError("the comparison needs at least one measured step") }
        let plan = try PipelinePlan(request: request, unitCosts: model.unitCosts(sequenceLength: sequenceLength))
        let simulated: Timeline
        do {
            simulated = try Simulator.simulate(plan.schedule, costs: costs)
        } catch let error as ScheduleError {
            throw TwoBPError("simulating \(plan.schedule.name) with the profiled costs: \(error.message)")
        }
        let batch = PipelineVerification.randomBatch(vocabularySize: model.vocabSize, batchSize: batchSize,
                                                     sequenceLength: sequenceLength, seed: seed)
        _ = try batch.split(into: plan.schedule.microBatches)
        let origin = DispatchTime.now().uptimeNanoseconds
        let perRank = try RankThreads.run(transports: ThreadTransport.group(ranks: request.ranks)) { transport -> [(events: [TimelineEvent], peak: Int)] in
            let worker = try StageWorker(plan: plan, config: model, seed: seed, transport: transport)
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
        return Result(
            schedule: plan.schedule.name, measuredStepTime: measured, simulatedStepTime: simulated.stepTime,
            relativeError: measured > 0 ? (simulated.stepTime - measured) / measured : 0,
            measuredStepTimes: measuredSteps.map(\.timeline.stepTime),
            measuredBubbleRatio: (0..<request.ranks).map(median.timeline.bubbleRatio(rank:)),
            simulatedBubbleRatio: (0..<request.ranks).map(simulated.bubbleRatio(rank:)),
            measuredPeakMemory: median.peaks, simulatedPeakMemory: simulated.peakMemory ?? [],
            measured: median.timeline, simulated: simulated)
    }
}
