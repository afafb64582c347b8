import Foundation
import Tensor

/// The selective scan of Mamba (Gu & Dao 2023, arXiv 2312.00752, Algorithm 2) with its skip connection and gate,
/// as Hugging Face `MambaMixer.slow_forward` computes it from the SSM parameters to the gated output, on `batch`
/// sequences of `length` steps (rows are (sequence, step), sequence-major), `channels` (intermediate_size) wide
/// with `states` (state_size) states per channel:
///
///     δ     = softplus(timeStep)                               [rows, channels]  (torch's: above 20 it is the input)
///     A     = −exp(A_log)                                      [channels, states]
///     h_t   = exp(δ_t ⊙ A) ⊙ h_{t−1} + (δ_t ⊙ x_t) ⊗ B_t        [channels, states], h_{−1} = 0
///     y_t   = h_t C_t + D ⊙ x_t                                [channels]
///     out_t = y_t ⊙ silu(z_t)
///
/// Both kernels run sequentially over time and are vectorised over 16 channels (contiguous in every row; B_t[n]
/// and C_t[n] are scalars broadcast over them) with an inner loop over the states, so each channel's own work
/// (softplus, skip, gate) runs once per 16 lanes and the forward needs no horizontal sum. A step allocates
/// nothing; the forward's state is a [states, 16] scratch that stays in L1.
///
/// The backward recomputes the states rather than having the forward store them (`states` times an activation).
/// For each (sequence, tile of 16 channels) a forward sweep writes h_t and exp(δ_t A) into a
/// [length + 1, states, 16] history (L2-resident: 2 × 272 KiB at length 256, 16 states) and forms
/// dz = d out ⊙ y ⊙ silu'(z) and dy = d out ⊙ silu(z); a reverse sweep then carries
/// dh_t = C_t dy_t + exp(δ_{t+1} A) ⊙ dh_{t+1} and takes
///
///     dx_t    = δ_t ⊙ (dh_t B_t) + D ⊙ dy_t
///     dδ_t    = Σ_n (dh_t ⊙ h_{t−1} ⊙ exp(δ_t A) ⊙ A)[·, n] + x_t ⊙ (dh_t B_t);   d timeStep = dδ ⊙ σ(timeStep)
///     dB_t[n] = Σ_c dh_t[c, n] δ_t[c] x_t[c],      dC_t[n] = Σ_c dy_t[c] h_t[c, n]
///     dA_log  = A ⊙ Σ_t dh_t ⊙ h_{t−1} ⊙ exp(δ_t A) ⊙ δ_t,      dD = Σ_t dy_t ⊙ x_t
///
/// dB and dC sum over channels: their lanes accumulate in a [length, states, 2, 16] buffer across a sequence's
/// tiles and are summed across lanes once per sequence. dA_log and dD are parameter gradients, but dA_log needs
/// every step's dh_t and h_{t−1}, which only the reverse sweep has (recomputing them in p2 would repeat the whole
/// backward scan): the kernel accumulates both into tensors the caller gives (the mixer's per-micro-batch partials,
/// which its p2 adds to the gradients).
///
/// `a * b + c` here is deliberately not `addingProduct`: the package compiles for baseline x86-64, where a vector
/// `addingProduct` becomes one `fmaf` call per lane (measured 20× slower).
public enum SelectiveScan {
    /// Channels handled together: one `FastMath.Vector`.
    static let lanes = FastMath.Vector.scalarCount

    /// The scan's operands; blocks may be columns of wider tensors (the mixer's `in_proj` and `x_proj` outputs).
    public struct Inputs {
        /// x [rows, channels]: the activated convolution output.
        public var x: ColumnBlock
        /// Δ before softplus, bias included (`dt_proj`'s output) [rows, channels].
        public var timeStep: ColumnBlock
        /// B [rows, states].
        public var b: ColumnBlock
        /// C [rows, states].
        public var c: ColumnBlock
        /// The gate z [rows, channels].
        public var gate: ColumnBlock
        /// A_log [channels, states].
        public var aLog: Tensor
        /// D [channels].
        public var d: Tensor
        public var batch: Int
        public var length: Int

