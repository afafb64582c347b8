import Models
import Schedules
import Tensor

/// A pipeline ready to run: the validated, lowered schedule and which model units each virtual stage holds.
public struct PipelinePlan: Sendable {
    /// Lowered (sends and receives inserted) and validated.
    public let schedule: Schedule
    /// unitRanges[virtualStage] = the model units (embedding, blocks, head) of that stage.
    public let unitRanges: [Range<Int>]

    /// Builds and checks a schedule for a model whose units cost `unitCosts` (forward FLOPs, for
    /// balancing), before anything runs.
    public init(request: ScheduleRequest, unitCosts: [Double]) throws {
        let schedule: Schedule
        do {
            schedule = try Schedule.make(
                kind: request.kind, ranks: request.ranks, microBatches: request.microBatches,
                twoBP: request.twoBP, chunksPerRank: request.chunksPerRank
            ).lowered()
            try ScheduleValidator.validate(schedule)
        } catch let error as ScheduleError {
            throw TwoBPError(error.message)
        }
        let blocks = unitCosts.count - 2
        guard schedule.virtualStages <= blocks else {
            guard schedule.chunksPerRank == 1 else {
                throw TwoBPError("\(request.kind) needs \(schedule.virtualStages) model stages (\(schedule.ranks) ranks × \(schedule.chunksPerRank) chunks) but the model has only \(blocks) blocks")
            }
            throw TwoBPError("\(schedule.ranks) pipeline stages need at least \(schedule.ranks) blocks; the model has \(blocks)")
        }
        self.schedule = schedule
        unitRanges = try Partition.balanced(unitCosts: unitCosts, stages: schedule.virtualStages)
    }

    /// The units held by each local chunk of `rank`, in chunk order.
    public func unitRanges(rank: Int) -> [Range<Int>] {
        (0..<schedule.chunksPerRank).map { unitRanges[schedule.stage(rank: rank, chunk: $0)] }
    }
}

extension PipelinePlan {
    /// The plan for `model` on samples of `sampleLength`, stages balanced by forward FLOPs.
    public init(request: ScheduleRequest, model: any ModelConfig, sampleLength: Int) throws {
        try self.init(request: request, unitCosts: model.unitCosts(sampleLength: sampleLength).map(\.forward))
    }

    /// The ranks whose stages hold any of `units`, ascending.
    public func ranks(holding units: [Int]) -> [Int] {
        let stages = unitRanges.indices.filter { stage in units.contains { unitRanges[stage].contains($0) } }
        return Set(stages.map { schedule.location(ofStage: $0).rank }).sorted()
    }
}
