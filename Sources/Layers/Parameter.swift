import Tensor

/// A trainable tensor, its gradient (same shape) and its name relative to the owning layer.
///
/// Gradients accumulate (`+=`) in backward-p2; `zeroGradient()` is a separate call,
/// made once per optimizer step.
public final class Parameter {
    public let name: String
    public let value: Tensor
    public let gradient: Tensor

    public init(name: String, shape: [Int]) {
        self.name = name
        value = Tensor(zeros: shape)
        gradient = Tensor(zeros: shape)
    }

    public func zeroGradient() {
        gradient.zero()
    }

    /// The same tensors under `prefix.name`, for composing layers into models.
    public func prefixed(_ prefix: String) -> Parameter {
        Parameter(name: prefix + "." + name, value: value, gradient: gradient)
    }

    private init(name: String, value: Tensor, gradient: Tensor) {
        self.name = name
        self.value = value
        self.gradient = gradient
    }
}
