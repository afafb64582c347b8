/// Checks that a schedule is one training step that runs to the end.
///
/// What is rejected, each with a `ScheduleError` whose message prints the
/// rank-by-step grid with the faulty cells (or rows) marked:
/// - shape (`.outOfRange`): no ranks, no micro-batches, a placement that is
///   not a permutation of the virtual stages, an action naming a chunk or
///   micro-batch that does not exist;
/// - `.missing`: some stage never runs F, the backward, or (after an I) the W
///   of some micro-batch;
/// - `.repeated`: some stage runs F, the backward or the W of a micro-batch
///   twice (a W after a fused B counts: B already ran p2), or a send or
///   receive twice;
/// - `.dependency`: on one rank, an action before what it needs: F of stage s
///   before F of stage s - 1 (when both are on this rank) or before its
///   `RECV_F`; I/B before F of its stage, before I/B of stage s + 1 on this
///   rank or before its `RECV_B`; W before its I; a send before the compute it
///   sends; a `W*` with nothing pending (an empty GEMM is always a generator
///   bug, so it is rejected). Across ranks, an order that no execution can
///   follow (a cycle of waits) is also `.dependency`;
/// - `.communication`: a send or receive across no rank boundary, or a
///   result that must leave the rank but is never sent;
/// - `.deadlock`: the lowered program (the schedule itself if it has sends
///   and receives, else `lowered()`), run with non-blocking sends and blocking
///   receives, each rank in order, reaches a point where no rank can go on;
///   the message names every blocked rank and what it waits for.
public enum ScheduleValidator {
    public static func validate(_ schedule: Schedule) throws {
        try checkShape(schedule)
        try checkEachRank(schedule)
        try runDataflow(schedule.withoutCommunication())
        try runMessages(schedule.isLowered ? schedule : schedule.lowered())
    }
}

extension Schedule {
    /// `ScheduleValidator.validate(self)`.
    public func validate() throws {
        try ScheduleValidator.validate(self)
    }
}

// MARK: - Reporting

extension ScheduleValidator {
    static func failure(_ reason: ScheduleError.Reason, _ headline: String, in schedule: Schedule,
                        cells: [ScheduleCell] = [], rows: [Int] = [], details: [String] = []) -> ScheduleError {
        let text = ([headline] + details.map { "  " + $0 }).joined(separator: "\n")
            + "\n\n" + schedule.grid(marking: Set(cells), markingRows: Set(rows))
        return ScheduleError(reason, "\(schedule.name): " + text, cells: cells, rows: rows)
    }

    static func describe(_ action: Action, _ cell: ScheduleCell) -> String {
        "\(action) at rank \(cell.rank), step \(cell.step)"
    }
}

// MARK: - Shape

extension ScheduleValidator {
    static func checkShape(_ schedule: Schedule) throws {
        guard schedule.ranks >= 1, schedule.actions.count == schedule.ranks else {
            throw failure(.outOfRange, "the schedule needs at least one rank and one action list per rank (ranks \(schedule.ranks), lists \(schedule.actions.count))", in: schedule)
        }
        guard schedule.microBatches >= 1 else {
            throw failure(.outOfRange, "the schedule needs at least one micro-batch, has \(schedule.microBatches)", in: schedule)
        }
        guard schedule.chunksPerRank >= 1,
              schedule.placement.count == schedule.ranks,
              schedule.placement.allSatisfy({ $0.count == schedule.chunksPerRank }) else {
            throw failure(.outOfRange, "the placement must give each of the \(schedule.ranks) ranks \(schedule.chunksPerRank) chunks", in: schedule)
        }
        let stages = schedule.placement.joined().sorted()
        guard stages == Array(0..<schedule.virtualStages) else {
            throw failure(.outOfRange, "the placement \(schedule.placement) must hold each virtual stage 0..<\(schedule.virtualStages) exactly once", in: schedule)
        }
        for (rank, rankActions) in schedule.actions.enumerated() {
            for (step, action) in rankActions.enumerated() {
                let cell = ScheduleCell(rank: rank, step: step)
                guard (0..<schedule.chunksPerRank).contains(action.chunk) else {
                    throw failure(.outOfRange, "\(describe(action, cell)) names chunk \(action.chunk), but ranks hold chunks 0..<\(schedule.chunksPerRank)", in: schedule, cells: [cell])
                }
                if let microBatch = action.microBatch, !(0..<schedule.microBatches).contains(microBatch) {
                    throw failure(.outOfRange, "\(describe(action, cell)) names micro-batch \(microBatch), but there are \(schedule.microBatches) (0..<\(schedule.microBatches))", in: schedule, cells: [cell])
                }
                if action.microBatch == nil, action.kind != .backwardWeight {
                    throw failure(.outOfRange, "\(describe(action, cell)) needs a micro-batch", in: schedule, cells: [cell])
                }
            }
        }
    }
}

