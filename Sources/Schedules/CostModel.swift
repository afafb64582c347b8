/// Time and memory of one virtual stage for one micro-batch: what the simulator
/// and the auto-scheduler need to know about a stage, and nothing else.
///
/// This is Zero Bubble's `cost_f/b/w` and `mem_f/b/w` for one stage, with the
/// memory split the way 2BP frees it: F keeps activations until p1 (`I`), p1
/// replaces them by the p2 stash (the layer inputs and output gradients), and
/// p2 (`W`) frees the stash.
public struct StageCost: Codable, Sendable, Equatable {
    /// Seconds of F for one micro-batch.
    public var forward: Double
    /// Seconds of p1 (`I`, input gradient) for one micro-batch.
    public var backwardInput: Double
    /// Seconds of p2 (`W`, weight gradient) for one micro-batch.
    public var backwardWeight: Double
    /// Measured seconds of one concatenated p2 over k micro-batches, at index
    /// k - 1. Where it has an entry it overrides `CostModel.concatenationEfficiency`,
    /// because one big GEMM's speed-up is a property of the machine, best measured.
    public var concatenatedBackwardWeight: [Double]?
    /// Bytes F keeps alive until p1 (or the fused B) of the same micro-batch.
    public var activationBytes: Int
    /// Bytes p1 keeps alive until p2 of the same micro-batch: the 2BP stash.
    public var stashBytes: Int
    /// Parameters, gradients and optimizer state: alive the whole step.
    public var staticBytes: Int

    public init(forward: Double, backwardInput: Double, backwardWeight: Double,
                concatenatedBackwardWeight: [Double]? = nil,
                activationBytes: Int = 0, stashBytes: Int = 0, staticBytes: Int = 0) {
        self.forward = forward
        self.backwardInput = backwardInput
        self.backwardWeight = backwardWeight
        self.concatenatedBackwardWeight = concatenatedBackwardWeight
        self.activationBytes = activationBytes
        self.stashBytes = stashBytes
        self.staticBytes = staticBytes
    }

    /// The fused backward runs p1 then p2 of the same micro-batch.
    public var backwardFull: Double { backwardInput + backwardWeight }

    private enum CodingKeys: String, CodingKey {
        case forward, backwardInput, backwardWeight, concatenatedBackwardWeight, activationBytes, stashBytes, staticBytes
    }

    /// Times are required; memory fields default to 0 so a hand-written JSON
    /// file that only cares about time stays short.
    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        forward = try container.decode(Double.self, forKey: .forward)
        backwardInput = try container.decode(Double.self, forKey: .backwardInput)
        backwardWeight = try container.decode(Double.self, forKey: .backwardWeight)
        concatenatedBackwardWeight = try container.decodeIfPresent([Double].self, forKey: .concatenatedBackwardWeight)
        activationBytes = try container.decodeIfPresent(Int.self, forKey: .activationBytes) ?? 0
        stashBytes = try container.decodeIfPresent(Int.self, forKey: .stashBytes) ?? 0
        staticBytes = try container.decodeIfPresent(Int.self, forKey: .staticBytes) ?? 0
    }
}

/// Costs of a whole pipeline: per-stage compute and memory, the link between
/// ranks, and the per-rank memory budget.
///
/// `stages` holds one entry per virtual stage, or exactly one entry that every
/// stage shares (what `--costs F=1,I=1,W=1` gives, before the schedule says how
/// many stages there are).
public struct CostModel: Codable, Sendable, Equatable {
    public var stages: [StageCost]
    /// Seconds from a send starting to the first byte arriving.
    public var latency: Double
    /// Bytes per second of a link between two ranks; nil means unlimited.
    /// (JSON has no infinity, so "unlimited" is the absence of a number.)
    public var bandwidth: Double?
    /// Bytes of one activation (and of its gradient) sent between stages.
    public var messageBytes: Int
    /// Cost of each micro-batch after the first in a concatenated p2 (`W*`), as
    /// a fraction of a single p2: 1 means k micro-batches cost k × single,
    /// smaller means the big GEMM runs faster than k small ones.
    public var concatenationEfficiency: Double
    /// Bytes each rank may hold at its peak; nil means no limit.
    public var memoryLimit: Int?

    public init(stages: [StageCost], latency: Double = 0, bandwidth: Double? = nil, messageBytes: Int = 0,
                concatenationEfficiency: Double = 1, memoryLimit: Int? = nil) {
        self.stages = stages
        self.latency = latency
        self.bandwidth = bandwidth
        self.messageBytes = messageBytes
        self.concatenationEfficiency = concatenationEfficiency
        self.memoryLimit = memoryLimit
    }

