import Tensor

/// Token embedding: row `tokens[i]` of `weight` [vocabularySize, size] becomes row i of the output.
///
/// Not a `Layer`: its input is token ids, so there is no dL/dx and p1 only stashes dy for p2,
/// which scatter-adds dy rows into the rows of `weight.gradient` the tokens picked.
/// `.allPending` walks the stashed micro-batches oldest first (no GEMM to batch).
public final class Embedding {
    public let vocabularySize: Int
    public let size: Int
    /// PyTorch's `padding_idx`: rows of this id are looked up but get no gradient (BERT's `pad_token_id`).
    public let paddingIndex: Int32?
    /// [vocabularySize, size], Hugging Face's `embed_tokens.weight`.
    public let weight: Parameter
    /// Token ids [batch · length], kept from forward for p1.
    private var saved = MicroBatchStore<[Int32]>("Embedding forward state")
    /// Token ids and dy [batch, length, size], kept from p1 for p2.
    private var pending = MicroBatchStore<(tokens: [Int32], outputGradient: Tensor)>("Embedding p2 stash")

    /// `weight`, when given, is a [vocabularySize, size] parameter shared with another layer (a tied
    /// output projection); otherwise the embedding gets its own.
    public init(vocabularySize: Int, size: Int, paddingIndex: Int32? = nil, weight: Parameter? = nil) {
        precondition(weight.map { $0.value.shape == [vocabularySize, size] } ?? true, "Embedding: shared weight of the wrong shape")
        self.vocabularySize = vocabularySize
        self.size = size
        self.paddingIndex = paddingIndex
        self.weight = weight ?? Parameter(name: "weight", shape: [vocabularySize, size])
    }

    public var parameters: [Parameter] { [weight] }

    /// [batchSize, sequenceLength, size] embeddings of `tokens` (row-major [batchSize, sequenceLength]);
    /// saves the ids under `microBatch`. Ids outside the vocabulary throw.
    public func forward(tokens: [Int32], batchSize: Int, sequenceLength: Int, microBatch: Int) throws -> Tensor {
        let output = try apply(tokens: tokens, batchSize: batchSize, sequenceLength: sequenceLength)
        try saved.put(tokens, for: microBatch)
        return output
    }

    /// The forward computation alone, saving nothing (for inference).
    public func apply(tokens: [Int32], batchSize: Int, sequenceLength: Int) throws -> Tensor {
        guard tokens.count == batchSize * sequenceLength else {
            throw TwoBPError("Embedding: \(tokens.count) token ids for batch \(batchSize) x length \(sequenceLength)")
        }
        if let bad = tokens.first(where: { $0 < 0 || Int($0) >= vocabularySize }) {
            throw TwoBPError("Embedding: token id \(bad) is outside the vocabulary of \(vocabularySize)")
        }
        let output = Tensor(uninitialized: [batchSize, sequenceLength, size])  // every row copied
        tokens.withUnsafeBufferPointer { ids in
            for (row, id) in ids.enumerated() {
                (output.pointer + row * size).update(from: weight.value.pointer + Int(id) * size, count: size)
            }
        }
        return output
    }

    /// p1: nothing to compute (ids have no gradient); stashes dy [batch, length, size] for p2.
    public func backwardInput(_ outputGradient: Tensor, microBatch: Int) throws {
        let tokens = try saved.take(microBatch)
        precondition(outputGradient.count == tokens.count * size, "Embedding p1: dy \(outputGradient.shape) for \(tokens.count) tokens")
        try pending.put((tokens, outputGradient), for: microBatch)
    }

    /// p2: dweight[tokens[i]] += dy[i], tokens in order, except the padding index.
    public func backwardWeight(_ work: WeightGradientWork) throws {
        for stash in try pending.take(work) {
            stash.tokens.withUnsafeBufferPointer { ids in
                for (row, id) in ids.enumerated() where id != paddingIndex {
                    let source = stash.outputGradient.pointer + row * size
                    let target = weight.gradient.pointer + Int(id) * size
                    for i in 0..<size { target[i] += source[i] }
                }
            }
        }
    }

    public func zeroGradients() {
        weight.zeroGradient()
    }
}
