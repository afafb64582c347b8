import Foundation
import Tensor

/// The shape of a BERT encoder with its pre-training heads, read from and written as a Hugging
/// Face `config.json` (`BertConfig`: the JSON keys are the snake_case names in `CodingKeys`).
///
/// The model is a sequence of pipeline units: unit 0 is the embeddings (word + position + token
/// type, LayerNorm, dropout), units 1...L the post-norm encoder layers, unit L + 1 the heads
/// (pooler and next-sentence classifier, masked-LM transform and the decoder tied to the word
/// embeddings). The tied matrix `bert.embeddings.word_embeddings.weight` spans the first and the
/// last unit. Samples are sequences; their length is in tokens.
public struct BertConfig: ModelConfig, Codable, Equatable, Sendable {
    public var vocabSize: Int
    public var hiddenSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var intermediateSize: Int
    /// Dropout after the embeddings and after each attention output and feed-forward output.
    public var hiddenDropoutProb: Double
    /// Dropout on the attention probabilities.
    public var attentionProbsDropoutProb: Double
    public var maxPositionEmbeddings: Int
    public var typeVocabSize: Int
    /// Standard deviation of the normal initialisation of every matrix and embedding table.
    public var initializerRange: Double
    public var layerNormEps: Double
    /// The word-embedding row that is never trained (PyTorch's `padding_idx`).
    public var padTokenId: Int

    public init(vocabSize: Int = 30522, hiddenSize: Int = 768, numHiddenLayers: Int = 12, numAttentionHeads: Int = 12,
                intermediateSize: Int = 3072, hiddenDropoutProb: Double = 0.1, attentionProbsDropoutProb: Double = 0.1,
                maxPositionEmbeddings: Int = 512, typeVocabSize: Int = 2, initializerRange: Double = 0.02,
                layerNormEps: Double = 1e-12, padTokenId: Int = 0) {
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.intermediateSize = intermediateSize
        self.hiddenDropoutProb = hiddenDropoutProb
        self.attentionProbsDropoutProb = attentionProbsDropoutProb
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.typeVocabSize = typeVocabSize
        self.initializerRange = initializerRange
        self.layerNormEps = layerNormEps
        self.padTokenId = padTokenId
    }

    public var headSize: Int { hiddenSize / numAttentionHeads }
    /// Embeddings, one unit per encoder layer, heads.
    public var unitCount: Int { numHiddenLayers + 2 }

    /// The checkpoint name of the word-embedding matrix, which the masked-LM decoder reads too.
    public static let wordEmbeddingsName = "bert.embeddings.word_embeddings.weight"

    // MARK: Named configurations

    public static let modelType = "bert"

    /// TwoBP's byte vocabulary (`BertVocabulary`, 260 ids, [PAD] = 256) with `transformers`' default
    /// dropout; `bert-large` is the paper's BERT-Large shape with its WordPiece vocabulary, for planning.
    public static let named: [(name: String, config: BertConfig)] = [
        ("bert-tiny", BertConfig(vocabSize: BertVocabulary.size, hiddenSize: 64, numHiddenLayers: 4, numAttentionHeads: 4,
                                 intermediateSize: 256, maxPositionEmbeddings: 128, padTokenId: Int(BertVocabulary.pad))),
        ("bert-small", BertConfig(vocabSize: BertVocabulary.size, hiddenSize: 256, numHiddenLayers: 8, numAttentionHeads: 8,
                                  intermediateSize: 1024, maxPositionEmbeddings: 256, padTokenId: Int(BertVocabulary.pad))),
        ("bert-large", BertConfig(vocabSize: 30522, hiddenSize: 1024, numHiddenLayers: 24, numAttentionHeads: 16,
                                  intermediateSize: 4096, maxPositionEmbeddings: 512, typeVocabSize: 2)),
    ]

    /// Decodes a Hugging Face `config.json` (validated by the registry).
    public static func decode(_ data: Data) throws -> BertConfig {
        try JSONDecoder().decode(BertConfig.self, from: data)
    }

