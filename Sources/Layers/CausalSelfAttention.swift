import Foundation
import Tensor

/// Multi-head causal self-attention with rotary positions, Hugging Face `LlamaAttention` without
/// biases: q, k, v = x W_qᵀ, x W_kᵀ, x W_vᵀ; RoPE on q and k; per (sequence, head)
/// `P = causal_softmax(q kᵀ / sqrt(headSize))`, `y = P v`; output `y W_oᵀ`.
///
/// Input and output are [batch, length, hiddenSize]. Heads are column blocks of q [.., H · d] and of
/// k, v [.., KV · d]; query head h reads key/value head h / (H / KV) (grouped-query attention;
/// KV = H is plain multi-head). Every per-head product is one strided GEMM straight on those
/// buffers (lda = row width), never a copy.
///
/// p1 runs o_proj's p1, the attention backward (PV, softmax, QKᵀ, RoPE) and q/k/v_proj's p1;
/// p2 is the four projections' p2, so under `.allPending` each is one GEMM over all micro-batches.
public final class CausalSelfAttention: Layer {
    public let hiddenSize: Int
    public let headCount: Int
    public let keyValueHeadCount: Int
    public let headSize: Int
    public let rotary: RotaryEmbedding
    public let qProj: Linear
    public let kProj: Linear
    public let vProj: Linear
    public let oProj: Linear
    public let parameters: [Parameter]

    private struct Saved {
        /// q after RoPE, [batch, length, H · d].
        let query: Tensor
        /// k after RoPE, [batch, length, KV · d].
        let key: Tensor
        /// v, [batch, length, KV · d].
        let value: Tensor
        /// softmax probabilities, [batch, H, length, length], zero above the diagonal.
        let probabilities: Tensor
    }

    private var saved = MicroBatchStore<Saved>("CausalSelfAttention forward state")

    /// `rotary` must have head size `hiddenSize / headCount`; share one across a model's layers.
    public init(hiddenSize: Int, headCount: Int, keyValueHeadCount: Int? = nil, rotary: RotaryEmbedding) {
        let keyValueHeadCount = keyValueHeadCount ?? headCount
        precondition(hiddenSize % headCount == 0, "attention: \(headCount) heads do not divide \(hiddenSize)")
        precondition(headCount % keyValueHeadCount == 0, "attention: \(keyValueHeadCount) key/value heads do not divide \(headCount) heads")
        precondition(rotary.headSize == hiddenSize / headCount, "attention: RoPE head size \(rotary.headSize) != \(hiddenSize / headCount)")
        self.hiddenSize = hiddenSize
        self.headCount = headCount
        self.keyValueHeadCount = keyValueHeadCount
        headSize = hiddenSize / headCount
        self.rotary = rotary
        let keyValueSize = keyValueHeadCount * headSize
        qProj = Linear(inputSize: hiddenSize, outputSize: hiddenSize)
        kProj = Linear(inputSize: hiddenSize, outputSize: keyValueSize)
        vProj = Linear(inputSize: hiddenSize, outputSize: keyValueSize)
        oProj = Linear(inputSize: hiddenSize, outputSize: hiddenSize)
        parameters = prefixedParameters([("q_proj", qProj), ("k_proj", kProj), ("v_proj", vProj), ("o_proj", oProj)])
    }

    public func forward(_ input: Tensor, microBatch: Int) throws -> Tensor {
        let (batch, length) = try checkedShape(input)
        let query = try qProj.forward(input, microBatch: microBatch)
        let key = try kProj.forward(input, microBatch: microBatch)
        let value = try vProj.forward(input, microBatch: microBatch)
        let probabilities = Tensor(uninitialized: [batch, headCount, length, length])
        let attended = attend(query: query, key: key, value: value, probabilities: probabilities, stride: length * length)
        let output = try oProj.forward(attended, microBatch: microBatch)
        try saved.put(Saved(query: query, key: key, value: value, probabilities: probabilities), for: microBatch)
        return output
    }

    /// The forward computation alone, saving nothing (for inference): one [length, length]
    /// probability buffer serves every head in turn.
    public func apply(_ input: Tensor) throws -> Tensor {
        let (_, length) = try checkedShape(input)
        let scratch = Tensor(uninitialized: [length, length])
        let attended = attend(query: qProj.apply(input), key: kProj.apply(input), value: vProj.apply(input),
                              probabilities: scratch, stride: 0)
        return oProj.apply(attended)
    }

