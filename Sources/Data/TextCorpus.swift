import Files
import Foundation
import Models
import Tensor

/// A byte-level text corpus split into a training part and a held-out tail, with
/// deterministic batch sampling.
///
/// - Training batches: the batch of step s is a pure function of (seed, s, batch
///   size): `batchSize` windows of `sequenceLength + 1` bytes at random starts in
///   the training part. A resumed run draws the same batches without saving any
///   RNG state; only the step counter matters.
/// - Validation batches: fixed, sequential, non-overlapping windows of the tail,
///   the same on every call.
///
/// Tokens are bytes (`ByteTokenizer`); targets are the tokens shifted by one.
public final class TextCorpus: DataSource {
    /// Where the text came from (for messages).
    public let source: String
    public let bytes: [UInt8]
    public let sequenceLength: Int
    /// Byte offsets of the training part: the first (1 − validationFraction) of the text.
    public let trainingRange: Range<Int>
    /// Byte offsets of the held-out tail.
    public let validationRange: Range<Int>
    /// The share of the text held out.
    public let validationFraction: Double
    /// Byte count and FNV-1a 64 hash of the text, e.g. `5436475-9f3c...`: a resumed
    /// run compares it to the checkpoint's to be sure it reads the same data.
    public let fingerprint: String

    public static let defaultValidationFraction = 0.05