    /// Throws a `TwoBPError` naming the first field that TwoBP cannot build a model from.
    public func validate() throws {
        let sizes: [(String, Int)] = [
            ("vocab_size", vocabSize), ("hidden_size", hiddenSize), ("num_hidden_layers", numHiddenLayers),
            ("num_attention_heads", numAttentionHeads), ("intermediate_size", intermediateSize),
            ("max_position_embeddings", maxPositionEmbeddings), ("type_vocab_size", typeVocabSize),
        ]
        for (key, value) in sizes where value <= 0 {
            throw TwoBPError("\(key) must be positive, got \(value)")
        }
        guard hiddenSize % numAttentionHeads == 0 else {
            throw TwoBPError("hidden_size \(hiddenSize) is not divisible by num_attention_heads \(numAttentionHeads)")
        }
        guard vocabSize <= Int(Int32.max) else { throw TwoBPError("vocab_size \(vocabSize) does not fit 32-bit token ids") }
        guard padTokenId >= 0, padTokenId < vocabSize else {
            throw TwoBPError("pad_token_id \(padTokenId) is outside the vocabulary of \(vocabSize)")
        }
        for (key, value) in [("hidden_dropout_prob", hiddenDropoutProb), ("attention_probs_dropout_prob", attentionProbsDropoutProb)]
            where !(value >= 0 && value < 1) {
            throw TwoBPError("\(key) must be in [0, 1), got \(value)")
        }
        guard layerNormEps > 0, layerNormEps.isFinite else {
            throw TwoBPError("layer_norm_eps must be a positive number, got \(layerNormEps)")
        }
        guard initializerRange >= 0, initializerRange.isFinite else {
            throw TwoBPError("initializer_range must be a non-negative number, got \(initializerRange)")
        }
    }

    /// Throws unless sequences of `length` tokens fit the position table.
    public func checkSequenceLength(_ length: Int) throws {
        guard length >= 1 else { throw TwoBPError("sequence length must be at least 1, got \(length)") }
        guard length <= maxPositionEmbeddings else {
            throw TwoBPError("sequence length \(length) exceeds max_position_embeddings \(maxPositionEmbeddings)")
        }
    }

    // MARK: ModelConfig

    /// The longest window of the named configurations is also their default: 128 tokens for bert-tiny.
    public var defaultSampleLength: Int { maxPositionEmbeddings }

    public func checkSampleLength(_ length: Int) throws { try checkSequenceLength(length) }

    public func activationShape(enteringUnit unit: Int, samples: Int, sampleLength: Int) -> [Int] {
        [samples, sampleLength, hiddenSize]
    }

    public var tiedParameters: [TiedParameter] {
        [TiedParameter(name: Self.wordEmbeddingsName, units: [0, unitCount - 1])]
    }

    /// The optimised loss (masked-LM + next-sentence), each part, and the next-sentence accuracy.
    public var lossTerms: [String] { ["loss", "mlm_loss", "nsp_loss", "nsp_accuracy"] }

    public var dataKind: DataKind { .sentencePairs }

    public func makeChunk(units: Range<Int>, seed: UInt64, shared: SharedParameters) throws -> ModelChunk {
        try BertChunk(config: self, units: units, seed: seed, shared: shared)
    }

    public func randomBatch(samples: Int, sampleLength: Int, seed: UInt64) -> any MicroBatch {
        PreTrainingBatch.random(batchSize: samples, sequenceLength: sampleLength, seed: seed)
    }

    // MARK: Sizes and costs

    /// The fraction of positions the masked-LM head predicts (BERT's 15%), which prices the head.
    public static let predictedFraction = 0.15

    /// Trainable values: the three tables and their LayerNorm, per layer q/k/v/o, the feed-forward
    /// pair and two LayerNorms (all with biases), pooler, masked-LM transform and bias, the
    /// next-sentence classifier; the decoder's matrix is the word table's.
    public var parameterCount: Int {
        unitCosts(sampleLength: 1).reduce(0) { $0 + $1.parameters } - vocabSize * hiddenSize
    }

