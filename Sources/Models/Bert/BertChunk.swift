import Layers
import Tensor

/// A contiguous range of a BERT model's pipeline units: unit 0 is the embeddings, units 1...L the
/// encoder layers, unit L + 1 the pre-training heads (pooler + next-sentence classifier, masked-LM
/// transform and decoder), with Hugging Face `BertForPreTraining`'s semantics and tensor names.
///
/// Activations between chunks are [batchSize, sequenceLength, hiddenSize]. Every chunk builds the
/// padding mask from the micro-batch itself (`PreTrainingBatch.attentionMask`), so only hidden
/// states travel. Dropout sites are numbered from the global unit (embeddings 0, encoder layer i
/// from 1 + 3i) and the masks come from the batch's `DropoutContext`, so any partition drops what
/// one device drops. The decoder's matrix is the word embeddings' (`bert.embeddings.word_embeddings.weight`,
/// a `TiedParameter` spanning the first and last unit), initialised like HF's: N(0, initializer_range²)
/// with the `pad_token_id` row zero.
public final class BertChunk: ModelChunk {
    public let config: BertConfig
    public let units: Range<Int>
    /// Present when the chunk holds unit 0.
    public let embeddings: BertEmbeddings?
    /// The encoder layers of units `units ∩ 1...L`, in order.
    public let layers: [BertLayer]
    /// Present when the chunk holds unit L + 1.
    public let heads: BertPreTrainingHeads?
    public let parameters: [Parameter]

    /// Builds and initialises units `units` of `config` (validated) from run seed `seed`; the tied
    /// word-embedding matrix comes from `shared`.
    public init(config: BertConfig, units: Range<Int>, seed: UInt64, shared: SharedParameters = SharedParameters()) throws {
        try config.validate()
        guard !units.isEmpty, units.lowerBound >= 0, units.upperBound <= config.unitCount else {
            throw TwoBPError("units \(units.lowerBound)..<\(units.upperBound) are not a non-empty range of the \(config.unitCount) units 0..<\(config.unitCount) of a \(config.numHiddenLayers)-layer model")
        }
        self.config = config
        self.units = units
        let eps = Float(config.layerNormEps)
        let hiddenDropout = Float(config.hiddenDropoutProb)
        var parameters: [Parameter] = []
        func wordMatrix() -> Parameter {
            shared.parameter(named: BertConfig.wordEmbeddingsName) {
                let (std, padRow, width) = (Float(config.initializerRange), config.padTokenId, config.hiddenSize)
                return Parameter(name: "weight", shape: [config.vocabSize, config.hiddenSize], initialization: .custom { tensor, generator in
                    tensor.fillNormal(std: std, using: &generator)
                    (tensor.pointer + padRow * width).update(repeating: 0, count: width)
                })
            }
        }

        if units.contains(0) {
            let embeddings = BertEmbeddings(
                vocabularySize: config.vocabSize, hiddenSize: config.hiddenSize, maxPositions: config.maxPositionEmbeddings,
                typeVocabularySize: config.typeVocabSize, paddingIndex: Int32(config.padTokenId), eps: eps,
                dropout: try Dropout(probability: hiddenDropout, site: 0), wordWeight: wordMatrix())
            parameters += embeddings.parameters.map { $0.prefixed("bert.embeddings") }
            self.embeddings = embeddings
        } else {
            embeddings = nil
        }

        layers = try units.clamped(to: 1..<(config.numHiddenLayers + 1)).map { unit in
            let index = unit - 1
            let layer = try BertLayer(
                hiddenSize: config.hiddenSize, intermediateSize: config.intermediateSize, headCount: config.numAttentionHeads,
                eps: eps, hiddenDropout: hiddenDropout, attentionDropout: Float(config.attentionProbsDropoutProb),
                dropoutSite: UInt64(1 + BertLayer.dropoutSiteCount * index))
            parameters += layer.parameters.map { $0.prefixed("bert.encoder.layer.\(index)") }
            return layer
        }

        if units.contains(config.numHiddenLayers + 1) {
            let heads = BertPreTrainingHeads(hiddenSize: config.hiddenSize, vocabularySize: config.vocabSize, eps: eps,
                                             decoderWeight: wordMatrix())
            let predictions = heads.predictions
            parameters += predictions.transformDense.parameters.map { $0.prefixed("cls.predictions.transform.dense") }
            parameters += predictions.transformNorm.parameters.map { $0.prefixed("cls.predictions.transform.LayerNorm") }
            // The decoder's matrix is listed once, under the word embeddings' name.
            if embeddings == nil { parameters.append(predictions.decoder.weight.prefixed("bert.embeddings.word_embeddings")) }
            parameters.append(predictions.decoder.bias!.prefixed("cls.predictions"))
            parameters += heads.nextSentence.poolerDense.parameters.map { $0.prefixed("bert.pooler.dense") }
            parameters += heads.nextSentence.seqRelationship.parameters.map { $0.prefixed("cls.seq_relationship") }
            self.heads = heads
        } else {
            heads = nil
        }

        self.parameters = parameters
        ParameterInitialization.initialize(parameters, runSeed: seed, std: Float(config.initializerRange))
    }

