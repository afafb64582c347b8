import Tensor

/// y = x Wᵀ (+ b), with W stored [out, in] as in PyTorch and Hugging Face.
///
/// p1 is dx = dy W; p2 is dW += dyᵀ x and db += Σ dy. Over `.allPending` p2 is one
/// accumulating GEMM per stashed micro-batch into the same dW: the same FLOPs as stacking the
/// stashes into one GEMM, without copying them (stacking llama-small's stashes measured 10–20%
/// slower than the separate GEMMs on this machine, the copy costing more than the larger GEMM gains).
public final class Linear: Layer {
    public let inputSize: Int
    public let outputSize: Int
    public let weight: Parameter
    public let bias: Parameter?
    /// x [rows, in], kept from forward for p2.
    private var saved = MicroBatchStore<Tensor>("Linear forward state")
    /// (x [rows, in], dy [rows, out]) kept from p1 for p2.
    private var pending = MicroBatchStore<(input: Tensor, outputGradient: Tensor)>("Linear p2 stash")

    /// The weight starts at the model's normal scale and the bias at zero unless a family says
    /// otherwise (Mamba's `dt_proj` and `out_proj`). `weight`, when given, is a [outputSize, inputSize]
    /// parameter this projection shares with another layer (a tied embedding).
    public init(inputSize: Int, outputSize: Int, bias: Bool = false, weight: Parameter? = nil,
                weightInitialization: Parameter.Initialization = .normal(std: nil),
                biasInitialization: Parameter.Initialization = .constant(0)) {
        precondition(weight.map { $0.value.shape == [outputSize, inputSize] } ?? true, "Linear: shared weight of the wrong shape")
        self.inputSize = inputSize
        self.outputSize = outputSize
        self.weight = weight ?? Parameter(name: "weight", shape: [outputSize, inputSize], initialization: weightInitialization)
        self.bias = bias ? Parameter(name: "bias", shape: [outputSize], initialization: biasInitialization) : nil
    }

    public var parameters: [Parameter] { [weight] + (bias.map { [$0] } ?? []) }

    public func forward(_ input: Tensor, microBatch: Int) throws -> Tensor {
        let output = apply(input)
        try saved.put(input, for: microBatch)
        return output
    }

    /// The forward computation alone, saving nothing (for inference).
    public func apply(_ input: Tensor) -> Tensor {
        precondition(input.columnCount == inputSize, "Linear(\(inputSize)→\(outputSize)) given \(input.shape)")
        // Every element is written: by the bias rows, or by the GEMM with beta 0.
        let output = Tensor(uninitialized: Array(input.shape.dropLast()) + [outputSize])
        if let bias { fillRows(output.pointer, with: bias.value.pointer, rows: output.rowCount, columns: outputSize) }
        BLAS.matmul(output, input, weight.value, transposeB: true, accumulate: bias != nil)
        return output
    }

    public func backwardInput(_ outputGradient: Tensor, microBatch: Int) throws -> Tensor {
        try backwardInput(outputGradient, microBatch: microBatch, into: nil)
    }

    /// p1 that adds dy W into `inputGradient` instead of allocating dx, for layers whose input
    /// feeds several projections (attention's q/k/v, the MLP's gate/up): dx is their sum.
    public func backwardInput(_ outputGradient: Tensor, microBatch: Int, accumulatingInto inputGradient: Tensor) throws {
        _ = try backwardInput(outputGradient, microBatch: microBatch, into: inputGradient)
    }

    /// dx = dy W into a fresh tensor, or dx += dy W into `accumulator`; stashes (x, dy) for p2.
    private func backwardInput(_ outputGradient: Tensor, microBatch: Int, into accumulator: Tensor?) throws -> Tensor {
        let input = try saved.take(microBatch)
        let inputGradient = accumulator ?? Tensor(uninitialized: input.shape)  // beta 0 when fresh
        BLAS.matmul(inputGradient, outputGradient, weight.value, accumulate: accumulator != nil)
        try pending.put((input, outputGradient), for: microBatch)
        return inputGradient
    }

    public func backwardWeight(_ work: WeightGradientWork) throws {
        for (input, outputGradient) in try pending.take(work) {
            BLAS.matmul(weight.gradient, outputGradient, transposeA: true, input, accumulate: true)
            if let bias { addColumnSums(bias.gradient.pointer, outputGradient.pointer, rows: outputGradient.rowCount, columns: outputSize) }
        }
    }
}

/// Every row of `matrix` [rows, columns] becomes a copy of `row` [columns] (a bias before its GEMM).
func fillRows(_ matrix: UnsafeMutablePointer<Float>, with row: UnsafePointer<Float>, rows: Int, columns: Int) {
    for r in 0..<rows { (matrix + r * columns).update(from: row, count: columns) }
}

/// sums[j] += Σ_r matrix[r, j], rows in order (a bias gradient).
func addColumnSums(_ sums: UnsafeMutablePointer<Float>, _ matrix: UnsafePointer<Float>, rows: Int, columns: Int) {
    for r in 0..<rows {
        let row = matrix + r * columns
        for j in 0..<columns { sums[j] += row[j] }
    }
}