        public init(x: ColumnBlock, timeStep: ColumnBlock, b: ColumnBlock, c: ColumnBlock, gate: ColumnBlock,
                    aLog: Tensor, d: Tensor, batch: Int, length: Int) {
            (self.x, self.timeStep, self.b, self.c, self.gate) = (x, timeStep, b, c, gate)
            (self.aLog, self.d, self.batch, self.length) = (aLog, d, batch, length)
        }

        public var channels: Int { d.count }
        public var states: Int { aLog.columnCount }

        /// Internal invariants: every block has one row per (sequence, step) and its expected width.
        func checkShapes(_ blocks: [(ColumnBlock, width: Int)]) {
            precondition(aLog.rowCount == channels, "selective scan: A_log \(aLog.shape) for D \(d.shape)")
            let expected = [(x, channels), (timeStep, channels), (b, states), (c, states), (gate, channels)] + blocks
            for (block, width) in expected {
                precondition(block.rowCount == batch * length && block.width == width,
                             "selective scan: a \(block.rowCount)x\(block.width) block for \(batch)x\(length) rows of \(width)")
            }
        }
    }

    /// Where the backward writes dL/d(each input); `aLog` [channels, states] and `d` [channels] are accumulated into,
    /// the blocks overwritten.
    public struct Gradients {
        public var x: ColumnBlock
        public var timeStep: ColumnBlock
        public var b: ColumnBlock
        public var c: ColumnBlock
        public var gate: ColumnBlock
        public var aLog: Tensor
        public var d: Tensor

        public init(x: ColumnBlock, timeStep: ColumnBlock, b: ColumnBlock, c: ColumnBlock, gate: ColumnBlock, aLog: Tensor, d: Tensor) {
            (self.x, self.timeStep, self.b, self.c, self.gate, self.aLog, self.d) = (x, timeStep, b, c, gate, aLog, d)
        }
    }

    /// out [rows, channels] = the gated scan of `inputs`.
    public static func forward(_ inputs: Inputs, into output: ColumnBlock) {
        inputs.checkShapes([(output, inputs.channels)])
        let (channels, states, length) = (inputs.channels, inputs.states, inputs.length)
        let rates = transposedRates(inputs.aLog)
        let stride = rates.columnCount
        let state = Tensor(uninitialized: [states, lanes])
        let (a, h, skip) = (rates.pointer, state.pointer, inputs.d.pointer)
        let (x, timeStep, b, c, gate, out) = (Rows(inputs.x), Rows(inputs.timeStep), Rows(inputs.b), Rows(inputs.c),
                                              Rows(inputs.gate), Rows(output))
        for sequence in 0..<inputs.batch {
            for first in Swift.stride(from: 0, to: channels, by: lanes) {
                let count = Swift.min(lanes, channels - first)
                h.update(repeating: 0, count: states * lanes)
                let dSkip = FastMath.load(skip + first, count: count)
                for step in 0..<length {
                    let row = sequence * length + step
                    let xt = FastMath.load(x[row] + first, count: count)
                    let delta = softplus(FastMath.load(timeStep[row] + first, count: count))
                    let deltaX = delta * xt
                    var y = dSkip * xt
                    let (bt, ct) = (b[row], c[row])
                    for n in 0..<states {
                        let decay = FastMath.exp(delta * FastMath.load(a + n * stride + first))
                        let hn = decay * FastMath.load(h + n * lanes) + deltaX * bt[n]
                        FastMath.store(hn, h + n * lanes)
                        y += hn * ct[n]
                    }
                    let z = FastMath.load(gate[row] + first, count: count)
                    FastMath.store(y * z * sigmoid(z), out[row] + first, count: count)
                }
            }
        }
    }

