import Foundation
import Models
import Pipeline
import Schedules
import Tensor

/// Cost models for configurations too big to run here (llama-7b, bert-large, …): time from each
/// unit's FLOPs (`ModelConfig.unitCosts`) and a FLOP rate, memory from the units' parameter counts
/// and activation and stash elements per sample.
///
/// Memory assumptions (every one a field of `AnalyticCostSettings`):
/// - static: `staticBytesPerParameter` (default 16) per parameter, which is
///   both fp32 weights + fp32 gradients + AdamW's two fp32 moments (4 × 4 B)
///   and ZeRO's mixed precision (bf16 weights 2 + bf16 gradients 2 + fp32
///   master weights, m and v 12).
/// - activations and the 2BP stash: the family's per-sample element counts (see its
///   `unitCosts`) × micro-batch samples × `activationElementBytes` (default 2, bf16).
public struct AnalyticCostSettings: Codable, Sendable {
    /// FLOP/s one rank sustains on the model's GEMMs.
    public var flopsRate: Double
    /// Bytes/s between two ranks; nil: free.
    public var bandwidth: Double?
    public var latency: Double
    public var microBatchSize: Int
    /// Tokens per sequence, or an image's side.
    public var sampleLength: Int
    public var activationElementBytes: Int
    public var staticBytesPerParameter: Int
    /// Fraction of a single p2 each extra micro-batch of a concatenated p2 costs (1: no gain).
    public var concatenationEfficiency: Double

    public init(flopsRate: Double, bandwidth: Double? = nil, latency: Double = 0, microBatchSize: Int = 1,
                sampleLength: Int, activationElementBytes: Int = 2, staticBytesPerParameter: Int = 16,
                concatenationEfficiency: Double = 1) {
        self.flopsRate = flopsRate
        self.bandwidth = bandwidth
        self.latency = latency
        self.microBatchSize = microBatchSize
        self.sampleLength = sampleLength
        self.activationElementBytes = activationElementBytes
        self.staticBytesPerParameter = staticBytesPerParameter
        self.concatenationEfficiency = concatenationEfficiency
    }
}

public enum AnalyticCosts {
    /// The cost model of `virtualStages` stages of `Partition.balanced` over `model`'s units.
    /// `scale` multiplies the micro-batch (naive runs the whole batch as one).
    public static func costModel(_ model: any ModelConfig, settings: AnalyticCostSettings, virtualStages: Int,
                                 scale: Int = 1) throws -> CostModel {
        var settings = settings
        settings.microBatchSize *= scale
        guard settings.flopsRate > 0, settings.flopsRate.isFinite else {
            throw TwoBPError("the FLOP rate must be a positive number, got \(settings.flopsRate)")
        }
        let units = model.unitCosts(sampleLength: settings.sampleLength)
        let ranges = try Partition.balanced(unitCosts: units.map(\.forward), stages: virtualStages)
        let samples = Double(settings.microBatchSize)
        let elementBytes = Double(settings.activationElementBytes)
        let stages = ranges.map { range -> StageCost in
            var forward = 0.0, input = 0.0, weight = 0.0, activations = 0.0, stash = 0.0
            var staticBytes = 0
            for unit in range {
                forward += units[unit].forward * samples / settings.flopsRate
                input += units[unit].backwardInput * samples / settings.flopsRate
                weight += units[unit].backwardWeight * samples / settings.flopsRate
                staticBytes += units[unit].parameters * settings.staticBytesPerParameter
                activations += units[unit].activationElements * samples * elementBytes
                stash += units[unit].stashElements * samples * elementBytes
            }
            return StageCost(forward: forward, backwardInput: input, backwardWeight: weight,
                             activationBytes: Int(activations.rounded()), stashBytes: Int(stash.rounded()), staticBytes: staticBytes)
        }
        let boundary = ranges.dropLast().map { range in
            model.activationShape(enteringUnit: range.upperBound, samples: settings.microBatchSize,
                                  sampleLength: settings.sampleLength).reduce(1, *)
        }.max() ?? 0
        return CostModel(stages: stages, latency: settings.latency, bandwidth: settings.bandwidth,
                         messageBytes: boundary * settings.activationElementBytes,
                         concatenationEfficiency: settings.concatenationEfficiency)
    }
}
