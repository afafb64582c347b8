/// Predicts the timeline of a schedule from a cost model: when each action runs
/// on each rank, the step time, the bubbles and the peak memory per rank.
///
/// The model is the one the runtime implements: each rank runs its compute
/// actions one at a time in schedule order; sends are non-blocking and links
/// have no contention, so a consumer's F or I starts at
/// `max(its rank is free, producer's end + latency + bytes / bandwidth)`
/// (no transfer between two stages on the same rank). Dependencies come from
/// the compute actions alone: F(s, m) needs F(s-1, m); I or B(s, m) needs
/// F(s, m) and the input gradient of (s+1, m); W(s, m) needs I(s, m); `W*`
/// takes every micro-batch of its chunk that had I and no W yet. Lowered
/// SEND/RECV actions therefore never change compute times; they appear in the
/// timeline as the transfer intervals they stand for.
///
/// Without contention, every start time is fixed as soon as its dependencies
/// are, so the simulator advances each rank while it can and reports a
/// deadlock when no rank can: the same answer a discrete-event queue gives.
public enum Simulator {
    /// The predicted timeline, with `peakMemory` per rank: the static bytes of
    /// its chunks plus the highest running sum of its actions' memory changes
    /// (`CostModel.memoryDelta`, applied as each action ends).
    ///
    /// - Throws: `ScheduleError` with the offending cells marked:
    ///   `.outOfRange` for a broken placement or an action naming a chunk or
    ///   micro-batch that does not exist, `.invalidRequest` for a cost model
    ///   that does not fit the schedule, `.repeated` for work done twice (or a
    ///   W with no pending p1), `.deadlock` when no rank can go on (naming each
    ///   stuck rank, the action it is stuck at, the work it waits for and who
    ///   owes it), `.communication` / `.missing` for a SEND/RECV with no
    ///   neighbour or no producer.
    public static func simulate(_ schedule: Schedule, costs: CostModel) throws -> Timeline {
        var run = try SimulatorRun(schedule: schedule, costs: costs)
        try run.runCompute()
        try run.placeCommunication()
        return run.timeline()
    }
}

/// The state of one simulation; `Simulator.simulate` is its only user.
struct SimulatorRun {
    /// One action with its position in the rank's original list, for messages.
    struct Slot {
        let action: Action
        let position: Int
    }

    /// What an action waits for, or when it may start.
    enum Readiness {
        case ready(at: Double)
        case waiting(for: SimulatorWork)
    }

    let schedule: Schedule
    let costs: CostModel
    /// rank holding each virtual stage.
    let rankOfStage: [Int]
    var compute: [[Slot]]
    var communication: [[Slot]]
    /// Index into `compute[rank]` of the next action to run.
    var next: [Int]
    var freeAt: [Double]
    /// End time of every finished piece of work.
    var finished: [SimulatorWork: Double] = [:]
    /// For each rank, the micro-batches each W or `W*` runs, by position.
    let weightCoverage: [[Int: [Int]]]
    var events: [TimelineEvent] = []
    /// Memory change of each compute event, in each rank's execution order.
    var memoryChanges: [[Int]]

    init(schedule: Schedule, costs: CostModel) throws {
        try ScheduleValidator.checkShape(schedule)
        try costs.check(virtualStages: schedule.virtualStages)
        self.schedule = schedule
        self.costs = costs
        let stages = StageMap(schedule)
        rankOfStage = (0..<schedule.virtualStages).map { stages.rank(ofStage: $0)! }  // checkShape: a permutation
        compute = Array(repeating: [], count: schedule.ranks)
        communication = Array(repeating: [], count: schedule.ranks)
        for rank in 0..<schedule.ranks {
            for (position, action) in schedule.actions[rank].enumerated() {
                let slot = Slot(action: action, position: position)
                if action.kind.isCommunication { communication[rank].append(slot) } else { compute[rank].append(slot) }
            }
        }
        next = Array(repeating: 0, count: schedule.ranks)
        freeAt = Array(repeating: 0, count: schedule.ranks)
        weightCoverage = (0..<schedule.ranks).map(schedule.weightPassCoverage(rank:))
        memoryChanges = Array(repeating: [], count: schedule.ranks)
    }

