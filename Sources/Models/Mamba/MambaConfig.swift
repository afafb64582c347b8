import Foundation
import Layers
import Tensor

/// A Mamba model's shape, with Hugging Face `transformers`' `MambaConfig` keys and defaults, for
/// `MambaForCausalLM`: an embedding, `numHiddenLayers` residual blocks x + mixer(RMSNorm(x)), a
/// final RMSNorm (`norm_f`) and `lm_head`, tied to the embedding by default.
///
/// Units, as for LLaMa: 0 the embedding, 1 … L the blocks, L + 1 the head (norm_f, lm_head,
/// cross-entropy). Samples are sequences; their length is in tokens and has no upper bound (the
/// model has no position table).
public struct MambaConfig: ModelConfig, Codable, Equatable, Sendable {
    public var vocabSize: Int
    public var hiddenSize: Int
    public var stateSize: Int
    public var numHiddenLayers: Int
    public var layerNormEpsilon: Double
    /// intermediate_size = expand · hidden_size.
    public var expand: Int
    public var convKernel: Int
    public var useBias: Bool
    public var useConvBias: Bool
    /// Standard deviation of the normal start of the embedding, in_proj and x_proj.
    public var initializerRange: Double
    /// Resolved: ⌈hidden_size / 16⌉ when the file says "auto".
    public var timeStepRank: Int
    public var timeStepScale: Double
    public var timeStepMin: Double
    public var timeStepMax: Double
    public var timeStepInitScheme: MambaMixerConfiguration.TimeStepInitScheme
    public var timeStepFloor: Double
    /// Whether out_proj starts divided by √num_hidden_layers.
    public var rescalePrenormResidual: Bool
    /// Whether lm_head reads the embedding's matrix (one tied parameter, `backbone.embeddings.weight`,
    /// spanning the first and the last stage).
    public var tieWordEmbeddings: Bool

    public init(
        vocabSize: Int, hiddenSize: Int, numHiddenLayers: Int, stateSize: Int = 16, expand: Int = 2, convKernel: Int = 4,
        timeStepRank: Int? = nil, layerNormEpsilon: Double = 1e-5, useBias: Bool = false, useConvBias: Bool = true,
        initializerRange: Double = 0.1, timeStepScale: Double = 1, timeStepMin: Double = 0.001, timeStepMax: Double = 0.1,
        timeStepInitScheme: MambaMixerConfiguration.TimeStepInitScheme = .random, timeStepFloor: Double = 1e-4,
        rescalePrenormResidual: Bool = false, tieWordEmbeddings: Bool = true
    ) {
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.stateSize = stateSize
        self.numHiddenLayers = numHiddenLayers
        self.layerNormEpsilon = layerNormEpsilon
        self.expand = expand
        self.convKernel = convKernel
        self.useBias = useBias
        self.useConvBias = useConvBias
        self.initializerRange = initializerRange
        self.timeStepRank = timeStepRank ?? (hiddenSize + 15) / 16
        self.timeStepScale = timeStepScale
        self.timeStepMin = timeStepMin
        self.timeStepMax = timeStepMax
        self.timeStepInitScheme = timeStepInitScheme
        self.timeStepFloor = timeStepFloor
        self.rescalePrenormResidual = rescalePrenormResidual
        self.tieWordEmbeddings = tieWordEmbeddings
    }

    public var intermediateSize: Int { expand * hiddenSize }
    /// Embedding, one unit per block, head.
    public var unitCount: Int { numHiddenLayers + 2 }

    /// The options every block's mixer is built with.
    public var mixerConfiguration: MambaMixerConfiguration {
        MambaMixerConfiguration(
            hiddenSize: hiddenSize, intermediateSize: intermediateSize, stateSize: stateSize, convKernel: convKernel,
            timeStepRank: timeStepRank, useBias: useBias, useConvBias: useConvBias, timeStepScale: timeStepScale,
            timeStepMin: timeStepMin, timeStepMax: timeStepMax, timeStepFloor: timeStepFloor,
            timeStepInitScheme: timeStepInitScheme, rescaledResidualLayers: rescalePrenormResidual ? numHiddenLayers : nil)
    }

    // MARK: Named configurations

    public static let modelType = "mamba"

    public static let named: [(name: String, config: MambaConfig)] = [
        ("mamba-tiny", MambaConfig(vocabSize: 256, hiddenSize: 32, numHiddenLayers: 4, stateSize: 8)),
        // About llama-small's step time on the development machine (see docs/mamba.md).
        ("mamba-small", MambaConfig(vocabSize: 256, hiddenSize: 256, numHiddenLayers: 8)),
        // state-spaces/mamba-1.4b's shape (the paper's Mamba), for planning.
        ("mamba-1.4b", MambaConfig(vocabSize: 50280, hiddenSize: 2048, numHiddenLayers: 48)),
    ]