    /// dL/d(every input) from dL/d out [rows, channels]; see the type's comment for the two sweeps.
    public static func backward(_ inputs: Inputs, outputGradient: ColumnBlock, into gradients: Gradients) {
        let (channels, states, length) = (inputs.channels, inputs.states, inputs.length)
        inputs.checkShapes([(outputGradient, channels), (gradients.x, channels), (gradients.timeStep, channels),
                            (gradients.b, states), (gradients.c, states), (gradients.gate, channels)])
        precondition(gradients.aLog.shape == inputs.aLog.shape && gradients.d.count == channels, "selective scan: gradient shapes")
        let rates = transposedRates(inputs.aLog)
        let stride = rates.columnCount
        let rateGradients = Tensor(zeros: [states, stride])  // Σ dh ⊙ h_{t−1} ⊙ exp(δA) ⊙ δ, transposed like `rates`
        let skipGradients = Tensor(zeros: [stride])
        // h_t at row t + 1 (row 0 is h_{−1} = 0) and exp(δ_t A) at row t, each [states, lanes].
        let stateHistory = Tensor(zeros: [length + 1, states, lanes])
        let decayHistory = Tensor(uninitialized: [length, states, lanes])
        let stepValues = Tensor(uninitialized: [length, 2, lanes])  // δ_t and dy_t of the tile
        let carry = Tensor(uninitialized: [states, lanes])  // exp(δ_{t+1} A) ⊙ dh_{t+1}
        let channelSums = Tensor(uninitialized: [length, states, 2, lanes])  // dB and dC lanes of one sequence
        let (a, da, dSkipSum, skip) = (rates.pointer, rateGradients.pointer, skipGradients.pointer, inputs.d.pointer)
        let (hs, decays, values, carried, sums) = (stateHistory.pointer, decayHistory.pointer, stepValues.pointer,
                                                    carry.pointer, channelSums.pointer)
        let (x, timeStep, b, c, gate, dOut) = (Rows(inputs.x), Rows(inputs.timeStep), Rows(inputs.b), Rows(inputs.c),
                                               Rows(inputs.gate), Rows(outputGradient))
        let (dx, dTimeStep, db, dc, dGate) = (Rows(gradients.x), Rows(gradients.timeStep), Rows(gradients.b),
                                              Rows(gradients.c), Rows(gradients.gate))
        let stateBlock = states * lanes
        for sequence in 0..<inputs.batch {
            channelSums.zero()
            for first in Swift.stride(from: 0, to: channels, by: lanes) {
                let count = Swift.min(lanes, channels - first)
                let dSkip = FastMath.load(skip + first, count: count)
                // Forward sweep: the states and decays of this tile, dz and dy.
                for step in 0..<length {
                    let row = sequence * length + step
                    let xt = FastMath.load(x[row] + first, count: count)
                    let delta = softplus(FastMath.load(timeStep[row] + first, count: count))
                    let deltaX = delta * xt
                    var y = dSkip * xt
                    let (bt, ct) = (b[row], c[row])
                    let (previous, current, decay) = (hs + step * stateBlock, hs + (step + 1) * stateBlock, decays + step * stateBlock)
                    for n in 0..<states {
                        let an = FastMath.exp(delta * FastMath.load(a + n * stride + first))
                        let hn = an * FastMath.load(previous + n * lanes) + deltaX * bt[n]
                        FastMath.store(an, decay + n * lanes)
                        FastMath.store(hn, current + n * lanes)
                        y += hn * ct[n]
                    }
                    let z = FastMath.load(gate[row] + first, count: count)
                    let gradient = FastMath.load(dOut[row] + first, count: count)
                    let sigma = sigmoid(z)
                    FastMath.store(gradient * y * sigma * (1 + z * (1 - sigma)), dGate[row] + first, count: count)
                    FastMath.store(delta, values + step * 2 * lanes)
                    FastMath.store(gradient * z * sigma, values + (step * 2 + 1) * lanes)
                }
                // Reverse sweep.
                carried.update(repeating: 0, count: stateBlock)
                var dSkipSumTile = FastMath.Vector(repeating: 0)
                for step in (0..<length).reversed() {
                    let row = sequence * length + step
                    let xt = FastMath.load(x[row] + first, count: count)
                    let delta = FastMath.load(values + step * 2 * lanes)
                    let dy = FastMath.load(values + (step * 2 + 1) * lanes)
                    let deltaX = delta * xt
                    var dDelta = FastMath.Vector(repeating: 0)
                    var dhB = FastMath.Vector(repeating: 0)
                    let (bt, ct) = (b[row], c[row])
                    let (previous, current, decay) = (hs + step * stateBlock, hs + (step + 1) * stateBlock, decays + step * stateBlock)
                    let stepSums = sums + step * states * 2 * lanes
                    for n in 0..<states {
                        let dh = dy * ct[n] + FastMath.load(carried + n * lanes)
                        let an = FastMath.load(decay + n * lanes)
                        let q = dh * FastMath.load(previous + n * lanes) * an
                        dDelta += q * FastMath.load(a + n * stride + first)
                        FastMath.store(FastMath.load(da + n * stride + first) + q * delta, da + n * stride + first)
                        dhB += dh * bt[n]
                        let sum = stepSums + n * 2 * lanes
                        FastMath.store(FastMath.load(sum) + dh * deltaX, sum)
                        FastMath.store(FastMath.load(sum + lanes) + dy * FastMath.load(current + n * lanes), sum + lanes)
                        FastMath.store(an * dh, carried + n * lanes)
                    }
                    FastMath.store(dhB * delta + dy * dSkip, dx[row] + first, count: count)
                    dDelta += dhB * xt
                    dSkipSumTile += dy * xt
                    let p = FastMath.load(timeStep[row] + first, count: count)
                    FastMath.store(dDelta * sigmoid(p), dTimeStep[row] + first, count: count)
                }
                FastMath.store(FastMath.load(dSkipSum + first) + dSkipSumTile, dSkipSum + first)
            }
            for step in 0..<length {
                let row = sequence * length + step
                for n in 0..<states {
                    let sum = sums + (step * states + n) * 2 * lanes
                    db[row][n] = FastMath.load(sum).sum()
                    dc[row][n] = FastMath.load(sum + lanes).sum()
                }
            }
        }
        // dA_log = dA ⊙ A (A = −exp(A_log)), back to [channels, states].
        let (dALog, dD) = (gradients.aLog.pointer, gradients.d.pointer)
        for channel in 0..<channels {
            for n in 0..<states {
                dALog[channel * states + n] += da[n * stride + channel] * a[n * stride + channel]
            }
            dD[channel] += dSkipSum[channel]
        }
    }

