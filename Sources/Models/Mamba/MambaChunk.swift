import Layers
import Tensor

/// A contiguous range of a Mamba model's pipeline units: unit 0 is the token embedding, units
/// 1...L the Mamba blocks, unit L + 1 the head (norm_f, lm_head, cross-entropy).
///
/// Activations between chunks are [batchSize, sequenceLength, hiddenSize]. Parameters carry their
/// `MambaForCausalLM` names (`backbone.embeddings.weight`, `backbone.layers.N.norm.weight`,
/// `backbone.layers.N.mixer.in_proj.weight`, …, `backbone.norm_f.weight`, `lm_head.weight`) and are
/// initialised from (seed, name) alone as each layer asks (see `MambaMixer`), so any partition starts
/// from the same weights as the whole model. With `tie_word_embeddings` (the default), lm_head reads
/// the embedding's matrix: one parameter named `backbone.embeddings.weight` (see `TiedParameter`).
public final class MambaChunk: ModelChunk, CausalLanguageModel {
    public let config: MambaConfig
    public let units: Range<Int>
    /// Present when the chunk holds unit 0.
    public let embedding: Embedding?
    /// The blocks of units `units ∩ 1...L`, in order.
    public let blocks: [MambaBlock]
    /// Present when the chunk holds unit L + 1.
    public let head: LanguageModelHead?
    public let parameters: [Parameter]

    /// Builds and initialises units `units` of `config` (validated) from run seed `seed`; the tied
    /// embedding matrix, if any, comes from `shared`.
    public init(config: MambaConfig, units: Range<Int>, seed: UInt64, shared: SharedParameters = SharedParameters()) throws {
        try config.validate()
        guard !units.isEmpty, units.lowerBound >= 0, units.upperBound <= config.unitCount else {
            throw TwoBPError("units \(units.lowerBound)..<\(units.upperBound) are not a non-empty range of the \(config.unitCount) units 0..<\(config.unitCount) of a \(config.numHiddenLayers)-layer model")
        }
        self.config = config
        self.units = units
        let eps = Float(config.layerNormEpsilon)
        var parameters: [Parameter] = []
        func tiedMatrix() -> Parameter? {
            guard config.tieWordEmbeddings else { return nil }
            return shared.parameter(named: config.lmHeadWeightName) {
                Parameter(name: "weight", shape: [config.vocabSize, config.hiddenSize])
            }
        }

        if units.contains(0) {
            let embedding = Embedding(vocabularySize: config.vocabSize, size: config.hiddenSize, weight: tiedMatrix())
            parameters += embedding.parameters.map { $0.prefixed("backbone.embeddings") }
            self.embedding = embedding
        } else {
            embedding = nil
        }

        blocks = try units.clamped(to: 1..<(config.numHiddenLayers + 1)).map { unit in
            let block = try MambaBlock(config.mixerConfiguration, eps: eps)
            parameters += block.parameters.map { $0.prefixed("backbone.layers.\(unit - 1)") }
            return block
        }

        if units.contains(config.numHiddenLayers + 1) {
            let head = LanguageModelHead(hiddenSize: config.hiddenSize, vocabularySize: config.vocabSize, eps: eps,
                                         lmHeadWeight: tiedMatrix())
            parameters += head.norm.parameters.map { $0.prefixed("backbone.norm_f") }
            // A matrix tied to an embedding this chunk holds is listed once, under the embedding's name.
            if !(config.tieWordEmbeddings && embedding != nil) {
                parameters.append(head.lmHead.weight.prefixed(config.tieWordEmbeddings ? "backbone.embeddings" : "lm_head"))
            }
            self.head = head
        } else {
            head = nil
        }

        self.parameters = parameters
        ParameterInitialization.initialize(parameters, runSeed: seed, std: Float(config.initializerRange))
    }

    public var isFirst: Bool { embedding != nil }
    public var isLast: Bool { head != nil }

    public func inputShape(for batch: any MicroBatch) throws -> [Int]? {
        let batch = try tokens(batch)
        return isFirst ? nil : config.activationShape(enteringUnit: units.lowerBound, samples: batch.batchSize, sampleLength: batch.sequenceLength)
    }

