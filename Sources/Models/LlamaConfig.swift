import Foundation
import Tensor

/// The shape of a LLaMa-like decoder, read from and written as a Hugging Face `config.json`
/// (`LlamaConfig`: the JSON keys are the snake_case names in `CodingKeys`).
///
/// The model is a sequence of pipeline units: unit 0 embeds tokens, units 1...L are the decoder
/// layers and unit L + 1 is the head (final norm, lm_head, loss); `unitCosts` prices each so the
/// pipeline can balance stages.
public struct LlamaConfig: Codable, Equatable, Sendable {
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
    /// Must be false: the embedding and lm_head live on different pipeline stages.
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
    public static let named: [(name: String, config: LlamaConfig)] = [
        ("llama-tiny", LlamaConfig(hiddenSize: 64, intermediateSize: 172, numHiddenLayers: 4, numAttentionHeads: 4,
                                   vocabSize: 256, maxPositionEmbeddings: 64)),
        ("llama-small", LlamaConfig(hiddenSize: 256, intermediateSize: 688, numHiddenLayers: 8, numAttentionHeads: 8,
                                    vocabSize: 256, maxPositionEmbeddings: 256)),
        // LLaMa-2 7B's shape (the paper's transformer).
        ("llama-7b", LlamaConfig(hiddenSize: 4096, intermediateSize: 11008, numHiddenLayers: 32, numAttentionHeads: 32,
                                 vocabSize: 32000, maxPositionEmbeddings: 4096)),
    ]