    /// A = −exp(A_log) transposed to [states, channels rounded up to 16], the padding lanes 0, so a tile of
    /// 16 channels loads one state's rates as one vector.
    private static func transposedRates(_ aLog: Tensor) -> Tensor {
        let (channels, states) = (aLog.rowCount, aLog.columnCount)
        let stride = (channels + lanes - 1) / lanes * lanes
        let rates = Tensor(zeros: [states, stride])
        for channel in 0..<channels {
            for n in 0..<states { rates.pointer[n * stride + channel] = -Foundation.exp(aLog.pointer[channel * states + n]) }
        }
        return rates
    }
}

/// A column block's pointer and row stride, hoisted out of the hot loops; `rows[r]` is row r's first element.
struct Rows {
    let base: UnsafeMutablePointer<Float>
    let stride: Int

    init(_ block: ColumnBlock) {
        base = block.pointer
        stride = block.rowStride
    }

    @inline(__always) subscript(row: Int) -> UnsafeMutablePointer<Float> { base + row * stride }
}

/// σ(v) = 1 / (1 + e^−v), 16 lanes.
@inline(__always)
func sigmoid(_ v: FastMath.Vector) -> FastMath.Vector {
    1 / (1 + FastMath.exp(-v))
}

/// softplus(p) = log(1 + e^p) = max(p, 0) + log1p(e^−|p|), 16 lanes; p itself above 20, as torch's `softplus`.
/// log1p(u) = 2 atanh(s) with s = u / (2 + u) ∈ (0, 1/3], by its odd series to s¹³ (truncation < 2e-8 relative),
/// which keeps full relative precision for the small δ Mamba starts from (softplus(−7) ≈ 9e-4).
@inline(__always)
func softplus(_ p: FastMath.Vector) -> FastMath.Vector {
    let negativeMagnitude = p.replacing(with: -p, where: p .> 0)
    let u = FastMath.exp(negativeMagnitude)
    let s = u / (2 + u)
    let s2 = s * s
    var series = s2 * (1 / 13) + 1 / 11
    series = series * s2 + 1 / 9
    series = series * s2 + 1 / 7
    series = series * s2 + 1 / 5
    series = series * s2 + 1 / 3
    series = series * s2 + 1
    let result = FastMath.maximum(p, FastMath.Vector(repeating: 0)) + 2 * s * series
    return result.replacing(with: p, where: p .> 20)
}
