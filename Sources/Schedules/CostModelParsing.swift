import Foundation

/// The two ways a cost model enters from outside: the short `--costs` string
/// for uniform stages, and a JSON file for anything measured per stage.
extension CostModel {
    /// The keys of the `--costs` string form. Times are seconds, sizes bytes.
    public enum TextKey: String, CaseIterable, Sendable {
        case forward = "F"
        case backwardInput = "I"
        case backwardWeight = "W"
        /// The fused backward; with only `B` given, p1 and p2 split it evenly.
        case backwardFull = "B"
        case latency
        case bandwidth
        case messageBytes = "bytes"
        case activationBytes = "act"
        case stashBytes = "stash"
        case staticBytes = "static"
        case memoryLimit = "limit"
        case concatenationEfficiency = "efficiency"
    }

    /// Parses the uniform form `F=1,I=1,W=1` (what `--costs` gives).
    ///
    /// `F` is required, and the backward as `I` and `W`, or `B` with one of
    /// them (the other is the rest), or `B` alone (split evenly). Optional:
    /// `latency`, `bandwidth`, `bytes` (per message), `act`, `stash`,
    /// `static`, `limit` (per-rank bytes) and `efficiency` (of `W*`).
    /// Numbers may use exponents, e.g. `bandwidth=25e9`.
    public init(parsing text: String) throws {
        var values: [TextKey: Double] = [:]
        for field in text.split(separator: ",", omittingEmptySubsequences: true) {
            let parts = field.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else {
                throw ScheduleError(.parse, "cost '\(field)' is not of the form KEY=NUMBER (e.g. F=1,I=1,W=1)")
            }
            guard let key = TextKey(rawValue: parts[0]) else {
                let known = TextKey.allCases.map(\.rawValue).joined(separator: ", ")
                throw ScheduleError(.parse, "unknown cost key '\(parts[0])'; known keys: \(known)")
            }
            guard let value = Double(parts[1]), value.isFinite, value >= 0 else {
                throw ScheduleError(.parse, "cost \(parts[0]) must be a number >= 0, got '\(parts[1])'")
            }
            guard values.updateValue(value, forKey: key) == nil else {
                throw ScheduleError(.parse, "cost \(parts[0]) is given twice")
            }
        }
        guard let forward = values[.forward] else {
            throw ScheduleError(.parse, "costs need F (forward seconds), e.g. F=1,I=1,W=1")
        }
        let (backwardInput, backwardWeight) = try Self.splitBackward(
            input: values[.backwardInput], weight: values[.backwardWeight], full: values[.backwardFull])
        func bytes(_ key: TextKey) -> Int { Int((values[key] ?? 0).rounded()) }
        self = .uniform(forward: forward, backwardInput: backwardInput, backwardWeight: backwardWeight,
                        activationBytes: bytes(.activationBytes), stashBytes: bytes(.stashBytes),
                        staticBytes: bytes(.staticBytes), latency: values[.latency] ?? 0,
                        bandwidth: values[.bandwidth], messageBytes: bytes(.messageBytes),
                        concatenationEfficiency: values[.concatenationEfficiency] ?? 1,
                        memoryLimit: values[.memoryLimit].map { Int($0.rounded()) })
        try check(virtualStages: 1)
    }

    /// p1 and p2 seconds from whichever of I, W and B = I + W were given.
    private static func splitBackward(input: Double?, weight: Double?, full: Double?) throws -> (Double, Double) {
        switch (input, weight, full) {
        case let (input?, weight?, nil):
            return (input, weight)
        case let (input?, weight?, full?):
            guard abs(input + weight - full) <= 1e-9 * max(1, full) else {
                throw ScheduleError(.parse, "B must equal I + W, got I=\(input), W=\(weight), B=\(full)")
            }
            return (input, weight)
        case let (input?, nil, full?):
            guard full >= input else { throw ScheduleError(.parse, "B=\(full) is smaller than I=\(input)") }
            return (input, full - input)
        case let (nil, weight?, full?):
            guard full >= weight else { throw ScheduleError(.parse, "B=\(full) is smaller than W=\(weight)") }
            return (full - weight, weight)
        case let (nil, nil, full?):
            return (full / 2, full / 2)
        case (_, _, nil):
            throw ScheduleError(.parse, "costs need the backward: I and W, or B (= I + W)")
        }
    }

    /// Reads a cost model from JSON (the shape `jsonData()` writes; missing
    /// optional fields take their defaults).
    public init(json: Data) throws {
        do {
            self = try JSONDecoder().decode(CostModel.self, from: json)
        } catch let error as DecodingError {
            throw ScheduleError(.parse, "cost model JSON is not valid: \(Self.describe(error))")
        }
        guard !stages.isEmpty else { throw ScheduleError(.invalidRequest, "cost model JSON has no stages") }
        try check(virtualStages: stages.count)
    }

    /// Pretty, key-sorted JSON, so files diff cleanly.
    public func jsonData() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }

    /// One line naming the field at fault, instead of the decoder's nested dump.
    private static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let path = context.codingPath.reduce("") { path, key in
                key.intValue.map { path + "[\($0)]" } ?? (path.isEmpty ? key.stringValue : path + "." + key.stringValue)
            }
            return path.isEmpty ? "top level" : path
        }
        switch error {
        case let .keyNotFound(key, context):
            return "missing '\(key.stringValue)' at \(path(context))"
        case let .typeMismatch(_, context), let .valueNotFound(_, context), let .dataCorrupted(context):
            return "\(context.debugDescription) at \(path(context))"
        @unknown default:
            return String(describing: error)
        }
    }
}
