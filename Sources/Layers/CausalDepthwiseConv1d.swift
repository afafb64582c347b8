import Tensor

/// Depthwise causal convolution over time, Hugging Face `MambaMixer.conv1d`: PyTorch
/// `nn.Conv1d(channels, channels, kernelSize, groups: channels, padding: kernelSize − 1)` with its output cut to
/// the input's length, here on channels-last sequences [batch, length, channels] (K = kernelSize):
///
///     y[b, t, c] = bias[c] + Σ_k weight[c, 0, k] · x[b, t + k − (K − 1), c]        (x = 0 before t = 0)
///
/// p1 is the transposed convolution, dx[b, s, c] = Σ_k weight[c, 0, k] · dy[b, s + K − 1 − k, c] (dy = 0 past
/// the end). In the same pass over dy it reduces dweight[c, k] = Σ_{b,t} dy[b, t, c] · x[b, t + k − (K − 1), c]
/// and dbias[c] = Σ dy[b, t, c] into a [K + 1, channels] partial per micro-batch, which p2 adds to the gradients:
/// deferring the reduction itself would keep x and dy alive from p1 to p2 (in the mixer 2 · intermediate floats
/// per token, on top of the ~5 · intermediate its projections stash) for a reduction that costs p1 little
/// (measured at 768 channels, kernel 4, 4 × 256 tokens: p1 1.4 ms with the partial, 0.7 ms without; the
/// mixer's whole p1 is ~120 ms). Both loops run 16 channels at a time.
public final class CausalDepthwiseConv1d: Layer {
    public let channels: Int
    public let kernelSize: Int
    /// [channels, 1, kernelSize], PyTorch's layout for a depthwise Conv1d; Kaiming-uniform as PyTorch and
    /// Hugging Face start it (bound 1 / √kernelSize, the fan-in of one group).
    public let weight: Parameter
    /// [channels], zero at the start; absent without `use_conv_bias`.
    public let bias: Parameter?
    public let parameters: [Parameter]
    /// x (the block forward read, which keeps its tensor alive) and the sequence shape, kept from forward for p1.
    private var saved = MicroBatchStore<(input: ColumnBlock, batch: Int, length: Int)>("CausalDepthwiseConv1d forward state")
    /// p1's [kernelSize + 1, channels] partial: dweight transposed, then dbias.
    private var pending = MicroBatchStore<Tensor>("CausalDepthwiseConv1d p2 stash")

    public init(channels: Int, kernelSize: Int, bias: Bool = true) {
        precondition(channels > 0 && kernelSize > 0, "conv1d: \(channels) channels, kernel \(kernelSize)")
        self.channels = channels
        self.kernelSize = kernelSize
        let bound = 1 / Float(kernelSize).squareRoot()
        weight = Parameter(name: "weight", shape: [channels, 1, kernelSize],
                           initialization: .custom { tensor, generator in tensor.fillUniform(bound: bound, using: &generator) })
        self.bias = bias ? Parameter(name: "bias", shape: [channels], initialization: .constant(0)) : nil
        parameters = [weight] + (self.bias.map { [$0] } ?? [])
    }

    public func forward(_ input: Tensor, microBatch: Int) throws -> Tensor {
        let (batch, length) = try checkedSequenceShape(of: input, size: channels, layer: "CausalDepthwiseConv1d")
        return try forward(ColumnBlock(input), batch: batch, length: length, microBatch: microBatch).reshaped(input.shape)
    }

    /// The forward computation alone, saving nothing (for inference).
    public func apply(_ input: Tensor) throws -> Tensor {
        let (batch, length) = try checkedSequenceShape(of: input, size: channels, layer: "CausalDepthwiseConv1d")
        return convolve(ColumnBlock(input), batch: batch, length: length).reshaped(input.shape)
    }

    /// y [batch · length, channels] of a block of columns (the x half of the mixer's `in_proj` output), saved for p1.
    func forward(_ input: ColumnBlock, batch: Int, length: Int, microBatch: Int) throws -> Tensor {
        try saved.put((input, batch, length), for: microBatch)
        return convolve(input, batch: batch, length: length)
    }