    private func transferTime(from producer: Int, to consumer: Int) -> Double {
        producer == consumer ? 0 : costs.transferTime
    }

    /// When work produced on `stage` reaches `rank`, or what is still missing.
    private func arrival(of work: SimulatorWork, at rank: Int) -> Readiness {
        guard let end = finished[work] else { return .waiting(for: work) }
        return .ready(at: end + transferTime(from: rankOfStage[work.stage], to: rank))
    }

    private func readiness(of action: Action, stage: Int, rank: Int) throws -> Readiness {
        guard let microBatch = action.microBatch else { return .ready(at: 0) }  // W*: takes what is pending
        switch action.kind {
        case .forward:
            guard stage > 0 else { return .ready(at: 0) }
            return arrival(of: SimulatorWork(phase: .forward, stage: stage - 1, microBatch: microBatch), at: rank)
        case .backwardInput, .backwardFull:
            var ready = 0.0
            var needs = [SimulatorWork(phase: .forward, stage: stage, microBatch: microBatch)]
            if stage < schedule.virtualStages - 1 {
                needs.append(SimulatorWork(phase: .inputGradient, stage: stage + 1, microBatch: microBatch))
            }
            for work in needs {
                switch arrival(of: work, at: rank) {
                case .waiting: return .waiting(for: work)
                case let .ready(at: time): ready = max(ready, time)
                }
            }
            return .ready(at: ready)
        case .backwardWeight:
            let inputGradient = SimulatorWork(phase: .inputGradient, stage: stage, microBatch: microBatch)
            guard finished[inputGradient] != nil else { return .waiting(for: inputGradient) }
            return .ready(at: 0)
        case .sendActivation, .receiveActivation, .sendGradient, .receiveGradient:
            preconditionFailure("communication is placed after compute")
        }
    }

    /// Runs every rank as far as its dependencies allow; throws on a deadlock.
    mutating func runCompute() throws {
        var progressed = true
        while progressed {
            progressed = false
            for rank in 0..<schedule.ranks {
                while try step(rank: rank) { progressed = true }
            }
        }
        if (0..<schedule.ranks).contains(where: { next[$0] < compute[$0].count }) {
            throw try deadlock()
        }
    }

    /// Runs the next compute action of `rank` if it can start; false if it waits.
    private mutating func step(rank: Int) throws -> Bool {
        guard next[rank] < compute[rank].count else { return false }
        let slot = compute[rank][next[rank]]
        let action = slot.action
        let stage = schedule.stage(rank: rank, chunk: action.chunk)
        guard case let .ready(at: ready) = try readiness(of: action, stage: stage, rank: rank) else { return false }

        var microBatches = 1
        var done = SimulatorWork.finished(by: action, stage: stage)
        if action.kind == .backwardWeight {
            let covered = weightCoverage[rank][slot.position] ?? []
            if let microBatch = action.microBatch, covered.isEmpty {
                throw failure(.repeated, "rank \(rank) runs \(action), but micro-batch \(microBatch) of stage \(stage) has no pending p2 (its backward was a fused B, or its W already ran)",
                              at: rank, position: slot.position)
            }
            microBatches = covered.count
            done = covered.map { SimulatorWork(phase: .weightGradient, stage: stage, microBatch: $0) }
        }
        let start = max(freeAt[rank], ready)
        let end = start + costs.duration(of: action.kind, stage: stage, microBatches: microBatches)
        for work in done {
            guard finished.updateValue(end, forKey: work) == nil else {
                throw failure(.repeated, "rank \(rank), action \(slot.position) (\(action)) repeats \(work), which already ran",
                              at: rank, position: slot.position)
            }
        }
        next[rank] += 1
        guard microBatches > 0 else { return true }  // a `W*` with nothing pending does no work
        freeAt[rank] = end
        events.append(TimelineEvent(rank: rank, action: action, start: start, end: end))
        memoryChanges[rank].append(costs.memoryDelta(of: action.kind, stage: stage, microBatches: microBatches))
        return true
    }

    /// The error for a schedule that stops half-way, with the grid the
    /// validator prints and the offending cell marked.
    private func failure(_ reason: ScheduleError.Reason, _ headline: String, at rank: Int, position: Int) -> ScheduleError {
        ScheduleValidator.failure(reason, headline, in: schedule, cells: [ScheduleCell(rank: rank, step: position)])
    }