    public func backwardInput(_ outputGradient: Tensor, microBatch: Int) throws -> Tensor {
        let attendedGradient = try oProj.backwardInput(outputGradient, microBatch: microBatch)
        let state = try saved.take(microBatch)
        let (batch, length) = (state.query.shape[0], state.query.shape[1])
        let queryGradient = Tensor(uninitialized: state.query.shape)  // dq GEMMs use beta 0
        let keyGradient = Tensor(zeros: state.key.shape)
        let valueGradient = Tensor(zeros: state.value.shape)
        let scratch = Tensor(uninitialized: [length, length])
        attentionBackward(
            dQuery: queryGradient.pointer, dKey: keyGradient.pointer, dValue: valueGradient.pointer, scratch: scratch.pointer,
            dOutput: attendedGradient.pointer, query: state.query.pointer, key: state.key.pointer, value: state.value.pointer,
            probabilities: state.probabilities.pointer,
            batch: batch, length: length, heads: headCount, keyValueHeads: keyValueHeadCount, headSize: headSize)
        rotary.rotate(queryGradient, heads: headCount, inverse: true)
        rotary.rotate(keyGradient, heads: keyValueHeadCount, inverse: true)
        let inputGradient = try qProj.backwardInput(queryGradient, microBatch: microBatch)
        try kProj.backwardInput(keyGradient, microBatch: microBatch, accumulatingInto: inputGradient)
        try vProj.backwardInput(valueGradient, microBatch: microBatch, accumulatingInto: inputGradient)
        return inputGradient
    }

    public func backwardWeight(_ work: WeightGradientWork) throws {
        for projection in [qProj, kProj, vProj, oProj] { try projection.backwardWeight(work) }
    }

    private func checkedShape(_ input: Tensor) throws -> (batch: Int, length: Int) {
        let shape = try checkedSequenceShape(of: input, size: hiddenSize, layer: "CausalSelfAttention")
        guard shape.length <= rotary.maxPositions else {
            throw TwoBPError("CausalSelfAttention: sequence length \(shape.length) exceeds max_position_embeddings \(rotary.maxPositions)")
        }
        return shape
    }

    /// RoPE on q and k (in place), then y [batch, length, hiddenSize] = causal attention; head (b, h)'s
    /// probabilities go to `probabilities + (b · H + h) · stride`.
    private func attend(query: Tensor, key: Tensor, value: Tensor, probabilities: Tensor, stride: Int) -> Tensor {
        let (batch, length) = (query.shape[0], query.shape[1])
        rotary.rotate(query, heads: headCount)
        rotary.rotate(key, heads: keyValueHeadCount)
        let output = Tensor(uninitialized: query.shape)  // every head's columns written with beta 0
        attentionForward(
            output: output.pointer, probabilities: probabilities.pointer, probabilityStride: stride,
            query: query.pointer, key: key.pointer, value: value.pointer,
            batch: batch, length: length, heads: headCount, keyValueHeads: keyValueHeadCount, headSize: headSize)
        return output
    }
}

/// Causal attention of q [B, T, H·d] against k, v [B, T, KV·d] into y [B, T, H·d]:
/// per (b, h), `P = softmax(scale · q_bh k_bgᵀ)` masked to j ≤ t (written at
/// `probabilities + (b·H + h) · probabilityStride`, [T, T], zero above the diagonal) and `y_bh = P v_bg`,
/// with g = h / (H / KV) and scale = 1 / sqrt(d).
func attentionForward(
    output: UnsafeMutablePointer<Float>, probabilities: UnsafeMutablePointer<Float>, probabilityStride: Int,
    query: UnsafePointer<Float>, key: UnsafePointer<Float>, value: UnsafePointer<Float>,
    batch: Int, length: Int, heads: Int, keyValueHeads: Int, headSize: Int
) {
    let (queryWidth, keyWidth) = (heads * headSize, keyValueHeads * headSize)
    let group = heads / keyValueHeads
    let scale = 1 / Float(headSize).squareRoot()
    for b in 0..<batch {
        for h in 0..<heads {
            let q = query + b * length * queryWidth + h * headSize
            let k = key + b * length * keyWidth + (h / group) * headSize
            let v = value + b * length * keyWidth + (h / group) * headSize
            let p = probabilities + (b * heads + h) * probabilityStride
            // S = scale · q kᵀ, [T, T]
            BLAS.gemm(transposeA: false, transposeB: true, m: length, n: length, k: headSize,
                      alpha: scale, a: q, lda: queryWidth, b: k, ldb: keyWidth, beta: 0, c: p, ldc: length)
            causalSoftmax(p, length: length)
            // y_bh = P v, [T, d] inside y's rows
            BLAS.gemm(transposeA: false, transposeB: false, m: length, n: headSize, k: length,
                      a: p, lda: length, b: v, ldb: keyWidth,
                      beta: 0, c: output + b * length * queryWidth + h * headSize, ldc: queryWidth)
        }
    }
}

