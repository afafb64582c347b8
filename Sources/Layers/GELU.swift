import Foundation
import Tensor

/// The Gaussian error linear unit in its exact form (Hendrycks & Gimpel 2016; Hugging Face's
/// `"gelu"`, PyTorch's `approximate="none"`): `y = x · Φ(x) = 0.5 · x · (1 + erf(x / √2))`,
/// element-wise on any shape.
///
/// No parameters: p1 is `dx = dy ⊙ (Φ(x) + x · φ(x))` with φ(x) = exp(−x²/2) / √(2π), and p2 only
/// retires the micro-batch (so a schedule that runs p2 before p1 is refused like anywhere else).
public final class GELU: Layer {
    /// x, kept from forward for p1.
    private var saved = MicroBatchStore<Tensor>("GELU forward state")
    /// Nothing to compute in p2; the entry marks that p1 ran.
    private var pending = MicroBatchStore<Void>("GELU p2 stash")

    public init() {}

    public var parameters: [Parameter] { [] }

    public func forward(_ input: Tensor, microBatch: Int) throws -> Tensor {
        let output = apply(input)
        try saved.put(input, for: microBatch)
        return output
    }

    /// The forward computation alone, saving nothing (for inference).
    public func apply(_ input: Tensor) -> Tensor {
        let output = Tensor(uninitialized: input.shape)
        geluForward(output.pointer, input.pointer, count: input.count)
        return output
    }

    public func backwardInput(_ outputGradient: Tensor, microBatch: Int) throws -> Tensor {
        let input = try saved.take(microBatch)
        precondition(outputGradient.count == input.count, "GELU p1: dy \(outputGradient.shape) for x \(input.shape)")
        let inputGradient = Tensor(uninitialized: input.shape)
        geluBackward(inputGradient.pointer, outputGradient.pointer, input.pointer, count: input.count)
        try pending.put((), for: microBatch)
        return inputGradient
    }

    public func backwardWeight(_ work: WeightGradientWork) throws {
        _ = try pending.take(work)
    }
}

private let inverseSquareRootOfTwo: Float = 0.707_106_781_186_547_5
private let inverseSquareRootOfTwoPi: Float = 0.398_942_280_401_432_7

/// y = 0.5 · x · (1 + erf(x / √2)), with glibc's `erff`.
func geluForward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count: Int) {
    for i in 0..<count {
        let value = x[i]
        y[i] = 0.5 * value * (1 + Foundation.erf(value * inverseSquareRootOfTwo))
    }
}

/// dx = dy · (Φ(x) + x · φ(x)), Φ(x) = 0.5 · (1 + erf(x / √2)), φ(x) = exp(−x²/2) / √(2π).
func geluBackward(_ dx: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, count: Int) {
    for i in 0..<count {
        let value = x[i]
        let cdf = 0.5 * (1 + Foundation.erf(value * inverseSquareRootOfTwo))
        let pdf = inverseSquareRootOfTwoPi * Foundation.exp(-0.5 * value * value)
        dx[i] = dy[i] * cdf.addingProduct(value, pdf)
    }
}
