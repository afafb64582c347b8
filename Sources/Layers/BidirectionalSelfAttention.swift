import Tensor

/// Which keys of each sample attention may look at: Hugging Face's `attention_mask`, 1 for a
/// real token and 0 for padding, [batchSize, sequenceLength] row-major.
///
/// Built once per micro-batch and shared by every layer of a stage. It acts as HF's additive mask,
/// `(1 − mask) · finfo(float32).min` on the scores of padded keys (in float32 that sum is finfo.min
/// itself), whose probabilities then underflow to exactly 0; a sample without any valid key attends
/// uniformly to all its positions (finite, as in HF). Queries at padded positions are computed like
/// any other, as in HF.
public struct AttentionMask: Sendable, Equatable {
    public let batchSize: Int
    public let sequenceLength: Int
    /// Per sample, the positions of its padded keys (empty for most samples, which then pay nothing).
    let paddedKeys: [[Int]]

    /// Throws unless `mask` has batchSize · sequenceLength entries, each 0 or 1.
    public init(_ mask: [Int32], batchSize: Int, sequenceLength: Int) throws {
        guard mask.count == batchSize * sequenceLength else {
            throw TwoBPError("attention mask: \(mask.count) entries for batch \(batchSize) x length \(sequenceLength)")
        }
        if let bad = mask.first(where: { $0 != 0 && $0 != 1 }) {
            throw TwoBPError("attention mask: entries must be 1 (token) or 0 (padding), got \(bad)")
        }
        self.batchSize = batchSize
        self.sequenceLength = sequenceLength
        paddedKeys = (0..<batchSize).map { b in (0..<sequenceLength).filter { mask[b * sequenceLength + $0] == 0 } }
    }
}

/// Multi-head bidirectional self-attention, Hugging Face `BertSelfAttention` (eager path, absolute
/// positions) followed by `BertSelfOutput.dense`: q, k, v = x W_qᵀ + b_q, x W_kᵀ + b_k, x W_vᵀ + b_v;
/// per (sample, head) `P = softmax(q kᵀ / sqrt(headSize) + maskBias)` over all keys, `P' = dropout(P)`,
/// `y = P' v`; output `y W_oᵀ + b_o`. The block (`BertLayer`) adds the output dropout, the residual and
/// the LayerNorm.
///
/// Input and output are [batch, length, hiddenSize]; heads are column blocks of q, k, v, and every
/// per-head product is one strided GEMM straight on those buffers (lda = hiddenSize), never a copy.
/// Forward keeps P [batch, heads, length, length]; the dropout mask is not stored but recomputed in
/// p1 from the saved `DropoutContext` (see `Dropout`), element (h, i, j) of sample b being position
/// (h · length + i) · length + j of that sample. Parameter names follow HF's `BertAttention`:
/// `self.query.*`, `self.key.*`, `self.value.*`, `output.dense.*`.
///
/// p1 runs output.dense's p1, the attention backward (PV, dropout, softmax, QKᵀ) and the q/k/v p1s;
/// p2 is the four projections' p2, so under `.allPending` each is one GEMM over all micro-batches.
public final class BidirectionalSelfAttention: Layer {
    public let hiddenSize: Int
    public let headCount: Int
    public let headSize: Int
    public let query: Linear
    public let key: Linear
    public let value: Linear
    public let outputDense: Linear
    /// On the attention probabilities (`attention_probs_dropout_prob`).
    public let dropout: Dropout
    public let parameters: [Parameter]

    private struct Saved {
        /// q, k, v, [batch, length, hiddenSize].
        let query: Tensor
        let key: Tensor
        let value: Tensor
        /// softmax probabilities before dropout, [batch, heads, length, length].
        let probabilities: Tensor
        /// The forward's dropout context; nil when nothing was dropped.
        let dropout: DropoutContext?
    }

    private var saved = MicroBatchStore<Saved>("BidirectionalSelfAttention forward state")

    /// Throws unless `headCount` divides `hiddenSize`.
    public init(hiddenSize: Int, headCount: Int, dropout: Dropout = .disabled) throws {
        guard headCount > 0, hiddenSize > 0, hiddenSize % headCount == 0 else {
            throw TwoBPError("attention: \(headCount) heads do not divide hidden size \(hiddenSize)")
        }
        self.hiddenSize = hiddenSize
        self.headCount = headCount
        headSize = hiddenSize / headCount
        self.dropout = dropout
        query = Linear(inputSize: hiddenSize, outputSize: hiddenSize, bias: true)
        key = Linear(inputSize: hiddenSize, outputSize: hiddenSize, bias: true)
        value = Linear(inputSize: hiddenSize, outputSize: hiddenSize, bias: true)
        outputDense = Linear(inputSize: hiddenSize, outputSize: hiddenSize, bias: true)
        parameters = prefixedParameters([("self.query", query), ("self.key", key), ("self.value", value), ("output.dense", outputDense)])
    }

