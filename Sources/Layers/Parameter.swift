import Tensor

/// A trainable tensor, its gradient (same shape) and its name relative to the owning layer.
///
/// Gradients accumulate (`+=`) in backward-p2; `zeroGradient()` is a separate call,
/// made once per optimizer step. The layer that creates a parameter also says how it starts
/// (`initialization`) and whether AdamW's decoupled weight decay applies to it (`decays`), so
/// the optimizer and the initialiser never guess from a tensor's rank.
public final class Parameter {
    /// How a parameter is filled before training (see `ParameterInitialization`).
    public enum Initialization: Sendable {
        /// N(0, std²); nil std means the model's own scale (Hugging Face's `initializer_range`).
        case normal(std: Float?)
        /// Every element `value` (norm gains 1, biases 0).
        case constant(Float)
        /// A family's own rule (Mamba's `A_log`, the Δ bias), given the tensor and this
        /// parameter's generator, seeded from (run seed, full name).
        case custom(@Sendable (Tensor, inout SeededGenerator) -> Void)
    }

    public let name: String
    public let value: Tensor
    public let gradient: Tensor
    public let initialization: Initialization
    /// Whether AdamW applies weight decay (dense weights and embeddings yes; biases, norm gains no).
    public let decays: Bool

    /// `decays` defaults to matrices (rank ≥ 2) only, as GPT-style training does.
    public init(name: String, shape: [Int], initialization: Initialization = .normal(std: nil), decays: Bool? = nil) {
        self.name = name
        value = Tensor(zeros: shape)
        gradient = Tensor(zeros: shape)
        self.initialization = initialization
        self.decays = decays ?? (shape.count >= 2)
    }

    public func zeroGradient() {
        gradient.zero()
    }

    /// The same tensors under `prefix.name`, for composing layers into models.
    public func prefixed(_ prefix: String) -> Parameter {
        Parameter(name: prefix + "." + name, sharing: self)
    }

    private init(name: String, sharing other: Parameter) {
        self.name = name
        value = other.value
        gradient = other.gradient
        initialization = other.initialization
        decays = other.decays
    }
}
