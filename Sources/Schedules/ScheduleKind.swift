/// The pipeline schedules TwoBP can generate, named as on the command line.
///
/// The number of micro-batches is a parameter, not part of the name: `1f1b-1`
/// and `1f1b-2` are the same generator with the two defaults the 2BP paper
/// (Rae, Lee, Richings, arXiv 2405.18047) benchmarks, M = N and M = 2N for N ranks.
public enum ScheduleKind: String, CaseIterable, Sendable, Codable, CustomStringConvertible {
    /// The whole batch as one micro-batch, stage after stage (no pipelining).
    case naive
    /// All forwards, then all backwards (Huang et al., GPipe, 2019).
    case gpipe
    /// 1F1B (PipeDream-Flush, Narayanan et al. 2021) with M = N by default.
    case oneFOneB1 = "1f1b-1"
    /// 1F1B with M = 2N by default.
    case oneFOneB2 = "1f1b-2"
    /// Megatron's interleaved 1F1B: several chunks per rank in a loop
    /// (Narayanan et al., SC'21, arXiv 2104.04473).
    case interleaved
    /// Zero Bubble's handcrafted ZB-H1: 1F1B memory, about a third of its bubble
    /// (Qi et al., arXiv 2401.10241, section 2.1).
    case zeroBubbleH1 = "zb-h1"
    /// Zero Bubble's ZB-H2: more warm-up forwards, up to 2N-1 micro-batches in
    /// flight, no bubble inside a rank's span (section 2.2).
    case zeroBubbleH2 = "zb-h2"
    /// Zero Bubble's ZB-V: two chunks per rank in V placement, 1F1B memory
    /// (section 6 of the newer paper version; PyTorch's `ScheduleZBVZeroBubble`).
    case zeroBubbleV = "zb-v"

    public var description: String { rawValue }

    /// Parses a command-line name, ignoring case; the error lists the valid names.
    public init(name: String) throws {
        guard let kind = ScheduleKind(rawValue: name.lowercased()) else {
            let names = ScheduleKind.allCases.map(\.rawValue).joined(separator: ", ")
            throw ScheduleError(.invalidRequest, "unknown schedule '\(name)'; expected one of \(names)")
        }
        self = kind
    }

    /// Micro-batches when the caller gives none.
    ///
    /// naive: 1 (that is what naive means); gpipe and 1f1b-1: N, the 2BP
    /// paper's 1F1B-1 setting; 1f1b-2 and interleaved: 2N (the paper's 1F1B-2,
    /// and a multiple of N as Megatron requires); zb-h1, zb-h2, zb-v: 2N, a
    /// full pipeline for each: ZB-H2 needs M >= 2N - 1 (rank 0 warms up with
    /// 2N - 1 forwards) and ZB-V M >= 2N to have no bubble. The Zero Bubble
    /// paper's own runs use larger M; pass it explicitly.
    public func defaultMicroBatches(ranks: Int) -> Int {
        switch self {
        case .naive: 1
        case .gpipe, .oneFOneB1: ranks
        case .oneFOneB2, .interleaved, .zeroBubbleH1, .zeroBubbleH2, .zeroBubbleV: 2 * ranks
        }
    }

    /// Model chunks per rank when the caller gives none.
    public var defaultChunksPerRank: Int {
        switch self {
        case .naive, .gpipe, .oneFOneB1, .oneFOneB2, .zeroBubbleH1, .zeroBubbleH2: 1
        case .interleaved, .zeroBubbleV: 2
        }
    }

    /// True for the Zero Bubble schedules, which are defined with the backward
    /// already split into I and W; their `twoBP` flag only concatenates the
    /// trailing W passes (see `ScheduleRequest.twoBP`).
    public var splitsBackwardInherently: Bool {
        switch self {
        case .naive, .gpipe, .oneFOneB1, .oneFOneB2, .interleaved: false
        case .zeroBubbleH1, .zeroBubbleH2, .zeroBubbleV: true
        }
    }
}