    public func outputShape(for batch: any MicroBatch) throws -> [Int]? {
        let batch = try tokens(batch)
        return isLast ? nil : config.activationShape(enteringUnit: units.upperBound, samples: batch.batchSize, sampleLength: batch.sequenceLength)
    }

    public func forward(_ input: Tensor?, batch: any MicroBatch, microBatch: Int) throws -> ChunkOutput {
        let batch = try tokens(batch)
        try config.checkSampleLength(batch.sequenceLength)
        // Refuse bad targets before any layer saves state for this micro-batch.
        try head?.validate(targets: batch.targets, rows: batch.batchSize * batch.sequenceLength)
        var x: Tensor
        if let embedding {
            guard input == nil else { throw TwoBPError("the first chunk embeds tokens; it takes no input activation") }
            x = try embedding.forward(tokens: batch.tokens, batchSize: batch.batchSize, sequenceLength: batch.sequenceLength,
                                      microBatch: microBatch)
        } else {
            x = try checkedInput(input, batch)
        }
        for block in blocks { x = try block.forward(x, microBatch: microBatch) }
        if let head {
            return .loss([try head.forward(x, targets: batch.targets, lossWeight: batch.lossWeight, microBatch: microBatch)])
        }
        return .activation(x)
    }

    public func backwardInput(_ outputGradient: Tensor?, microBatch: Int) throws -> Tensor? {
        var gradient: Tensor
        if let head {
            guard outputGradient == nil else { throw TwoBPError("the last chunk's p1 starts from the loss; it takes no gradient") }
            gradient = try head.backwardInput(microBatch: microBatch)
        } else {
            guard let outputGradient else { throw TwoBPError("chunk of units \(units): p1 needs the gradient of its output") }
            gradient = outputGradient
        }
        for block in blocks.reversed() { gradient = try block.backwardInput(gradient, microBatch: microBatch) }
        if let embedding {
            try embedding.backwardInput(gradient, microBatch: microBatch)
            return nil
        }
        return gradient
    }

    public func backwardWeight(_ work: WeightGradientWork) throws {
        try head?.backwardWeight(work)
        for block in blocks.reversed() { try block.backwardWeight(work) }
        try embedding?.backwardWeight(work)
    }

    public func evaluate(_ input: Tensor?, batch: any MicroBatch) throws -> ChunkOutput {
        let batch = try tokens(batch)
        let x = try hiddenStates(input, batch)
        if let head {
            return .loss([try head.loss(x, targets: batch.targets, lossWeight: batch.lossWeight)])
        }
        return .activation(x)
    }

    // MARK: CausalLanguageModel

    public var vocabularySize: Int { config.vocabSize }
    /// No position table bounds a Mamba model's context; generation reads the whole text so far.
    public var contextLength: Int { Int.max }

    public func logits(tokens: [Int32], batchSize: Int, sequenceLength: Int) throws -> Tensor {
        guard isFirst, let head else { throw TwoBPError("logits need a chunk that holds the whole model") }
        let batch = TokenBatch(tokens: tokens, targets: tokens, batchSize: batchSize, sequenceLength: sequenceLength, lossWeight: 1)
        return try head.logits(hiddenStates(nil, batch))
    }

    public func loss(_ batch: TokenBatch) throws -> Double {
        try evaluateLoss(batch)[0]
    }

    // MARK: Helpers

    private func tokens(_ batch: any MicroBatch) throws -> TokenBatch {
        try batch.expecting(TokenBatch.self, by: "a mamba model")
    }

    private func checkedInput(_ input: Tensor?, _ batch: TokenBatch) throws -> Tensor {
        let expected = [batch.batchSize, batch.sequenceLength, config.hiddenSize]
        guard let input, input.shape == expected else {
            throw TwoBPError("chunk of units \(units): expected an input activation of shape \(expected), got \(input.map { "\($0.shape)" } ?? "none")")
        }
        return input
    }

    /// The last block's output, saving nothing.
    private func hiddenStates(_ input: Tensor?, _ batch: TokenBatch) throws -> Tensor {
        try config.checkSampleLength(batch.sequenceLength)
        var x = try embedding.map { try $0.apply(tokens: batch.tokens, batchSize: batch.batchSize, sequenceLength: batch.sequenceLength) }
            ?? checkedInput(input, batch)
        for block in blocks { x = try block.apply(x) }
        return x
    }
}
