import Foundation
import Tensor

/// The shape of a LLaMa-like decoder, read from and written as a Hugging Face `config.json`
/// (`LlamaConfig`: the JSON keys are the snake_case names in `CodingKeys`).
///
/// The model is a sequence of pipeline units: unit 0 embeds tokens, units 1...L are the decoder
/// layers and unit L + 1 is the head (final norm, lm_head, loss); `unitCosts` prices each so the
/// pipeline can balance stages. Samples are sequences; their length is in tokens.
public struct LlamaConfig: ModelConfig, Codable, Equatable, Sendable {
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    /// Key/value heads (grouped-query attention when fewer than the attention heads; must divide them).
    public var numKeyValueHeads: Int
    public var vocabSize: Int
    /// The longest sequence RoPE tables are built for.
    public var maxPositionEmbeddings: Int
    public var rmsNormEps: Double
    public var ropeTheta: Double
    /// Standard deviation of the normal initialisation of every matrix and the embedding.
    public var initializerRange: Double
    /// Whether lm_head reads the token embedding's matrix (one tied parameter,
    /// `model.embed_tokens.weight`, spanning the first and the last stage).
    public var tieWordEmbeddings: Bool

    public init(
        hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int, numAttentionHeads: Int,
        numKeyValueHeads: Int? = nil, vocabSize: Int, maxPositionEmbeddings: Int,
        rmsNormEps: Double = 1e-5, ropeTheta: Double = 10000, initializerRange: Double = 0.02,
        tieWordEmbeddings: Bool = false
    ) {
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads ?? numAttentionHeads
        self.vocabSize = vocabSize
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.rmsNormEps = rmsNormEps
        self.ropeTheta = ropeTheta
        self.initializerRange = initializerRange
        self.tieWordEmbeddings = tieWordEmbeddings
    }

    public var headDim: Int { hiddenSize / numAttentionHeads }
    /// Embedding, one unit per decoder layer, head.
    public var unitCount: Int { numHiddenLayers + 2 }

    // MARK: Named configurations

    /// The configurations `resolve` knows by name, in the order help texts should list them.
    public static let modelType = "llama"

    public static let named: [(name: String, config: LlamaConfig)] = [
        ("llama-tiny", LlamaConfig(hiddenSize: 64, intermediateSize: 172, numHiddenLayers: 4, numAttentionHeads: 4,
                                   vocabSize: 256, maxPositionEmbeddings: 64)),
        ("llama-small", LlamaConfig(hiddenSize: 256, intermediateSize: 688, numHiddenLayers: 8, numAttentionHeads: 8,
                                    vocabSize: 256, maxPositionEmbeddings: 256)),
        // LLaMa-2 7B's shape (the paper's transformer).
        ("llama-7b", LlamaConfig(hiddenSize: 4096, intermediateSize: 11008, numHiddenLayers: 32, numAttentionHeads: 32,
                                 vocabSize: 32000, maxPositionEmbeddings: 4096)),
    ]

    /// Decodes a Hugging Face `config.json` (validated by the registry).
    public static func decode(_ data: Data) throws -> LlamaConfig {
        try JSONDecoder().decode(LlamaConfig.self, from: data)
    }

    /// A named configuration or a `config.json` path that must be a LLaMa one.
    public static func resolve(_ nameOrPath: String) throws -> LlamaConfig {
        let config = try ModelRegistry.resolve(nameOrPath)
        guard let llama = config as? LlamaConfig else {
            throw TwoBPError("\(nameOrPath) is a \(type(of: config).modelType) model, not a llama one")
        }
        return llama
    }

    /// Throws a `TwoBPError` naming the first field that TwoBP cannot build a model from.
    public func validate() throws {
        let sizes: [(String, Int)] = [
            ("hidden_size", hiddenSize), ("intermediate_size", intermediateSize), ("num_hidden_layers", numHiddenLayers),
            ("num_attention_heads", numAttentionHeads), ("num_key_value_heads", numKeyValueHeads), ("vocab_size", vocabSize),
            ("max_position_embeddings", maxPositionEmbeddings),
        ]
        for (key, value) in sizes where value <= 0 {
            throw TwoBPError("\(key) must be positive, got \(value)")
        }
        guard hiddenSize % numAttentionHeads == 0 else {
            throw TwoBPError("hidden_size \(hiddenSize) is not divisible by num_attention_heads \(numAttentionHeads)")
        }
        guard headDim % 2 == 0 else {
            throw TwoBPError("head dimension \(headDim) (hidden_size / num_attention_heads) must be even for rotary embeddings")
        }
        guard numAttentionHeads % numKeyValueHeads == 0 else {
            throw TwoBPError("num_key_value_heads \(numKeyValueHeads) does not divide num_attention_heads \(numAttentionHeads)")
        }
        guard vocabSize <= Int(Int32.max) else { throw TwoBPError("vocab_size \(vocabSize) does not fit 32-bit token ids") }
        for (key, value) in [("rms_norm_eps", rmsNormEps), ("rope_theta", ropeTheta)] where !(value > 0 && value.isFinite) {
            throw TwoBPError("\(key) must be a positive number, got \(value)")
        }
        guard initializerRange >= 0, initializerRange.isFinite else {
            throw TwoBPError("initializer_range must be a non-negative number, got \(initializerRange)")
        }
    }

