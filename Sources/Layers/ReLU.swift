import Tensor

/// y = max(x, 0) element-wise, PyTorch `nn.ReLU` (NaN stays NaN), on tensors of any shape.
///
/// Forward keeps its output: p1 is `dx = dy` where y > 0, else 0 (PyTorch's threshold backward, so
/// the gradient at x = 0 is 0). The output is usually kept anyway by the convolution it feeds, so
/// this costs no memory of its own. With `inPlace` (torchvision's `ReLU(inplace=True)`) forward
/// overwrites its input, for callers that own a fresh input nobody else keeps (a batch norm's
/// output). No parameters: p2 only retires the micro-batch, so schedule errors still surface.
public final class ReLU: Layer {
    public let inPlace: Bool
    /// y, kept from forward for p1.
    private var saved = MicroBatchStore<Tensor>("ReLU forward state")
    /// Micro-batches whose p1 ran and whose (empty) p2 has not.
    private var pending = MicroBatchStore<Void>("ReLU p2 stash")

    public init(inPlace: Bool = false) {
        self.inPlace = inPlace
    }

    public var parameters: [Parameter] { [] }

    public func forward(_ input: Tensor, microBatch: Int) throws -> Tensor {
        let output = apply(input)
        try saved.put(output, for: microBatch)
        return output
    }

    /// The forward computation alone, saving nothing (for inference).
    public func apply(_ input: Tensor) -> Tensor {
        let output = inPlace ? input : Tensor(uninitialized: input.shape)
        let (x, y) = (input.pointer, output.pointer)
        for i in 0..<input.count { y[i] = x[i] < 0 ? 0 : x[i] }
        return output
    }

    public func backwardInput(_ outputGradient: Tensor, microBatch: Int) throws -> Tensor {
        let output = try saved.take(microBatch)
        precondition(outputGradient.count == output.count, "ReLU p1: dy \(outputGradient.shape) for y \(output.shape)")
        let inputGradient = Tensor(uninitialized: output.shape)
        let (y, dy, dx) = (output.pointer, outputGradient.pointer, inputGradient.pointer)
        for i in 0..<output.count { dx[i] = y[i] > 0 ? dy[i] : 0 }
        try pending.put((), for: microBatch)
        return inputGradient
    }

    public func backwardWeight(_ work: WeightGradientWork) throws {
        _ = try pending.take(work)
    }
}