// MARK: - One rank at a time

extension ScheduleValidator {
    /// What one chunk of one rank has done so far: micro-batch -> step.
    struct ChunkRecord {
        var forward: [Int: Int] = [:]
        var backward: [Int: (kind: ActionKind, step: Int)] = [:]
        /// Micro-batches whose I ran and whose W has not, oldest first.
        var pendingWeight: [Int] = []
        var weight: [Int: Int] = [:]
        var receivedActivation: [Int: Int] = [:]
        var receivedGradient: [Int: Int] = [:]
        var sentActivation: [Int: Int] = [:]
        var sentGradient: [Int: Int] = [:]
    }

    /// Local order, repeats and completeness, rank by rank. Cross-rank order is
    /// left to the simulations. In a lowered schedule every cross-rank input
    /// must also have been received on this rank before its consumer runs.
    static func checkEachRank(_ schedule: Schedule) throws {
        let map = StageMap(schedule)
        let lowered = schedule.isLowered
        for (rank, rankActions) in schedule.actions.enumerated() {
            var records = [ChunkRecord](repeating: ChunkRecord(), count: schedule.chunksPerRank)
            for (step, action) in rankActions.enumerated() {
                let cell = ScheduleCell(rank: rank, step: step)
                let chunk = action.chunk
                let stage = schedule.placement[rank][chunk]
                let neighbors = map.neighbors(rank: rank, chunk: chunk)
                let here = "on stage \(stage) (rank \(rank), chunk \(chunk))"

                func fail(_ reason: ScheduleError.Reason, _ why: String, also: [ScheduleCell] = []) -> ScheduleError {
                    failure(reason, "\(describe(action, cell)) \(why)", in: schedule, cells: also + [cell])
                }
                func earlier(_ step: Int) -> ScheduleCell { ScheduleCell(rank: rank, step: step) }

                guard let microBatch = action.microBatch else {
                    // W*: p2 of every micro-batch of this chunk whose I ran and whose W has not.
                    guard !records[chunk].pendingWeight.isEmpty else {
                        throw fail(.dependency, "has nothing pending \(here): no I since the last W of this chunk")
                    }
                    for pending in records[chunk].pendingWeight {
                        records[chunk].weight[pending] = step
                    }
                    records[chunk].pendingWeight.removeAll()
                    continue
                }

                switch action.kind {
                case .forward:
                    if let first = records[chunk].forward[microBatch] {
                        throw fail(.repeated, "repeats F\(microBatch) \(here), first run at step \(first)", also: [earlier(first)])
                    }
                    if let previous = neighbors.previous {
                        if previous.rank == rank {
                            guard records[previous.chunk].forward[microBatch] != nil else {
                                throw fail(.dependency, "runs \(here) before F\(microBatch) of stage \(previous.stage), which is on this rank (chunk \(previous.chunk))")
                            }
                        } else if lowered, records[chunk].receivedActivation[microBatch] == nil {
                            throw fail(.dependency, "runs \(here) before its input arrives: no RECV_F\(microBatch) on chunk \(chunk) before it")
                        }
                    }
                    records[chunk].forward[microBatch] = step

                case .backwardInput, .backwardFull:
                    if let first = records[chunk].backward[microBatch] {
                        throw fail(.repeated, "repeats the backward of micro-batch \(microBatch) \(here), first run at step \(first.step) as \(first.kind.rawValue)", also: [earlier(first.step)])
                    }
                    guard records[chunk].forward[microBatch] != nil else {
                        throw fail(.dependency, "runs \(here) with no F\(microBatch) before it on this stage")
                    }
                    if let next = neighbors.next {
                        if next.rank == rank {
                            guard records[next.chunk].backward[microBatch] != nil else {
                                throw fail(.dependency, "runs \(here) before the backward of micro-batch \(microBatch) on stage \(next.stage), which is on this rank (chunk \(next.chunk))")
                            }
                        } else if lowered, records[chunk].receivedGradient[microBatch] == nil {
                            throw fail(.dependency, "runs \(here) before its gradient arrives: no RECV_B\(microBatch) on chunk \(chunk) before it")
                        }
                    }
                    records[chunk].backward[microBatch] = (action.kind, step)
                    if action.kind == .backwardInput {
                        records[chunk].pendingWeight.append(microBatch)
                    }

                case .backwardWeight:
                    if let first = records[chunk].weight[microBatch] {
                        throw fail(.repeated, "repeats the W of micro-batch \(microBatch) \(here), already covered at step \(first)", also: [earlier(first)])
                    }
                    guard let backward = records[chunk].backward[microBatch] else {
                        throw fail(.dependency, "runs \(here) before I\(microBatch): p2 needs the gradient p1 computes")
                    }
                    guard backward.kind == .backwardInput else {
                        throw fail(.repeated, "repeats p2 of micro-batch \(microBatch) \(here): the fused B at step \(backward.step) already ran it", also: [earlier(backward.step)])
                    }
                    records[chunk].weight[microBatch] = step
                    records[chunk].pendingWeight.removeAll { $0 == microBatch }

                case .sendActivation:
                    guard let next = neighbors.next else {
                        throw fail(.communication, "sends an activation from the last stage (\(stage)), which has no next stage")
                    }
                    guard next.rank != rank else {
                        throw fail(.communication, "sends an activation to stage \(next.stage), which is on the same rank: nothing needs sending")
                    }
                    if let first = records[chunk].sentActivation[microBatch] {
                        throw fail(.repeated, "sends activation \(microBatch) again, first at step \(first)", also: [earlier(first)])
                    }
                    guard records[chunk].forward[microBatch] != nil else {
                        throw fail(.dependency, "sends \(here) before F\(microBatch) has computed it")
                    }
                    records[chunk].sentActivation[microBatch] = step

                case .receiveActivation:
                    guard let previous = neighbors.previous else {
                        throw fail(.communication, "receives an activation on the first stage, which has no previous stage")
                    }
                    guard previous.rank != rank else {
                        throw fail(.communication, "receives an activation from stage \(previous.stage), which is on the same rank: nothing is sent")
                    }
                    if let first = records[chunk].receivedActivation[microBatch] {
                        throw fail(.repeated, "receives activation \(microBatch) again, first at step \(first)", also: [earlier(first)])
                    }
                    records[chunk].receivedActivation[microBatch] = step

                case .sendGradient:
                    guard let previous = neighbors.previous else {
                        throw fail(.communication, "sends a gradient from the first stage, which has no previous stage")
                    }
                    guard previous.rank != rank else {
                        throw fail(.communication, "sends a gradient to stage \(previous.stage), which is on the same rank: nothing needs sending")
                    }
                    if let first = records[chunk].sentGradient[microBatch] {
                        throw fail(.repeated, "sends gradient \(microBatch) again, first at step \(first)", also: [earlier(first)])
                    }
                    guard records[chunk].backward[microBatch] != nil else {
                        throw fail(.dependency, "sends \(here) before the backward of micro-batch \(microBatch) has computed it")
                    }
                    records[chunk].sentGradient[microBatch] = step

                case .receiveGradient:
                    guard let next = neighbors.next else {
                        throw fail(.communication, "receives a gradient on the last stage, which computes its own from the loss")
                    }
                    guard next.rank != rank else {
                        throw fail(.communication, "receives a gradient from stage \(next.stage), which is on the same rank: nothing is sent")
                    }
                    if let first = records[chunk].receivedGradient[microBatch] {
                        throw fail(.repeated, "receives gradient \(microBatch) again, first at step \(first)", also: [earlier(first)])
                    }
                    records[chunk].receivedGradient[microBatch] = step
                }
            }
            try checkComplete(schedule, rank: rank, records: records, map: map, lowered: lowered)
        }
    }

