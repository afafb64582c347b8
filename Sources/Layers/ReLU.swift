import Tensor

/// y = max(x, 0) element-wise, PyTorch `nn.ReLU` (NaN stays NaN), on tensors of any shape.
///
/// Forward keeps its output: p1 is `dx = 0` where y ≤ 0, else dy (PyTorch's threshold backward, so
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
        reluForward(output.pointer, input.pointer, count: input.count)
        return output
    }

    public func backwardInput(_ outputGradient: Tensor, microBatch: Int) throws -> Tensor {
        let output = try saved.take(microBatch)
        precondition(outputGradient.count == output.count, "ReLU p1: dy \(outputGradient.shape) for y \(output.shape)")
        let inputGradient = Tensor(uninitialized: output.shape)
        reluBackward(inputGradient.pointer, outputGradient.pointer, output.pointer, count: output.count)
        try pending.put((), for: microBatch)
        return inputGradient
    }

    public func backwardWeight(_ work: WeightGradientWork) throws {
        _ = try pending.take(work)
    }
}

/// y = x where x ≥ 0 (or NaN), else 0; y may alias x. 16 lanes at a time by compare-and-select: the
/// branch a scalar loop compiles to mispredicts on every other random sign (measured 20× slower).
func reluForward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count: Int) {
    var i = 0
    while i < count {
        let lanes = Swift.min(16, count - i)
        let value = FastMath.load(x + i, count: lanes)
        FastMath.store(value.replacing(with: 0, where: value .< 0), y + i, count: lanes)
        i += 16
    }
}

/// dx = 0 where y ≤ 0, else dy, 16 lanes at a time by compare-and-select.
func reluBackward(_ dx: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, _ y: UnsafePointer<Float>, count: Int) {
    var i = 0
    while i < count {
        let lanes = Swift.min(16, count - i)
        let gradient = FastMath.load(dy + i, count: lanes)
        FastMath.store(gradient.replacing(with: 0, where: FastMath.load(y + i, count: lanes) .<= 0), dx + i, count: lanes)
        i += 16
    }
}