    /// Every stage the same, communication free unless given.
    public static func uniform(forward: Double, backwardInput: Double, backwardWeight: Double,
                               activationBytes: Int = 0, stashBytes: Int = 0, staticBytes: Int = 0,
                               latency: Double = 0, bandwidth: Double? = nil, messageBytes: Int = 0,
                               concatenationEfficiency: Double = 1, memoryLimit: Int? = nil) -> CostModel {
        let stage = StageCost(forward: forward, backwardInput: backwardInput, backwardWeight: backwardWeight,
                              activationBytes: activationBytes, stashBytes: stashBytes, staticBytes: staticBytes)
        return CostModel(stages: [stage], latency: latency, bandwidth: bandwidth, messageBytes: messageBytes,
                         concatenationEfficiency: concatenationEfficiency, memoryLimit: memoryLimit)
    }

    private enum CodingKeys: String, CodingKey {
        case stages, latency, bandwidth, messageBytes, concatenationEfficiency, memoryLimit
    }

    /// Only `stages` is required; the link is free and W* unaccelerated by default.
    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(stages: try container.decode([StageCost].self, forKey: .stages),
                  latency: try container.decodeIfPresent(Double.self, forKey: .latency) ?? 0,
                  bandwidth: try container.decodeIfPresent(Double.self, forKey: .bandwidth),
                  messageBytes: try container.decodeIfPresent(Int.self, forKey: .messageBytes) ?? 0,
                  concatenationEfficiency: try container.decodeIfPresent(Double.self, forKey: .concatenationEfficiency) ?? 1,
                  memoryLimit: try container.decodeIfPresent(Int.self, forKey: .memoryLimit))
    }

    /// The costs of virtual stage `stage` (the shared entry when there is only one).
    public func stage(_ stage: Int) -> StageCost {
        stages.count == 1 ? stages[0] : stages[stage]
    }

    /// Throws unless the model covers `virtualStages` stages and its numbers make sense.
    public func check(virtualStages: Int) throws {
        guard stages.count == 1 || stages.count == virtualStages else {
            throw ScheduleError(.invalidRequest, "the cost model has \(stages.count) stages but the schedule has \(virtualStages) virtual stages (give one entry per stage, or one for all)")
        }
        for (index, stage) in stages.enumerated() {
            let times = [stage.forward, stage.backwardInput, stage.backwardWeight] + (stage.concatenatedBackwardWeight ?? [])
            guard times.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
                throw ScheduleError(.invalidRequest, "stage \(index) of the cost model has a negative or non-finite time")
            }
            guard stage.activationBytes >= 0, stage.stashBytes >= 0, stage.staticBytes >= 0 else {
                throw ScheduleError(.invalidRequest, "stage \(index) of the cost model has negative memory")
            }
        }
        guard latency.isFinite, latency >= 0, bandwidth.map({ $0 > 0 }) ?? true, messageBytes >= 0 else {
            throw ScheduleError(.invalidRequest, "communication costs need latency >= 0, bandwidth > 0 and message bytes >= 0")
        }
        guard concatenationEfficiency.isFinite, concatenationEfficiency >= 0 else {
            throw ScheduleError(.invalidRequest, "concatenation efficiency must be a finite number >= 0")
        }
    }

    /// Seconds to move one activation or gradient between two different ranks.
    public var transferTime: Double {
        latency + (bandwidth.map { Double(messageBytes) / $0 } ?? 0)
    }

    /// Seconds of one p2 over `microBatches` micro-batches of `stage`, concatenated.
    public func backwardWeightTime(stage index: Int, microBatches: Int) -> Double {
        guard microBatches > 0 else { return 0 }
        let cost = stage(index)
        if let table = cost.concatenatedBackwardWeight, microBatches <= table.count {
            return table[microBatches - 1]
        }
        return cost.backwardWeight * (1 + Double(microBatches - 1) * concatenationEfficiency)
    }

    /// Seconds `action` occupies its rank (communication: the transfer itself).
    /// `microBatches` is how many micro-batches a `W` covers (more than one only for `W*`).
    public func duration(of kind: ActionKind, stage index: Int, microBatches: Int = 1) -> Double {
        let cost = stage(index)
        switch kind {
        case .forward: return cost.forward
        case .backwardInput: return cost.backwardInput
        case .backwardWeight: return backwardWeightTime(stage: index, microBatches: microBatches)
        case .backwardFull: return cost.backwardFull
        case .sendActivation, .receiveActivation, .sendGradient, .receiveGradient: return transferTime
        }
    }

    /// Bytes `kind` adds to (positive) or frees from (negative) its rank once it ends.
    ///
    /// Transient workspace inside an action is not modelled: the figure is what
    /// stays alive between actions, which is what decides how many micro-batches
    /// fit in flight.
    public func memoryDelta(of kind: ActionKind, stage index: Int, microBatches: Int = 1) -> Int {
        let cost = stage(index)
        switch kind {
        case .forward: return cost.activationBytes
        case .backwardInput: return cost.stashBytes - cost.activationBytes
        case .backwardWeight: return -cost.stashBytes * microBatches
        case .backwardFull: return -cost.activationBytes
        case .sendActivation, .receiveActivation, .sendGradient, .receiveGradient: return 0
        }
    }
}
