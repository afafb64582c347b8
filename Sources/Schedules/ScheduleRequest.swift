/// What to generate: a kind, a pipeline size, and the knobs the kind takes.
///
/// `twoBP` is how 2BP enters a schedule (2BP is a property of the schedule,
/// never of the layers):
/// - naive, gpipe: each B becomes I (p1, sent upstream at once) and all p2 runs
///   at the end of the step as one `W*` per chunk, the concatenated GEMM of the
///   2BP paper.
/// - 1f1b-1, 1f1b-2, interleaved: each B becomes I; in the cool-down each I is
///   followed by the p2 of the oldest deferred micro-batch (filling the
///   cool-down bubble, as in the 2BP paper); what is still deferred runs at the
///   end as one `W*` per chunk.
/// - zb-h1, zb-h2, zb-v are split by definition (I and per-micro-batch W as in
///   the Zero Bubble paper) with or without the flag; with it, the run of W
///   passes that ends each rank's step is concatenated into one `W*` per
///   chunk, the one thing 2BP adds to them.
///
/// Micro-batches: any M >= 1 for gpipe, 1f1b and the Zero Bubble schedules
/// (with M < N the pipeline never fills: ranks whose warm-up covers all M
/// run GPipe's order;
/// zb-v builds its shape for 2N - 1 and drops the micro-batches that do not
/// exist); exactly 1 for naive; a multiple of N for interleaved.
/// Chunks per rank: 1, except interleaved (any v >= 1, default 2) and zb-v
/// (exactly 2).
public struct ScheduleRequest: Sendable, Equatable, CustomStringConvertible {
    public var kind: ScheduleKind
    public var ranks: Int
    /// nil: `kind.defaultMicroBatches(ranks:)`.
    public var microBatches: Int?
    public var twoBP: Bool
    /// nil: `kind.defaultChunksPerRank`.
    public var chunksPerRank: Int?

    public init(kind: ScheduleKind, ranks: Int, microBatches: Int? = nil, twoBP: Bool = false, chunksPerRank: Int? = nil) {
        self.kind = kind
        self.ranks = ranks
        self.microBatches = microBatches
        self.twoBP = twoBP
        self.chunksPerRank = chunksPerRank
    }

    public var description: String {
        "\(kind)\(twoBP ? "+2bp" : "") on \(ranks) ranks, \(microBatches.map(String.init) ?? "default") micro-batches"
    }

    /// The most micro-batches a step may have. Far beyond any pipeline's use (the bubble is gone by
    /// a few times the ranks), and it keeps generating, simulating and planning a step to seconds.
    public static let maxMicroBatches = 10_000

    /// The most ranks (pipeline stages) a schedule may have.
    public static let maxRanks = 1024

    static func checkMicroBatchBound(_ microBatches: Int) throws {
        guard microBatches <= maxMicroBatches else {
            throw ScheduleError(.invalidRequest, "\(microBatches) micro-batches per step is more than the \(maxMicroBatches) a schedule accepts")
        }
    }

    /// The shape with defaults filled in, or an error saying which parameter is wrong and why.
    public func resolved() throws -> PipelineShape {
        guard ranks >= 1 else {
            throw ScheduleError(.invalidRequest, "\(kind) needs at least 1 rank, got \(ranks)")
        }
        guard ranks <= Self.maxRanks else {
            throw ScheduleError(.invalidRequest, "\(ranks) ranks is more than the \(Self.maxRanks) a schedule accepts")
        }
        let microBatches = self.microBatches ?? kind.defaultMicroBatches(ranks: ranks)
        let chunks = chunksPerRank ?? kind.defaultChunksPerRank
        guard microBatches >= 1 else {
            throw ScheduleError(.invalidRequest, "\(kind) needs at least 1 micro-batch, got \(microBatches)")
        }
        try Self.checkMicroBatchBound(microBatches)
        guard chunks >= 1 else {
            throw ScheduleError(.invalidRequest, "\(kind) needs at least 1 chunk per rank, got \(chunks)")
        }
        switch kind {
        case .naive:
            guard microBatches == 1 else {
                throw ScheduleError(.invalidRequest,
                    "naive runs the whole batch as one micro-batch; got \(microBatches) micro-batches (use gpipe or 1f1b to split the batch)")
            }
        case .gpipe, .oneFOneB1, .oneFOneB2, .zeroBubbleH1, .zeroBubbleH2, .zeroBubbleV:
            break
        case .interleaved:
            guard microBatches % ranks == 0 else {
                throw ScheduleError(.invalidRequest,
                    "interleaved needs the micro-batches to be a multiple of the ranks (as Megatron does), got \(microBatches) micro-batches on \(ranks) ranks")
            }
        }
        switch kind {
        case .naive, .gpipe, .oneFOneB1, .oneFOneB2, .zeroBubbleH1, .zeroBubbleH2:
            guard chunks == 1 else {
                throw ScheduleError(.invalidRequest, "\(kind) runs one chunk per rank, got \(chunks) (interleaved takes several)")
            }
        case .interleaved:
            break
        case .zeroBubbleV:
            guard chunks == ZeroBubbleVGenerator.chunksPerRank else {
                throw ScheduleError(.invalidRequest, "zb-v runs exactly \(ZeroBubbleVGenerator.chunksPerRank) chunks per rank (V placement), got \(chunks)")
            }
        }
        return PipelineShape(ranks: ranks, microBatches: microBatches, chunksPerRank: chunks, twoBP: twoBP)
    }