    /// Per-sample cost of each pipeline unit (`unitCount` entries) for sequences of `sampleLength`.
    ///
    /// FLOPs count 2 per multiply-add of the matrix products as executed (see `LlamaConfig.unitCosts`
    /// for the conventions): every weight costs one product in forward, p1 and p2; attention runs
    /// over the full length × length square, two products in forward and four in p1. The masked-LM
    /// transform and decoder run on the predicted 15% of positions only, the pooler and classifier on
    /// the first token. Memory per token of a layer, adapting Korthikanti et al. 2022 (section 4.1) to
    /// BERT's post-norm layer: activations 8h + 2i (q/k/v input, q, k, v, attention.output.dense
    /// input, both LayerNorm inputs and the intermediate input; GELU's input and output.dense's input)
    /// plus a·s probabilities; the 2BP stash (each weight's input and output gradient, each norm's
    /// input and output gradient) 12h + 2i. The embeddings stash d(sum) (h a token); the head keeps
    /// and stashes its transform inputs and the vocabulary's probabilities on the predicted rows.
    public func unitCosts(sampleLength: Int) -> [UnitCost] {
        let s = Double(sampleLength)
        let (h, i, v) = (hiddenSize, intermediateSize, vocabSize)
        let (d, di, dv) = (Double(h), Double(i), Double(v))
        let weights = 2 * (4 * d * d + 2 * d * di)  // q, k, v, attention.output.dense; intermediate, output
        let attention = 4 * s * d
        let embeddings = UnitCost(forward: 3 * s * d, backwardInput: 0, backwardWeight: 3 * s * d,
                                  parameters: (v + maxPositionEmbeddings + typeVocabSize) * h + 2 * h,
                                  activationElements: s * d, stashElements: s * d)
        let layer = UnitCost(
            forward: s * (weights + attention), backwardInput: s * (weights + 2 * attention), backwardWeight: s * weights,
            parameters: 4 * h * h + 2 * h * i + 9 * h + i,
            activationElements: s * (8 * d + 2 * di) + Double(numAttentionHeads) * s * s,
            stashElements: s * (12 * d + 2 * di))
        let predicted = Self.predictedFraction * s
        let headProducts = predicted * 2 * (d * d + d * dv) + 2 * (2 * d * d + 2 * d)
        let heads = UnitCost(forward: headProducts, backwardInput: headProducts, backwardWeight: headProducts,
                             parameters: 2 * (h * h + h) + 2 * h + v + v * h + 2 * h + 2,
                             activationElements: predicted * (3 * d + dv) + 2 * d,
                             stashElements: predicted * (4 * d + dv) + 3 * d)
        return [embeddings] + Array(repeating: layer, count: numHiddenLayers) + [heads]
    }

