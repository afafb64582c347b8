import Models
import Schedules
import Tensor

/// A pipeline ready to run: the validated, lowered schedule and which model units each virtual stage holds.
public struct PipelinePlan: Sendable {
    /// Lowered (sends and receives inserted) and validated.
    public let schedule: Schedule
    /// unitRanges[virtualStage] = the model units (embedding, blocks, head) of that stage.
    public let unitRanges: [Range<Int>]

    /// Builds and checks a schedule for a model whose units cost `unitCosts`, before anything runs.
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
                throw TwoBPError("\(request.kind) needs \(schedule.virtualStages) model stages (\(schedule.ranks) ranks × \(schedule.chunksPerRank) chunks) but the model has only \(blocks) transformer layers")
            }
            throw TwoBPError("\(schedule.ranks) pipeline stages need at least \(schedule.ranks) transformer layers; the model has \(blocks)")
        }
        self.schedule = schedule
        unitRanges = try Partition.balanced(unitCosts: unitCosts, stages: schedule.virtualStages)
    }

    /// The units held by each local chunk of `rank`, in chunk order.
    public func unitRanges(rank: Int) -> [Range<Int>] {
        (0..<schedule.chunksPerRank).map { unitRanges[schedule.stage(rank: rank, chunk: $0)] }
    }
}

extension TokenBatch {
    /// Splits the batch's sequences into `count` micro-batches of as equal a size as possible.
    public func split(into count: Int) throws -> [TokenBatch] {
        guard count >= 1, count <= batchSize else {
            throw TwoBPError("cannot split a batch of \(batchSize) sequences into \(count) micro-batches; use a batch size of at least \(count)")
        }
        var start = 0
        return (0..<count).map { index in
            let size = batchSize / count + (index < batchSize % count ? 1 : 0)
            defer { start += size }
            return sequences(start..<start + size)
        }
    }
}