    /// Forward with every key valid and no dropout.
    public func forward(_ input: Tensor, microBatch: Int) throws -> Tensor {
        try forward(input, attentionMask: nil, dropout: nil, microBatch: microBatch)
    }

    /// y [batch, length, hiddenSize] of x [batch, length, hiddenSize]; `attentionMask` nil means no
    /// padding, `dropout` nil (or an inactive `self.dropout`) means nothing is dropped.
    public func forward(_ input: Tensor, attentionMask: AttentionMask?, dropout context: DropoutContext?,
                        microBatch: Int) throws -> Tensor {
        let (batch, length) = try checkedShape(input, attentionMask)
        let q = try query.forward(input, microBatch: microBatch)
        let k = try key.forward(input, microBatch: microBatch)
        let v = try value.forward(input, microBatch: microBatch)
        let probabilities = Tensor(uninitialized: [batch, headCount, length, length])
        let context = dropout.isActive ? context : nil
        let attended = attend(query: q, key: k, value: v, mask: attentionMask, probabilities: probabilities,
                              stride: length * length, dropout: context)
        let output = try outputDense.forward(attended, microBatch: microBatch)
        try saved.put(Saved(query: q, key: k, value: v, probabilities: probabilities, dropout: context), for: microBatch)
        return output
    }

    /// The forward computation alone, saving nothing and dropping nothing (for inference): one
    /// [length, length] probability buffer serves every head in turn.
    public func apply(_ input: Tensor, attentionMask: AttentionMask? = nil) throws -> Tensor {
        let (_, length) = try checkedShape(input, attentionMask)
        let scratch = Tensor(uninitialized: [length, length])
        let attended = attend(query: query.apply(input), key: key.apply(input), value: value.apply(input),
                              mask: attentionMask, probabilities: scratch, stride: 0, dropout: nil)
        return outputDense.apply(attended)
    }

    public func backwardInput(_ outputGradient: Tensor, microBatch: Int) throws -> Tensor {
        let attendedGradient = try outputDense.backwardInput(outputGradient, microBatch: microBatch)
        let state = try saved.take(microBatch)
        let (batch, length) = (state.query.shape[0], state.query.shape[1])
        let tile = length * length
        // Every head's columns of dq, dk, dv are written once, with beta 0.
        let queryGradient = Tensor(uninitialized: state.query.shape)
        let keyGradient = Tensor(uninitialized: state.key.shape)
        let valueGradient = Tensor(uninitialized: state.value.shape)
        // dP (then dS in place), and P' when dropout ran.
        let scratch = Tensor(uninitialized: [state.dropout == nil ? tile : 2 * tile])
        let (dP, droppedProbabilities) = (scratch.pointer, scratch.pointer + tile)
        let scale = 1 / Float(headSize).squareRoot()
        for b in 0..<batch {
            for h in 0..<headCount {
                let offset = b * length * hiddenSize + h * headSize
                let p = state.probabilities.pointer + (b * headCount + h) * tile
                let dy = attendedGradient.pointer + offset
                // dP' = dy vᵀ, [length, length]
                BLAS.gemm(transposeA: false, transposeB: true, m: length, n: length, k: headSize,
                          a: dy, lda: hiddenSize, b: state.value.pointer + offset, ldb: hiddenSize, beta: 0, c: dP, ldc: length)
                // dv = P'ᵀ dy; dP = dP' ⊙ mask · scale (the mask is recomputed, not stored)
                var attendedProbabilities = UnsafePointer(p)
                if let context = state.dropout {
                    let (sample, position) = (context.firstSample + b, h * tile)
                    dropout.mask(droppedProbabilities, from: p, count: tile, sample: sample, offset: position, context: context)
                    dropout.mask(dP, from: dP, count: tile, sample: sample, offset: position, context: context)
                    attendedProbabilities = UnsafePointer(droppedProbabilities)
                }
                BLAS.gemm(transposeA: true, transposeB: false, m: length, n: headSize, k: length,
                          a: attendedProbabilities, lda: length, b: dy, ldb: hiddenSize,
                          beta: 0, c: valueGradient.pointer + offset, ldc: hiddenSize)
                // dS = P ⊙ (dP − Σ_j P dP), in place of dP
                softmaxBackwardBlock(dP, p, count: tile, rows: length, columns: length)
                // dq = scale · dS k, dk = scale · dSᵀ q
                BLAS.gemm(transposeA: false, transposeB: false, m: length, n: headSize, k: length,
                          alpha: scale, a: dP, lda: length, b: state.key.pointer + offset, ldb: hiddenSize,
                          beta: 0, c: queryGradient.pointer + offset, ldc: hiddenSize)
                BLAS.gemm(transposeA: true, transposeB: false, m: length, n: headSize, k: length,
                          alpha: scale, a: dP, lda: length, b: state.query.pointer + offset, ldb: hiddenSize,
                          beta: 0, c: keyGradient.pointer + offset, ldc: hiddenSize)
            }
        }
        let inputGradient = try query.backwardInput(queryGradient, microBatch: microBatch)
        try key.backwardInput(keyGradient, microBatch: microBatch, accumulatingInto: inputGradient)
        try value.backwardInput(valueGradient, microBatch: microBatch, accumulatingInto: inputGradient)
        return inputGradient
    }

