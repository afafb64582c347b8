import Tensor

/// Layer normalisation with PyTorch `nn.LayerNorm` semantics over the last dimension (BERT's
/// `LayerNorm`): `y = (x − mean) · rstd · weight + bias`, `rstd = 1 / sqrt(var + eps)` with the
/// biased variance; mean and variance accumulate in Double (two passes), so long rows and BERT's
/// eps of 1e-12 lose nothing.
///
/// With x̂ = (x − mean) · rstd, g = dy ⊙ weight and n = size, p1 is
/// `dx = rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂))` and p2 is `dweight += Σ_rows dy ⊙ x̂`,
/// `dbias += Σ_rows dy`. p2 has no GEMM to batch, so `.allPending` walks the stashed micro-batches
/// oldest first, exactly as the same `.microBatch` calls would.
public final class LayerNorm: Layer {
    public let size: Int
    public let eps: Float
    /// The gain, [size], initialised to ones.
    public let weight: Parameter
    /// The shift, [size], initialised to zeros.
    public let bias: Parameter
    /// x [rows, size] and its (mean, rstd) [rows, 2], kept from forward for p1.
    private var saved = MicroBatchStore<(input: Tensor, statistics: Tensor)>("LayerNorm forward state")
    /// x, (mean, rstd) and dy [rows, size], kept from p1 for p2.
    private var pending = MicroBatchStore<(input: Tensor, statistics: Tensor, outputGradient: Tensor)>("LayerNorm p2 stash")

    public init(size: Int, eps: Float = 1e-12) {
        self.size = size
        self.eps = eps
        weight = Parameter(name: "weight", shape: [size], initialization: .constant(1), decays: false)
        weight.value.buffer.update(repeating: 1)
        bias = Parameter(name: "bias", shape: [size], initialization: .constant(0), decays: false)
    }

    public var parameters: [Parameter] { [weight, bias] }

    public func forward(_ input: Tensor, microBatch: Int) throws -> Tensor {
        let rows = try checkedRowCount(of: input, size: size, layer: "LayerNorm")
        let output = Tensor(uninitialized: input.shape)
        let statistics = Tensor(uninitialized: [rows, 2])
        layerNormForward(output.pointer, statistics.pointer, input.pointer, weight.value.pointer, bias.value.pointer,
                         rows: rows, size: size, eps: eps)
        try saved.put((input, statistics), for: microBatch)
        return output
    }

    /// The forward computation alone, saving nothing (for inference).
    public func apply(_ input: Tensor) throws -> Tensor {
        let rows = try checkedRowCount(of: input, size: size, layer: "LayerNorm")
        let output = Tensor(uninitialized: input.shape)
        layerNormForward(output.pointer, nil, input.pointer, weight.value.pointer, bias.value.pointer, rows: rows, size: size, eps: eps)
        return output
    }

    public func backwardInput(_ outputGradient: Tensor, microBatch: Int) throws -> Tensor {
        let (input, statistics) = try saved.take(microBatch)
        precondition(outputGradient.count == input.count, "LayerNorm p1: dy \(outputGradient.shape) for x \(input.shape)")
        let inputGradient = Tensor(uninitialized: input.shape)
        layerNormBackwardInput(inputGradient.pointer, outputGradient.pointer, input.pointer, statistics.pointer, weight.value.pointer,
                               rows: input.rowCount, size: size)
        try pending.put((input, statistics, outputGradient), for: microBatch)
        return inputGradient
    }

    public func backwardWeight(_ work: WeightGradientWork) throws {
        for stash in try pending.take(work) {
            layerNormBackwardWeight(weight.gradient.pointer, bias.gradient.pointer, stash.outputGradient.pointer, stash.input.pointer,
                                    stash.statistics.pointer, rows: stash.input.rowCount, size: size)
        }
    }
}

/// out[r, i] = (x[r, i] − mean_r) · rstd_r · weight[i] + bias[i]; also writes (mean_r, rstd_r) to
/// statistics [rows, 2] when given.
func layerNormForward(
    _ out: UnsafeMutablePointer<Float>, _ statistics: UnsafeMutablePointer<Float>?, _ x: UnsafePointer<Float>,
    _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>, rows: Int, size: Int, eps: Float
) {
    for row in 0..<rows {
        let xRow = x + row * size
        let outRow = out + row * size
        var sum: Double = 0
        for i in 0..<size { sum += Double(xRow[i]) }
        let mean = sum / Double(size)
        var sumOfSquares: Double = 0
        for i in 0..<size {
            let centred = Double(xRow[i]) - mean
            sumOfSquares += centred * centred
        }
        let (floatMean, rstd) = (Float(mean), Float(1 / (sumOfSquares / Double(size) + Double(eps)).squareRoot()))
        if let statistics {
            statistics[2 * row] = floatMean
            statistics[2 * row + 1] = rstd
        }
        for i in 0..<size { outRow[i] = bias[i].addingProduct((xRow[i] - floatMean) * rstd, weight[i]) }
    }
}

/// p1: dx[r, i] = rstd · (g_i − mean(g) − x̂_i · mean(g ⊙ x̂)), g = dy ⊙ weight, means in Double (overwrites dx).
func layerNormBackwardInput(
    _ dx: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>,
    _ statistics: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, rows: Int, size: Int
) {
    for row in 0..<rows {
        let (xRow, dyRow, dxRow) = (x + row * size, dy + row * size, dx + row * size)
        let (mean, rstd) = (statistics[2 * row], statistics[2 * row + 1])
        var (gradientSum, projection): (Double, Double) = (0, 0)
        for i in 0..<size {
            let g = Double(dyRow[i] * weight[i])
            gradientSum += g
            projection += g * Double((xRow[i] - mean) * rstd)
        }
        let (meanGradient, meanProjection) = (Float(gradientSum / Double(size)), Float(projection / Double(size)))
        for i in 0..<size {
            let normalised = (xRow[i] - mean) * rstd
            dxRow[i] = rstd * (dyRow[i] * weight[i] - meanGradient - normalised * meanProjection)
        }
    }
}

/// p2: dweight[i] += Σ_r dy[r, i] · x̂[r, i], dbias[i] += Σ_r dy[r, i], rows in order.
func layerNormBackwardWeight(
    _ dweight: UnsafeMutablePointer<Float>, _ dbias: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>,
    _ x: UnsafePointer<Float>, _ statistics: UnsafePointer<Float>, rows: Int, size: Int
) {
    for row in 0..<rows {
        let (xRow, dyRow) = (x + row * size, dy + row * size)
        let (mean, rstd) = (statistics[2 * row], statistics[2 * row + 1])
        for i in 0..<size {
            dweight[i] = dweight[i].addingProduct(dyRow[i], (xRow[i] - mean) * rstd)
            dbias[i] += dyRow[i]
        }
    }
}