    /// Generates the schedule (compute actions only; call `lowered()` for the sends and receives).
    public func make() throws -> Schedule {
        let shape = try resolved()
        let generator: any ScheduleGenerator.Type = switch kind {
        case .naive: NaiveGenerator.self
        case .gpipe: GPipeGenerator.self
        case .oneFOneB1, .oneFOneB2: OneFOneBGenerator.self
        case .interleaved: InterleavedGenerator.self
        case .zeroBubbleH1: ZeroBubbleH1Generator.self
        case .zeroBubbleH2: ZeroBubbleH2Generator.self
        case .zeroBubbleV: ZeroBubbleVGenerator.self
        }
        let placement = switch kind {
        case .naive, .gpipe, .oneFOneB1, .oneFOneB2, .interleaved, .zeroBubbleH1, .zeroBubbleH2:
            Schedule.loopedPlacement(ranks: shape.ranks, chunksPerRank: shape.chunksPerRank)
        case .zeroBubbleV:
            Schedule.vShapePlacement(ranks: shape.ranks)
        }
        var actions = (0..<shape.ranks).map { generator.actions(rank: $0, shape: shape) }
        if shape.twoBP && kind.splitsBackwardInherently {
            actions = actions.map(BackwardStyle.concatenatingTrailingWeightPasses)
        }
        return Schedule(name: kind.rawValue + (shape.twoBP ? Schedule.twoBPSuffix : ""),
                        ranks: shape.ranks, chunksPerRank: shape.chunksPerRank,
                        microBatches: shape.microBatches, placement: placement, actions: actions)
    }
}

/// A request with its defaults filled in and checked: what every generator reads.
public struct PipelineShape: Sendable, Equatable {
    public let ranks: Int
    public let microBatches: Int
    public let chunksPerRank: Int
    public let twoBP: Bool
}

/// A schedule generator: one rank's actions as a pure function of the pipeline shape.
protocol ScheduleGenerator {
    static func actions(rank: Int, shape: PipelineShape) -> [Action]
}

extension Schedule {
    /// Appended to the kind's name for the 2BP variant, e.g. `1f1b-1+2bp`.
    public static let twoBPSuffix = "+2bp"

    /// Generates a schedule; see `ScheduleRequest` for what each parameter and `twoBP` mean.
    ///
    /// - Throws: `ScheduleError` (reason `.invalidRequest`) for zero or negative
    ///   ranks, micro-batches or chunks, naive with M != 1, interleaved with M not
    ///   a multiple of the ranks, a chunk count the kind does not take.
    public static func make(kind: ScheduleKind, ranks: Int, microBatches: Int? = nil,
                            twoBP: Bool = false, chunksPerRank: Int? = nil) throws -> Schedule {
        try ScheduleRequest(kind: kind, ranks: ranks, microBatches: microBatches,
                            twoBP: twoBP, chunksPerRank: chunksPerRank).make()
    }

    /// Zero Bubble's V placement: rank r holds stage r (chunk 0) and stage
    /// 2N-1-r (chunk 1), so the last rank turns the pipeline around locally
    /// and rank 0 holds both the first and the last stage.
    public static func vShapePlacement(ranks: Int) -> [[Int]] {
        (0..<ranks).map { rank in [rank, 2 * ranks - 1 - rank] }
    }
}
