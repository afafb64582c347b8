/// A piece of work a compute action finishes, named by stage rather than by
/// rank: the dependencies between ranks are stated in these terms, so the
/// simulator needs no lowered SEND/RECV actions to know who waits for whom.
struct SimulatorWork: Hashable, CustomStringConvertible {
    enum Phase: Hashable {
        case forward
        /// p1: done by `I`, or by `B` together with p2.
        case inputGradient
        /// p2: done by `W`, `W*`, or by `B` together with p1.
        case weightGradient
    }

    let phase: Phase
    let stage: Int
    let microBatch: Int

    var description: String {
        let name: String
        switch phase {
        case .forward: name = "F"
        case .inputGradient: name = "the input gradient (I or B)"
        case .weightGradient: name = "the weight gradient (W or B)"
        }
        return "\(name) of stage \(stage), micro-batch \(microBatch)"
    }

    /// The work items a compute action finishes. Empty for communication and
    /// for `W*`, whose micro-batches depend on what is pending when it runs.
    static func finished(by action: Action, stage: Int) -> [SimulatorWork] {
        guard let microBatch = action.microBatch else { return [] }
        switch action.kind {
        case .forward:
            return [SimulatorWork(phase: .forward, stage: stage, microBatch: microBatch)]
        case .backwardInput:
            return [SimulatorWork(phase: .inputGradient, stage: stage, microBatch: microBatch)]
        case .backwardWeight:
            return [SimulatorWork(phase: .weightGradient, stage: stage, microBatch: microBatch)]
        case .backwardFull:
            return [SimulatorWork(phase: .inputGradient, stage: stage, microBatch: microBatch),
                    SimulatorWork(phase: .weightGradient, stage: stage, microBatch: microBatch)]
        case .sendActivation, .receiveActivation, .sendGradient, .receiveGradient:
            return []
        }
    }
}
