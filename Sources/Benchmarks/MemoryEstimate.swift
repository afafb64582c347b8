import Foundation
import Models
import Schedules
import Tensor

/// What a command will allocate, estimated before it allocates anything, so a configuration too
/// large for the machine is refused with the figure instead of aborting in `malloc` or being
/// killed by the kernel minutes later.
///
/// Training: the simulator's peak per rank (`Simulator` over `AnalyticCosts` in fp32: weights,
/// gradients and AdamW's two moments at 16 bytes per parameter, the family's activations and 2BP
/// stash at 4 bytes per element for the chosen schedule's micro-batches in flight), summed over
/// the ranks this process runs, plus rank 0's whole-model copy for validation. Inference: the
/// weights (4 bytes per parameter) and one batch's activations.
public struct MemoryEstimate: Sendable {
    /// Predicted peak bytes of each rank.
    public var perRank: [Int]
    /// Bytes this process needs: every rank it runs, and what it keeps besides.
    public var processBytes: Int
    /// What the estimate covers, for the message.
    public var description: String

    /// A training step of `request` over `model` with `batchSize` samples; `ranksInProcess`
    /// is every rank with threads, one under MPI.
    public static func training(model: any ModelConfig, request: ScheduleRequest, batchSize: Int, sampleLength: Int,
                                allRanksInProcess: Bool, keepsWholeModel: Bool) throws -> MemoryEstimate {
        let schedule = try request.make()
        let microBatch = (batchSize + schedule.microBatches - 1) / schedule.microBatches
        let settings = AnalyticCostSettings(flopsRate: 1, microBatchSize: microBatch, sampleLength: sampleLength,
                                            activationElementBytes: 4, staticBytesPerParameter: 16)
        let costs = try AnalyticCosts.costModel(model, settings: settings, virtualStages: schedule.virtualStages)
        let peaks = try Simulator.simulate(schedule, costs: costs).peakMemory ?? []
        let parameters = model.unitCosts(sampleLength: sampleLength).reduce(0.0) { $0 + Double($1.parameters) }
        let wholeModel = keepsWholeModel ? 4 * parameters : 0
        let ranks = allRanksInProcess ? Double(peaks.reduce(0, +)) : Double(peaks.max() ?? 0)
        return MemoryEstimate(perRank: peaks, processBytes: clamp(ranks + wholeModel),
                              description: "\(schedule.name) on \(schedule.ranks) rank\(schedule.ranks == 1 ? "" : "s"), "
                                  + "micro-batches of \(microBatch) × \(sampleLength): weights, gradients, AdamW state, activations and stash")
    }

    /// Inference over `model`: its weights and the activations of `batchSize` samples.
    public static func inference(model: any ModelConfig, batchSize: Int, sampleLength: Int) -> MemoryEstimate {
        let units = model.unitCosts(sampleLength: sampleLength)
        let weights = units.reduce(0.0) { $0 + 4 * Double($1.parameters) }
        let activations = units.reduce(0.0) { $0 + 4 * $1.activationElements * Double(batchSize) }
        let total = clamp(weights + activations)
        return MemoryEstimate(perRank: [total], processBytes: total,
                              description: "weights and the activations of \(batchSize) × \(sampleLength)")
    }

    /// Refuses when the estimate exceeds `limit` (`--memory-limit`) or, without one, the memory
    /// the machine has available now.
    public func check(limit: Int?, command: String) throws {
        let available = limit ?? SystemMemory.availableBytes
        guard let available, processBytes > available else { return }
        let against = limit != nil ? "--memory-limit \(RenderStyle.bytes(available))" : "the \(RenderStyle.bytes(available)) of memory available here"
        throw TwoBPError("\(command) would need about \(RenderStyle.bytes(processBytes)) (\(description)), more than \(against); "
            + "use a smaller model, batch or sequence length, or more stages")
    }

    /// Estimates of absurd configurations exceed `Int`; they are refused all the same.
    private static func clamp(_ bytes: Double) -> Int {
        bytes.isFinite && bytes < 9e18 ? Int(bytes) : Int(9e18)
    }
}
