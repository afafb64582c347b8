/// What a pipeline rank does in one slot of its schedule.
///
/// The raw values are the letters of the compact text form (as in PyTorch's
/// `torch.distributed.pipelining`): compute actions are one letter, the
/// communication actions that lowering adds are words.
public enum ActionKind: String, CaseIterable, Sendable, Codable {
    case forward = "F"
    /// backward-p1: the gradient with respect to the chunk's input.
    case backwardInput = "I"
    /// backward-p2: weight gradients of one micro-batch, or of all pending ones.
    case backwardWeight = "W"
    /// p1 then p2 of one micro-batch, the plain (fused) backward.
    case backwardFull = "B"
    case sendActivation = "SEND_F"
    case receiveActivation = "RECV_F"
    case sendGradient = "SEND_B"
    case receiveGradient = "RECV_B"

    public var isCommunication: Bool {
        switch self {
        case .forward, .backwardInput, .backwardWeight, .backwardFull: false
        case .sendActivation, .receiveActivation, .sendGradient, .receiveGradient: true
        }
    }
}

/// One slot of a rank's schedule: a kind, a micro-batch and the rank's local chunk.
///
/// Text form: an optional chunk prefix, the kind, the micro-batch, e.g. `F3`,
/// `1I0` (chunk 1), `W*` (p2 of all pending micro-batches, concatenated),
/// `SEND_F2`. `Action(text)` parses exactly what `description` prints.
public struct Action: Hashable, Sendable, Codable, CustomStringConvertible, LosslessStringConvertible {
    public let kind: ActionKind
    /// nil only for `W*`, the concatenated p2 of every pending micro-batch.
    public let microBatch: Int?
    /// Index of the model chunk on this rank (0 unless the schedule has several chunks per rank).
    public let chunk: Int

    public init(_ kind: ActionKind, _ microBatch: Int?, chunk: Int = 0) {
        precondition(microBatch != nil || kind == .backwardWeight, "only W may cover all pending micro-batches")
        self.kind = kind
        self.microBatch = microBatch
        self.chunk = chunk
    }

    public var description: String {
        (chunk == 0 ? "" : String(chunk)) + kind.rawValue + (microBatch.map(String.init) ?? "*")
    }

    public init?(_ text: String) {
        var rest = Substring(text)
        let chunkDigits = rest.prefix(while: \.isNumber)
        rest = rest.dropFirst(chunkDigits.count)
        let letters = rest.prefix(while: { $0.isLetter || $0 == "_" })
        rest = rest.dropFirst(letters.count)
        guard let kind = ActionKind(rawValue: String(letters)) else { return nil }
        let chunk = chunkDigits.isEmpty ? 0 : Int(chunkDigits)
        guard let chunk else { return nil }
        if rest == "*" {
            guard kind == .backwardWeight else { return nil }
            self.init(kind, nil, chunk: chunk)
        } else {
            guard !rest.isEmpty, rest.allSatisfy(\.isNumber), let microBatch = Int(rest) else { return nil }
            self.init(kind, microBatch, chunk: chunk)
        }
    }
}
