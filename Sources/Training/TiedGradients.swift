import Layers
import Models
import Pipeline
import Tensor

/// Tied parameters across ranks, as Megatron keeps its embedding group: every rank whose stages
/// hold a tied unit keeps a copy; after the step's p2 the copies' gradients are summed, in rank
/// order, so every copy holds the same bits, and AdamW then steps them identically. The copy on
/// the lowest rank is the owner: it alone counts in the gradient norm and goes into checkpoints
/// and gathered weights. (Chunks of one rank share one `Parameter` already; see `SharedParameters`.)
struct TiedGradients {
    struct Tie {
        /// Index in `ModelConfig.tiedParameters`, the message tag's id.
        let index: Int
        let parameter: Parameter
        /// Every rank holding a copy, ascending; includes this one.
        let ranks: [Int]
    }

    /// The ties this rank holds together with at least one other rank.
    let shared: [Tie]
    /// Names of the tied parameters whose owner is another rank.
    let notOwned: Set<String>

    init(model: any ModelConfig, plan: PipelinePlan, rank: Int, parameters: [Parameter]) {
        var shared: [Tie] = []
        var notOwned = Set<String>()
        for (index, tie) in model.tiedParameters.enumerated() {
            let ranks = plan.ranks(holding: tie.units)
            guard ranks.count > 1, ranks.contains(rank), let parameter = parameters.first(where: { $0.name == tie.name }) else { continue }
            shared.append(Tie(index: index, parameter: parameter, ranks: ranks))
            if ranks[0] != rank { notOwned.insert(tie.name) }
        }
        self.shared = shared
        self.notOwned = notOwned
    }

    /// The parameters this rank answers for: all but the copies another rank owns.
    func owned(_ parameters: [Parameter]) -> [Parameter] {
        notOwned.isEmpty ? parameters : parameters.filter { !notOwned.contains($0.name) }
    }

    /// Sends this rank's gradient of every shared tie to the other holders, receives theirs, and
    /// replaces each gradient by the sum over holders in rank order.
    func synchronize(over transport: Transport) throws {
        for tie in shared {
            for other in tie.ranks where other != transport.rank {
                try transport.send(tie.parameter.gradient.copy(), to: other,
                                   tag: MessageTag(kind: .tiedGradient, microBatch: tie.index, stage: transport.rank))
            }
        }
        for tie in shared {
            let own = tie.parameter.gradient
            var contributions: [Tensor] = []
            for other in tie.ranks {
                contributions.append(other == transport.rank ? own.copy() : try transport.receive(
                    from: other, tag: MessageTag(kind: .tiedGradient, microBatch: tie.index, stage: other), shape: own.shape))
            }
            own.zero()
            for contribution in contributions { own.add(contribution) }
        }
        try transport.waitForSends()
    }
}
