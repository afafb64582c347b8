import Checkpoints
import Foundation
import Layers
import Tensor

/// AdamW (Loshchilov & Hutter) over a fixed list of parameters, with PyTorch's
/// decoupled weight decay and bias correction.
///
/// The first and second moments each live in one contiguous buffer laid out
/// like `parameters` (parameter i at `offsets[i]`), so the update is one flat
/// loop per parameter and the state saves as views, without copies. The buffers
/// are charged to the `MemoryMeter` current at construction.
///
/// For step t (1-based), gradient g (times the clipping scale), rate lr:
///
///     m = β1·m + (1−β1)·g
///     v = β2·v + (1−β2)·g²
///     p = p − lr·λ·p − lr · (m / (1−β1ᵗ)) / (√(v / (1−β2ᵗ)) + ε)
///
/// λ is `weightDecay` for the parameters whose layer says they decay (`Parameter.decays`:
/// linear weights, embeddings) and 0 for the rest (norm gains, biases). Gradients are read,
/// never zeroed: zeroing is the caller's separate call, once per step.
public final class AdamW: Optimizer {
    public static let name = "adamw"

    public struct Configuration: Codable, Equatable, Sendable {
        public var beta1: Float
        public var beta2: Float
        public var epsilon: Float
        public var weightDecay: Float
        /// Clip the global gradient norm to this; nil disables clipping.
        public var maxGradientNorm: Double?

        public init(beta1: Float = 0.9, beta2: Float = 0.95, epsilon: Float = 1e-8,
                    weightDecay: Float = 0.1, maxGradientNorm: Double? = 1.0) {
            self.beta1 = beta1
            self.beta2 = beta2
            self.epsilon = epsilon
            self.weightDecay = weightDecay
            self.maxGradientNorm = maxGradientNorm
        }
    }

    /// Prefixes of the moment tensors' names in the optimizer state file:
    /// `m.<parameter name>` and `v.<parameter name>`.
    public static let firstMomentPrefix = "m."
    public static let secondMomentPrefix = "v."

    public let parameters: [Parameter]
    public let configuration: Configuration
    /// Optimizer steps taken (t in the bias correction).
    public private(set) var step = 0
    /// First moments, flat: `[Σ parameter counts]`.
    public let firstMoments: Tensor
    /// Second moments, flat, same layout.
    public let secondMoments: Tensor
    /// Start of each parameter in the moment buffers.
    public let offsets: [Int]

    public init(parameters: [Parameter], configuration: Configuration = Configuration()) throws {
        let c = configuration
        guard c.beta1 >= 0, c.beta1 < 1, c.beta2 >= 0, c.beta2 < 1 else {
            throw TwoBPError("AdamW: betas must be in [0, 1), not (\(c.beta1), \(c.beta2))")
        }
        guard c.epsilon > 0, c.weightDecay >= 0 else {
            throw TwoBPError("AdamW: epsilon must be > 0 and weight decay >= 0")
        }
        let (offsets, total) = try OptimizerState.layout(of: parameters, maxGradientNorm: c.maxGradientNorm, optimizer: "AdamW")
        self.parameters = parameters
        self.configuration = configuration
        self.offsets = offsets
        firstMoments = Tensor(zeros: [total])
        secondMoments = Tensor(zeros: [total])
    }

    @discardableResult
    public func update(learningRate: Float, globalGradientNorm: Double?) throws -> Float {
        let scale = try GradientNorm.scale(globalNorm: globalGradientNorm, maxNorm: configuration.maxGradientNorm, step: step + 1)
        step += 1
        let beta1 = configuration.beta1, beta2 = configuration.beta2
        let oneMinusBeta1 = 1 - beta1, oneMinusBeta2 = 1 - beta2
        let correction1 = 1 - pow(Double(beta1), Double(step))
        let correction2 = 1 - pow(Double(beta2), Double(step))
        // p −= (lr / c1) · m / (√v / √c2 + ε)
        let stepSize = Float(Double(learningRate) / correction1)
        let inverseSqrtCorrection2 = Float(1 / correction2.squareRoot())
        let epsilon = configuration.epsilon
        for (index, parameter) in parameters.enumerated() {
            let keep = 1 - learningRate * (parameter.decays ? configuration.weightDecay : 0)
            let p = parameter.value.pointer, g = parameter.gradient.pointer
            let m = firstMoments.pointer + offsets[index], v = secondMoments.pointer + offsets[index]
            for i in 0..<parameter.value.count {
                let gi = g[i] * scale
                let mi = (oneMinusBeta1 * gi).addingProduct(beta1, m[i])
                let vi = (beta2 * v[i]).addingProduct(oneMinusBeta2 * gi, gi)
                m[i] = mi
                v[i] = vi
                let denominator = epsilon.addingProduct(vi.squareRoot(), inverseSqrtCorrection2)
                p[i] = (p[i] * keep).addingProduct(-stepSize, mi / denominator)
            }
        }
        return scale
    }

    // MARK: State

    /// The moments as named views into the flat buffers (no copies): `m.<name>` then `v.<name>`
    /// for every parameter in order, or only for `subset` (tied copies another rank saves left out).
    public func stateTensors(of subset: [Parameter]?) -> [NamedTensor] {
        let included = subset.map { Set($0.map(\.name)) }
        var result: [NamedTensor] = []
        for (moments, prefix) in [(firstMoments, AdamW.firstMomentPrefix), (secondMoments, AdamW.secondMomentPrefix)] {
            for (index, parameter) in parameters.enumerated() where included?.contains(parameter.name) ?? true {
                let view = moments.rows(offsets[index]..<(offsets[index] + parameter.value.count)).reshaped(parameter.value.shape)
                result.append((name: prefix + parameter.name, tensor: view))
            }
        }
        return result
    }

    /// Safetensors metadata recording the step count, saved with `stateTensors()`.
    public var stateMetadata: [String: String] {
        OptimizerState.metadata(optimizer: AdamW.name, step: step)
    }

    /// Restores moments and step count saved from `stateTensors()` and
    /// `stateMetadata`. Every parameter's moments must be present with its shape;
    /// the archive may hold other stages' moments too.
    public func loadState(from archive: SafeTensorsArchive) throws {
        let savedStep = try OptimizerState.savedStep(in: archive, optimizer: AdamW.name)
        // Check everything before copying anything, so a bad file leaves the state as it was.
        for parameter in parameters {
            for prefix in [AdamW.firstMomentPrefix, AdamW.secondMomentPrefix] {
                _ = try archive.loadableEntry(prefix + parameter.name, shape: parameter.value.shape)
            }
        }
        for (index, parameter) in parameters.enumerated() {
            let range = offsets[index]..<(offsets[index] + parameter.value.count)
            try archive.copy(AdamW.firstMomentPrefix + parameter.name, into: firstMoments.rows(range).reshaped(parameter.value.shape))
            try archive.copy(AdamW.secondMomentPrefix + parameter.name, into: secondMoments.rows(range).reshaped(parameter.value.shape))
        }
        step = savedStep
    }
}
