import Data
import Files
import Foundation
import Tensor

/// One optimizer step's record in the metrics file.
public struct StepRecord: Encodable {
    public var step: Int
    public var learningRate: Double
    public var throughput: Double
    public var unit: ThroughputUnit
    /// The model's loss terms (`ModelConfig.lossTerms`: `loss` first), by name.
    public var terms: [(name: String, value: Double)]
    public var gradientNorm: Double?
    public var stepTime: Double?

    public init(step: Int, learningRate: Double, throughput: Double, unit: ThroughputUnit,
                terms: [(name: String, value: Double)], gradientNorm: Double? = nil, stepTime: Double? = nil) {
        self.step = step
        self.learningRate = learningRate
        self.throughput = throughput
        self.unit = unit
        self.terms = terms
        self.gradientNorm = gradientNorm
        self.stepTime = stepTime
    }

    /// `step`, every loss term, `lr`, `<unit>_per_second`, `grad_norm`, `step_time_seconds`;
    /// a non-finite number (a diverged loss) is written as null, since JSON has no NaN.
    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: JSONKey.self)
        try container.encode(step, forKey: JSONKey("step"))
        for (name, value) in terms { try container.encodeFinite(value, forKey: JSONKey(name)) }
        try container.encodeFinite(learningRate, forKey: JSONKey("lr"))
        try container.encodeFinite(throughput, forKey: JSONKey("\(unit.name)_per_second"))
        if let gradientNorm { try container.encodeFinite(gradientNorm, forKey: JSONKey("grad_norm")) }
        if let stepTime { try container.encodeFinite(stepTime, forKey: JSONKey("step_time_seconds")) }
    }
}

/// A JSON-lines metrics file: one compact JSON object per optimizer step (`StepRecord`, keys sorted).
///
/// Each line is written with one unbuffered `write`, so `tail -f` shows it at
/// once and a killed run loses at most the line being written.
public final class MetricsLog {
    public let url: URL
    private let sink: FileSink

    /// Starts a new file at `url` (parent folders are created). With
    /// `resumingAfter: s`, keeps the existing file's records of steps ≤ s and
    /// drops later ones (written by the run that is being resumed after its
    /// last checkpoint) and any torn last line, then appends.
    public init(url: URL, resumingAfter step: Int? = nil) throws {
        self.url = url
        try FileIO.createDirectory(url.deletingLastPathComponent())
        if try FileIO.outputKind(url, what: "--metrics") == .replaceable, let step, FileIO.isRegularFile(url) {
            let kept = try MetricsLog.records(in: FileIO.read(url, what: "metrics file"), upTo: step)
            try FileIO.writeDurably(url, text: kept.map { $0 + "\n" }.joined())
            sink = try FileSink(url: url, append: true)
        } else {
            sink = try FileSink(url: url, append: false, what: "--metrics")
        }
    }

    /// The lines of `data` that parse as objects with an integer "step" ≤ `step`.
    static func records(in data: Data, upTo step: Int) -> [String] {
        struct Step: Decodable { let step: Int }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap { line in
            guard let s = try? JSONDecoder().decode(Step.self, from: Data(line.utf8)).step, s <= step else { return nil }
            return String(line)
        }
    }

    public func log(_ record: StepRecord) throws {
        try sink.write(String(decoding: try JSONLines.encode(record), as: UTF8.self) + "\n")
    }

    public func close() throws {
        try sink.close()
    }
}

/// The one JSON encoding of TwoBP's reports: Foundation's `JSONEncoder`, keys sorted (Foundation
/// does not keep their order otherwise), so the same values always give the same bytes.
public enum JSONLines {
    /// One compact line.
    public static func encode<T: Encodable>(_ value: T) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(value)
    }

    /// Indented, newline-terminated, for files a person reads.
    public static func pretty<T: Encodable>(_ value: T) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(value) + Data("\n".utf8)
    }
}

/// A coding key named at run time (loss terms, per-unit fields).
struct JSONKey: CodingKey {
    let stringValue: String
    init(_ name: String) { stringValue = name }
    init(stringValue: String) { self.stringValue = stringValue }
    var intValue: Int? { nil }
    init?(intValue: Int) { nil }
}

extension KeyedEncodingContainer {
    /// `value`, or null when it is not finite.
    mutating func encodeFinite(_ value: Double, forKey key: Key) throws {
        if value.isFinite { try encode(value, forKey: key) } else { try encodeNil(forKey: key) }
    }
}