    /// Throws unless sequences of `length` tokens fit the RoPE tables.
    public func checkSequenceLength(_ length: Int) throws {
        guard length >= 1 else { throw TwoBPError("sequence length must be at least 1, got \(length)") }
        guard length <= maxPositionEmbeddings else {
            throw TwoBPError("sequence length \(length) exceeds max_position_embeddings \(maxPositionEmbeddings)")
        }
    }

    // MARK: ModelConfig

    public var defaultSampleLength: Int { maxPositionEmbeddings }

    public func checkSampleLength(_ length: Int) throws { try checkSequenceLength(length) }

    public func activationShape(enteringUnit unit: Int, samples: Int, sampleLength: Int) -> [Int] {
        [samples, sampleLength, hiddenSize]
    }

    /// The name lm_head's matrix is saved under: its own, or the embedding's when tied.
    public var lmHeadWeightName: String { tieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight" }

    public var tiedParameters: [TiedParameter] {
        tieWordEmbeddings ? [TiedParameter(name: lmHeadWeightName, units: [0, unitCount - 1])] : []
    }

    public var lossTerms: [String] { ["loss"] }

    public var dataKind: DataKind { .causalText }

    public func makeChunk(units: Range<Int>, seed: UInt64, shared: SharedParameters) throws -> ModelChunk {
        try LlamaChunk(config: self, units: units, seed: seed, shared: shared)
    }

    public func randomBatch(samples: Int, sampleLength: Int, seed: UInt64) -> any MicroBatch {
        TokenBatch.random(vocabularySize: vocabSize, batchSize: samples, sequenceLength: sampleLength, seed: seed)
    }

    // MARK: Sizes and costs

    /// Trainable values: embedding, per layer 2 norms + q/k/v/o + gate/up/down, final norm, lm_head
    /// (the embedding's matrix once when tied).
    public var parameterCount: Int {
        let perUnit = unitCosts(sampleLength: 1).reduce(0) { $0 + $1.parameters }
        return perUnit - (tieWordEmbeddings ? vocabSize * hiddenSize : 0)
    }

    /// Per-sample cost of each pipeline unit (`unitCount` entries) for sequences of `sampleLength`.
    ///
    /// FLOPs count 2 per multiply-add of the matrix products as executed: every weight costs one
    /// product in forward, one in p1 (dx = dy W) and one in p2 (dW = dyᵀ x); the attention products
    /// run over the full length × length square (masked after), two in forward (q kᵀ, P v) and four
    /// in p1 (dP, dv, dq, dk), none in p2. Element-wise work is left out, except that the
    /// embedding's gather (forward) and scatter-add (p2) are priced at `hiddenSize` so no unit is free.
    ///
    /// Memory follows Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
    /// Transformer Models", section 4.1: 34·sbh + 5·as²b for GPT) adapted to LLaMa (RMSNorm, no
    /// dropout, SwiGLU of width i, grouped KV of width kv), per token of a layer:
    /// activations 6h + 2kv + 3i (the two norm inputs, the q/k/v input, q and k after RoPE, v, the
    /// o_proj input, the MLP input, the gate and up outputs, the down input) plus a·s softmax
    /// probabilities; the 2BP stash (each weight's input and output gradient, each norm's input and
    /// output gradient) 10h + 2kv + 3i. The head keeps its norm and lm_head inputs (2h) and the
    /// vocabulary's probabilities (V), and stashes 3h + V; the embedding stashes its output gradient (h).
    public func unitCosts(sampleLength: Int) -> [UnitCost] {
        let s = Double(sampleLength)
        let (h, i, v) = (hiddenSize, intermediateSize, vocabSize)
        let kv = numKeyValueHeads * headDim
        let (d, dkv) = (Double(h), Double(kv))
        let weights = 2 * (2 * d * d + 2 * d * dkv) + 6 * d * Double(i)  // q, k, v, o; gate, up, down
        let attention = 4 * s * d
        let layerParameters = 2 * h + 2 * h * h + 2 * h * kv + 3 * h * i
        let embedding = UnitCost(forward: s * d, backwardInput: 0, backwardWeight: s * d, parameters: v * h,
                                 activationElements: 0, stashElements: s * d)
        let block = UnitCost(
            forward: s * (weights + attention), backwardInput: s * (weights + 2 * attention), backwardWeight: s * weights,
            parameters: layerParameters,
            activationElements: s * Double(6 * h + 2 * kv + 3 * i) + Double(numAttentionHeads) * s * s,
            stashElements: s * Double(10 * h + 2 * kv + 3 * i))
        let lmHead = 2 * s * d * Double(v)
        let head = UnitCost(forward: lmHead, backwardInput: lmHead, backwardWeight: lmHead, parameters: h + v * h,
                            activationElements: s * Double(2 * h + v), stashElements: s * Double(3 * h + v))
        return [embedding] + Array(repeating: block, count: numHiddenLayers) + [head]
    }

    // MARK: Hugging Face config.json

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size"
        case intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads"
        case vocabSize = "vocab_size"
        case maxPositionEmbeddings = "max_position_embeddings"
        case rmsNormEps = "rms_norm_eps"
        case ropeTheta = "rope_theta"
        case initializerRange = "initializer_range"
        case tieWordEmbeddings = "tie_word_embeddings"
        case headDim = "head_dim"
        case architectures, modelType = "model_type", hiddenAct = "hidden_act", torchDtype = "torch_dtype"
        case ropeScaling = "rope_scaling", attentionBias = "attention_bias", mlpBias = "mlp_bias"
    }

