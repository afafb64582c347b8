import Tensor

/// Root-mean-square norm with Hugging Face `LlamaRMSNorm` semantics, over the last dimension:
/// `y = (x · rstd) · weight` with `rstd = 1 / sqrt(mean(x²) + eps)`; the sum of squares
/// accumulates in Double so long rows lose nothing.
///
/// With g = dy ⊙ weight and n = size, p1 is `dx = rstd · g − x · rstd³ · (g·x) / n` and p2 is
/// `dweight += Σ_rows dy ⊙ x · rstd`. p2 has no GEMM to batch, so `.allPending` walks the
/// stashed micro-batches oldest first, exactly as the same `.microBatch` calls would.
public final class RMSNorm: Layer {
    public let size: Int
    public let eps: Float
    /// The gain, [size], initialised to ones as in Hugging Face.
    public let weight: Parameter
    /// x [rows, size] and rstd [rows], kept from forward for p1.
    private var saved = MicroBatchStore<(input: Tensor, rstd: Tensor)>("RMSNorm forward state")
    /// x [rows, size], rstd [rows] and dy [rows, size], kept from p1 for p2.
    private var pending = MicroBatchStore<(input: Tensor, rstd: Tensor, outputGradient: Tensor)>("RMSNorm p2 stash")

    public init(size: Int, eps: Float = 1e-5) {
        self.size = size
        self.eps = eps
        weight = Parameter(name: "weight", shape: [size], initialization: .constant(1))
        weight.value.buffer.update(repeating: 1)
    }

    public var parameters: [Parameter] { [weight] }

    public func forward(_ input: Tensor, microBatch: Int) throws -> Tensor {
        let rows = try checkedRowCount(of: input, size: size, layer: "RMSNorm")
        let output = Tensor(uninitialized: input.shape)
        let rstd = Tensor(uninitialized: [rows])
        rmsnormForward(output.pointer, rstd.pointer, input.pointer, weight.value.pointer, rows: rows, size: size, eps: eps)
        try saved.put((input, rstd), for: microBatch)
        return output
    }

    /// The forward computation alone, saving nothing (for inference).
    public func apply(_ input: Tensor) throws -> Tensor {
        let rows = try checkedRowCount(of: input, size: size, layer: "RMSNorm")
        let output = Tensor(uninitialized: input.shape)
        rmsnormForward(output.pointer, nil, input.pointer, weight.value.pointer, rows: rows, size: size, eps: eps)
        return output
    }

    public func backwardInput(_ outputGradient: Tensor, microBatch: Int) throws -> Tensor {
        let (input, rstd) = try saved.take(microBatch)
        precondition(outputGradient.count == input.count, "RMSNorm p1: dy \(outputGradient.shape) for x \(input.shape)")
        let inputGradient = Tensor(uninitialized: input.shape)
        rmsnormBackwardInput(inputGradient.pointer, outputGradient.pointer, input.pointer, rstd.pointer, weight.value.pointer,
                             rows: input.rowCount, size: size)
        try pending.put((input, rstd, outputGradient), for: microBatch)
        return inputGradient
    }

    public func backwardWeight(_ work: WeightGradientWork) throws {
        for stash in try pending.take(work) {
            rmsnormBackwardWeight(weight.gradient.pointer, stash.outputGradient.pointer, stash.input.pointer, stash.rstd.pointer,
                                  rows: stash.input.rowCount, size: size)
        }
    }
}

/// Rows in one part of a row-parallel loop, at least: below this the hand-off costs more than it saves.
let minimumRowsPerPart = 64

/// out[r, i] = (x[r, i] · rstd[r]) · weight[i]; also writes rstd [rows] when given. Rows in parallel.
func rmsnormForward(
    _ out: UnsafeMutablePointer<Float>, _ rstd: UnsafeMutablePointer<Float>?,
    _ x: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, rows: Int, size: Int, eps: Float
) {
    Parallel.forEachPart(of: rows, minimumPerPart: minimumRowsPerPart) { part in
        for row in part {
            let xRow = x + row * size
            let outRow = out + row * size
            var sumOfSquares: Double = 0
            for i in 0..<size {
                let value = Double(xRow[i])
                sumOfSquares += value * value
            }
            let scale = Float(1 / (sumOfSquares / Double(size) + Double(eps)).squareRoot())
            rstd?[row] = scale
            for i in 0..<size { outRow[i] = (xRow[i] * scale) * weight[i] }
        }
    }
}

/// p1: dx[r, i] = rstd · g_i − x_i · rstd³ · (Σ_j g_j x_j) / size, with g = dy ⊙ weight (overwrites dx).
/// Rows in parallel.
func rmsnormBackwardInput(
    _ dx: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>,
    _ rstd: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, rows: Int, size: Int
) {
    Parallel.forEachPart(of: rows, minimumPerPart: minimumRowsPerPart) { part in
        for row in part {
            let xRow = x + row * size
            let dyRow = dy + row * size
            let dxRow = dx + row * size
            var dot: Double = 0
            for i in 0..<size { dot += Double(dyRow[i] * weight[i]) * Double(xRow[i]) }
            let scale = rstd[row]
            let correction = Float(Double(scale) * Double(scale) * Double(scale) * dot / Double(size))
            for i in 0..<size { dxRow[i] = scale * (dyRow[i] * weight[i]) - xRow[i] * correction }
        }
    }
}

/// p2: dweight[i] += Σ_r dy[r, i] · x[r, i] · rstd[r], rows in order.
func rmsnormBackwardWeight(
    _ dweight: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>,
    _ rstd: UnsafePointer<Float>, rows: Int, size: Int
) {
    for row in 0..<rows {
        let xRow = x + row * size
        let dyRow = dy + row * size
        let scale = rstd[row]
        for i in 0..<size { dweight[i] += dyRow[i] * (xRow[i] * scale) }
    }
}
