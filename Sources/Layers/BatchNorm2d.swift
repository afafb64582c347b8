import Tensor

/// Batch normalisation over the channels of channels-last images, PyTorch `nn.BatchNorm2d` with
/// affine and tracked running statistics: x, y [batch, height, width, channels], N = batch · height ·
/// width values per channel.
///
/// Training (`forward`) normalises each micro-batch with its own statistics,
/// `y = (x − μ) · rstd · weight + bias` with μ, σ² the channel's mean and biased variance and
/// rstd = 1 / √(σ² + eps), and updates the running estimates as PyTorch does:
/// `running_mean ← (1 − momentum) · running_mean + momentum · μ`, the same for `running_var` with the
/// unbiased variance σ² · N / (N − 1), and `num_batches_tracked += 1`. Inference (`apply`) normalises
/// with the running estimates and changes nothing. Statistics accumulate in Double.
///
/// p1 is the full backward through the batch statistics: with x̂ = (x − μ) · rstd,
/// `dx = weight · rstd · (dy − mean(dy) − x̂ · mean(dy ⊙ x̂))`. The two per-channel sums Σ dy and
/// Σ dy ⊙ x̂ it needs are exactly p2's `dbias` and `dweight`, so p1 stashes those [channels] vectors
/// and p2 adds them, oldest micro-batch first, instead of keeping x and dy alive until p2.
public final class BatchNorm2d: Layer {
    public let channels: Int
    public let eps: Float
    public let momentum: Float
    /// The gain γ, [channels], starting at 1 (torchvision's ResNet), not decayed.
    public let weight: Parameter
    /// The shift β, [channels], starting at 0, not decayed.
    public let bias: Parameter
    /// [channels] F32, starting at 0.
    public let runningMean: Buffer
    /// [channels] F32, starting at 1.
    public let runningVar: Buffer
    /// [] I64, training forwards so far.
    public let numBatchesTracked: Buffer
    /// x [batch, height, width, channels], μ [channels] and rstd [channels], kept from forward for p1.
    private var saved = MicroBatchStore<(input: Tensor, mean: Tensor, rstd: Tensor)>("BatchNorm2d forward state")
    /// Σ dy ⊙ x̂ and Σ dy, [channels] each, kept from p1 for p2.
    private var pending = MicroBatchStore<(weightGradient: Tensor, biasGradient: Tensor)>("BatchNorm2d p2 stash")

    public init(channels: Int, eps: Float = 1e-5, momentum: Float = 0.1) {
        precondition(channels > 0, "BatchNorm2d: \(channels) channels")
        self.channels = channels
        self.eps = eps
        self.momentum = momentum
        weight = Parameter(name: "weight", shape: [channels], initialization: .constant(1), decays: false)
        weight.value.buffer.update(repeating: 1)
        bias = Parameter(name: "bias", shape: [channels], initialization: .constant(0), decays: false)
        runningMean = Buffer(name: "running_mean", shape: [channels], dtype: .float32)
        runningVar = Buffer(name: "running_var", shape: [channels], dtype: .float32)
        runningVar.floats.update(repeating: 1)
        numBatchesTracked = Buffer(name: "num_batches_tracked", shape: [], dtype: .int64)
    }

    public var parameters: [Parameter] { [weight, bias] }
    public var buffers: [Buffer] { [runningMean, runningVar, numBatchesTracked] }

    /// Training mode: normalises with this micro-batch's statistics, updates the running ones.
    public func forward(_ input: Tensor, microBatch: Int) throws -> Tensor {
        let count = try valuesPerChannel(of: input)
        guard count > 1 else {
            throw TwoBPError("BatchNorm2d: training needs more than 1 value per channel, got input \(input.shape)")
        }
        let mean = Tensor(uninitialized: [channels])
        let rstd = Tensor(uninitialized: [channels])
        batchNormStatistics(mean: mean.pointer, rstd: rstd.pointer, runningMean: runningMean.floats.baseAddress!,
                            runningVar: runningVar.floats.baseAddress!, input.pointer, rows: count, channels: channels,
                            eps: eps, momentum: momentum)
        numBatchesTracked.integers[0] += 1
        let output = Tensor(uninitialized: input.shape)
        batchNormNormalize(output.pointer, input.pointer, mean: mean.pointer, rstd: rstd.pointer, weight: weight.value.pointer,
                           bias: bias.value.pointer, rows: count, channels: channels)
        try saved.put((input, mean, rstd), for: microBatch)
        return output
    }

    /// Inference mode: normalises with the running statistics, saving and updating nothing.
    public func apply(_ input: Tensor) throws -> Tensor {
        let count = try valuesPerChannel(of: input)
        let rstd = Tensor(uninitialized: [channels])
        let runningVar = self.runningVar.floats
        for c in 0..<channels { rstd[c] = Float(1 / (Double(runningVar[c]) + Double(eps)).squareRoot()) }
        let output = Tensor(uninitialized: input.shape)
        batchNormNormalize(output.pointer, input.pointer, mean: runningMean.floats.baseAddress!, rstd: rstd.pointer,
                           weight: weight.value.pointer, bias: bias.value.pointer, rows: count, channels: channels)
        return output
    }