    static func checkComplete(_ schedule: Schedule, rank: Int, records: [ChunkRecord], map: StageMap, lowered: Bool) throws {
        for (chunk, record) in records.enumerated() {
            let stage = schedule.placement[rank][chunk]
            let here = "stage \(stage) (rank \(rank), chunk \(chunk))"
            let neighbors = map.neighbors(rank: rank, chunk: chunk)
            for microBatch in 0..<schedule.microBatches {
                guard let forward = record.forward[microBatch] else {
                    throw failure(.missing, "\(here) never runs F\(microBatch)", in: schedule, rows: [rank])
                }
                guard let backward = record.backward[microBatch] else {
                    throw failure(.missing, "\(here) never runs the backward (B or I) of micro-batch \(microBatch)", in: schedule, rows: [rank])
                }
                if backward.kind == .backwardInput, record.weight[microBatch] == nil {
                    throw failure(.missing, "\(here) never runs the W of micro-batch \(microBatch) (its I is at step \(backward.step); add W\(microBatch) or a later W*)",
                                  in: schedule, cells: [ScheduleCell(rank: rank, step: backward.step)], rows: [rank])
                }
                guard lowered else { continue }
                if let next = neighbors.next, next.rank != rank, record.sentActivation[microBatch] == nil {
                    throw failure(.communication, "\(here) never sends F\(microBatch)'s activation to stage \(next.stage) on rank \(next.rank) (no SEND_F\(microBatch) on chunk \(chunk))",
                                  in: schedule, cells: [ScheduleCell(rank: rank, step: forward)])
                }
                if let previous = neighbors.previous, previous.rank != rank, record.sentGradient[microBatch] == nil {
                    throw failure(.communication, "\(here) never sends micro-batch \(microBatch)'s input gradient to stage \(previous.stage) on rank \(previous.rank) (no SEND_B\(microBatch) on chunk \(chunk))",
                                  in: schedule, cells: [ScheduleCell(rank: rank, step: backward.step)])
                }
            }
        }
    }
}

