import Checkpoints
import Foundation
import Layers
import Tensor

/// Stochastic gradient descent with momentum and weight decay, as PyTorch's `torch.optim.SGD`
/// (dampening 0, not Nesterov), the optimizer the 2BP paper and torchvision train ResNets with.
///
/// For gradient g (times the clipping scale), rate lr, momentum μ, weight decay λ:
///
///     g = g + λ·p                 (L2 decay, coupled: it enters the momentum)
///     b = μ·b + g                 (b = g at the first step: PyTorch's buffer starts as a copy of g,
///                                  which is μ·0 + g since dampening is 0)
///     p = p − lr·b
///
/// λ applies to the parameters whose layer says they decay (`Parameter.decays`: convolution and
/// linear weights) and not to batch-norm gains and biases, the model's no-weight-decay rule that
/// AdamW follows too (torchvision's recipe exposes the same split as `--norm-weight-decay 0`).
/// The momentum buffers live in one flat buffer laid out like `parameters`, charged to the
/// `MemoryMeter` current at construction, and save as `b.<parameter name>`.
public final class SGD: Optimizer {
    public static let name = "sgd"

    public struct Configuration: Codable, Equatable, Sendable {
        public var momentum: Float
        public var weightDecay: Float
        /// Clip the global gradient norm to this; nil (the default, as torchvision's recipe) disables clipping.
        public var maxGradientNorm: Double?

        public init(momentum: Float = 0.9, weightDecay: Float = 1e-4, maxGradientNorm: Double? = nil) {
            self.momentum = momentum
            self.weightDecay = weightDecay
            self.maxGradientNorm = maxGradientNorm
        }
    }

    /// Prefix of the momentum buffers' names in the optimizer state file.
    public static let momentumPrefix = "b."

    public let parameters: [Parameter]
    public let configuration: Configuration
    public private(set) var step = 0
    /// Momentum buffers, flat: `[Σ parameter counts]`.
    public let momentumBuffers: Tensor
    /// Start of each parameter in `momentumBuffers`.
    public let offsets: [Int]

    public init(parameters: [Parameter], configuration: Configuration = Configuration()) throws {
        let c = configuration
        guard c.momentum >= 0, c.momentum < 1 else { throw TwoBPError("SGD: momentum must be in [0, 1), not \(c.momentum)") }
        guard c.weightDecay >= 0, c.weightDecay.isFinite else { throw TwoBPError("SGD: weight decay must be >= 0, not \(c.weightDecay)") }
        let (offsets, total) = try OptimizerState.layout(of: parameters, maxGradientNorm: c.maxGradientNorm, optimizer: "SGD")
        self.parameters = parameters
        self.configuration = configuration
        self.offsets = offsets
        momentumBuffers = Tensor(zeros: [total])
    }

    @discardableResult
    public func update(learningRate: Float, globalGradientNorm: Double?) throws -> Float {
        let scale = try GradientNorm.scale(globalNorm: globalGradientNorm, maxNorm: configuration.maxGradientNorm, step: step + 1)
        step += 1
        let momentum = configuration.momentum
        for (index, parameter) in parameters.enumerated() {
            let decay = parameter.decays ? configuration.weightDecay : 0
            let p = parameter.value.pointer, g = parameter.gradient.pointer, b = momentumBuffers.pointer + offsets[index]
            for i in 0..<parameter.value.count {
                let gi = (g[i] * scale).addingProduct(decay, p[i])
                let bi = gi.addingProduct(momentum, b[i])
                b[i] = bi
                p[i] = p[i].addingProduct(-learningRate, bi)
            }
        }
        return scale
    }

    /// The momentum buffers as named views (no copies), `b.<name>` for every parameter in order, or
    /// only for `subset` (tied copies another rank saves left out).
    public func stateTensors(of subset: [Parameter]?) -> [NamedTensor] {
        let included = subset.map { Set($0.map(\.name)) }
        return parameters.enumerated().compactMap { index, parameter in
            guard included?.contains(parameter.name) ?? true else { return nil }
            let view = momentumBuffers.rows(offsets[index]..<(offsets[index] + parameter.value.count)).reshaped(parameter.value.shape)
            return (name: SGD.momentumPrefix + parameter.name, tensor: view)
        }
    }

    public var stateMetadata: [String: String] { OptimizerState.metadata(optimizer: SGD.name, step: step) }

    /// Restores the momentum buffers and step count; every parameter's buffer must be present with
    /// its shape (the archive may hold other stages' too). A bad file leaves the state as it was.
    public func loadState(from archive: SafeTensorsArchive) throws {
        let savedStep = try OptimizerState.savedStep(in: archive, optimizer: SGD.name)
        for parameter in parameters {
            _ = try archive.loadableEntry(SGD.momentumPrefix + parameter.name, shape: parameter.value.shape)
        }
        for (index, parameter) in parameters.enumerated() {
            let range = offsets[index]..<(offsets[index] + parameter.value.count)
            try archive.copy(SGD.momentumPrefix + parameter.name, into: momentumBuffers.rows(range).reshaped(parameter.value.shape))
        }
        step = savedStep
    }
}
