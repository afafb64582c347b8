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
        /// softmax probabilities, [batch, H, causalPackedSize(length)]: per head the causal row
        /// blocks packed (see `attentionBlockSize`), the upper triangle not stored.
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
        let probabilities = Tensor(uninitialized: [batch, headCount, causalPackedSize(length: length)])
        let attended = attend(query: query, key: key, value: value, probabilities: probabilities)
        let output = try oProj.forward(attended, microBatch: microBatch)
        try saved.put(Saved(query: query, key: key, value: value, probabilities: probabilities), for: microBatch)
        return output
    }

    /// The forward computation alone, saving nothing (for inference): one probability buffer
    /// (one head's packed blocks) per thread serves its heads in turn.
    public func apply(_ input: Tensor) throws -> Tensor {
        _ = try checkedShape(input)
        let attended = attend(query: qProj.apply(input), key: kProj.apply(input), value: vProj.apply(input),
                              probabilities: nil)
        return oProj.apply(attended)
    }

    public func backwardInput(_ outputGradient: Tensor, microBatch: Int) throws -> Tensor {
        let attendedGradient = try oProj.backwardInput(outputGradient, microBatch: microBatch)
        let state = try saved.take(microBatch)
        let (batch, length) = (state.query.shape[0], state.query.shape[1])
        let queryGradient = Tensor(uninitialized: state.query.shape)  // dq GEMMs use beta 0
        let keyGradient = Tensor(zeros: state.key.shape)
        let valueGradient = Tensor(zeros: state.value.shape)
        attentionBackward(
            dQuery: queryGradient.pointer, dKey: keyGradient.pointer, dValue: valueGradient.pointer,
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
    /// probabilities go to its slice of `probabilities` when given (kept for p1).
    private func attend(query: Tensor, key: Tensor, value: Tensor, probabilities: Tensor?) -> Tensor {
        let (batch, length) = (query.shape[0], query.shape[1])
        rotary.rotate(query, heads: headCount)
        rotary.rotate(key, heads: keyValueHeadCount)
        let output = Tensor(uninitialized: query.shape)  // every head's columns written with beta 0
        attentionForward(
            output: output.pointer, probabilities: probabilities?.pointer,
            query: query.pointer, key: key.pointer, value: value.pointer,
            batch: batch, length: length, heads: headCount, keyValueHeads: keyValueHeadCount, headSize: headSize)
        return output
    }
}

/// Causal attention is computed in row blocks of `attentionBlockSize` queries: block i (rows
/// r0 ..< r0 + rows) only sees keys 0 ..< r0 + rows, so each of its products runs over that many
/// columns instead of T, and the masked upper triangle outside the diagonal blocks is never
/// computed, stored or read (about 5/8 of the square at T = 256; the flops model still counts the
/// full square). Block i's probabilities are stored packed, [rows, r0 + rows] row-major,
/// after the blocks before it; one (sequence, head) takes `causalPackedSize(length:)` floats.
let attentionBlockSize = 64

/// Floats of one head's packed causal probabilities (Σ over row blocks of rows · (r0 + rows)).
func causalPackedSize(length: Int) -> Int {
    var total = 0
    var r0 = 0
    while r0 < length {
        let rows = Swift.min(attentionBlockSize, length - r0)
        total += rows * (r0 + rows)
        r0 += rows
    }
    return total
}

/// Causal attention of q [B, T, H·d] against k, v [B, T, KV·d] into y [B, T, H·d]:
/// per (b, h), `P = softmax(scale · q_bh k_bgᵀ)` masked to j ≤ t (written packed, see
/// `attentionBlockSize`, at `probabilities + (b·H + h) · causalPackedSize(length:)` unless nil, zero above the diagonal
/// inside the diagonal blocks) and `y_bh = P v_bg`, with g = h / (H / KV) and scale = 1 / sqrt(d).
func attentionForward(
    output: UnsafeMutablePointer<Float>, probabilities: UnsafeMutablePointer<Float>?,
    query: UnsafePointer<Float>, key: UnsafePointer<Float>, value: UnsafePointer<Float>,
    batch: Int, length: Int, heads: Int, keyValueHeads: Int, headSize: Int
) {
    let (queryWidth, keyWidth) = (heads * headSize, keyValueHeads * headSize)
    let group = heads / keyValueHeads
    let scale = 1 / Float(headSize).squareRoot()
    let packedSize = causalPackedSize(length: length)
    // Without a probability buffer (inference) each thread reuses one head's worth.
    let partScratch = probabilities == nil ? packedSize : 0
    forEachHeadGroup(batch: batch, heads: heads, keyValueHeads: keyValueHeads, partScratch: partScratch) { scratch, b, h in
        let q = query + b * length * queryWidth + h * headSize
        let k = key + b * length * keyWidth + (h / group) * headSize
        let v = value + b * length * keyWidth + (h / group) * headSize
        let y = output + b * length * queryWidth + h * headSize
        var p = probabilities.map { $0 + (b * heads + h) * packedSize } ?? scratch
        var r0 = 0
        while r0 < length {
            let rows = Swift.min(attentionBlockSize, length - r0)
            let columns = r0 + rows
            // S_i = scale · q_i k[0 ..< columns]ᵀ, [rows, columns]
            BLAS.gemm(transposeA: false, transposeB: true, m: rows, n: columns, k: headSize,
                      alpha: scale, a: q + r0 * queryWidth, lda: queryWidth, b: k, ldb: keyWidth,
                      beta: 0, c: p, ldc: columns)
            causalSoftmaxBlock(p, rows: rows, columns: columns, firstRow: r0)
            // y_i = P_i v[0 ..< columns], [rows, d] inside y's rows
            BLAS.gemm(transposeA: false, transposeB: false, m: rows, n: headSize, k: columns,
                      a: p, lda: columns, b: v, ldb: keyWidth,
                      beta: 0, c: y + r0 * queryWidth, ldc: queryWidth)
            p += rows * columns
            r0 += rows
        }
    }
}

/// Runs `body(scratch, b, h)` for every sequence b and query head h, the (sequence, key/value head)
/// groups spread over `Parallel.threads`: each group's heads in order on one thread, so the dk and
/// dv columns a group's heads add into are summed in the same order whatever the thread count.
/// Each thread gets its own `partScratch` floats of scratch.
@inline(__always)
func forEachHeadGroup(batch: Int, heads: Int, keyValueHeads: Int, partScratch: Int,
                      _ body: (_ scratch: UnsafeMutablePointer<Float>, _ b: Int, _ h: Int) -> Void) {
    let group = heads / keyValueHeads
    Parallel.forEachPart(of: batch * keyValueHeads) { groups in
        let scratch = Tensor(uninitialized: [partScratch])
        withExtendedLifetime(scratch) {
            for index in groups {
                let (b, g) = index.quotientAndRemainder(dividingBy: keyValueHeads)
                for h in g * group..<(g + 1) * group { body(scratch.pointer, b, h) }
            }
        }
    }
}

/// Row t (0 ..< rows, global position firstRow + t) of a [rows, columns] score block becomes
/// softmax over columns 0 ... firstRow + t (`softmaxRow`), and zeros after.
@inline(__always)
func causalSoftmaxBlock(_ scores: UnsafeMutablePointer<Float>, rows: Int, columns: Int, firstRow: Int) {
    for t in 0..<rows {
        let row = scores + t * columns
        let valid = firstRow + t + 1
        softmaxRow(row, count: valid)
        for j in valid..<columns { row[j] = 0 }
    }
}

/// Softmax, in place, of `count` (≥ 1) scores: one pass for the maximum, one for exp and the sum
/// (16 lanes, summed in a fixed order), one to normalise.
@inline(__always)
func softmaxRow(_ row: UnsafeMutablePointer<Float>, count: Int) {
    typealias V = FastMath.Vector
    let full = count & ~15
    let tail = count - full
    var maxima = V(repeating: -.infinity)
    var j = 0
    while j < full {
        maxima = FastMath.maximum(maxima, FastMath.load(row + j))
        j += 16
    }
    if tail > 0 { maxima = FastMath.maximum(maxima, FastMath.loadPartial(row + full, count: tail, fill: -.infinity)) }
    let maximum = V(repeating: maxima.max())
    var sums = V()
    j = 0
    while j < full {
        let e = FastMath.exp(FastMath.load(row + j) - maximum)
        FastMath.store(e, row + j)
        sums += e
        j += 16
    }
    if tail > 0 {
        var e = FastMath.exp(FastMath.loadPartial(row + full, count: tail, fill: 0) - maximum)
        for lane in tail..<16 { e[lane] = 0 }
        FastMath.storePartial(e, row + full, count: tail)
        sums += e
    }
    let inverse = 1 / sums.sum()
    for j in 0..<count { row[j] *= inverse }
}

/// Backward of `attentionForward` from dy [B, T, H·d]: writes dq (post-RoPE) and adds into dk, dv,
/// which must start zeroed (query heads sharing a key/value head add to the same columns).
/// Each thread's scratch holds one row block, attentionBlockSize · T floats: dP, then dS in place.
func attentionBackward(
    dQuery: UnsafeMutablePointer<Float>, dKey: UnsafeMutablePointer<Float>, dValue: UnsafeMutablePointer<Float>,
    dOutput: UnsafePointer<Float>,
    query: UnsafePointer<Float>, key: UnsafePointer<Float>, value: UnsafePointer<Float>, probabilities: UnsafePointer<Float>,
    batch: Int, length: Int, heads: Int, keyValueHeads: Int, headSize: Int
) {
    let (queryWidth, keyWidth) = (heads * headSize, keyValueHeads * headSize)
    let group = heads / keyValueHeads
    let scale = 1 / Float(headSize).squareRoot()
    let packedSize = causalPackedSize(length: length)
    let scratchSize = Swift.min(attentionBlockSize, length) * length
    forEachHeadGroup(batch: batch, heads: heads, keyValueHeads: keyValueHeads, partScratch: scratchSize) { scratch, b, h in
        let queryOffset = b * length * queryWidth + h * headSize
        let keyOffset = b * length * keyWidth + (h / group) * headSize
        var p = probabilities + (b * heads + h) * packedSize
        var r0 = 0
        while r0 < length {
            let rows = Swift.min(attentionBlockSize, length - r0)
            let columns = r0 + rows
            let dy = dOutput + queryOffset + r0 * queryWidth
            // dP_i = dy_i v[0 ..< columns]ᵀ, [rows, columns]
            BLAS.gemm(transposeA: false, transposeB: true, m: rows, n: columns, k: headSize,
                      a: dy, lda: queryWidth, b: value + keyOffset, ldb: keyWidth, beta: 0, c: scratch, ldc: columns)
            // dv[0 ..< columns] += P_iᵀ dy_i
            BLAS.gemm(transposeA: true, transposeB: false, m: columns, n: headSize, k: rows,
                      a: p, lda: columns, b: dy, ldb: queryWidth, beta: 1, c: dValue + keyOffset, ldc: keyWidth)
            // dS = P ⊙ (dP − Σ_j P dP), in place of dP; P is zero above the diagonal, so dS is too.
            softmaxBackwardBlock(scratch, p, count: rows * columns, rows: rows, columns: columns)
            // dq_i = scale · dS_i k[0 ..< columns], dk[0 ..< columns] += scale · dS_iᵀ q_i
            BLAS.gemm(transposeA: false, transposeB: false, m: rows, n: headSize, k: columns,
                      alpha: scale, a: scratch, lda: columns, b: key + keyOffset, ldb: keyWidth,
                      beta: 0, c: dQuery + queryOffset + r0 * queryWidth, ldc: queryWidth)
            BLAS.gemm(transposeA: true, transposeB: false, m: columns, n: headSize, k: rows,
                      alpha: scale, a: scratch, lda: columns, b: query + queryOffset + r0 * queryWidth, ldb: queryWidth,
                      beta: 1, c: dKey + keyOffset, ldc: keyWidth)
            p += rows * columns
            r0 += rows
        }
    }
}

/// Row by row of a [rows, columns] block: dS = P ⊙ (dP − P·dP), written over dP.
@inline(__always)
func softmaxBackwardBlock(_ gradient: UnsafeMutablePointer<Float>, _ probabilities: UnsafePointer<Float>,
                          count: Int, rows: Int, columns: Int) {
    typealias V = FastMath.Vector
    let full = columns & ~15
    for t in 0..<rows {
        let (pRow, dRow) = (probabilities + t * columns, gradient + t * columns)
        var dots = V()
        var j = 0
        while j < full {
            dots += FastMath.load(pRow + j) * FastMath.load(dRow + j)
            j += 16
        }
        var dot = dots.sum()
        for j in full..<columns { dot += pRow[j] * dRow[j] }
        for j in 0..<columns { dRow[j] = pRow[j] * (dRow[j] - dot) }
    }
}