    public func backwardInput(_ outputGradient: Tensor, microBatch: Int) throws -> Tensor {
        let (input, mean, rstd) = try saved.take(microBatch)
        precondition(outputGradient.shape == input.shape, "BatchNorm2d p1: dy \(outputGradient.shape) for x \(input.shape)")
        let weightGradient = Tensor(uninitialized: [channels])
        let biasGradient = Tensor(uninitialized: [channels])
        let inputGradient = Tensor(uninitialized: input.shape)
        batchNormBackward(inputGradient.pointer, weightGradient: weightGradient.pointer, biasGradient: biasGradient.pointer,
                          outputGradient.pointer, input.pointer, mean: mean.pointer, rstd: rstd.pointer,
                          weight: weight.value.pointer, rows: input.rowCount, channels: channels)
        try pending.put((weightGradient, biasGradient), for: microBatch)
        return inputGradient
    }

    public func backwardWeight(_ work: WeightGradientWork) throws {
        for stash in try pending.take(work) {
            weight.gradient.add(stash.weightGradient)
            bias.gradient.add(stash.biasGradient)
        }
    }

    private func valuesPerChannel(of input: Tensor) throws -> Int {
        let (batch, height, width) = try checkedImageShape(of: input, channels: channels, layer: "BatchNorm2d")
        return batch * height * width
    }
}

/// Per channel of x [rows, channels]: μ and rstd = 1 / √(σ²_biased + eps) (two passes in Double), and
/// the running estimates moved by `momentum` towards μ and the unbiased variance.
func batchNormStatistics(
    mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
    runningMean: UnsafeMutablePointer<Float>, runningVar: UnsafeMutablePointer<Float>,
    _ x: UnsafePointer<Float>, rows: Int, channels: Int, eps: Float, momentum: Float
) {
    let sums = UnsafeMutablePointer<Double>.allocate(capacity: channels)
    defer { sums.deallocate() }
    sums.initialize(repeating: 0, count: channels)
    for r in 0..<rows {
        let row = x + r * channels
        for c in 0..<channels { sums[c] += Double(row[c]) }
    }
    for c in 0..<channels { mean[c] = Float(sums[c] / Double(rows)) }
    sums.update(repeating: 0, count: channels)
    for r in 0..<rows {
        let row = x + r * channels
        for c in 0..<channels {
            let centred = Double(row[c] - mean[c])
            sums[c] += centred * centred
        }
    }
    let (n, m) = (Double(rows), Double(momentum))
    for c in 0..<channels {
        let biased = sums[c] / n
        rstd[c] = Float(1 / (biased + Double(eps)).squareRoot())
        runningMean[c] = Float((1 - m) * Double(runningMean[c]) + m * Double(mean[c]))
        runningVar[c] = Float((1 - m) * Double(runningVar[c]) + m * biased * n / (n - 1))
    }
}

/// y[r, c] = (x[r, c] − mean[c]) · (rstd[c] · weight[c]) + bias[c].
func batchNormNormalize(
    _ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
    weight: UnsafePointer<Float>, bias: UnsafePointer<Float>, rows: Int, channels: Int
) {
    let scale = UnsafeMutablePointer<Float>.allocate(capacity: channels)
    defer { scale.deallocate() }
    for c in 0..<channels { scale[c] = rstd[c] * weight[c] }
    for r in 0..<rows {
        let (xRow, yRow) = (x + r * channels, y + r * channels)
        for c in 0..<channels { yRow[c] = (xRow[c] - mean[c]) * scale[c] + bias[c] }
    }
}

/// p1 of training-mode batch norm on x, dy [rows, channels]: the per-channel sums Σ dy (into
/// `biasGradient`) and Σ dy ⊙ x̂ (into `weightGradient`), accumulated in Double, then
/// dx = a · dy − a · mean(dy) − x̂ · a · mean(dy ⊙ x̂) with a = weight · rstd (overwrites dx).
/// The element loops multiply and add unfused: on the default x86-64 target `addingProduct` is a
/// call to libm's `fmaf`, which made the dx loop 12× slower.
func batchNormBackward(
    _ dx: UnsafeMutablePointer<Float>, weightGradient: UnsafeMutablePointer<Float>, biasGradient: UnsafeMutablePointer<Float>,
    _ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
    weight: UnsafePointer<Float>, rows: Int, channels: Int
) {
    let sums = UnsafeMutablePointer<Double>.allocate(capacity: 2 * channels)
    let coefficients = UnsafeMutablePointer<Float>.allocate(capacity: 3 * channels)
    defer {
        sums.deallocate()
        coefficients.deallocate()
    }
    let (sumDy, sumDyXhat) = (sums, sums + channels)
    sums.initialize(repeating: 0, count: 2 * channels)
    for r in 0..<rows {
        let (xRow, dyRow) = (x + r * channels, dy + r * channels)
        for c in 0..<channels {
            let g = Double(dyRow[c])
            sumDy[c] += g
            sumDyXhat[c] += g * Double((xRow[c] - mean[c]) * rstd[c])
        }
    }
    // dx = scale · dy + shift + x̂ · slope, per channel.
    let (scale, shift, slope) = (coefficients, coefficients + channels, coefficients + 2 * channels)
    let n = Double(rows)
    for c in 0..<channels {
        let a = Double(weight[c]) * Double(rstd[c])
        scale[c] = Float(a)
        shift[c] = Float(-a * sumDy[c] / n)
        slope[c] = Float(-a * sumDyXhat[c] / n)
        biasGradient[c] = Float(sumDy[c])
        weightGradient[c] = Float(sumDyXhat[c])
    }
    for r in 0..<rows {
        let (xRow, dyRow, dxRow) = (x + r * channels, dy + r * channels, dx + r * channels)
        for c in 0..<channels {
            let normalized = (xRow[c] - mean[c]) * rstd[c]
            dxRow[c] = scale[c] * dyRow[c] + normalized * slope[c] + shift[c]
        }
    }
}