    public var isFirst: Bool { embeddings != nil }
    public var isLast: Bool { heads != nil }

    public func inputShape(for batch: any MicroBatch) throws -> [Int]? {
        let batch = try pairs(batch)
        return isFirst ? nil : config.activationShape(enteringUnit: units.lowerBound, samples: batch.batchSize, sampleLength: batch.sequenceLength)
    }

    public func outputShape(for batch: any MicroBatch) throws -> [Int]? {
        let batch = try pairs(batch)
        return isLast ? nil : config.activationShape(enteringUnit: units.upperBound, samples: batch.batchSize, sampleLength: batch.sequenceLength)
    }

    public func forward(_ input: Tensor?, batch: any MicroBatch, microBatch: Int) throws -> ChunkOutput {
        let batch = try pairs(batch)
        let mask = try checkedMask(batch)
        var x: Tensor
        if let embeddings {
            guard input == nil else { throw TwoBPError("the first chunk embeds tokens; it takes no input activation") }
            x = try embeddings.forward(tokens: batch.tokens, tokenTypes: batch.tokenTypes, batchSize: batch.batchSize,
                                       sequenceLength: batch.sequenceLength, dropout: batch.dropout, microBatch: microBatch)
        } else {
            x = try checkedInput(input, batch)
        }
        for layer in layers { x = try layer.forward(x, attentionMask: mask, dropout: batch.dropout, microBatch: microBatch) }
        guard let heads else { return .activation(x) }
        let maskedLM = try heads.predictions.forward(x, targets: batch.maskedLMLabels, lossWeight: batch.maskedLMLossWeight,
                                                     microBatch: microBatch)
        let nextSentence = try heads.nextSentence.forwardScored(x, labels: batch.nextSentenceLabels,
                                                                lossWeight: batch.nextSentenceLossWeight, microBatch: microBatch)
        return .loss([maskedLM + nextSentence.loss, maskedLM, nextSentence.loss, nextSentence.accuracy])
    }

    public func backwardInput(_ outputGradient: Tensor?, microBatch: Int) throws -> Tensor? {
        var gradient: Tensor
        if let heads {
            guard outputGradient == nil else { throw TwoBPError("the last chunk's p1 starts from the loss; it takes no gradient") }
            gradient = try heads.backwardInput(microBatch: microBatch)
        } else {
            guard let outputGradient else { throw TwoBPError("chunk of units \(units): p1 needs the gradient of its output") }
            gradient = outputGradient
        }
        for layer in layers.reversed() { gradient = try layer.backwardInput(gradient, microBatch: microBatch) }
        if let embeddings {
            try embeddings.backwardInput(gradient, microBatch: microBatch)
            return nil
        }
        return gradient
    }

    public func backwardWeight(_ work: WeightGradientWork) throws {
        try heads?.backwardWeight(work)
        for layer in layers.reversed() { try layer.backwardWeight(work) }
        try embeddings?.backwardWeight(work)
    }

    public func evaluate(_ input: Tensor?, batch: any MicroBatch) throws -> ChunkOutput {
        let batch = try pairs(batch)
        let mask = try checkedMask(batch)
        var x = try embeddings.map {
            try $0.apply(tokens: batch.tokens, tokenTypes: batch.tokenTypes, batchSize: batch.batchSize, sequenceLength: batch.sequenceLength)
        } ?? checkedInput(input, batch)
        for layer in layers { x = try layer.apply(x, attentionMask: mask) }
        guard let heads else { return .activation(x) }
        let maskedLM = try heads.predictions.loss(x, targets: batch.maskedLMLabels, lossWeight: batch.maskedLMLossWeight)
        let nextSentence = try heads.nextSentence.scored(x, labels: batch.nextSentenceLabels, lossWeight: batch.nextSentenceLossWeight)
        return .loss([maskedLM + nextSentence.loss, maskedLM, nextSentence.loss, nextSentence.accuracy])
    }

    // MARK: Helpers

    private func pairs(_ batch: any MicroBatch) throws -> PreTrainingBatch {
        try batch.expecting(PreTrainingBatch.self, by: "a bert model")
    }

    /// The batch's padding mask, after checking its length and, on the last chunk, its labels, so
    /// nothing is saved for a micro-batch that would fail later.
    private func checkedMask(_ batch: PreTrainingBatch) throws -> AttentionMask {
        try config.checkSequenceLength(batch.sequenceLength)
        if let heads {
            try heads.predictions.validate(targets: batch.maskedLMLabels, rows: batch.batchSize * batch.sequenceLength)
            try heads.nextSentence.validate(labels: batch.nextSentenceLabels, batchSize: batch.batchSize)
        }
        return try AttentionMask(batch.attentionMask, batchSize: batch.batchSize, sequenceLength: batch.sequenceLength)
    }

    private func checkedInput(_ input: Tensor?, _ batch: PreTrainingBatch) throws -> Tensor {
        let expected = [batch.batchSize, batch.sequenceLength, config.hiddenSize]
        guard let input, input.shape == expected else {
            throw TwoBPError("chunk of units \(units): expected an input activation of shape \(expected), got \(input.map { "\($0.shape)" } ?? "none")")
        }
        return input
    }
}