    /// Decodes a Hugging Face `config.json` (validated by the registry).
    public static func decode(_ data: Data) throws -> MambaConfig {
        try JSONDecoder().decode(MambaConfig.self, from: data)
    }

    /// Throws a `TwoBPError` naming the first field that TwoBP cannot build a model from.
    public func validate() throws {
        let sizes: [(String, Int)] = [
            ("vocab_size", vocabSize), ("hidden_size", hiddenSize), ("state_size", stateSize),
            ("num_hidden_layers", numHiddenLayers), ("expand", expand), ("conv_kernel", convKernel),
            ("time_step_rank", timeStepRank),
        ]
        for (key, value) in sizes where value <= 0 {
            throw TwoBPError("\(key) must be positive, got \(value)")
        }
        guard vocabSize <= Int(Int32.max) else { throw TwoBPError("vocab_size \(vocabSize) does not fit 32-bit token ids") }
        guard layerNormEpsilon > 0, layerNormEpsilon.isFinite else {
            throw TwoBPError("layer_norm_epsilon must be a positive number, got \(layerNormEpsilon)")
        }
        guard initializerRange >= 0, initializerRange.isFinite else {
            throw TwoBPError("initializer_range must be a non-negative number, got \(initializerRange)")
        }
        try mixerConfiguration.validate()
    }

    // MARK: ModelConfig

    /// Mamba reads sequences of any length; runs use 256 tokens unless told otherwise.
    public var defaultSampleLength: Int { 256 }

    public func checkSampleLength(_ length: Int) throws {
        guard length >= 1 else { throw TwoBPError("sequence length must be at least 1, got \(length)") }
    }

    public func activationShape(enteringUnit unit: Int, samples: Int, sampleLength: Int) -> [Int] {
        [samples, sampleLength, hiddenSize]
    }

    /// The name lm_head's matrix is saved under: its own, or the embedding's when tied (as
    /// `MambaForCausalLM._tied_weights_keys` maps it).
    public var lmHeadWeightName: String { tieWordEmbeddings ? "backbone.embeddings.weight" : "lm_head.weight" }

    public var tiedParameters: [TiedParameter] {
        tieWordEmbeddings ? [TiedParameter(name: lmHeadWeightName, units: [0, unitCount - 1])] : []
    }

    public var lossTerms: [String] { ["loss"] }

    public var dataKind: DataKind { .causalText }

    public func makeChunk(units: Range<Int>, seed: UInt64, shared: SharedParameters) throws -> ModelChunk {
        try MambaChunk(config: self, units: units, seed: seed, shared: shared)
    }

    public func randomBatch(samples: Int, sampleLength: Int, seed: UInt64) -> any MicroBatch {
        TokenBatch.random(vocabularySize: vocabSize, batchSize: samples, sequenceLength: sampleLength, seed: seed)
    }

    // MARK: Sizes and costs

    /// Trainable values (the embedding's matrix once when tied).
    public var parameterCount: Int {
        let perUnit = unitCosts(sampleLength: 1).reduce(0) { $0 + $1.parameters }
        return perUnit - (tieWordEmbeddings ? vocabSize * hiddenSize : 0)
    }