    // MARK: Hugging Face config.json

    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size"
        case hiddenSize = "hidden_size"
        case numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads"
        case intermediateSize = "intermediate_size"
        case hiddenAct = "hidden_act"
        case hiddenDropoutProb = "hidden_dropout_prob"
        case attentionProbsDropoutProb = "attention_probs_dropout_prob"
        case maxPositionEmbeddings = "max_position_embeddings"
        case typeVocabSize = "type_vocab_size"
        case initializerRange = "initializer_range"
        case layerNormEps = "layer_norm_eps"
        case padTokenId = "pad_token_id"
        case positionEmbeddingType = "position_embedding_type"
        case tieWordEmbeddings = "tie_word_embeddings"
        case isDecoder = "is_decoder"
        case addCrossAttention = "add_cross_attention"
        case architectures, modelType = "model_type", torchDtype = "torch_dtype"
    }

    /// Every field takes Hugging Face `BertConfig`'s default when absent (bert-base: vocab 30522,
    /// hidden 768, 12 layers of 12 heads, intermediate 3072, dropouts 0.1, 512 positions, 2 token
    /// types, initializer_range 0.02, layer_norm_eps 1e-12, pad_token_id 0). Features this
    /// implementation lacks (another activation, relative positions, an untied decoder, a decoder
    /// or cross-attention) are refused rather than ignored.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let modelType = try c.decodeIfPresent(String.self, forKey: .modelType), modelType != "bert" {
            throw TwoBPError("model_type '\(modelType)' is not supported (only 'bert')")
        }
        if let activation = try c.decodeIfPresent(String.self, forKey: .hiddenAct), activation != "gelu" {
            throw TwoBPError("hidden_act '\(activation)' is not supported (only 'gelu', the exact erf form)")
        }
        if let positions = try c.decodeIfPresent(String.self, forKey: .positionEmbeddingType), positions != "absolute" {
            throw TwoBPError("position_embedding_type '\(positions)' is not supported (only 'absolute')")
        }
        if try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) == false {
            throw TwoBPError("tie_word_embeddings = false is not supported (the masked-LM decoder reads the word embeddings)")
        }
        for key in [CodingKeys.isDecoder, .addCrossAttention] where try c.decodeIfPresent(Bool.self, forKey: key) == true {
            throw TwoBPError("\(key.rawValue) = true is not supported (TwoBP's BERT is a bidirectional encoder)")
        }
        func integer(_ key: CodingKeys, _ fallback: Int) throws -> Int { try ConfigDecoding.integer(c, key) ?? fallback }
        func number(_ key: CodingKeys, _ fallback: Double) throws -> Double { try c.decodeIfPresent(Double.self, forKey: key) ?? fallback }
        let defaults = BertConfig()
        self.init(
            vocabSize: try integer(.vocabSize, defaults.vocabSize),
            hiddenSize: try integer(.hiddenSize, defaults.hiddenSize),
            numHiddenLayers: try integer(.numHiddenLayers, defaults.numHiddenLayers),
            numAttentionHeads: try integer(.numAttentionHeads, defaults.numAttentionHeads),
            intermediateSize: try integer(.intermediateSize, defaults.intermediateSize),
            hiddenDropoutProb: try number(.hiddenDropoutProb, defaults.hiddenDropoutProb),
            attentionProbsDropoutProb: try number(.attentionProbsDropoutProb, defaults.attentionProbsDropoutProb),
            maxPositionEmbeddings: try integer(.maxPositionEmbeddings, defaults.maxPositionEmbeddings),
            typeVocabSize: try integer(.typeVocabSize, defaults.typeVocabSize),
            initializerRange: try number(.initializerRange, defaults.initializerRange),
            layerNormEps: try number(.layerNormEps, defaults.layerNormEps),
            padTokenId: try integer(.padTokenId, defaults.padTokenId))
    }

    /// Writes a `config.json` that Hugging Face `transformers` loads as `BertForPreTraining`.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(["BertForPreTraining"], forKey: .architectures)
        try c.encode("bert", forKey: .modelType)
        try c.encode("gelu", forKey: .hiddenAct)
        try c.encode("absolute", forKey: .positionEmbeddingType)
        try c.encode("float32", forKey: .torchDtype)
        try c.encode(true, forKey: .tieWordEmbeddings)
        try c.encode(vocabSize, forKey: .vocabSize)
        try c.encode(hiddenSize, forKey: .hiddenSize)
        try c.encode(numHiddenLayers, forKey: .numHiddenLayers)
        try c.encode(numAttentionHeads, forKey: .numAttentionHeads)
        try c.encode(intermediateSize, forKey: .intermediateSize)
        try c.encode(hiddenDropoutProb, forKey: .hiddenDropoutProb)
        try c.encode(attentionProbsDropoutProb, forKey: .attentionProbsDropoutProb)
        try c.encode(maxPositionEmbeddings, forKey: .maxPositionEmbeddings)
        try c.encode(typeVocabSize, forKey: .typeVocabSize)
        try c.encode(initializerRange, forKey: .initializerRange)
        try c.encode(layerNormEps, forKey: .layerNormEps)
        try c.encode(padTokenId, forKey: .padTokenId)
    }

    /// The `config.json` bytes: pretty-printed, keys sorted.
    public func jsonData() throws -> Data {
        try ConfigDecoding.encode(self)
    }
}
