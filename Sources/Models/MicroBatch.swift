import Tensor

/// The data of one micro-batch, whatever the family eats: token ids and next-token targets
/// (`TokenBatch`), tokens with token types, padding mask and masked-LM / next-sentence labels,
/// or images with class labels.
///
/// Every stage can build every micro-batch (batches are a pure function of seed and step), so
/// the first chunk reads the inputs and the last the labels without sending them down the
/// pipeline. A batch carries the per-sample loss weights of the whole step, so the gradients of
/// its micro-batches sum to the gradient of the batch's mean loss.
public protocol MicroBatch: Sendable {
    /// Samples (sequences or images) in this micro-batch.
    var sampleCount: Int { get }
    /// What each sample's size is measured in for the model: tokens per sequence, or an image's side.
    var sampleLength: Int { get }
    /// Samples `range` of this batch, keeping the step's loss weights.
    func samples(_ range: Range<Int>) -> any MicroBatch
}

extension MicroBatch {
    /// The samples split into `count` micro-batches of as equal a size as possible, in order.
    public func split(into count: Int) throws -> [any MicroBatch] {
        guard count >= 1, count <= sampleCount else {
            throw TwoBPError("cannot split a batch of \(sampleCount) samples into \(count) micro-batches; use a batch size of at least \(count)")
        }
        var start = 0
        return (0..<count).map { index in
            let size = sampleCount / count + (index < sampleCount % count ? 1 : 0)
            defer { start += size }
            return samples(start..<start + size)
        }
    }

    /// This batch as the concrete type `Batch`, or a `TwoBPError` naming what `consumer` expected.
    public func expecting<Batch: MicroBatch>(_ type: Batch.Type, by consumer: String) throws -> Batch {
        guard let batch = self as? Batch else {
            throw TwoBPError("\(consumer) takes a \(Batch.self), got a \(Swift.type(of: self))")
        }
        return batch
    }
}

/// Token ids and next-token targets: the micro-batch of causal language models (LLaMa, Mamba).
public struct TokenBatch: MicroBatch {
    /// [batchSize, sequenceLength] token ids, row-major.
    public let tokens: [Int32]
    /// [batchSize, sequenceLength] next-token ids.
    public let targets: [Int32]
    public let batchSize: Int
    public let sequenceLength: Int
    /// Weight of each token's cross-entropy in the step's loss: 1 / (tokens in the whole step),
    /// so that summing micro-batch gradients gives the whole batch's mean-loss gradient.
    public let lossWeight: Float

    public init(tokens: [Int32], targets: [Int32], batchSize: Int, sequenceLength: Int, lossWeight: Float) {
        precondition(tokens.count == batchSize * sequenceLength && targets.count == tokens.count)
        self.tokens = tokens
        self.targets = targets
        self.batchSize = batchSize
        self.sequenceLength = sequenceLength
        self.lossWeight = lossWeight
    }

    public var sampleCount: Int { batchSize }
    public var sampleLength: Int { sequenceLength }

    public func samples(_ range: Range<Int>) -> any MicroBatch { sequences(range) }

    /// Sequences `range` of this batch, keeping the step's loss weight.
    public func sequences(_ range: Range<Int>) -> TokenBatch {
        let span = range.lowerBound * sequenceLength..<range.upperBound * sequenceLength
        return TokenBatch(tokens: Array(tokens[span]), targets: Array(targets[span]),
                          batchSize: range.count, sequenceLength: sequenceLength, lossWeight: lossWeight)
    }

    /// Random tokens and the stream's next tokens as targets, weighted as one step: for checks and
    /// benchmarks that need no corpus.
    public static func random(vocabularySize: Int, batchSize: Int, sequenceLength: Int, seed: UInt64) -> TokenBatch {
        var generator = SeededGenerator(seed: seed ^ 0x5EED_BA7C)
        let stream = (0...(batchSize * sequenceLength)).map { _ in Int32(generator.next() % UInt64(vocabularySize)) }
        return TokenBatch(tokens: Array(stream.dropLast()), targets: Array(stream.dropFirst()),
                          batchSize: batchSize, sequenceLength: sequenceLength,
                          lossWeight: 1 / Float(batchSize * sequenceLength))
    }
}
