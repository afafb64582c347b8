/// A pipeline schedule as data: for each rank, the ordered actions it runs in one training step.
///
/// The same value is validated, simulated, drawn and executed. `placement`
/// maps each (rank, chunk) to the virtual stage of the model it holds: stage
/// 0 embeds tokens, stage `virtualStages - 1` computes the loss.
public struct Schedule: Sendable, Equatable {
    public let name: String
    public let ranks: Int
    public let chunksPerRank: Int
    public let microBatches: Int
    /// placement[rank][chunk] = virtual stage.
    public let placement: [[Int]]
    /// actions[rank] = that rank's actions in execution order.
    public var actions: [[Action]]

    public init(name: String, ranks: Int, chunksPerRank: Int, microBatches: Int, placement: [[Int]], actions: [[Action]]) {
        precondition(placement.count == ranks && placement.allSatisfy { $0.count == chunksPerRank })
        precondition(actions.count == ranks)
        self.name = name
        self.ranks = ranks
        self.chunksPerRank = chunksPerRank
        self.microBatches = microBatches
        self.placement = placement
        self.actions = actions
    }

    public var virtualStages: Int { ranks * chunksPerRank }

    /// The virtual stage that `chunk` of `rank` holds.
    public func stage(rank: Int, chunk: Int) -> Int { placement[rank][chunk] }

    /// The rank and local chunk that hold virtual stage `stage`.
    public func location(ofStage stage: Int) -> (rank: Int, chunk: Int) {
        for rank in 0..<ranks {
            if let chunk = placement[rank].firstIndex(of: stage) { return (rank, chunk) }
        }
        preconditionFailure("stage \(stage) is not placed")
    }

    /// Placement of the classic pipelines: virtual stage = chunk · ranks + rank
    /// (one chunk per rank, or Megatron's interleaved loop).
    public static func loopedPlacement(ranks: Int, chunksPerRank: Int) -> [[Int]] {
        (0..<ranks).map { rank in (0..<chunksPerRank).map { chunk in chunk * ranks + rank } }
    }
}
