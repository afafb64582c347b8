import Files
import Foundation
import Layers
import Models
import Tensor

/// BERT pre-training data from a text file: sentence pairs cut at line boundaries, as
/// `[CLS] A [SEP] B [SEP] [PAD]…` over the byte vocabulary (`BertVocabulary`), with masked-LM and
/// next-sentence labels.
///
/// - The text is split into lines (each keeps its `\n`); the first (1 − validationFraction) of
///   them are the training part, the rest the held-out tail.
/// - A pair: A is whole lines from a start line, as many as fit half of the window's L − 3 byte
///   positions (a longer first line is cut); B, with probability ½, the lines right after A
///   (next-sentence label 0), else lines from a random other start in the same part (label 1),
///   as many as fit the rest. Token types are 0 for `[CLS] A [SEP]` and the padding, 1 for
///   `B [SEP]`; the attention mask is 0 on the padding.
/// - Masking: each byte position is selected for prediction with probability 15% (at least one a
///   sequence); a selected byte becomes `[MASK]` (80%), a random byte (10%) or stays (10%), and its
///   label is the original byte; every other label is -100.
/// - The batch of step s is a pure function of (seed, s, batch size), so a resumed run draws the
///   same batches and every stage can build the micro-batches it needs; the held-out batches are
///   fixed: sample i starts at held-out line 4i and draws from its own generator.
///
/// Loss weights make each step's masked-LM loss the mean over its predicted positions and the
/// next-sentence loss the mean over its sequences.
public final class SentencePairCorpus: DataSource {
    public let source: String
    public let fingerprint: String
    public let bytes: [UInt8]
    public let sequenceLength: Int
    /// Byte ranges of the lines, each with its trailing newline (the last may have none).
    public let lines: [Range<Int>]
    /// Indices into `lines` of the training part and of the held-out tail.
    public let trainingLines: Range<Int>
    public let validationLines: Range<Int>

    public static let defaultValidationFraction = 0.05
    /// The fraction of byte positions selected for masked-LM prediction.
    public static let maskingProbability = 0.15
    /// Held-out lines per held-out sample (its A starts every this many lines).
    static let validationLineStride = 4