    /// Per-sample cost of each pipeline unit (`unitCount` entries) for sequences of `sampleLength`.
    ///
    /// FLOPs count 2 per multiply-add of the four projections (in_proj h → 2E, x_proj E → r + 2N,
    /// dt_proj r → E, out_proj E → h; one product each in forward, p1 and p2) and of lm_head, plus the
    /// mixer's own loops, which a Mamba layer cannot leave out as LLaMa leaves out element-wise work:
    /// the convolution 2K per channel in forward, 2K in p1 and 2K for its weight partial (in p1); the
    /// scan 6 per (channel, state) in forward (exp(δA), the state update, C · h) and 18 in p1 (the
    /// recomputed forward, the reverse sweep, the A_log partial). The embedding's gather (forward) and
    /// scatter-add (p2) are priced at `hiddenSize` so no unit is free.
    ///
    /// Memory per token of a block (see `MambaMixer`): activations 2h + 6E + r + 2N (the norm's
    /// input, in_proj's input, its output x and z, the convolution's output and its SiLU, x_proj's
    /// output, dt_proj's output, out_proj's input); the 2BP stash 4h + 5E + 2r + 2N (each projection's
    /// input and output gradient, the norm's input and output gradient). The head keeps its norm and
    /// lm_head inputs (2h) and the vocabulary's probabilities (V), and stashes 3h + V; the embedding
    /// stashes its output gradient (h).
    public func unitCosts(sampleLength: Int) -> [UnitCost] {
        let s = Double(sampleLength)
        let (h, e, n, r, k, v) = (hiddenSize, intermediateSize, stateSize, timeStepRank, convKernel, vocabSize)
        let (dh, de, dn, dr, dk) = (Double(h), Double(e), Double(n), Double(r), Double(k))
        let weights = 2 * (dh * 2 * de + de * (dr + 2 * dn) + dr * de + de * dh)
        let convolution = 2 * dk * de
        let scan = de * dn
        let blockParameters = h + h * 2 * e + e * k + e * (r + 2 * n) + r * e + e + e * n + e + e * h
            + (useBias ? 2 * e + h : 0) + (useConvBias ? e : 0)
        let embedding = UnitCost(forward: s * dh, backwardInput: 0, backwardWeight: s * dh, parameters: v * h,
                                 activationElements: 0, stashElements: s * dh)
        let block = UnitCost(
            forward: s * (weights + convolution + 6 * scan), backwardInput: s * (weights + 2 * convolution + 18 * scan),
            backwardWeight: s * weights, parameters: blockParameters,
            activationElements: s * Double(2 * h + 6 * e + r + 2 * n), stashElements: s * Double(4 * h + 5 * e + 2 * r + 2 * n))
        let lmHead = 2 * s * dh * Double(v)
        let head = UnitCost(forward: lmHead, backwardInput: lmHead, backwardWeight: lmHead, parameters: h + v * h,
                            activationElements: s * Double(2 * h + v), stashElements: s * Double(3 * h + v))
        return [embedding] + Array(repeating: block, count: numHiddenLayers) + [head]
    }

