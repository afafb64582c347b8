import Foundation
import Layers
import Models
import Pipeline
import Schedules
import Tensor

/// One pipeline rank's share of a run: its model chunks, their optimizer, and
/// the runner that executes its part of the schedule.
///
/// Everything is allocated with the rank's `MemoryMeter` current, so the
/// meter's peak covers weights, gradients, optimizer moments, activations and
/// the p2 stash: the figure `peak_bytes` reports.
public final class StageWorker {
    public let plan: PipelinePlan
    public let chunks: [LlamaChunk]
    public let optimizer: AdamW
    public let runner: StageRunner
    public let meter: MemoryMeter

    public var rank: Int { runner.rank }
    public var transport: Transport { runner.transport }
    public var parameters: [Parameter] { optimizer.parameters }

    public init(plan: PipelinePlan, config: LlamaConfig, seed: UInt64, transport: Transport,
                optimizer configuration: AdamW.Configuration = .init()) throws {
        let rank = transport.rank
        let meter = MemoryMeter(name: "rank \(rank)")
        (chunks, optimizer) = try MemoryMeter.withCurrent(meter) {
            let chunks = try plan.unitRanges(rank: rank).map { try LlamaChunk(config: config, units: $0, seed: seed) }
            return (chunks, try AdamW(parameters: chunks.flatMap(\.parameters), configuration: configuration))
        }
        self.plan = plan
        self.meter = meter
        runner = StageRunner(rank: rank, schedule: plan.schedule, chunks: chunks, transport: transport,
                             hiddenSize: config.hiddenSize, meter: meter)
    }

    /// Zeroes the gradients, then runs this rank's forwards and backwards of one
    /// step over `batch` split into the schedule's micro-batches.
    public func computeGradients(_ batch: TokenBatch, clockOrigin: UInt64) throws -> StageRunner.StepResult {
        for parameter in parameters { parameter.zeroGradient() }
        return try runner.runStep(microBatches: batch.split(into: plan.schedule.microBatches), clockOrigin: clockOrigin)
    }
}
