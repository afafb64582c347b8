import Layers
import Tensor

/// The token data of one micro-batch. Every stage can build it (the data
/// loader is deterministic): the first chunk embeds `tokens`, the last scores `targets`.
public struct TokenBatch: Sendable {
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

    /// Sequences `range` of this batch, keeping the step's loss weight.
    public func sequences(_ range: Range<Int>) -> TokenBatch {
        let span = range.lowerBound * sequenceLength..<range.upperBound * sequenceLength
        return TokenBatch(tokens: Array(tokens[span]), targets: Array(targets[span]),
                          batchSize: range.count, sequenceLength: sequenceLength, lossWeight: lossWeight)
    }
}

/// What a chunk's forward produces: the activation for the next chunk, or, on the last chunk, the loss.
public enum ChunkOutput {
    case activation(Tensor)
    /// Σ lossWeight · cross-entropy over the micro-batch's tokens.
    case loss(Double)
}

/// A contiguous slice of a model: what one pipeline stage (or one interleaved chunk) runs.
///
/// The chunk is the unit the pipeline executes; its p1 and p2 are those of its
/// layers, in reverse order for p1. Parameters carry their full checkpoint names.
public protocol ModelChunk: AnyObject {
    var parameters: [Parameter] { get }
    /// Whether this chunk embeds tokens (its forward takes no activation, its p1 returns none).
    var isFirst: Bool { get }
    /// Whether this chunk ends in the loss (its forward returns `.loss`, its p1 takes no gradient).
    var isLast: Bool { get }

    func forward(_ input: Tensor?, batch: TokenBatch, microBatch: Int) throws -> ChunkOutput
    /// p1 through the whole chunk; nil on the first chunk, whose input is token ids.
    func backwardInput(_ outputGradient: Tensor?, microBatch: Int) throws -> Tensor?
    /// p2 of every layer in the chunk.
    func backwardWeight(_ work: WeightGradientWork) throws
}

extension ModelChunk {
    public func zeroGradients() {
        for parameter in parameters { parameter.zeroGradient() }
    }
}
