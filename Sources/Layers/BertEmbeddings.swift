import Tensor

/// BERT's input embeddings, Hugging Face `BertEmbeddings` with absolute positions:
/// `dropout(LayerNorm(word[token] + token_type[type] + position[t]))` for token t of each sequence
/// (positions 0 ..< length, as HF's default `position_ids`), [batch, length, hiddenSize].
///
/// Not a `Layer`: its inputs are ids, so there is no dL/dx and p1 only runs the dropout's and the
/// LayerNorm's backward and stashes d(sum) for p2, which scatter-adds it into the three tables
/// (`Embedding`'s p2; the word table skips `paddingIndex`, PyTorch's `padding_idx`) and runs the
/// LayerNorm's p2. Parameter names: `word_embeddings.weight`, `position_embeddings.weight`,
/// `token_type_embeddings.weight`, `LayerNorm.weight`, `LayerNorm.bias`.
public final class BertEmbeddings {
    public let hiddenSize: Int
    public let wordEmbeddings: Embedding
    public let positionEmbeddings: Embedding
    public let tokenTypeEmbeddings: Embedding
    public let layerNorm: LayerNorm
    /// `hidden_dropout_prob` after the LayerNorm.
    public let dropout: Dropout
    public let parameters: [Parameter]
    /// The forward's dropout context (nil: nothing dropped), kept for p1.
    private var saved = MicroBatchStore<DropoutContext?>("BertEmbeddings forward state")

    /// `maxPositions` is `max_position_embeddings`, `typeVocabularySize` `type_vocab_size`,
    /// `paddingIndex` `pad_token_id` (its word row is looked up but never trained, as in HF);
    /// `wordWeight`, when given, is the [vocabularySize, hiddenSize] matrix the word table shares
    /// with the masked-LM decoder (tied weights).
    public init(vocabularySize: Int, hiddenSize: Int, maxPositions: Int, typeVocabularySize: Int = 2,
                paddingIndex: Int32? = 0, eps: Float = 1e-12, dropout: Dropout = .disabled, wordWeight: Parameter? = nil) {
        self.hiddenSize = hiddenSize
        wordEmbeddings = Embedding(vocabularySize: vocabularySize, size: hiddenSize, paddingIndex: paddingIndex, weight: wordWeight)
        positionEmbeddings = Embedding(vocabularySize: maxPositions, size: hiddenSize)
        tokenTypeEmbeddings = Embedding(vocabularySize: typeVocabularySize, size: hiddenSize)
        layerNorm = LayerNorm(size: hiddenSize, eps: eps)
        self.dropout = dropout
        parameters = wordEmbeddings.parameters.map { $0.prefixed("word_embeddings") }
            + positionEmbeddings.parameters.map { $0.prefixed("position_embeddings") }
            + tokenTypeEmbeddings.parameters.map { $0.prefixed("token_type_embeddings") }
            + layerNorm.parameters.map { $0.prefixed("LayerNorm") }
    }

    /// [batchSize, sequenceLength, hiddenSize] embeddings of `tokens` and `tokenTypes` (row-major
    /// [batchSize, sequenceLength]; nil types are all 0, HF's default); saves under `microBatch`.
    /// Ids outside their tables and lengths beyond `max_position_embeddings` throw before anything is saved.
    public func forward(tokens: [Int32], tokenTypes: [Int32]?, batchSize: Int, sequenceLength: Int,
                        dropout context: DropoutContext?, microBatch: Int) throws -> Tensor {
        let (tokenTypes, positions) = try checkedInputs(tokens: tokens, tokenTypes: tokenTypes, batchSize: batchSize,
                                                        sequenceLength: sequenceLength)
        let sum = try wordEmbeddings.forward(tokens: tokens, batchSize: batchSize, sequenceLength: sequenceLength, microBatch: microBatch)
        sum.add(try tokenTypeEmbeddings.forward(tokens: tokenTypes, batchSize: batchSize, sequenceLength: sequenceLength,
                                                microBatch: microBatch))
        sum.add(try positionEmbeddings.forward(tokens: positions, batchSize: batchSize, sequenceLength: sequenceLength,
                                               microBatch: microBatch))
        let output = try layerNorm.forward(sum, microBatch: microBatch)
        let context = dropout.isActive ? context : nil
        dropout.apply(output, context: context)
        try saved.put(context, for: microBatch)
        return output
    }

