@testable import Schedules

/// Shapes every generator is checked on: ranks 1...4 and 8, each with several
/// micro-batch counts, among them counts that are not multiples of the ranks
/// and counts below the ranks.
let scheduleRankCounts = [1, 2, 3, 4, 8]

func scheduleMicroBatchCounts(ranks: Int) -> [Int] {
    Array(Set([1, 2, 3, ranks - 1, ranks, ranks + 1, 2 * ranks - 1, 2 * ranks, 3 * ranks + 1]).filter { $0 >= 1 }).sorted()
}

/// Rows of the compact text form, one rank a line.
func scheduleRows(_ schedule: Schedule) -> [String] {
    schedule.actions.map { $0.map(\.description).joined(separator: " ") }
}

/// Unit-cost timing (T_F = T_I = T_W = 1, T_B = 2, `W*` = one unit per
/// micro-batch it covers), each action as soon as its rank is free and its
/// cross-rank input exists: enough to compare schedule shapes in tests
/// without the simulator.
struct ScheduleUnitTiming {
    /// First start and last end per rank, and its busy time.
    var start: [Int]
    var end: [Int]
    var busy: [Int]
    var stepTime: Int { end.max() ?? 0 }
    /// Idle slots between a rank's first and last action.
    func idleInsideSpan(rank: Int) -> Int { end[rank] - start[rank] - busy[rank] }
}

func scheduleUnitTiming(_ schedule: Schedule) -> ScheduleUnitTiming {
    let compute = schedule.withoutCommunication()
    let map = StageMap(compute)
    struct Key: Hashable { let stage: Int, microBatch: Int }
    var forwardEnd: [Key: Int] = [:]
    var backwardEnd: [Key: Int] = [:]
    var next = [Int](repeating: 0, count: compute.ranks)
    var free = [Int](repeating: 0, count: compute.ranks)
    var start = [Int?](repeating: nil, count: compute.ranks)
    var busy = [Int](repeating: 0, count: compute.ranks)
    var pending = [[Int]](repeating: [Int](repeating: 0, count: compute.chunksPerRank), count: compute.ranks)
    var progressed = true
    while progressed {
        progressed = false
        for rank in 0..<compute.ranks {
            while next[rank] < compute.actions[rank].count {
                let action = compute.actions[rank][next[rank]]
                let stage = compute.placement[rank][action.chunk]
                let neighbors = map.neighbors(rank: rank, chunk: action.chunk)
                /// When the cross-rank input exists; nil while it does not.
                func inputReady() -> Int? {
                    switch action.kind {
                    case .forward:
                        guard let previous = neighbors.previous else { return 0 }
                        return forwardEnd[Key(stage: previous.stage, microBatch: action.microBatch!)]
                    case .backwardInput, .backwardFull:
                        guard let nextStage = neighbors.next else { return 0 }
                        return backwardEnd[Key(stage: nextStage.stage, microBatch: action.microBatch!)]
                    case .backwardWeight, .sendActivation, .receiveActivation, .sendGradient, .receiveGradient:
                        return 0
                    }
                }
                guard let input = inputReady() else { break }
                let ready = max(free[rank], input)
                let cost: Int
                switch action.kind {
                case .forward, .backwardInput: cost = 1
                case .backwardFull: cost = 2
                case .backwardWeight: cost = action.microBatch == nil ? pending[rank][action.chunk] : 1
                case .sendActivation, .receiveActivation, .sendGradient, .receiveGradient: cost = 0
                }
                let end = ready + cost
                switch action.kind {
                case .forward: forwardEnd[Key(stage: stage, microBatch: action.microBatch!)] = end
                case .backwardInput:
                    backwardEnd[Key(stage: stage, microBatch: action.microBatch!)] = end
                    pending[rank][action.chunk] += 1
                case .backwardFull: backwardEnd[Key(stage: stage, microBatch: action.microBatch!)] = end
                case .backwardWeight:
                    pending[rank][action.chunk] = action.microBatch == nil ? 0 : pending[rank][action.chunk] - 1
                case .sendActivation, .receiveActivation, .sendGradient, .receiveGradient: break
                }
                if start[rank] == nil { start[rank] = ready }
                free[rank] = end
                busy[rank] += cost
                next[rank] += 1
                progressed = true
            }
        }
    }
    precondition(next.enumerated().allSatisfy { $0.element == compute.actions[$0.offset].count }, "unit timing stuck: validate first")
    return ScheduleUnitTiming(start: start.map { $0 ?? 0 }, end: free, busy: busy)
}
