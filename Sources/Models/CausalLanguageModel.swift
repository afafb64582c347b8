import Tensor

/// A whole model that predicts the next token (LLaMa, Mamba): what text generation needs.
public protocol CausalLanguageModel: AnyObject {
    var vocabularySize: Int { get }
    /// The longest context the model reads (its position table); generation crops to it.
    var contextLength: Int { get }
    /// Next-token logits [batchSize, sequenceLength, vocabularySize] of `tokens`
    /// (row-major [batchSize, sequenceLength]), saving nothing.
    func logits(tokens: [Int32], batchSize: Int, sequenceLength: Int) throws -> Tensor
    /// Σ lossWeight · next-token cross-entropy of `batch`, as a training forward computes it, saving nothing.
    func loss(_ batch: TokenBatch) throws -> Double
}