    /// The forward computation alone, saving nothing and dropping nothing (for inference).
    public func apply(tokens: [Int32], tokenTypes: [Int32]?, batchSize: Int, sequenceLength: Int) throws -> Tensor {
        let (tokenTypes, positions) = try checkedInputs(tokens: tokens, tokenTypes: tokenTypes, batchSize: batchSize,
                                                        sequenceLength: sequenceLength)
        let sum = try wordEmbeddings.apply(tokens: tokens, batchSize: batchSize, sequenceLength: sequenceLength)
        sum.add(try tokenTypeEmbeddings.apply(tokens: tokenTypes, batchSize: batchSize, sequenceLength: sequenceLength))
        sum.add(try positionEmbeddings.apply(tokens: positions, batchSize: batchSize, sequenceLength: sequenceLength))
        return try layerNorm.apply(sum)
    }

    /// p1: no input gradient (ids have none); dropout and LayerNorm backward, d(sum) stashed for p2.
    public func backwardInput(_ outputGradient: Tensor, microBatch: Int) throws {
        let context = try saved.take(microBatch)
        let sumGradient = try layerNorm.backwardInput(dropout.applied(to: outputGradient, context: context), microBatch: microBatch)
        for table in [wordEmbeddings, tokenTypeEmbeddings, positionEmbeddings] {
            try table.backwardInput(sumGradient, microBatch: microBatch)
        }
    }

    /// p2: scatter-adds the stashed d(sum) into the three tables and accumulates the LayerNorm's gradients.
    public func backwardWeight(_ work: WeightGradientWork) throws {
        for table in [wordEmbeddings, tokenTypeEmbeddings, positionEmbeddings] { try table.backwardWeight(work) }
        try layerNorm.backwardWeight(work)
    }

    public func zeroGradients() {
        for parameter in parameters { parameter.zeroGradient() }
    }

    /// The token types (zeros when nil) and position ids of a valid input, or a `TwoBPError`.
    private func checkedInputs(tokens: [Int32], tokenTypes: [Int32]?, batchSize: Int, sequenceLength: Int) throws
        -> (tokenTypes: [Int32], positions: [Int32]) {
        let count = batchSize * sequenceLength
        guard batchSize >= 0, sequenceLength >= 0, tokens.count == count, tokenTypes.map({ $0.count == count }) ?? true else {
            throw TwoBPError("BertEmbeddings: \(tokens.count) token ids and \(tokenTypes?.count ?? count) token types for batch \(batchSize) x length \(sequenceLength)")
        }
        if let bad = tokens.first(where: { $0 < 0 || Int($0) >= wordEmbeddings.vocabularySize }) {
            throw TwoBPError("BertEmbeddings: token id \(bad) is outside the vocabulary of \(wordEmbeddings.vocabularySize)")
        }
        if let bad = tokenTypes?.first(where: { $0 < 0 || Int($0) >= tokenTypeEmbeddings.vocabularySize }) {
            throw TwoBPError("BertEmbeddings: token type id \(bad) is outside type_vocab_size \(tokenTypeEmbeddings.vocabularySize)")
        }
        guard sequenceLength <= positionEmbeddings.vocabularySize else {
            throw TwoBPError("BertEmbeddings: sequence length \(sequenceLength) exceeds max_position_embeddings \(positionEmbeddings.vocabularySize)")
        }
        let positions = (0..<count).map { Int32($0 % sequenceLength) }
        return (tokenTypes ?? [Int32](repeating: 0, count: count), positions)
    }
}
