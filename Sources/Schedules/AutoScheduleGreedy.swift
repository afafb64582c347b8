/// How one greedy pass decides; `AutoSchedule` tries several and keeps the fastest.
struct AutoSchedulePolicy: Hashable, CustomStringConvertible {
    /// When a rank with nothing else to do may run a pending p2.
    enum WeightFill: Hashable, CaseIterable {
        /// As soon as no F or I can start: fills every gap, may delay an I that arrives during the W.
        case whenIdle
        /// Only if the W ends before the next F or I is known to arrive: never delays them.
        case onlyIfItFits
        /// Only once the rank has run all its forwards, as 1F1B with 2BP does in its cool-down.
        case coolDownOnly
    }

    /// Forwards rank r may run ahead of its p1s, by rank: 1F1B allows p - r,
    /// deeper warm-ups fill the bubble before the first I at the price of memory.
    let inFlight: [Int]
    let fill: WeightFill
    /// Run the p2 left at the end as one concatenated `W*` (faster where one big GEMM beats many small ones).
    let concatenateTail: Bool

    var description: String {
        "in flight \(inFlight), fill \(fill), \(concatenateTail ? "W* tail" : "single W tail")"
    }
}

/// One greedy list-scheduling pass (the idea of Zero Bubble's heuristic
/// scheduler): every rank starts the next F or I as soon as its inputs have
/// arrived, I first because the upstream rank waits for it, and fills idle
/// time with pending W. A forward is held back while it would exceed the
/// rank's in-flight depth or memory budget. Times here only steer decisions;
/// the result is timed again by `Simulator`.
struct AutoScheduleGreedy {
    let ranks: Int
    let microBatches: Int
    let costs: CostModel
    /// Bytes each rank may hold beyond its static bytes; nil means unlimited.
    let budget: [Int?]
    let policy: AutoSchedulePolicy

    private var forwardEnd: [[Double?]]
    private var inputGradientEnd: [[Double?]]
    private var forwardsDone: [Int]
    private var inputGradientsDone: [Int]
    private var pendingWeights: [MicroBatchQueue]
    private var live: [Int]
    private var decisionTime: [Double]
    private var actions: [[Action]]

    init(ranks: Int, microBatches: Int, costs: CostModel, budget: [Int?], policy: AutoSchedulePolicy) {
        self.ranks = ranks
        self.microBatches = microBatches
        self.costs = costs
        self.budget = budget
        self.policy = policy
        forwardEnd = Array(repeating: Array(repeating: nil, count: microBatches), count: ranks)
        inputGradientEnd = forwardEnd
        forwardsDone = Array(repeating: 0, count: ranks)
        inputGradientsDone = forwardsDone
        pendingWeights = Array(repeating: MicroBatchQueue(), count: ranks)
        live = forwardsDone
        decisionTime = Array(repeating: 0, count: ranks)
        actions = Array(repeating: [], count: ranks)
    }

    /// The per-rank action lists, or nil when this policy gets stuck (the memory budget cannot make progress).
    mutating func run() -> [[Action]]? {
        while let now = (0..<ranks).filter({ !isFinished($0) }).map({ decisionTime[$0] }).min() {
            let deciding = (0..<ranks).filter { !isFinished($0) && decisionTime[$0] == now }
            var acted = false
            for rank in deciding where act(rank: rank, at: now) { acted = true }
            if acted { continue }
            // Nobody can start anything now: wake everyone at the next moment something changes.
            let arrivals = deciding.compactMap { knownArrival(rank: $0) }.filter { $0 > now }
            let others = (0..<ranks).filter { !isFinished($0) && decisionTime[$0] > now }.map { decisionTime[$0] }
            guard let later = (arrivals + others).min() else { return nil }
            for rank in deciding { decisionTime[rank] = later }
        }
        return actions
    }

    private func isFinished(_ rank: Int) -> Bool {
        inputGradientsDone[rank] == microBatches && pendingWeights[rank].isEmpty
    }

    private func transfer(from producer: Int, to consumer: Int) -> Double {
        producer == consumer ? 0 : costs.transferTime
    }

    /// When the next I of `rank` can start, if its inputs are scheduled.
    private func inputGradientArrival(rank: Int) -> Double? {
        let microBatch = inputGradientsDone[rank]
        guard microBatch < forwardsDone[rank], let forward = forwardEnd[rank][microBatch] else { return nil }
        guard rank + 1 < ranks else { return forward }
        guard let gradient = inputGradientEnd[rank + 1][microBatch] else { return nil }
        return max(forward, gradient + transfer(from: rank + 1, to: rank))
    }

