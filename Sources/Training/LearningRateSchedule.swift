import Foundation
import Tensor

/// Linear warmup, then cosine decay to `minRatio × maxLearningRate`: a pure
/// function of the step, so a resumed run gets the same rates without state.
///
/// `step` is the 0-based index of the optimizer step about to be taken:
/// - `step < warmupSteps`: `max × (step + 1) / warmupSteps` (the first step is not 0);
/// - `warmupSteps ≤ step < totalSteps`: `min + (max − min) × ½(1 + cos(π × progress))`,
///   progress = `(step − warmupSteps) / (totalSteps − warmupSteps)`, from 0 up to (not reaching) 1;
/// - `step ≥ totalSteps`: `min`.
public struct LearningRateSchedule: Codable, Equatable, Sendable {
    public let maxLearningRate: Double
    public let warmupSteps: Int
    public let totalSteps: Int
    /// The final rate as a fraction of the peak, in [0, 1].
    public let minRatio: Double

    public init(maxLearningRate: Double, warmupSteps: Int, totalSteps: Int, minRatio: Double = 0.1) throws {
        guard maxLearningRate.isFinite, maxLearningRate >= 0 else {
            throw TwoBPError("learning rate must be a non-negative number, not \(maxLearningRate)")
        }
        guard warmupSteps >= 0 else { throw TwoBPError("warmup steps must be >= 0, not \(warmupSteps)") }
        guard totalSteps >= 1 else { throw TwoBPError("total steps must be >= 1, not \(totalSteps)") }
        guard warmupSteps <= totalSteps else {
            throw TwoBPError("warmup steps (\(warmupSteps)) exceed total steps (\(totalSteps))")
        }
        guard minRatio >= 0, minRatio <= 1 else { throw TwoBPError("minimum learning-rate ratio must be in [0, 1], not \(minRatio)") }
        self.maxLearningRate = maxLearningRate
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
        self.minRatio = minRatio
    }

    private enum CodingKeys: String, CodingKey {
        case maxLearningRate = "max_learning_rate", warmupSteps = "warmup_steps"
        case totalSteps = "total_steps", minRatio = "min_ratio"
    }

    /// Decodes and validates like `init(maxLearningRate:warmupSteps:totalSteps:minRatio:)`.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try self.init(maxLearningRate: c.decode(Double.self, forKey: .maxLearningRate),
                      warmupSteps: c.decode(Int.self, forKey: .warmupSteps),
                      totalSteps: c.decode(Int.self, forKey: .totalSteps),
                      minRatio: c.decode(Double.self, forKey: .minRatio))
    }

    public var minLearningRate: Double { maxLearningRate * minRatio }

    /// The rate for optimizer step `step` (0-based).
    public func learningRate(at step: Int) -> Double {
        if step < warmupSteps { return maxLearningRate * Double(step + 1) / Double(warmupSteps) }
        if step >= totalSteps { return minLearningRate }
        let progress = Double(step - warmupSteps) / Double(totalSteps - warmupSteps)
        return minLearningRate + (maxLearningRate - minLearningRate) * 0.5 * (1 + cos(Double.pi * progress))
    }
}