    public func backwardWeight(_ work: WeightGradientWork) throws {
        for projection in [query, key, value, outputDense] { try projection.backwardWeight(work) }
    }

    private func checkedShape(_ input: Tensor, _ mask: AttentionMask?) throws -> (batch: Int, length: Int) {
        let shape = try checkedSequenceShape(of: input, size: hiddenSize, layer: "BidirectionalSelfAttention")
        if let mask, mask.batchSize != shape.batch || mask.sequenceLength != shape.length {
            throw TwoBPError("BidirectionalSelfAttention: attention mask of [\(mask.batchSize), \(mask.sequenceLength)] for input \(input.shape)")
        }
        return shape
    }

    /// y [batch, length, hiddenSize] from q, k, v: head (b, h)'s probabilities go to
    /// `probabilities + (b · H + h) · stride`, then (with a context) are dropped into a scratch tile
    /// for the PV product, leaving the stored P undropped for p1's softmax backward.
    private func attend(query: Tensor, key: Tensor, value: Tensor, mask: AttentionMask?, probabilities: Tensor, stride: Int,
                        dropout context: DropoutContext?) -> Tensor {
        let (batch, length) = (query.shape[0], query.shape[1])
        let tile = length * length
        let scale = 1 / Float(headSize).squareRoot()
        let output = Tensor(uninitialized: query.shape)  // every head's columns written with beta 0
        let dropped = context == nil ? nil : Tensor(uninitialized: [tile])
        for b in 0..<batch {
            for h in 0..<headCount {
                let offset = b * length * hiddenSize + h * headSize
                let p = probabilities.pointer + (b * headCount + h) * stride
                // S = scale · q kᵀ, [length, length]
                BLAS.gemm(transposeA: false, transposeB: true, m: length, n: length, k: headSize,
                          alpha: scale, a: query.pointer + offset, lda: hiddenSize, b: key.pointer + offset, ldb: hiddenSize,
                          beta: 0, c: p, ldc: length)
                let paddedKeys = mask?.paddedKeys[b] ?? []
                for i in 0..<length {
                    let row = p + i * length
                    for j in paddedKeys { row[j] = -Float.greatestFiniteMagnitude }
                    softmaxRow(row, count: length)
                    // HF's exp(finfo.min − max) is exactly 0; FastMath.exp stops at ~1e-38, which the
                    // normalisation would turn into subnormals that slow every later GEMM. A row with
                    // no valid key keeps its uniform softmax.
                    if paddedKeys.count < length { for j in paddedKeys { row[j] = 0 } }
                }
                var attendedProbabilities = UnsafePointer(p)
                if let context, let dropped {
                    dropout.mask(dropped.pointer, from: p, count: tile, sample: context.firstSample + b, offset: h * tile, context: context)
                    attendedProbabilities = UnsafePointer(dropped.pointer)
                }
                // y = P' v, [length, headSize] inside y's rows
                BLAS.gemm(transposeA: false, transposeB: false, m: length, n: headSize, k: length,
                          a: attendedProbabilities, lda: length, b: value.pointer + offset, ldb: hiddenSize,
                          beta: 0, c: output.pointer + offset, ldc: hiddenSize)
            }
        }
        return output
    }
}
