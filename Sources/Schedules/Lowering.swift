/// Lowering: the schedule-to-schedule pass that adds the communication a
/// multi-rank run needs, so that a runner executes one flat list per rank.
///
/// Conventions (what `chunk` and `microBatch` of a communication action mean,
/// always from the point of view of the rank that runs it):
/// - `SEND_F m` on chunk c: send the output of F m of chunk c to the rank
///   holding the next virtual stage.
/// - `RECV_F m` on chunk c: receive the input of F m of chunk c from the rank
///   holding the previous virtual stage.
/// - `SEND_B m` on chunk c: send the input gradient made by I m (or B m) of
///   chunk c to the rank holding the previous virtual stage.
/// - `RECV_B m` on chunk c: receive the output gradient that I m (or B m) of
///   chunk c needs from the rank holding the next virtual stage.
/// Between two stages on the same rank (zb-v's turn on the last rank) nothing
/// is sent: the tensor stays in memory.
///
/// Placement of the inserted actions: each receive directly before its
/// consumer, each send directly after its producer. Sends never block and
/// receives block (as `Transport` promises), so a send right after its
/// producer is the earliest the data can leave. For the plain schedules the
/// gradient leaves only after the fused p1 + p2 (B), which is exactly why
/// plain is slower than 2BP, where it leaves after I.
extension Schedule {
    /// True when any rank has a send or receive.
    public var isLowered: Bool {
        actions.contains { $0.contains { $0.kind.isCommunication } }
    }

    /// This schedule with the sends and receives inserted; communication
    /// already present is first stripped, so lowering twice changes nothing.
    public func lowered() -> Schedule {
        let map = StageMap(self)
        var result = withoutCommunication()
        for rank in 0..<ranks {
            var lowered: [Action] = []
            for action in result.actions[rank] {
                let neighbors = map.neighbors(rank: rank, chunk: action.chunk)
                switch action.kind {
                case .forward:
                    if neighbors.previousIsRemote {
                        lowered.append(Action(.receiveActivation, action.microBatch, chunk: action.chunk))
                    }
                    lowered.append(action)
                    if neighbors.nextIsRemote {
                        lowered.append(Action(.sendActivation, action.microBatch, chunk: action.chunk))
                    }
                case .backwardInput, .backwardFull:
                    if neighbors.nextIsRemote {
                        lowered.append(Action(.receiveGradient, action.microBatch, chunk: action.chunk))
                    }
                    lowered.append(action)
                    if neighbors.previousIsRemote {
                        lowered.append(Action(.sendGradient, action.microBatch, chunk: action.chunk))
                    }
                case .backwardWeight:
                    lowered.append(action)
                case .sendActivation, .receiveActivation, .sendGradient, .receiveGradient:
                    preconditionFailure("communication was stripped before lowering")
                }
            }
            result.actions[rank] = lowered
        }
        return result
    }

    /// This schedule with every send and receive removed: the compute order only.
    public func withoutCommunication() -> Schedule {
        var result = self
        result.actions = actions.map { $0.filter { !$0.kind.isCommunication } }
        return result
    }
}

/// Where each virtual stage lives, tolerant of a broken placement (the
/// validator reports those; lowering and the grid must not trap on them).
struct StageMap {
    let virtualStages: Int
    /// location[stage] = (rank, chunk), nil when no chunk holds the stage.
    let location: [(rank: Int, chunk: Int)?]
    let placement: [[Int]]

    init(_ schedule: Schedule) {
        virtualStages = schedule.virtualStages
        placement = schedule.placement
        var location = [(rank: Int, chunk: Int)?](repeating: nil, count: schedule.virtualStages)
        for (rank, stages) in schedule.placement.enumerated() {
            for (chunk, stage) in stages.enumerated() where location.indices.contains(stage) && location[stage] == nil {
                location[stage] = (rank, chunk)
            }
        }
        self.location = location
    }

    func stage(rank: Int, chunk: Int) -> Int? {
        placement.indices.contains(rank) && placement[rank].indices.contains(chunk) ? placement[rank][chunk] : nil
    }

    func rank(ofStage stage: Int) -> Int? {
        location.indices.contains(stage) ? location[stage]?.rank : nil
    }

    struct Neighbors {
        /// The stage before / after, nil at the ends of the pipeline.
        var previous: (stage: Int, rank: Int, chunk: Int)?
        var next: (stage: Int, rank: Int, chunk: Int)?
        var rank: Int
        var previousIsRemote: Bool { previous.map { $0.rank != rank } ?? false }
        var nextIsRemote: Bool { next.map { $0.rank != rank } ?? false }
    }

    func neighbors(rank: Int, chunk: Int) -> Neighbors {
        var neighbors = Neighbors(rank: rank)
        guard let stage = stage(rank: rank, chunk: chunk) else { return neighbors }
        func find(_ other: Int) -> (stage: Int, rank: Int, chunk: Int)? {
            guard location.indices.contains(other), let found = location[other] else { return nil }
            return (other, found.rank, found.chunk)
        }
        neighbors.previous = find(stage - 1)
        neighbors.next = find(stage + 1)
        return neighbors
    }
}
