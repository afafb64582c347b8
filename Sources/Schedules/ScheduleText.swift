/// The compact text form of a whole schedule, for tests, golden files and the CLI.
///
/// ```
/// name: 1f1b-1+2bp
/// micro-batches: 2
/// placement: 0 | 1
/// rank 0: F0 F1 I0 I1 W0 W*
/// rank 1: F0 I0 F1 I1 W*
/// ```
///
/// - `placement` lists, rank by rank (separated by `|`), the virtual stage of
///   each local chunk; it fixes the rank and chunk counts. `1f1b`'s is
///   `0 | 1`, interleaved with 2 chunks on 2 ranks `0 2 | 1 3`, zb-v's
///   `0 3 | 1 2`.
/// - Each `rank N:` line holds that rank's actions in order, in `Action`'s
///   text form (`F3`, `1I0` for chunk 1, `W*`, `SEND_F2`); an empty line
///   after the colon is a rank with nothing to do.
/// - Blank lines and lines starting with `#` are ignored.
///
/// Everything but the action lines may be left out when reading, which keeps
/// hand-written schedules short: lines without a `key:` are ranks 0, 1, ... in
/// order; the name defaults to `custom`; the micro-batch count to one more than
/// the largest micro-batch named; the placement to the looped one
/// (stage = chunk * ranks + rank) with as many chunks as the largest chunk
/// named needs. `Schedule(text: s.text) == s` for every schedule `s`.
extension Schedule {
    public static let defaultTextName = "custom"

    /// The full text form; see the extension's documentation.
    public var text: String {
        var lines = [
            "name: \(name)",
            "micro-batches: \(microBatches)",
            "placement: " + placement.map { $0.map(String.init).joined(separator: " ") }.joined(separator: " | "),
        ]
        for (rank, rankActions) in actions.enumerated() {
            let list = rankActions.map(\.description).joined(separator: " ")
            lines.append("rank \(rank):" + (list.isEmpty ? "" : " " + list))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Reads the text form; throws `ScheduleError` (reason `.parse`) naming the line.
    ///
    /// The result is data, not yet checked as a schedule: call `validate()`.
    public init(text: String) throws {
        var name: String?
        var microBatches: Int?
        var placement: [[Int]]?
        var actions: [[Action]] = []

        func fail(_ lineNumber: Int, _ why: String) -> ScheduleError {
            ScheduleError(.parse, "schedule text, line \(lineNumber): \(why)")
        }

        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let lineNumber = index + 1
            let line = rawLine.trimmingWhitespace()
            if line.isEmpty || line.hasPrefix("#") { continue }
            var body = line
            if let colon = line.firstIndex(of: ":") {
                let key = line[..<colon].trimmingWhitespace().lowercased()
                let value = line[line.index(after: colon)...].trimmingWhitespace()
                switch key {
                case "name":
                    name = value
                    continue
                case "micro-batches", "microbatches":
                    guard let count = Int(value), count >= 0 else {
                        throw fail(lineNumber, "micro-batches must be a whole number, got '\(value)'")
                    }
                    microBatches = count
                    continue
                case "placement":
                    var groups: [[Int]] = []
                    for group in value.split(separator: "|", omittingEmptySubsequences: false) {
                        var stages: [Int] = []
                        for word in group.split(separator: " ") {
                            guard let stage = Int(word) else {
                                throw fail(lineNumber, "placement holds stage numbers separated by '|', got '\(word)'")
                            }
                            stages.append(stage)
                        }
                        groups.append(stages)
                    }
                    placement = groups
                    continue
                default:
                    let words = key.split(separator: " ")
                    guard words.count == 2, words[0] == "rank", let rank = Int(words[1]) else {
                        throw fail(lineNumber, "unknown key '\(key)' (expected name, micro-batches, placement or rank N)")
                    }
                    guard rank == actions.count else {
                        throw fail(lineNumber, "expected rank \(actions.count) next, got rank \(rank)")
                    }
                    body = value
                }
            }
            var rankActions: [Action] = []
            for word in body.split(separator: " ") {
                guard let action = Action(String(word)) else {
                    throw fail(lineNumber, "'\(word)' is not an action (expected e.g. F3, 1I0, W*, SEND_F2)")
                }
                rankActions.append(action)
            }
            actions.append(rankActions)
        }

        guard !actions.isEmpty else {
            throw ScheduleError(.parse, "schedule text has no rank lines")
        }
        let allActions = actions.joined()
        let ranks = actions.count
        let resolvedPlacement: [[Int]]
        if let placement {
            guard placement.count == ranks else {
                throw ScheduleError(.parse, "schedule text: placement has \(placement.count) ranks but there are \(ranks) rank lines")
            }
            guard let chunks = placement.first?.count, chunks >= 1, placement.allSatisfy({ $0.count == chunks }) else {
                throw ScheduleError(.parse, "schedule text: every rank in the placement must hold the same number (at least 1) of chunks")
            }
            resolvedPlacement = placement
        } else {
            let chunks = (allActions.map(\.chunk).max() ?? 0) + 1
            resolvedPlacement = Schedule.loopedPlacement(ranks: ranks, chunksPerRank: chunks)
        }
        let resolvedMicroBatches = microBatches ?? ((allActions.compactMap(\.microBatch).max() ?? -1) + 1)
        self.init(name: name ?? Schedule.defaultTextName, ranks: ranks,
                  chunksPerRank: resolvedPlacement[0].count, microBatches: resolvedMicroBatches,
                  placement: resolvedPlacement, actions: actions)
    }
}

extension StringProtocol {
    fileprivate func trimmingWhitespace() -> String {
        String(drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
    }
}