// MARK: - Running all ranks together

extension ScheduleValidator {
    struct StageMicroBatch: Hashable {
        let stage: Int
        let microBatch: Int
    }

    /// Runs the compute-only schedule with every action waiting for its
    /// inputs from other ranks (F for the previous stage's F, I/B for the next
    /// stage's I/B). An order no execution can follow shows as no rank being
    /// able to go on: a cycle of waits.
    static func runDataflow(_ schedule: Schedule) throws {
        let map = StageMap(schedule)
        var forwardDone = Set<StageMicroBatch>()
        var backwardDone = Set<StageMicroBatch>()
        /// What `action` on `rank` still waits for, or nil when it can run.
        func missingInput(_ action: Action, rank: Int) -> String? {
            guard let microBatch = action.microBatch else { return nil }
            let neighbors = map.neighbors(rank: rank, chunk: action.chunk)
            switch action.kind {
            case .forward:
                guard let previous = neighbors.previous,
                      !forwardDone.contains(StageMicroBatch(stage: previous.stage, microBatch: microBatch)) else { return nil }
                return "F\(microBatch) of stage \(previous.stage) on rank \(previous.rank)"
            case .backwardInput, .backwardFull:
                guard let next = neighbors.next,
                      !backwardDone.contains(StageMicroBatch(stage: next.stage, microBatch: microBatch)) else { return nil }
                return "the backward of micro-batch \(microBatch) on stage \(next.stage), rank \(next.rank)"
            case .backwardWeight, .sendActivation, .receiveActivation, .sendGradient, .receiveGradient:
                return nil
            }
        }
        try run(schedule, waitingFor: missingInput) { action, rank in
            guard let microBatch = action.microBatch else { return }
            let key = StageMicroBatch(stage: schedule.placement[rank][action.chunk], microBatch: microBatch)
            switch action.kind {
            case .forward: forwardDone.insert(key)
            case .backwardInput, .backwardFull: backwardDone.insert(key)
            case .backwardWeight, .sendActivation, .receiveActivation, .sendGradient, .receiveGradient: break
            }
        } stuck: { blocked in
            failure(.dependency, "no order of execution can follow this schedule: the ranks wait for each other in a cycle",
                    in: schedule, cells: blocked.map(\.cell), details: blocked.map { "\(describe($0.action, $0.cell)) waits for \($0.waitsFor)" })
        }
    }

    struct Message: Hashable {
        enum Kind { case activation, gradient }
        let kind: Kind
        let microBatch: Int
        /// The virtual stage that consumes it.
        let stage: Int
    }