    /// Reads the whole file. Errors name the file: missing, a folder, or too short for both parts.
    public convenience init(contentsOf url: URL, sequenceLength: Int,
                            validationFraction: Double = SentencePairCorpus.defaultValidationFraction) throws {
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw TwoBPError("data file \(url.path) not found (scripts/setup-data.sh builds data/shakespeare.txt)")
        }
        try self.init(bytes: [UInt8](try FileIO.read(url, what: "data file")), sequenceLength: sequenceLength,
                      validationFraction: validationFraction, source: "data file \(url.path)")
    }

    public init(bytes: [UInt8], sequenceLength: Int, validationFraction: Double = SentencePairCorpus.defaultValidationFraction,
                source: String = "text") throws {
        guard sequenceLength >= 5 else {
            throw TwoBPError("sequence length must be at least 5 for [CLS] A [SEP] B [SEP], not \(sequenceLength)")
        }
        guard validationFraction > 0, validationFraction < 1 else {
            throw TwoBPError("validation fraction must be between 0 and 1, not \(validationFraction)")
        }
        var lines: [Range<Int>] = []
        var start = 0
        for (index, byte) in bytes.enumerated() where byte == UInt8(ascii: "\n") {
            lines.append(start..<index + 1)
            start = index + 1
        }
        if start < bytes.count { lines.append(start..<bytes.count) }
        let validationCount = Int(Double(lines.count) * validationFraction)
        guard lines.count - validationCount >= 2, validationCount >= Self.validationLineStride else {
            throw TwoBPError("\(source) has \(lines.count) lines, too few for sentence pairs: the training part needs 2 and the held-out \(Int(validationFraction * 100))% \(Self.validationLineStride)")
        }
        self.source = source
        self.bytes = bytes
        self.sequenceLength = sequenceLength
        self.lines = lines
        trainingLines = 0..<(lines.count - validationCount)
        validationLines = (lines.count - validationCount)..<lines.count
        fingerprint = TextCorpus.fingerprint(of: bytes)
    }

    public var throughputUnit: ThroughputUnit { .tokens(perSequence: sequenceLength) }

    /// The training batch of optimizer step `step` (0-based), its dropout that of (seed, step).
    public func trainingPairs(step: Int, batchSize: Int, seed: UInt64) -> PreTrainingBatch {
        precondition(batchSize >= 1, "batch size must be >= 1")
        var generator = SeededGenerator(seed: TextCorpus.mix(seed ^ TextCorpus.mix(UInt64(bitPattern: Int64(step)) ^ 0xBE27)))
        let samples = (0..<batchSize).map { _ in
            sample(first: trainingLines.lowerBound + below(trainingLines.count, &generator), in: trainingLines, &generator)
        }
        return batch(samples, dropout: DropoutContext(seed: seed, step: step, firstSample: 0))
    }

    public func trainingBatch(step: Int, batchSize: Int, seed: UInt64) -> any MicroBatch {
        trainingPairs(step: step, batchSize: batchSize, seed: seed)
    }

    /// Held-out samples: one every `validationLineStride` lines of the tail.
    public var validationSampleCount: Int { validationLines.count / Self.validationLineStride }

    public func validationBatches(batchSize: Int, limit: Int?) throws -> [any MicroBatch] {
        try validationPairs(batchSize: batchSize, limit: limit)
    }

    /// The held-out samples as full batches of `batchSize` (a partial last batch is dropped), at
    /// most `limit`; the same on every call. Throws when not even one batch fits.
    public func validationPairs(batchSize: Int, limit: Int? = nil) throws -> [PreTrainingBatch] {
        guard batchSize >= 1 else { throw TwoBPError("batch size must be >= 1, not \(batchSize)") }
        var count = validationSampleCount / batchSize
        guard count >= 1 else {
            throw TwoBPError("the held-out part of \(source) holds \(validationSampleCount) sentence pairs, fewer than one batch of \(batchSize)")
        }
        if let limit { count = Swift.min(count, Swift.max(limit, 0)) }
        return (0..<count).map { b in
            let samples = (0..<batchSize).map { i -> Sample in
                let index = b * batchSize + i
                var generator = SeededGenerator(seed: TextCorpus.mix(0x4E1D_0B7 ^ UInt64(index)))
                return sample(first: validationLines.lowerBound + index * Self.validationLineStride, in: validationLines, &generator)
            }
            return batch(samples, dropout: DropoutContext(seed: 0, step: 0, firstSample: 0))
        }
    }

    // MARK: Building samples

    /// One sequence: tokens, token types and labels over `sequenceLength`, real length, NSP label.
    struct Sample {
        var tokens: [Int32]
        var tokenTypes: [Int32]
        var labels: [Int32]
        var length: Int
        var nextSentenceLabel: Int32
    }

    /// The pair whose A starts at line `first` of `part`, its B and its masking drawn from `generator`.
    func sample(first: Int, in part: Range<Int>, _ generator: inout SeededGenerator) -> Sample {
        let budget = sequenceLength - 3
        let (segmentA, afterA) = segment(from: first, in: part, capacity: Swift.max(1, budget / 2))
        var isNext = generator.next() & 1 == 0
        if afterA >= part.upperBound { isNext = false }  // A ends the part: nothing follows it
        var secondStart = afterA
        if !isNext {
            secondStart = part.lowerBound + below(part.count, &generator)
            if secondStart == afterA { secondStart = part.lowerBound + (secondStart - part.lowerBound + 1) % part.count }
        }
        let segmentB = segment(from: secondStart, in: part, capacity: budget - segmentA.count).bytes

        var tokens = [Int32](repeating: BertVocabulary.pad, count: sequenceLength)
        var tokenTypes = [Int32](repeating: 0, count: sequenceLength)
        var labels = [Int32](repeating: PreTrainingBatch.ignoreIndex, count: sequenceLength)
        var byteSlots: [Int] = []
        var position = 0
        func put(_ token: Int32, type: Int32) {
            tokens[position] = token
            tokenTypes[position] = type
            position += 1
        }
        put(BertVocabulary.cls, type: 0)
        for byte in segmentA { byteSlots.append(position); put(Int32(byte), type: 0) }
        put(BertVocabulary.sep, type: 0)
        for byte in segmentB { byteSlots.append(position); put(Int32(byte), type: 1) }
        put(BertVocabulary.sep, type: 1)

        var selected = byteSlots.filter { _ in generator.nextUniform() < Self.maskingProbability }
        if selected.isEmpty, !byteSlots.isEmpty { selected = [byteSlots[below(byteSlots.count, &generator)]] }
        for slot in selected {
            labels[slot] = tokens[slot]
            switch below(10, &generator) {
            case 0..<8: tokens[slot] = BertVocabulary.mask
            case 8: tokens[slot] = Int32(below(BertVocabulary.byteCount, &generator))
            default: break
            }
        }
        return Sample(tokens: tokens, tokenTypes: tokenTypes, labels: labels, length: position, nextSentenceLabel: isNext ? 0 : 1)
    }

    /// Whole lines from line `first` of `part` while they fit `capacity` bytes (the first line cut
    /// to it when longer), and the index of the line after the last one used.
    func segment(from first: Int, in part: Range<Int>, capacity: Int) -> (bytes: ArraySlice<UInt8>, next: Int) {
        let firstLine = lines[first]
        guard firstLine.count < capacity else {
            return (bytes[firstLine.lowerBound..<firstLine.lowerBound + capacity], first + 1)
        }
        var end = first + 1
        while end < part.upperBound, lines[end].upperBound - firstLine.lowerBound <= capacity { end += 1 }
        return (bytes[firstLine.lowerBound..<lines[end - 1].upperBound], end)
    }

    /// `samples` stacked, weighted as one step.
    private func batch(_ samples: [Sample], dropout: DropoutContext) -> PreTrainingBatch {
        let predicted = samples.reduce(0) { total, sample in total + sample.labels.filter { $0 != PreTrainingBatch.ignoreIndex }.count }
        let mask = samples.flatMap { sample in (0..<sequenceLength).map { Int32($0 < sample.length ? 1 : 0) } }
        do {
            return try PreTrainingBatch(
                tokens: samples.flatMap(\.tokens), tokenTypes: samples.flatMap(\.tokenTypes), attentionMask: mask,
                maskedLMLabels: samples.flatMap(\.labels), nextSentenceLabels: samples.map(\.nextSentenceLabel),
                batchSize: samples.count, sequenceLength: sequenceLength,
                maskedLMLossWeight: predicted == 0 ? 0 : 1 / Float(predicted), nextSentenceLossWeight: 1 / Float(samples.count),
                dropout: dropout)
        } catch {
            preconditionFailure("sentence pairs of one window length always fit a batch: \(error)")
        }
    }

    /// A uniform integer in 0 ..< bound.
    private func below(_ bound: Int, _ generator: inout SeededGenerator) -> Int {
        Int(generator.next().multipliedFullWidth(by: UInt64(bound)).high)
    }
}
