import Foundation
import Tensor

/// A JSON-lines metrics file: one compact JSON object per optimizer step,
/// `{"step":1,"loss":5.5,"lr":0.0003,"tokens_per_second":1234.5, ...extra}`.
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
        if let step, FileIO.isFile(url) {
            let kept = try MetricsLog.records(in: FileIO.read(url, what: "metrics file"), upTo: step)
            try FileIO.writeDurably(url, text: kept.map { $0 + "\n" }.joined())
            sink = try FileSink(url: url, append: true)
        } else {
            sink = try FileSink(url: url, append: false)
        }
    }

    /// The lines of `data` that parse as objects with an integer "step" ≤ `step`.
    static func records(in data: Data, upTo step: Int) -> [String] {
        String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap { line in
            guard let value = try? JSONValue.parse(String(line)), let s = value["step"]?.intValue, s <= step else { return nil }
            return String(line)
        }
    }

    /// Appends one step's record; `extra` fields follow the four standard ones, in order.
    public func log(step: Int, loss: Double, learningRate: Double, tokensPerSecond: Double,
                    extra: [(key: String, value: JSONValue)] = []) throws {
        let fields: [(key: String, value: JSONValue)] = [
            (key: "step", value: .int(step)),
            (key: "loss", value: .double(loss)),
            (key: "lr", value: .double(learningRate)),
            (key: "tokens_per_second", value: .double(tokensPerSecond)),
        ]
        try log(.object(fields + extra))
    }

    /// Appends any JSON value as one line.
    public func log(_ record: JSONValue) throws {
        try sink.write(record.encoded() + "\n")
    }

    public func close() throws {
        try sink.close()
    }
}

/// The end-of-run summary: one indented JSON object in a file of its own.
public enum RunSummary {
    /// Writes `summary` to `url` (atomically: a temporary file, then a rename).
    public static func write(_ summary: JSONValue, to url: URL) throws {
        guard case .object = summary else { throw TwoBPError("a run summary must be a JSON object") }
        try FileIO.createDirectory(url.deletingLastPathComponent())
        try FileIO.writeDurably(url, text: summary.prettyEncoded())
    }
}