    /// Names every stuck rank, the action it is stuck at and who owes it what.
    private func deadlock() throws -> ScheduleError {
        var cells: [ScheduleCell] = []
        var details: [String] = []
        for rank in 0..<schedule.ranks where next[rank] < compute[rank].count {
            let slot = compute[rank][next[rank]]
            let stage = schedule.stage(rank: rank, chunk: slot.action.chunk)
            guard case let .waiting(for: work) = try readiness(of: slot.action, stage: stage, rank: rank) else { continue }
            let owner = rankOfStage[work.stage]
            let later = compute[owner][next[owner]...].first { candidate in
                SimulatorWork.finished(by: candidate.action, stage: schedule.stage(rank: owner, chunk: candidate.action.chunk)).contains(work)
            }
            let who: String
            switch (later, owner == rank) {
            case let (slot?, true):
                who = "which this rank only runs later, at action \(slot.position) (\(slot.action))"
            case let (slot?, false):
                let blocked = compute[owner][next[owner]]
                who = "which rank \(owner) runs at action \(slot.position) (\(slot.action)), but rank \(owner) is stuck at action \(blocked.position) (\(blocked.action))"
            case (nil, _):
                who = "which no action of rank \(owner) (the owner of stage \(work.stage)) runs"
            }
            cells.append(ScheduleCell(rank: rank, step: slot.position))
            details.append("rank \(rank) waits at action \(slot.position) (\(slot.action)) for \(work), \(who)")
        }
        return ScheduleValidator.failure(.deadlock, "deadlock: no rank can run its next action", in: schedule, cells: cells, details: details)
    }

    /// Adds each lowered SEND/RECV as the transfer interval it stands for.
    mutating func placeCommunication() throws {
        for rank in 0..<schedule.ranks {
            for slot in communication[rank] {
                let action = slot.action
                let stage = schedule.stage(rank: rank, chunk: action.chunk)
                guard let microBatch = action.microBatch else { continue }  // only W may be `*`
                let producerStage: Int, consumerStage: Int, phase: SimulatorWork.Phase
                switch action.kind {
                case .sendActivation: (producerStage, consumerStage, phase) = (stage, stage + 1, .forward)
                case .receiveActivation: (producerStage, consumerStage, phase) = (stage - 1, stage, .forward)
                case .sendGradient: (producerStage, consumerStage, phase) = (stage, stage - 1, .inputGradient)
                case .receiveGradient: (producerStage, consumerStage, phase) = (stage + 1, stage, .inputGradient)
                case .forward, .backwardInput, .backwardWeight, .backwardFull: continue
                }
                let stages = 0..<schedule.virtualStages
                guard stages.contains(producerStage), stages.contains(consumerStage) else {
                    throw failure(.communication, "rank \(rank), action \(slot.position) (\(action)): stage \(stage) has no neighbour to exchange with in that direction",
                                  at: rank, position: slot.position)
                }
                let work = SimulatorWork(phase: phase, stage: producerStage, microBatch: microBatch)
                guard let start = finished[work] else {
                    throw failure(.missing, "rank \(rank), action \(slot.position) (\(action)) transfers \(work), which never runs",
                                  at: rank, position: slot.position)
                }
                let end = start + transferTime(from: rankOfStage[producerStage], to: rankOfStage[consumerStage])
                events.append(TimelineEvent(rank: rank, action: action, start: start, end: end))
            }
        }
    }

    /// Events by rank and start time; peak memory = static bytes of the rank's
    /// chunks + the highest running sum of its actions' memory changes.
    func timeline() -> Timeline {
        let ordered = events.enumerated().sorted { lhs, rhs in
            (lhs.element.rank, lhs.element.start, lhs.offset) < (rhs.element.rank, rhs.element.start, rhs.offset)
        }.map(\.element)
        let peaks = (0..<schedule.ranks).map { rank in
            let staticBytes = schedule.placement[rank].reduce(0) { $0 + costs.stage($1).staticBytes }
            var live = 0, highest = 0
            for change in memoryChanges[rank] {
                live += change
                highest = max(highest, live)
            }
            return staticBytes + highest
        }
        return Timeline(ranks: schedule.ranks, events: ordered, peakMemory: peaks)
    }
}