    /// When the next F of `rank` can start, if allowed and its input is scheduled.
    private func forwardArrival(rank: Int) -> Double? {
        let microBatch = forwardsDone[rank]
        guard microBatch < microBatches, microBatch - inputGradientsDone[rank] < policy.inFlight[rank],
              fits(rank: rank, adding: forwardFootprint(rank: rank)) else { return nil }
        guard rank > 0 else { return 0 }
        return forwardEnd[rank - 1][microBatch].map { $0 + transfer(from: rank - 1, to: rank) }
    }

    private func knownArrival(rank: Int) -> Double? {
        [inputGradientArrival(rank: rank), forwardArrival(rank: rank)].compactMap { $0 }.min()
    }

    /// A forward must leave room for the I that will follow it, which may
    /// briefly hold more (the stash) than the activations it frees.
    private func forwardFootprint(rank: Int) -> Int {
        let stage = costs.stage(rank)
        return stage.activationBytes + max(0, stage.stashBytes - stage.activationBytes)
    }

    private func fits(rank: Int, adding bytes: Int) -> Bool {
        guard let budget = budget[rank] else { return true }
        return live[rank] + bytes <= budget
    }

    /// Starts one action on `rank` at `now` if the policy finds one; false to wait.
    private mutating func act(rank: Int, at now: Double) -> Bool {
        let stage = costs.stage(rank)
        if let arrival = inputGradientArrival(rank: rank), arrival <= now {
            if fits(rank: rank, adding: stage.stashBytes - stage.activationBytes) {
                start(.backwardInput, rank: rank, at: now)
                return true
            }
            guard !pendingWeights[rank].isEmpty else { return false }
            start(.backwardWeight, rank: rank, at: now)  // free stash so the I fits
            return true
        }
        if let arrival = forwardArrival(rank: rank), arrival <= now {
            start(.forward, rank: rank, at: now)
            return true
        }
        guard !pendingWeights[rank].isEmpty else { return false }
        if inputGradientsDone[rank] == microBatches {
            start(.backwardWeight, rank: rank, at: now, concatenate: policy.concatenateTail)
            return true
        }
        let forwardWaitsForMemory = forwardsDone[rank] < microBatches
            && forwardsDone[rank] - inputGradientsDone[rank] < policy.inFlight[rank]
            && !fits(rank: rank, adding: forwardFootprint(rank: rank))
        if !forwardWaitsForMemory {  // freeing stash is the only way on when memory holds the forward back
            switch policy.fill {
            case .whenIdle:
                break
            case .onlyIfItFits:
                guard let next = knownArrival(rank: rank),
                      now + costs.backwardWeightTime(stage: rank, microBatches: 1) <= next else { return false }
            case .coolDownOnly:
                guard forwardsDone[rank] == microBatches else { return false }
            }
        }
        start(.backwardWeight, rank: rank, at: now)
        return true
    }

    private mutating func start(_ kind: ActionKind, rank: Int, at now: Double, concatenate: Bool = false) {
        let action: Action
        var covered = 1
        switch kind {
        case .forward:
            let microBatch = forwardsDone[rank]
            action = Action(.forward, microBatch)
            forwardsDone[rank] += 1
            forwardEnd[rank][microBatch] = now + costs.duration(of: .forward, stage: rank)
        case .backwardInput:
            let microBatch = inputGradientsDone[rank]
            action = Action(.backwardInput, microBatch)
            inputGradientsDone[rank] += 1
            inputGradientEnd[rank][microBatch] = now + costs.duration(of: .backwardInput, stage: rank)
            pendingWeights[rank].append(microBatch)
        case .backwardWeight:
            if concatenate {
                action = Action(.backwardWeight, nil)
                covered = pendingWeights[rank].count
                pendingWeights[rank].removeAll()
            } else {
                action = Action(.backwardWeight, pendingWeights[rank].removeFirst())
            }
        case .backwardFull, .sendActivation, .receiveActivation, .sendGradient, .receiveGradient:
            preconditionFailure("the auto scheduler only places F, I and W")
        }
        actions[rank].append(action)
        live[rank] += costs.memoryDelta(of: kind, stage: rank, microBatches: covered)
        decisionTime[rank] = now + costs.duration(of: kind, stage: rank, microBatches: covered)
    }
}

/// The micro-batches whose p2 is pending, oldest first. Taking the oldest moves an index instead
/// of shifting the array, so a pass stays linear in M when thousands are pending.
struct MicroBatchQueue {
    private var items: [Int] = []
    private var head = 0

    var isEmpty: Bool { head == items.count }
    var count: Int { items.count - head }

    mutating func append(_ microBatch: Int) { items.append(microBatch) }

    mutating func removeFirst() -> Int {
        defer { head += 1 }
        return items[head]
    }

    mutating func removeAll() { head = items.count }
}
