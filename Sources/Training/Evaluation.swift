import Data
import Files
import Foundation
import Models
import Tensor

/// What `twobp eval` measured.
public struct EvaluationResult: Equatable, Sendable, Encodable {
    /// Mean cross-entropy over the predicted bytes, in nats per byte.
    public let loss: Double
    /// Windows evaluated.
    public let windows: Int
    /// Bytes predicted: windows × sequenceLength.
    public let tokens: Int
    public let sequenceLength: Int

    public init(loss: Double, windows: Int, tokens: Int, sequenceLength: Int) {
        self.loss = loss
        self.windows = windows
        self.tokens = tokens
        self.sequenceLength = sequenceLength
    }

    /// Bits per byte: the loss over ln 2.
    public var bitsPerByte: Double { loss / Foundation.log(2) }
    /// exp(loss).
    public var perplexity: Double { Foundation.exp(loss) }

    enum CodingKeys: String, CodingKey {
        case loss, windows, tokens, sequenceLength = "sequence_length"
    }

    /// `{"loss": ..., "sequence_length": ..., "tokens": ..., "windows": ...}`, indented, newline-terminated.
    public func jsonText() throws -> String {
        String(decoding: try JSONLines.pretty(self), as: UTF8.self)
    }

    /// Writes `jsonText()` to `url` (`FileIO.writeOutput`).
    public func writeJSON(to url: URL) throws {
        try FileIO.writeOutput(url, what: "--json", text: jsonText())
    }
}

/// Held-out style evaluation of a whole text: the mean next-byte cross-entropy of a model over
/// fixed windows of the file.
///
/// The text is cut, from its first byte, into consecutive non-overlapping windows of
/// `sequenceLength + 1` bytes (window i is bytes i·(L+1) ..< (i+1)·(L+1)); a partial window at
/// the end is dropped. In each window the model reads bytes 0..<L and predicts bytes 1...L, so
/// every window contributes L predictions, each seeing the whole window before it. The loss runs
/// through the model's evaluation path, which saves nothing, `batchSize` windows at a time.
public enum Evaluation {
    /// Windows of `sequenceLength + 1` bytes that fit in `byteCount` bytes.
    public static func windowCount(byteCount: Int, sequenceLength: Int) -> Int {
        byteCount / (sequenceLength + 1)
    }

    /// Window `index`'s bytes: `sequenceLength + 1` of them, starting at index · (sequenceLength + 1).
    public static func window(_ index: Int, of bytes: [UInt8], sequenceLength: Int) -> ArraySlice<UInt8> {
        let start = index * (sequenceLength + 1)
        return bytes[start..<(start + sequenceLength + 1)]
    }

