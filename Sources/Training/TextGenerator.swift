import Data
import Foundation
import Models
import Tensor

/// How the next token is drawn from the model's logits.
public struct SamplingOptions: Equatable, Sendable {
    /// Softmax temperature; 0 means greedy (argmax, the lowest id on ties).
    public var temperature: Double
    /// Sample only among the `topK` most likely tokens (nil: all).
    public var topK: Int?
    /// Seed of the `SeededGenerator` the draws come from: the same seed gives the same text.
    public var seed: UInt64

    public init(temperature: Double = 0.8, topK: Int? = nil, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topK = topK
        self.seed = seed
    }

    /// Throws a `TwoBPError` for a negative or non-finite temperature or a top-k below 1.
    public func validate() throws {
        guard temperature >= 0, temperature.isFinite else {
            throw TwoBPError("temperature must be a number >= 0 (0 = greedy), got \(temperature)")
        }
        if let topK, topK < 1 { throw TwoBPError("top-k must be at least 1, got \(topK)") }
    }
}

/// Autoregressive byte-level generation with a causal language model (LLaMa, Mamba).
///
/// Each step runs the model's saving-nothing forward over the context, the last
/// `max_position_embeddings` tokens (prompt and generated so far; no key/value cache, so a step
/// costs a forward over the whole context), and draws the next token from the logits of the last
/// position. Only the byte ids 0..<256 are candidates, whatever the vocabulary size, since the
/// byte tokenizer can write nothing else.
public final class TextGenerator {
    public let model: CausalLanguageModel
    public let options: SamplingOptions
    private var generator: SeededGenerator

    public init(model: CausalLanguageModel, options: SamplingOptions) throws {
        try options.validate()
        self.model = model
        self.options = options
        generator = SeededGenerator(seed: options.seed)
    }

    /// The tokens a step sees: the last `max_position_embeddings` of `tokens`.
    public func context(_ tokens: [Int32]) -> ArraySlice<Int32> {
        tokens.suffix(model.contextLength)
    }

    /// Logits [vocabularySize] of the token following `tokens` (cropped to the context).
    public func nextTokenLogits(_ tokens: [Int32]) throws -> [Float] {
        let context = Array(context(tokens))
        let logits = try model.logits(tokens: context, batchSize: 1, sequenceLength: context.count)
        let vocabulary = model.vocabularySize
        let last = logits.pointer + (context.count - 1) * vocabulary
        return Array(UnsafeBufferPointer(start: last, count: vocabulary))
    }

    /// Generates `count` tokens after `prompt`, calling `onToken` with each as soon as it is drawn,
    /// and returns them (without the prompt).
    @discardableResult
    public func generate(prompt: [Int32], count: Int, onToken: (Int32) throws -> Void = { _ in }) throws -> [Int32] {
        guard !prompt.isEmpty else { throw TwoBPError("the prompt is empty: generation needs at least one byte to start from") }
        guard count >= 1 else { throw TwoBPError("the number of tokens to generate must be at least 1, got \(count)") }
        let vocabulary = model.vocabularySize
        if let bad = prompt.first(where: { $0 < 0 || Int($0) >= vocabulary }) {
            throw TwoBPError("prompt token \(bad) is outside the vocabulary of \(vocabulary)")
        }
        var tokens = prompt
        var generated: [Int32] = []
        generated.reserveCapacity(count)
        for _ in 0..<count {
            let logits = try nextTokenLogits(tokens)
            let candidates = logits.prefix(ByteTokenizer.vocabularySize)
            let token = Int32(TextGenerator.sample(Array(candidates), options: options, using: &generator))
            tokens.append(token)
            generated.append(token)
            try onToken(token)
        }
        return generated
    }

    /// The index drawn from `logits` under `options` (its seed is not used: draws come from
    /// `generator`). Greedy (temperature 0, or top-k 1) is the first maximum. Otherwise the
    /// probabilities are softmax(logits / temperature) over the `topK` largest logits (ties
    /// broken towards the lower index), computed in Double, and one uniform draw picks the first
    /// index, in increasing order, whose cumulative probability exceeds it. Non-finite logits are
    /// never drawn unless all are.
    public static func sample(_ logits: [Float], options: SamplingOptions, using generator: inout SeededGenerator) -> Int {
        precondition(!logits.isEmpty, "sampling from no logits")
        let finite = logits.indices.filter { logits[$0].isFinite }
        guard !finite.isEmpty else { return 0 }
        // Candidates by decreasing logit, ties towards the lower index.
        var order = finite.sorted { logits[$0] != logits[$1] ? logits[$0] > logits[$1] : $0 < $1 }
        if options.temperature == 0 || options.topK == 1 { return order[0] }
        if let topK = options.topK, topK < order.count { order.removeSubrange(topK...) }
        order.sort()
        let maximum = Double(order.map { logits[$0] }.max()!)
        let weights = order.map { Foundation.exp((Double(logits[$0]) - maximum) / options.temperature) }
        let total = weights.reduce(0, +)
        let draw = generator.nextUniform() * total
        var cumulative = 0.0
        for (index, weight) in zip(order, weights) {
            cumulative += weight
            if draw < cumulative { return index }
        }
        // Rounding can leave the draw at the very top: take the last candidate with weight.
        return order[weights.lastIndex(where: { $0 > 0 })!]
    }
}

/// Turns a stream of bytes into text as it arrives, holding back only an incomplete UTF-8
/// sequence at the end, so the concatenated pieces equal `ByteTokenizer.decode` of all the bytes
/// (invalid sequences become U+FFFD, exactly as there).
///
/// A byte that is not a continuation byte (0x80...0xBF) always starts a new sequence for the
/// decoder, so cutting before one never changes how either side decodes.
public struct UTF8Stream {
    private var pending: [UInt8] = []

    public init() {}

    /// The text that `byte` completes (often empty while a multi-byte character is incomplete).
    public mutating func append(_ byte: UInt8) -> String {
        pending.append(byte)
        // The last byte that starts a sequence; hold from it if its sequence is still incomplete.
        guard let start = pending.lastIndex(where: { $0 & 0xC0 != 0x80 }) else { return flush() }
        let lead = pending[start]
        let length = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1
        if pending.count - start < length && lead >= 0xC2 && lead <= 0xF4 {
            let text = String(decoding: pending[..<start], as: UTF8.self)
            pending.removeSubrange(..<start)
            return text
        }
        return flush()
    }

    /// Everything held back, decoded (an incomplete sequence becomes U+FFFD).
    public mutating func flush() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }
}
