import Foundation
import Models
import Pipeline
import Schedules
import Tensor

/// Cost models for configurations too big to run here (llama-7b): time from
/// `LlamaConfig.unitFLOPs` and a FLOP rate, memory from parameter counts and a
/// per-layer activation formula.
///
/// Memory assumptions (every one a field of `AnalyticCostSettings`):
/// - static: `staticBytesPerParameter` (default 16) per parameter, which is
///   both fp32 weights + fp32 gradients + AdamW's two fp32 moments (4 × 4 B)
///   and ZeRO's mixed precision (bf16 weights 2 + bf16 gradients 2 + fp32
///   master weights, m and v 12).
/// - activations, per decoder layer and micro-batch of b sequences of s
///   tokens, in `activationElementBytes` (default 2, bf16), following
///   Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
///   Transformer Models", section 4.1: 34·sbh + 5·as²b for GPT with GeLU,
///   dropout and 4h MLP) adapted to LLaMa (RMSNorm, no dropout, SwiGLU of width
///   i, grouped KV of width kv = kv heads × head size):
///     e·sb·(6h + 2kv + 3i) + e·a·s²·b
///   the first term: the two norm inputs (2h), the q/k/v input (h), q and k
///   after RoPE (h + kv), v (kv), the o_proj input (h), the MLP input (h),
///   the gate and up outputs (2i) and the down input (i); the second: the
///   softmax output (a heads of s × s; Korthikanti's 2as²b in 16 bit), kept
///   because attention here is not a fused flash kernel.
/// - the 2BP stash (what p1 leaves for p2): for each weight matrix its input
///   and its output gradient, plus each norm's input and output gradient:
///     e·sb·(3h + i) inputs + e·sb·(3h + 2kv + 2i) output gradients + e·sb·4h norms
///   = e·sb·(10h + 2kv + 3i) per layer.
/// - head: final norm input and lm_head input (2h) in e bytes plus fp32
///   softmax probabilities (4V) as activations; stash e·sb·(3h + V).
///   Embedding: no activations beyond token ids; stash e·sb·h (its output gradient).
public struct AnalyticCostSettings: Codable, Sendable {
    /// FLOP/s one rank sustains on the model's GEMMs.
    public var flopsRate: Double
    /// Bytes/s between two ranks; nil: free.
    public var bandwidth: Double?
    public var latency: Double
    public var microBatchSize: Int
    public var sequenceLength: Int
    public var activationElementBytes: Int
    public var staticBytesPerParameter: Int
    /// Fraction of a single p2 each extra micro-batch of a concatenated p2 costs (1: no gain).
    public var concatenationEfficiency: Double

    public init(flopsRate: Double, bandwidth: Double? = nil, latency: Double = 0, microBatchSize: Int = 1,
                sequenceLength: Int, activationElementBytes: Int = 2, staticBytesPerParameter: Int = 16,
                concatenationEfficiency: Double = 1) {
        self.flopsRate = flopsRate
        self.bandwidth = bandwidth
        self.latency = latency
        self.microBatchSize = microBatchSize
        self.sequenceLength = sequenceLength
        self.activationElementBytes = activationElementBytes
        self.staticBytesPerParameter = staticBytesPerParameter
        self.concatenationEfficiency = concatenationEfficiency
    }
}

public enum AnalyticCosts {
    /// Parameters of each pipeline unit (embedding, layers, head), summing to `config.parameterCount`.
    public static func unitParameters(_ config: LlamaConfig) -> [Int] {
        let (h, i, v) = (config.hiddenSize, config.intermediateSize, config.vocabSize)
        let kv = config.numKeyValueHeads * config.headDim
        let layer = 2 * h + 2 * h * h + 2 * h * kv + 3 * h * i
        return [v * h] + Array(repeating: layer, count: config.numHiddenLayers) + [h + v * h]
    }