    /// Reads a data file for evaluation; errors name it (missing, a folder, unreadable).
    public static func readData(_ url: URL) throws -> [UInt8] {
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw TwoBPError("data file \(url.path) not found (scripts/setup-data.sh builds data/shakespeare.txt)")
        }
        return [UInt8](try FileIO.read(url, what: "data file"))
    }

    /// The mean cross-entropy (nats per byte) of `model` over the first `maxWindows` windows of
    /// `bytes` (all when nil). `source` names the text in errors; `progress` is told (windows done,
    /// windows in all) after each batch.
    public static func evaluate(model: CausalLanguageModel, bytes: [UInt8], sequenceLength: Int, maxWindows: Int? = nil,
                                batchSize: Int = 8, source: String = "text",
                                progress: (Int, Int) -> Void = { _, _ in }) throws -> EvaluationResult {
        let limit = model.contextLength
        guard sequenceLength >= 1 else { throw TwoBPError("sequence length must be at least 1, got \(sequenceLength)") }
        guard sequenceLength <= limit else {
            throw TwoBPError("sequence length \(sequenceLength) exceeds the model's context of \(limit) tokens")
        }
        if let maxWindows, maxWindows < 1 { throw TwoBPError("the number of windows must be at least 1, got \(maxWindows)") }
        guard batchSize >= 1 else { throw TwoBPError("batch size must be at least 1, got \(batchSize)") }
        let available = windowCount(byteCount: bytes.count, sequenceLength: sequenceLength)
        guard available >= 1 else {
            throw TwoBPError("\(source) has \(bytes.count) bytes, shorter than one window of \(sequenceLength + 1) bytes (sequence length \(sequenceLength) + 1)")
        }
        let windows = min(available, maxWindows ?? available)
        guard Int(UInt8.max) < model.vocabularySize else {
            throw TwoBPError("vocab_size \(model.vocabularySize) cannot hold every byte (needs 256)")
        }

        var total = 0.0
        var first = 0
        while first < windows {
            let count = min(batchSize, windows - first)
            var tokens: [Int32] = []
            var targets: [Int32] = []
            tokens.reserveCapacity(count * sequenceLength)
            targets.reserveCapacity(count * sequenceLength)
            for index in first..<(first + count) {
                let window = self.window(index, of: bytes, sequenceLength: sequenceLength)
                tokens += window.dropLast().map { Int32($0) }
                targets += window.dropFirst().map { Int32($0) }
            }
            // Weight 1: the sum of the cross-entropies, divided once at the end in Double.
            let batch = TokenBatch(tokens: tokens, targets: targets, batchSize: count, sequenceLength: sequenceLength,
                                   lossWeight: 1)
            total += try model.loss(batch)
            first += count
            progress(first, windows)
        }
        let predicted = windows * sequenceLength
        return EvaluationResult(loss: total / Double(predicted), windows: windows, tokens: predicted,
                                sequenceLength: sequenceLength)
    }
}

/// What `twobp eval` measured on a data source's held-out part.
public struct HeldOutEvaluation: Encodable {
    /// Every loss term (`ModelConfig.lossTerms`), the mean over the batches.
    public let terms: [(name: String, value: Double)]
    public let batches: Int
    public let samples: Int

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: JSONKey.self)
        for (name, value) in terms { try container.encodeFinite(value, forKey: JSONKey(name)) }
        try container.encode(batches, forKey: JSONKey("batches"))
        try container.encode(samples, forKey: JSONKey("samples"))
    }

    /// Writes the terms, batches and samples as indented JSON to `url` (atomically).
    public func writeJSON(to url: URL) throws {
        try FileIO.writeOutput(url, what: "--json", data: JSONLines.pretty(self))
    }
}

extension Evaluation {
    /// The mean of every loss term of `model` (a whole model) over `source`'s held-out batches of
    /// `batchSize` samples, at most `maxBatches` of them, through the evaluation path; or, with
    /// `trainingMode`, through the training forward, as a step of one micro-batch computes them
    /// (batch norms on each batch's own statistics, dropout as in training), with the backward run
    /// after it only to release what the forward saved. That is what a reference library's
    /// `model.train()` loss is checked against.
    public static func evaluateHeldOut(model: ModelChunk, terms names: [String], source: any DataSource, batchSize: Int,
                                       maxBatches: Int?, trainingMode: Bool = false) throws -> HeldOutEvaluation {
        let batches = try source.validationBatches(batchSize: batchSize, limit: maxBatches)
        var totals = [Double](repeating: 0, count: names.count)
        for batch in batches {
            totals = zip(totals, try trainingMode ? trainingLoss(model, batch) : model.evaluateLoss(batch)).map(+)
        }
        return HeldOutEvaluation(terms: zip(names, totals).map { ($0, $1 / Double(batches.count)) }, batches: batches.count,
                                 samples: batches.reduce(0) { $0 + $1.sampleCount })
    }

    /// The loss terms of the training forward of a whole model on `batch` as one micro-batch.
    private static func trainingLoss(_ model: ModelChunk, _ batch: any MicroBatch) throws -> [Double] {
        guard model.isFirst, model.isLast, case .loss(let terms) = try model.forward(nil, batch: batch, microBatch: 0) else {
            throw TwoBPError("evaluating a loss needs a chunk that holds the whole model")
        }
        _ = try model.backwardInput(nil, microBatch: 0)
        try model.backwardWeight(.microBatch(0))
        return terms
    }
}