/// Row t of the [T, T] scores becomes softmax over columns 0...t, and zeros after.
@inline(__always)
func causalSoftmax(_ scores: UnsafeMutablePointer<Float>, length: Int) {
    for t in 0..<length {
        let row = scores + t * length
        var maximum = -Float.infinity
        for j in 0...t { maximum = Swift.max(maximum, row[j]) }
        var sum: Float = 0
        for j in 0...t {
            let e = Foundation.exp(row[j] - maximum)
            row[j] = e
            sum += e
        }
        let inverse = 1 / sum
        for j in 0...t { row[j] *= inverse }
        for j in (t + 1)..<length { row[j] = 0 }
    }
}

/// Backward of `attentionForward` from dy [B, T, H·d]: writes dq (post-RoPE) and adds into dk, dv,
/// which must start zeroed (query heads sharing a key/value head add to the same columns).
/// `scratch` is one [T, T] buffer: dP, then dS in place.
func attentionBackward(
    dQuery: UnsafeMutablePointer<Float>, dKey: UnsafeMutablePointer<Float>, dValue: UnsafeMutablePointer<Float>,
    scratch: UnsafeMutablePointer<Float>, dOutput: UnsafePointer<Float>,
    query: UnsafePointer<Float>, key: UnsafePointer<Float>, value: UnsafePointer<Float>, probabilities: UnsafePointer<Float>,
    batch: Int, length: Int, heads: Int, keyValueHeads: Int, headSize: Int
) {
    let (queryWidth, keyWidth) = (heads * headSize, keyValueHeads * headSize)
    let group = heads / keyValueHeads
    let scale = 1 / Float(headSize).squareRoot()
    for b in 0..<batch {
        for h in 0..<heads {
            let queryOffset = b * length * queryWidth + h * headSize
            let keyOffset = b * length * keyWidth + (h / group) * headSize
            let p = probabilities + (b * heads + h) * length * length
            let dy = dOutput + queryOffset
            // dP = dy vᵀ, [T, T]
            BLAS.gemm(transposeA: false, transposeB: true, m: length, n: length, k: headSize,
                      a: dy, lda: queryWidth, b: value + keyOffset, ldb: keyWidth, beta: 0, c: scratch, ldc: length)
            // dv += Pᵀ dy, [T, d]
            BLAS.gemm(transposeA: true, transposeB: false, m: length, n: headSize, k: length,
                      a: p, lda: length, b: dy, ldb: queryWidth, beta: 1, c: dValue + keyOffset, ldc: keyWidth)
            // dS = P ⊙ (dP − Σ_j P dP) on the causal part, in place of dP
            for t in 0..<length {
                let (pRow, dRow) = (p + t * length, scratch + t * length)
                var dot: Float = 0
                for j in 0...t { dot += pRow[j] * dRow[j] }
                for j in 0...t { dRow[j] = pRow[j] * (dRow[j] - dot) }
                for j in (t + 1)..<length { dRow[j] = 0 }
            }
            // dq = scale · dS k, dk += scale · dSᵀ q
            BLAS.gemm(transposeA: false, transposeB: false, m: length, n: headSize, k: length,
                      alpha: scale, a: scratch, lda: length, b: key + keyOffset, ldb: keyWidth,
                      beta: 0, c: dQuery + queryOffset, ldc: queryWidth)
            BLAS.gemm(transposeA: true, transposeB: false, m: length, n: headSize, k: length,
                      alpha: scale, a: scratch, lda: length, b: query + queryOffset, ldb: queryWidth,
                      beta: 1, c: dKey + keyOffset, ldc: keyWidth)
        }
    }
}