    /// Activation bytes one decoder layer keeps from F to p1 for `microBatchSize` sequences.
    public static func activationBytesPerLayer(_ config: LlamaConfig, settings: AnalyticCostSettings) -> Int {
        let (h, i, a) = (config.hiddenSize, config.intermediateSize, config.numAttentionHeads)
        let kv = config.numKeyValueHeads * config.headDim
        let (s, b, e) = (settings.sequenceLength, settings.microBatchSize, settings.activationElementBytes)
        // norm inputs 2h, q/k/v input h, q and k after RoPE h + kv, v kv, o_proj input h, MLP input h,
        // gate and up outputs 2i, down input i: 6h + 2kv + 3i values per token.
        let perToken = 2 * h + h + (h + kv) + kv + h + h + 2 * i + i
        return e * s * b * perToken + e * a * s * s * b
    }

    /// Bytes of one decoder layer's 2BP stash (p1 → p2) for `microBatchSize` sequences.
    public static func stashBytesPerLayer(_ config: LlamaConfig, settings: AnalyticCostSettings) -> Int {
        let (h, i) = (config.hiddenSize, config.intermediateSize)
        let kv = config.numKeyValueHeads * config.headDim
        let (s, b, e) = (settings.sequenceLength, settings.microBatchSize, settings.activationElementBytes)
        return e * s * b * (10 * h + 2 * kv + 3 * i)
    }

    /// The cost model of `virtualStages` stages of `Partition.balanced` over `config`'s units.
    /// `scale` multiplies the micro-batch (naive runs the whole batch as one).
    public static func costModel(_ config: LlamaConfig, settings: AnalyticCostSettings, virtualStages: Int,
                                 scale: Int = 1) throws -> CostModel {
        var settings = settings
        settings.microBatchSize *= scale
        guard settings.flopsRate > 0, settings.flopsRate.isFinite else {
            throw TwoBPError("the FLOP rate must be a positive number, got \(settings.flopsRate)")
        }
        let blocks = config.numHiddenLayers
        guard virtualStages <= blocks else {
            throw TwoBPError("\(virtualStages) stages need at least \(virtualStages) layers; the model has \(blocks)")
        }
        let ranges = try Partition.balanced(unitCosts: config.unitCosts(sequenceLength: settings.sequenceLength), stages: virtualStages)
        let flops = config.unitFLOPs(sequenceLength: settings.sequenceLength)
        let parameters = unitParameters(config)
        let tokens = Double(settings.sequenceLength * settings.microBatchSize)
        let (h, v, e) = (config.hiddenSize, config.vocabSize, settings.activationElementBytes)
        let sb = settings.sequenceLength * settings.microBatchSize
        let layerActivations = activationBytesPerLayer(config, settings: settings)
        let layerStash = stashBytesPerLayer(config, settings: settings)
        let stages = ranges.map { range -> StageCost in
            var forward = 0.0, input = 0.0, weight = 0.0
            var activations = 0, stash = 0, staticBytes = 0
            for unit in range {
                forward += flops[unit].forward * tokens / settings.flopsRate
                input += flops[unit].backwardInput * tokens / settings.flopsRate
                weight += flops[unit].backwardWeight * tokens / settings.flopsRate
                staticBytes += parameters[unit] * settings.staticBytesPerParameter
                switch unit {
                case 0:
                    stash += e * sb * h
                case blocks + 1:
                    activations += e * sb * 2 * h + 4 * sb * v
                    stash += e * sb * (3 * h + v)
                default:
                    activations += layerActivations
                    stash += layerStash
                }
            }
            return StageCost(forward: forward, backwardInput: input, backwardWeight: weight,
                             activationBytes: activations, stashBytes: stash, staticBytes: staticBytes)
        }
        return CostModel(stages: stages, latency: settings.latency, bandwidth: settings.bandwidth,
                         messageBytes: e * sb * h, concatenationEfficiency: settings.concatenationEfficiency)
    }
}