    // MARK: Hugging Face config.json

    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size"
        case hiddenSize = "hidden_size"
        case stateSize = "state_size"
        case numHiddenLayers = "num_hidden_layers"
        case layerNormEpsilon = "layer_norm_epsilon"
        case expand
        case convKernel = "conv_kernel"
        case useBias = "use_bias"
        case useConvBias = "use_conv_bias"
        case initializerRange = "initializer_range"
        case timeStepRank = "time_step_rank"
        case timeStepScale = "time_step_scale"
        case timeStepMin = "time_step_min"
        case timeStepMax = "time_step_max"
        case timeStepInitScheme = "time_step_init_scheme"
        case timeStepFloor = "time_step_floor"
        case rescalePrenormResidual = "rescale_prenorm_residual"
        case tieWordEmbeddings = "tie_word_embeddings"
        case architectures, modelType = "model_type", hiddenAct = "hidden_act", torchDtype = "torch_dtype"
        case intermediateSize = "intermediate_size", residualInFP32 = "residual_in_fp32"
        case padTokenId = "pad_token_id", bosTokenId = "bos_token_id", eosTokenId = "eos_token_id"
    }

    /// Every field takes Hugging Face `MambaConfig`'s default when absent (vocab_size 50280,
    /// hidden_size 768, state_size 16, num_hidden_layers 32, layer_norm_epsilon 1e-5, expand 2,
    /// conv_kernel 4, use_bias false, use_conv_bias true, initializer_range 0.1, time_step_rank
    /// "auto" = ⌈hidden_size / 16⌉, time_step_scale 1, time_step_min 0.001, time_step_max 0.1,
    /// time_step_init_scheme "random", time_step_floor 1e-4, rescale_prenorm_residual false,
    /// tie_word_embeddings true). intermediate_size is expand · hidden_size whatever the file says,
    /// as `MambaConfig` recomputes it. Another activation than SiLU is refused rather than ignored;
    /// residual_in_fp32 changes nothing in a float32 model.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let modelType = try c.decodeIfPresent(String.self, forKey: .modelType), modelType != Self.modelType {
            throw TwoBPError("model_type '\(modelType)' is not a mamba config")
        }
        if let activation = try c.decodeIfPresent(String.self, forKey: .hiddenAct), activation != "silu" {
            throw TwoBPError("hidden_act '\(activation)' is not supported (only 'silu')")
        }
        func integer(_ key: CodingKeys) throws -> Int? { try ConfigDecoding.integer(c, key) }
        func number(_ key: CodingKeys) throws -> Double? { try c.decodeIfPresent(Double.self, forKey: key) }
        func flag(_ key: CodingKeys) throws -> Bool? { try c.decodeIfPresent(Bool.self, forKey: key) }
        let hiddenSize = try integer(.hiddenSize) ?? 768
        var timeStepRank: Int?
        if (try? c.decodeIfPresent(String.self, forKey: .timeStepRank)) != nil {
            guard try c.decode(String.self, forKey: .timeStepRank) == "auto" else {
                throw TwoBPError("field 'time_step_rank' must be an integer or \"auto\"")
            }
        } else {
            timeStepRank = try integer(.timeStepRank)
        }
        var scheme = MambaMixerConfiguration.TimeStepInitScheme.random
        if let name = try c.decodeIfPresent(String.self, forKey: .timeStepInitScheme) {
            guard let known = MambaMixerConfiguration.TimeStepInitScheme(rawValue: name) else {
                throw TwoBPError("time_step_init_scheme '\(name)' is not supported (only 'random' or 'constant')")
            }
            scheme = known
        }
        self.init(
            vocabSize: try integer(.vocabSize) ?? 50280, hiddenSize: hiddenSize, numHiddenLayers: try integer(.numHiddenLayers) ?? 32,
            stateSize: try integer(.stateSize) ?? 16, expand: try integer(.expand) ?? 2, convKernel: try integer(.convKernel) ?? 4,
            timeStepRank: timeStepRank, layerNormEpsilon: try number(.layerNormEpsilon) ?? 1e-5,
            useBias: try flag(.useBias) ?? false, useConvBias: try flag(.useConvBias) ?? true,
            initializerRange: try number(.initializerRange) ?? 0.1, timeStepScale: try number(.timeStepScale) ?? 1,
            timeStepMin: try number(.timeStepMin) ?? 0.001, timeStepMax: try number(.timeStepMax) ?? 0.1,
            timeStepInitScheme: scheme, timeStepFloor: try number(.timeStepFloor) ?? 1e-4,
            rescalePrenormResidual: try flag(.rescalePrenormResidual) ?? false,
            tieWordEmbeddings: try flag(.tieWordEmbeddings) ?? true)
    }

    /// Writes a `config.json` that Hugging Face `transformers` loads as `MambaForCausalLM`.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(["MambaForCausalLM"], forKey: .architectures)
        try c.encode(Self.modelType, forKey: .modelType)
        try c.encode("silu", forKey: .hiddenAct)
        try c.encode("float32", forKey: .torchDtype)
        try c.encode(vocabSize, forKey: .vocabSize)
        try c.encode(hiddenSize, forKey: .hiddenSize)
        try c.encode(stateSize, forKey: .stateSize)
        try c.encode(numHiddenLayers, forKey: .numHiddenLayers)
        try c.encode(layerNormEpsilon, forKey: .layerNormEpsilon)
        try c.encode(expand, forKey: .expand)
        try c.encode(intermediateSize, forKey: .intermediateSize)
        try c.encode(convKernel, forKey: .convKernel)
        try c.encode(useBias, forKey: .useBias)
        try c.encode(useConvBias, forKey: .useConvBias)
        try c.encode(initializerRange, forKey: .initializerRange)
        try c.encode(timeStepRank, forKey: .timeStepRank)
        try c.encode(timeStepScale, forKey: .timeStepScale)
        try c.encode(timeStepMin, forKey: .timeStepMin)
        try c.encode(timeStepMax, forKey: .timeStepMax)
        try c.encode(timeStepInitScheme.rawValue, forKey: .timeStepInitScheme)
        try c.encode(timeStepFloor, forKey: .timeStepFloor)
        try c.encode(rescalePrenormResidual, forKey: .rescalePrenormResidual)
        try c.encode(true, forKey: .residualInFP32)
        try c.encode(tieWordEmbeddings, forKey: .tieWordEmbeddings)
        for key in [CodingKeys.padTokenId, .bosTokenId, .eosTokenId] { try c.encode(0, forKey: key) }
    }

    /// The fields `transformers`' `MambaConfig` types as floats and checks strictly (it refuses
    /// `"time_step_scale": 1` as an int).
    static let floatKeys: [CodingKeys] = [.layerNormEpsilon, .initializerRange, .timeStepScale, .timeStepMin, .timeStepMax, .timeStepFloor]

    /// The `config.json` bytes: pretty-printed, keys sorted. Foundation's `JSONEncoder` writes an
    /// integral Double without a fraction (1.0 as `1`), which `transformers` refuses for its float
    /// fields, so those get their `.0` back here.
    public func jsonData() throws -> Data {
        var text = String(decoding: try ConfigDecoding.encode(self), as: UTF8.self)
        for key in Self.floatKeys {
            text = text.replacingOccurrences(of: "(\"\(key.rawValue)\" : -?[0-9]+)(,?\n)", with: "$1.0$2", options: .regularExpression)
        }
        return Data(text.utf8)
    }
}