    /// Sizes are required; the rest take Hugging Face `LlamaConfig`'s defaults when absent
    /// (num_key_value_heads = num_attention_heads, max_position_embeddings 2048, rms_norm_eps 1e-6,
    /// rope_theta 10000, initializer_range 0.02, tie_word_embeddings false). Features this
    /// implementation lacks (another activation, rope_scaling, biases, a head_dim other than
    /// hidden_size / heads) are refused rather than ignored.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let modelType = try c.decodeIfPresent(String.self, forKey: .modelType), modelType != "llama" {
            throw TwoBPError("model_type '\(modelType)' is not supported (only 'llama')")
        }
        if let activation = try c.decodeIfPresent(String.self, forKey: .hiddenAct), activation != "silu" {
            throw TwoBPError("hidden_act '\(activation)' is not supported (only 'silu')")
        }
        if c.contains(.ropeScaling), try !c.decodeNil(forKey: .ropeScaling) {
            throw TwoBPError("rope_scaling is not supported")
        }
        for key in [CodingKeys.attentionBias, .mlpBias] where try c.decodeIfPresent(Bool.self, forKey: key) == true {
            throw TwoBPError("\(key.rawValue) = true is not supported (projections have no bias)")
        }
        func integer(_ key: CodingKeys) throws -> Int? { try ConfigDecoding.integer(c, key) }
        func required(_ key: CodingKeys) throws -> Int { try ConfigDecoding.required(c, key) }
        self.init(
            hiddenSize: try required(.hiddenSize),
            intermediateSize: try required(.intermediateSize),
            numHiddenLayers: try required(.numHiddenLayers),
            numAttentionHeads: try required(.numAttentionHeads),
            numKeyValueHeads: try integer(.numKeyValueHeads),
            vocabSize: try required(.vocabSize),
            maxPositionEmbeddings: try integer(.maxPositionEmbeddings) ?? 2048,
            rmsNormEps: try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6,
            ropeTheta: try c.decodeIfPresent(Double.self, forKey: .ropeTheta) ?? 10000,
            initializerRange: try c.decodeIfPresent(Double.self, forKey: .initializerRange) ?? 0.02,
            tieWordEmbeddings: try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? false)
        if let headDim = try integer(.headDim), numAttentionHeads > 0, headDim != self.headDim {
            throw TwoBPError("head_dim \(headDim) differs from hidden_size / num_attention_heads = \(self.headDim), which is not supported")
        }
    }

    /// Writes a `config.json` that Hugging Face `transformers` loads as `LlamaForCausalLM`.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(["LlamaForCausalLM"], forKey: .architectures)
        try c.encode("llama", forKey: .modelType)
        try c.encode("silu", forKey: .hiddenAct)
        try c.encode("float32", forKey: .torchDtype)
        try c.encode(hiddenSize, forKey: .hiddenSize)
        try c.encode(intermediateSize, forKey: .intermediateSize)
        try c.encode(numHiddenLayers, forKey: .numHiddenLayers)
        try c.encode(numAttentionHeads, forKey: .numAttentionHeads)
        try c.encode(numKeyValueHeads, forKey: .numKeyValueHeads)
        try c.encode(headDim, forKey: .headDim)
        try c.encode(vocabSize, forKey: .vocabSize)
        try c.encode(maxPositionEmbeddings, forKey: .maxPositionEmbeddings)
        try c.encode(rmsNormEps, forKey: .rmsNormEps)
        try c.encode(ropeTheta, forKey: .ropeTheta)
        try c.encodeNil(forKey: .ropeScaling)
        try c.encode(initializerRange, forKey: .initializerRange)
        try c.encode(tieWordEmbeddings, forKey: .tieWordEmbeddings)
        try c.encode(false, forKey: .attentionBias)
        try c.encode(false, forKey: .mlpBias)
    }

    /// The `config.json` bytes: pretty-printed, keys sorted.
    public func jsonData() throws -> Data {
        try ConfigDecoding.encode(self)
    }
}