    func convolve(_ input: ColumnBlock, batch: Int, length: Int) -> Tensor {
        precondition(input.width == channels && input.rowCount == batch * length, "conv1d: \(input.rowCount)x\(input.width) block")
        let output = Tensor(uninitialized: [batch * length, channels])
        let weights = transposedWeight()
        let (w, x, out) = (weights.pointer, Rows(input), output.pointer)
        let biasValues = bias?.value.pointer
        let lanes = FastMath.Vector.scalarCount
        for sequence in 0..<batch {
            for step in 0..<length {
                let row = sequence * length + step
                for first in stride(from: 0, to: channels, by: lanes) {
                    let count = Swift.min(lanes, channels - first)
                    var sum = biasValues.map { FastMath.load($0 + first, count: count) } ?? FastMath.Vector(repeating: 0)
                    for k in Swift.max(0, kernelSize - 1 - step)..<kernelSize {
                        let source = row + k - (kernelSize - 1)
                        sum += FastMath.load(w + k * channels + first, count: count) * FastMath.load(x[source] + first, count: count)
                    }
                    FastMath.store(sum, out + row * channels + first, count: count)
                }
            }
        }
        return output
    }

    public func backwardInput(_ outputGradient: Tensor, microBatch: Int) throws -> Tensor {
        let rows = try checkedRowCount(of: outputGradient, size: channels, layer: "CausalDepthwiseConv1d p1")
        let inputGradient = Tensor(uninitialized: outputGradient.shape)  // every element written
        try backwardInput(outputGradient, microBatch: microBatch, into: ColumnBlock(inputGradient.reshaped([rows, channels])))
        return inputGradient
    }

    /// p1 writing dx into a block of columns (the x half of the mixer's `in_proj` gradient); stashes the
    /// weight and bias partial for p2.
    func backwardInput(_ outputGradient: Tensor, microBatch: Int, into inputGradient: ColumnBlock) throws {
        let (input, batch, length) = try saved.take(microBatch)
        guard outputGradient.count == batch * length * channels else {
            throw TwoBPError("CausalDepthwiseConv1d p1: dy \(outputGradient.shape) for \(batch)x\(length) rows of \(channels)")
        }
        let partial = Tensor(zeros: [kernelSize + 1, channels])
        let weights = transposedWeight()
        let (w, x, dy, dx, sums) = (weights.pointer, Rows(input), outputGradient.pointer, Rows(inputGradient), partial.pointer)
        let lanes = FastMath.Vector.scalarCount
        for sequence in 0..<batch {
            for step in 0..<length {
                let row = sequence * length + step
                for first in stride(from: 0, to: channels, by: lanes) {
                    let count = Swift.min(lanes, channels - first)
                    let gradient = FastMath.load(dy + row * channels + first, count: count)
                    var sum = FastMath.Vector(repeating: 0)
                    for k in Swift.max(0, step + kernelSize - length)..<kernelSize {
                        let later = row + kernelSize - 1 - k
                        sum += FastMath.load(w + k * channels + first, count: count) * FastMath.load(dy + later * channels + first, count: count)
                    }
                    FastMath.store(sum, dx[row] + first, count: count)
                    for k in Swift.max(0, kernelSize - 1 - step)..<kernelSize {
                        let source = row + k - (kernelSize - 1)
                        let target = sums + k * channels + first
                        FastMath.store(FastMath.load(target, count: count) + gradient * FastMath.load(x[source] + first, count: count),
                                       target, count: count)
                    }
                    if bias != nil {
                        let target = sums + kernelSize * channels + first
                        FastMath.store(FastMath.load(target, count: count) + gradient, target, count: count)
                    }
                }
            }
        }
        try pending.put(partial, for: microBatch)
    }

    /// Adds the stashed partials, oldest first.
    public func backwardWeight(_ work: WeightGradientWork) throws {
        for partial in try pending.take(work) {
            let (sums, dw) = (partial.pointer, weight.gradient.pointer)
            for channel in 0..<channels {
                for k in 0..<kernelSize { dw[channel * kernelSize + k] += sums[k * channels + channel] }
            }
            if let bias {
                for channel in 0..<channels { bias.gradient.pointer[channel] += sums[kernelSize * channels + channel] }
            }
        }
    }

    /// The weight as [kernelSize, channels], so 16 channels' tap k is one vector load.
    private func transposedWeight() -> Tensor {
        let result = Tensor(uninitialized: [kernelSize, channels])
        for channel in 0..<channels {
            for k in 0..<kernelSize { result.pointer[k * channels + channel] = weight.value.pointer[channel * kernelSize + k] }
        }
        return result
    }
}
