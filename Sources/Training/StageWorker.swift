import Foundation
import Layers
import Models
import Pipeline
import Schedules
import Tensor

/// One pipeline rank's share of a run: its model chunks, their optimizer, the runner that executes
/// its part of the schedule, and the tied parameters it shares with other ranks.
///
/// Everything is allocated with the rank's `MemoryMeter` current, so the meter's peak covers
/// weights, gradients, optimizer moments, activations and the p2 stash: the figure `peak_bytes`
/// reports.
public final class StageWorker {
    public let model: any ModelConfig
    public let plan: PipelinePlan
    public let chunks: [ModelChunk]
    public let optimizer: Optimizer
    public let runner: StageRunner
    public let meter: MemoryMeter
    let ties: TiedGradients

    public var rank: Int { runner.rank }
    public var transport: Transport { runner.transport }
    /// The rank's parameters, a tied one once.
    public var parameters: [Parameter] { optimizer.parameters }
    /// The rank's buffers (BatchNorm statistics), in chunk order.
    public var buffers: [Buffer] { chunks.flatMap(\.buffers) }
    /// The parameters this rank answers for in norms, checkpoints and gathers: tied copies
    /// another rank owns are left out.
    public var ownedParameters: [Parameter] { ties.owned(parameters) }

    public init(plan: PipelinePlan, model: any ModelConfig, seed: UInt64, transport: Transport,
                optimizer configuration: OptimizerConfiguration = .adamw(.init())) throws {
        let rank = transport.rank
        let meter = MemoryMeter(name: "rank \(rank)")
        let shared = SharedParameters()
        (chunks, optimizer) = try MemoryMeter.withCurrent(meter) {
            let chunks = try plan.unitRanges(rank: rank).map { try model.makeChunk(units: $0, seed: seed, shared: shared) }
            // Chunks of this rank holding one tied unit list the same parameter; the optimizer takes it once.
            var seen = Set<String>()
            let parameters = chunks.flatMap(\.parameters).filter { seen.insert($0.name).inserted }
            return (chunks, try configuration.make(parameters: parameters))
        }
        self.model = model
        self.plan = plan
        self.meter = meter
        ties = TiedGradients(model: model, plan: plan, rank: rank, parameters: optimizer.parameters)
        runner = StageRunner(rank: rank, schedule: plan.schedule, chunks: chunks, transport: transport, meter: meter)
    }

    /// Zeroes the gradients, runs this rank's forwards and backwards of one step over `batch`
    /// split into the schedule's micro-batches, then sums the tied parameters' gradients across ranks.
    public func computeGradients(_ batch: any MicroBatch, clockOrigin: UInt64) throws -> StageRunner.StepResult {
        for parameter in parameters { parameter.zeroGradient() }
        let result = try runner.runStep(microBatches: batch.split(into: plan.schedule.microBatches), clockOrigin: clockOrigin)
        try MemoryMeter.withCurrent(meter) { try ties.synchronize(over: transport) }
        return result
    }

    /// Σ g² over the parameters this rank answers for: its share of the global gradient norm.
    public func squaredGradientNorm() -> Double {
        GradientNorm.squaredSum(ownedParameters)
    }
}