    /// Runs the lowered program as `Transport` does: sends never block and
    /// post their message at once; a receive blocks until its message is
    /// posted; each rank runs its list in order. Compute needs no waiting here:
    /// `checkEachRank` already made each consumer follow its receive.
    static func runMessages(_ schedule: Schedule) throws {
        let map = StageMap(schedule)
        var posted: [Message: Int] = [:]
        var senders: [Message: ScheduleCell] = [:]
        func message(_ action: Action, rank: Int) -> Message? {
            guard let microBatch = action.microBatch else { return nil }
            let stage = schedule.placement[rank][action.chunk]
            switch action.kind {
            case .sendActivation: return Message(kind: .activation, microBatch: microBatch, stage: stage + 1)
            case .receiveActivation: return Message(kind: .activation, microBatch: microBatch, stage: stage)
            case .sendGradient: return Message(kind: .gradient, microBatch: microBatch, stage: stage - 1)
            case .receiveGradient: return Message(kind: .gradient, microBatch: microBatch, stage: stage)
            case .forward, .backwardInput, .backwardWeight, .backwardFull: return nil
            }
        }
        for (rank, rankActions) in schedule.actions.enumerated() {
            for (step, action) in rankActions.enumerated() where action.kind == .sendActivation || action.kind == .sendGradient {
                if let sent = message(action, rank: rank) { senders[sent] = ScheduleCell(rank: rank, step: step) }
            }
        }
        func missingInput(_ action: Action, rank: Int) -> String? {
            guard action.kind == .receiveActivation || action.kind == .receiveGradient,
                  let wanted = message(action, rank: rank), posted[wanted, default: 0] == 0 else { return nil }
            let what = "the \(wanted.kind == .activation ? "activation" : "gradient") of micro-batch \(wanted.microBatch) for stage \(wanted.stage)"
            let producerStage = wanted.kind == .activation ? wanted.stage - 1 : wanted.stage + 1
            guard let sender = senders[wanted] else {
                return "\(what), which no rank sends (stage \(producerStage) is on rank \(map.rank(ofStage: producerStage).map(String.init) ?? "none"))"
            }
            return "\(what), sent by rank \(sender.rank) at step \(sender.step)"
        }
        try run(schedule, waitingFor: missingInput) { action, rank in
            guard let carried = message(action, rank: rank) else { return }
            switch action.kind {
            case .sendActivation, .sendGradient: posted[carried, default: 0] += 1
            case .receiveActivation, .receiveGradient: posted[carried, default: 0] -= 1
            case .forward, .backwardInput, .backwardWeight, .backwardFull: break
            }
        } stuck: { blocked in
            let ranks = blocked.map { String($0.cell.rank) }.joined(separator: ", ")
            return failure(.deadlock, "deadlock: ranks \(ranks) block on receives that can never complete",
                           in: schedule, cells: blocked.map(\.cell),
                           details: blocked.map { "rank \($0.cell.rank) blocks at step \($0.cell.step) on \($0.action), waiting for \($0.waitsFor)" })
        }
        if let (unread, _) = posted.first(where: { $0.value > 0 }), let sender = senders[unread] {
            throw failure(.communication, "the message sent at rank \(sender.rank), step \(sender.step) is never received", in: schedule, cells: [sender])
        }
    }

    struct Blocked {
        let cell: ScheduleCell
        let action: Action
        let waitsFor: String
    }

    /// Advances every rank as far as it can, in rounds, until all are done or
    /// none can move; then reports the blocked ranks through `stuck`.
    static func run(_ schedule: Schedule, waitingFor: (Action, Int) -> String?,
                    perform: (Action, Int) -> Void, stuck: ([Blocked]) -> ScheduleError) throws {
        var next = [Int](repeating: 0, count: schedule.ranks)
        var progressed = true
        while progressed {
            progressed = false
            for rank in 0..<schedule.ranks {
                while next[rank] < schedule.actions[rank].count {
                    let action = schedule.actions[rank][next[rank]]
                    if waitingFor(action, rank) != nil { break }
                    perform(action, rank)
                    next[rank] += 1
                    progressed = true
                }
            }
        }
        let blocked = (0..<schedule.ranks).filter { next[$0] < schedule.actions[$0].count }.map { rank in
            let action = schedule.actions[rank][next[rank]]
            return Blocked(cell: ScheduleCell(rank: rank, step: next[rank]), action: action,
                           waitsFor: waitingFor(action, rank) ?? "nothing")
        }
        if !blocked.isEmpty {
            throw stuck(blocked)
        }
    }
}