    /// A named configuration (`llama-tiny`, `llama-small`, `llama-7b`), or a Hugging Face `config.json`
    /// given by its path or by the directory holding it; validated either way.
    public static func resolve(_ nameOrPath: String) throws -> LlamaConfig {
        if let entry = named.first(where: { $0.name == nameOrPath }) { return entry.config }
        var isDirectory: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: nameOrPath, isDirectory: &isDirectory)
        guard exists || nameOrPath.contains("/") || nameOrPath.hasSuffix(".json") else {
            throw TwoBPError("unknown model '\(nameOrPath)': expected one of \(named.map(\.name).joined(separator: ", ")) or the path of a Hugging Face config.json")
        }
        let path = isDirectory.boolValue ? (nameOrPath as NSString).appendingPathComponent("config.json") : nameOrPath
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TwoBPError("cannot read model config \(path)")
        }
        return try parse(data, source: path)
    }

    /// Decodes and validates a Hugging Face `config.json`; `source` names it in errors.
    public static func parse(_ data: Data, source: String = "config.json") throws -> LlamaConfig {
        do {
            let config = try JSONDecoder().decode(LlamaConfig.self, from: data)
            try config.validate()
            return config
        } catch let error as TwoBPError {
            throw TwoBPError("\(source): \(error.message)")
        } catch let error as DecodingError {
            throw TwoBPError("\(source): \(describe(error))")
        } catch {
            throw TwoBPError("\(source): \(error)")
        }
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
        guard !tieWordEmbeddings else {
            throw TwoBPError("tie_word_embeddings = true is not supported: the embedding and lm_head sit on different pipeline stages, so they are separate weights")
        }
    }

    /// Throws unless sequences of `length` tokens fit the RoPE tables.
    public func checkSequenceLength(_ length: Int) throws {
        guard length <= maxPositionEmbeddings else {
            throw TwoBPError("sequence length \(length) exceeds max_position_embeddings \(maxPositionEmbeddings)")
        }
    }

    // MARK: Sizes and costs

    /// Trainable values: embedding, per layer 2 norms + q/k/v/o + gate/up/down, final norm, lm_head.
    public var parameterCount: Int {
        let keyValueSize = numKeyValueHeads * headDim
        let attention = 2 * hiddenSize * hiddenSize + 2 * hiddenSize * keyValueSize
        let layer = 2 * hiddenSize + attention + 3 * hiddenSize * intermediateSize
        return 2 * vocabSize * hiddenSize + numHiddenLayers * layer + hiddenSize
    }

    /// FLOPs per token of one pipeline unit's forward, p1 and p2.
    public struct UnitFLOPs: Sendable, Equatable {
        public var forward: Double
        public var backwardInput: Double
        public var backwardWeight: Double

        public init(forward: Double, backwardInput: Double, backwardWeight: Double) {
            self.forward = forward
            self.backwardInput = backwardInput
            self.backwardWeight = backwardWeight
        }
    }

    /// FLOPs per token of each pipeline unit (`unitCount` entries) for sequences of `sequenceLength`,
    /// counting 2 per multiply-add of the matrix products as executed: every weight costs one product
    /// in forward, one in p1 (dx = dy W) and one in p2 (dW = dyᵀ x); the attention products run over
    /// the full length × length square (masked after), two in forward (q kᵀ, P v) and four in p1
    /// (dP, dv, dq, dk), none in p2. Element-wise work is left out, except that the embedding's
    /// gather (forward) and scatter-add (p2) are priced at `hiddenSize` so no unit is free.
    public func unitFLOPs(sequenceLength: Int) -> [UnitFLOPs] {
        let (d, kv) = (Double(hiddenSize), Double(numKeyValueHeads * headDim))
        let weights = 2 * (2 * d * d + 2 * d * kv) + 6 * d * Double(intermediateSize)  // q, k, v, o; gate, up, down
        let attention = 4 * Double(sequenceLength) * d
        let embedding = UnitFLOPs(forward: d, backwardInput: 0, backwardWeight: d)
        let block = UnitFLOPs(forward: weights + attention, backwardInput: weights + 2 * attention, backwardWeight: weights)
        let lmHead = 2 * d * Double(vocabSize)
        let head = UnitFLOPs(forward: lmHead, backwardInput: lmHead, backwardWeight: lmHead)
        return [embedding] + Array(repeating: block, count: numHiddenLayers) + [head]
    }

    /// Forward FLOPs per token of each pipeline unit (see `unitFLOPs`), for balancing stages.
    public func unitCosts(sequenceLength: Int) -> [Double] {
        unitFLOPs(sequenceLength: sequenceLength).map(\.forward)
    }

    /// Forward FLOPs per token of the whole model.
    public func forwardFLOPsPerToken(sequenceLength: Int) -> Double {
        unitCosts(sequenceLength: sequenceLength).reduce(0, +)
    }

    /// Training FLOPs per token: forward + p1 + p2 of every unit, which is 3× the forward for every
    /// unit but the embedding (whose p1 computes nothing).
    public func trainingFLOPsPerToken(sequenceLength: Int) -> Double {
        unitFLOPs(sequenceLength: sequenceLength).reduce(0) { $0 + $1.forward + $1.backwardInput + $1.backwardWeight }
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
    /// implementation lacks (another model_type or activation, rope_scaling, biases, a head_dim
    /// other than hidden_size / heads) are refused rather than ignored.
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
        /// JSON numbers that must be integers (64 and 64.0 are, 64.5 and "64" are not).
        func integer(_ key: CodingKeys) throws -> Int? {
            guard c.contains(key) else { return nil }
            guard let value = try? c.decode(Double.self, forKey: key), value.rounded() == value, abs(value) < 0x1p53 else {
                throw TwoBPError("field '\(key.rawValue)' must be an integer")
            }
            return Int(value)
        }
        func required(_ key: CodingKeys) throws -> Int {
            guard let value = try integer(key) else { throw TwoBPError("missing field '\(key.rawValue)'") }
            return value
        }
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
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }

    /// The `config.json` as a JSON object (for embedding in larger documents, e.g. run metadata).
    public func jsonObject() -> [String: Any] {
        // Encoding plain numbers, strings and booleans cannot fail.
        (try? JSONSerialization.jsonObject(with: jsonData())) as? [String: Any] ?? [:]
    }
}

private func describe(_ error: DecodingError) -> String {
    func path(_ context: DecodingError.Context) -> String {
        context.codingPath.map(\.stringValue).joined(separator: ".")
    }
    switch error {
    case .keyNotFound(let key, _):
        return "missing field '\(key.stringValue)'"
    case .typeMismatch(let type, let context), .valueNotFound(let type, let context):
        return "field '\(path(context))' must be \(type == Double.self ? "a number" : type == Bool.self ? "true or false" : "\(type)")"
    case .dataCorrupted(let context):
        return context.codingPath.isEmpty ? "not valid JSON (\(context.debugDescription))" : "field '\(path(context))': \(context.debugDescription)"
    @unknown default:
        return "\(error)"
    }
}