    /// Reads the whole file. Errors name the file: missing, a folder, empty, or too
    /// short for both parts to hold one window of `sequenceLength + 1` bytes.
    public convenience init(contentsOf url: URL, sequenceLength: Int,
                            validationFraction: Double = TextCorpus.defaultValidationFraction) throws {
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw TwoBPError("data file \(url.path) not found (scripts/setup-data.sh builds data/shakespeare.txt)")
        }
        let data = try FileIO.read(url, what: "data file")
        try self.init(bytes: [UInt8](data), sequenceLength: sequenceLength,
                      validationFraction: validationFraction, source: "data file \(url.path)")
    }

    public init(bytes: [UInt8], sequenceLength: Int, validationFraction: Double = TextCorpus.defaultValidationFraction,
                source: String = "text") throws {
        guard sequenceLength >= 1 else { throw TwoBPError("sequence length must be >= 1, not \(sequenceLength)") }
        guard validationFraction > 0, validationFraction < 1 else {
            throw TwoBPError("validation fraction must be between 0 and 1, not \(validationFraction)")
        }
        guard !bytes.isEmpty else { throw TwoBPError("\(source) is empty") }
        let validationCount = Int(Double(bytes.count) * validationFraction)
        let trainingCount = bytes.count - validationCount
        let window = sequenceLength + 1
        guard validationCount >= window, trainingCount >= window else {
            let needed = Self.minimumSize(heldOut: window, training: window, validationFraction: validationFraction)
            throw TwoBPError("\(source) has \(bytes.count) bytes, too short for sequence length \(sequenceLength): the training part and the held-out \(Int(validationFraction * 100))% each need \(window) bytes, so at least \(needed) bytes in all")
        }
        self.source = source
        self.validationFraction = validationFraction
        self.bytes = bytes
        self.sequenceLength = sequenceLength
        trainingRange = 0..<trainingCount
        validationRange = trainingCount..<bytes.count
        fingerprint = TextCorpus.fingerprint(of: bytes)
    }

    /// Byte count and FNV-1a 64 hash of `bytes`, e.g. `5436475-9f3c...` (every text data source's fingerprint).
    static func fingerprint(of bytes: [UInt8]) -> String {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in bytes {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
        }
        let hex = String(hash, radix: 16)
        return "\(bytes.count)-" + String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// Start offsets (into `bytes`) of the windows of step `step`'s training batch.
    public func trainingWindowStarts(step: Int, batchSize: Int, seed: UInt64) -> [Int] {
        precondition(batchSize >= 1, "batch size must be >= 1")
        let choices = UInt64(trainingRange.count - sequenceLength)  // starts whose window stays in the part
        var generator = SeededGenerator(seed: TextCorpus.mix(seed ^ TextCorpus.mix(UInt64(bitPattern: Int64(step)))))
        return (0..<batchSize).map { _ in
            trainingRange.lowerBound + Int(generator.next().multipliedFullWidth(by: choices).high)
        }
    }

    /// The training batch of optimizer step `step` (0-based): tokens and targets
    /// `[batchSize, sequenceLength]`, loss weight 1 / (batchSize × sequenceLength).
    public func trainingTokens(step: Int, batchSize: Int, seed: UInt64) -> TokenBatch {
        batch(starts: trainingWindowStarts(step: step, batchSize: batchSize, seed: seed))
    }

    public func trainingBatch(step: Int, batchSize: Int, seed: UInt64) -> any MicroBatch {
        trainingTokens(step: step, batchSize: batchSize, seed: seed)
    }

    public var throughputUnit: ThroughputUnit { .tokens(perSequence: sequenceLength) }

    /// Number of sequential validation windows the held-out part holds.
    public var validationWindowCount: Int { (validationRange.count - 1) / sequenceLength }

    /// The smallest text whose split leaves at least `heldOut` bytes in the tail and `training`
    /// before it, so a message names a size that then works.
    static func minimumSize(heldOut: Int, training: Int, validationFraction: Double) -> Int {
        var size = Int((Double(heldOut) / validationFraction).rounded(.up))
        while Int(Double(size) * validationFraction) < heldOut || size - Int(Double(size) * validationFraction) < training {
            size += 1
        }
        return size
    }

    /// Start offsets of validation window `index`: the windows tile the held-out
    /// part, each starting `sequenceLength` after the previous one.
    public func validationWindowStart(_ index: Int) -> Int {
        validationRange.lowerBound + index * sequenceLength
    }

    /// The held-out part as full batches of `batchSize` sequential windows (a
    /// final partial batch is dropped so every batch has the same shape), at most
    /// `limit` of them. Throws when not even one full batch fits.
    public func validationBatches(batchSize: Int, limit: Int?) throws -> [any MicroBatch] {
        try validationTokens(batchSize: batchSize, limit: limit)
    }

    public func validationTokens(batchSize: Int, limit: Int? = nil) throws -> [TokenBatch] {
        guard batchSize >= 1 else { throw TwoBPError("batch size must be >= 1, not \(batchSize)") }
        var count = validationWindowCount / batchSize
        guard count >= 1 else {
            let needed = Self.minimumSize(heldOut: batchSize * sequenceLength + 1, training: sequenceLength + 1,
                                          validationFraction: validationFraction)
            throw TwoBPError("the held-out part of \(source) holds \(validationWindowCount) windows of \(sequenceLength + 1) bytes, fewer than one batch of \(batchSize); "
                + "a batch of \(batchSize) needs at least \(needed) bytes in all, or lower --batch-size")
        }
        if let limit { count = Swift.min(count, Swift.max(limit, 0)) }
        return (0..<count).map { b in
            batch(starts: (0..<batchSize).map { validationWindowStart(b * batchSize + $0) })
        }
    }

    private func batch(starts: [Int]) -> TokenBatch {
        let length = sequenceLength
        var tokens = [Int32](repeating: 0, count: starts.count * length)
        var targets = tokens
        for (row, start) in starts.enumerated() {
            for t in 0..<length {
                tokens[row * length + t] = Int32(bytes[start + t])
                targets[row * length + t] = Int32(bytes[start + t + 1])
            }
        }
        return TokenBatch(tokens: tokens, targets: targets, batchSize: starts.count, sequenceLength: length,
                          lossWeight: 1 / Float(starts.count * length))
    }

    /// SplitMix64's output function: decorrelates (seed, step) into a generator seed.
    static func mix(_ value: UInt64) -> UInt64 {
        var generator = SeededGenerator(seed: value)
        return generator.next()
    }
}
