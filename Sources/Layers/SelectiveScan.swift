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
/// [length + 1, states, 16] history (with the dB, dC lanes below ~1 MiB at length 256, 16 states: L2-resident) and forms
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
///
/// Measured (release, one core of this 2.3 GHz Xeon, 768 channels, 16 states, 4 × 256 rows, thread CPU time): forward
/// 26 ms, 2.1 ns per channel·state·step (~15 SSE instructions, mostly `FastMath.exp`, at ~3 a cycle: compute-bound;
/// its operands stream at 0.5 GB/s); backward 42 ms, the recomputing forward sweep about 26 of it and the reverse
/// sweep 16, of which accumulating dA_log takes ~1.5. Built for x86-64-v4 (AVX-512) the same code takes 13 and 24 ms.
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
        let kernel = ScanKernel(inputs)
        let state = Tensor(uninitialized: [inputs.states, lanes])
        let decays = Tensor(uninitialized: [inputs.states, lanes])  // written, never read: the forward keeps no history
        let steps = Tensor(uninitialized: [3, inputs.length, lanes])  // δ, δ ⊙ x, y of a tile
        let (delta, deltaX, y) = (steps.pointer, steps.pointer + inputs.length * lanes, steps.pointer + 2 * inputs.length * lanes)
        for tile in kernel.tiles {
            kernel.discretise(tile, delta: delta, deltaX: deltaX)
            state.zero()
            kernel.recur(tile, delta: delta, deltaX: deltaX, states: state.pointer, stateStride: 0, decays: decays.pointer,
                         decayStride: 0, y: y)
            kernel.gate(tile, y: y, into: Rows(output))
        }
    }

    /// dL/d(every input) from dL/d out [rows, channels]; see the type's comment for the two sweeps.
    public static func backward(_ inputs: Inputs, outputGradient: ColumnBlock, into gradients: Gradients) {
        let (channels, states, length) = (inputs.channels, inputs.states, inputs.length)
        inputs.checkShapes([(outputGradient, channels), (gradients.x, channels), (gradients.timeStep, channels),
                            (gradients.b, states), (gradients.c, states), (gradients.gate, channels)])
        precondition(gradients.aLog.shape == inputs.aLog.shape && gradients.d.count == channels, "selective scan: gradient shapes")
        let kernel = ScanKernel(inputs)
        let stateBlock = states * lanes
        // h_t at block t + 1 (block 0 is h_{−1} = 0) and exp(δ_t A) at block t, each [states, 16].
        let stateHistory = Tensor(zeros: [length + 1, states, lanes])
        let decayHistory = Tensor(uninitialized: [length, states, lanes])
        let steps = Tensor(uninitialized: [4, length, lanes])  // δ, δ ⊙ x, y then dy, dδ of a tile
        let (delta, deltaX) = (steps.pointer, steps.pointer + length * lanes)
        let (dy, dDelta) = (steps.pointer + 2 * length * lanes, steps.pointer + 3 * length * lanes)
        let carry = Tensor(uninitialized: [states, lanes])
        let channelSums = Tensor(uninitialized: [length, states, 2, lanes])  // dB and dC lanes of one sequence
        let rateGradients = Tensor(zeros: [states, kernel.rateStride])  // Σ dh ⊙ h_{t−1} ⊙ exp(δA) ⊙ δ, as `rates`
        let skipGradients = Tensor(zeros: [kernel.rateStride])
        let (db, dc) = (Rows(gradients.b), Rows(gradients.c))
        for tile in kernel.tiles {
            if tile.first == 0 { channelSums.zero() }
            kernel.discretise(tile, delta: delta, deltaX: deltaX)
            kernel.recur(tile, delta: delta, deltaX: deltaX, states: stateHistory.pointer, stateStride: stateBlock,
                         decays: decayHistory.pointer, decayStride: stateBlock, y: dy)
            kernel.gateBackward(tile, y: dy, outputGradient: Rows(outputGradient), gateGradient: Rows(gradients.gate))
            carry.zero()
            kernel.reverse(tile, delta: delta, deltaX: deltaX, dy: dy, states: stateHistory.pointer, decays: decayHistory.pointer,
                           carry: carry.pointer, channelSums: channelSums.pointer, rateGradients: rateGradients.pointer,
                           skipGradients: skipGradients.pointer, dDelta: dDelta, xGradient: Rows(gradients.x))
            kernel.softplusBackward(tile, dDelta: dDelta, into: Rows(gradients.timeStep))
            guard tile.first + lanes >= channels else { continue }
            // The sequence's last tile: sum dB and dC across lanes.
            for step in 0..<length {
                let row = tile.firstRow + step
                for n in 0..<states {
                    let sum = channelSums.pointer + (step * states + n) * 2 * lanes
                    db[row][n] = FastMath.load(sum).sum()
                    dc[row][n] = FastMath.load(sum + lanes).sum()
                }
            }
        }
        // dA_log = dA ⊙ A (A = −exp(A_log)), back to [channels, states].
        let (dALog, dD, a, da) = (gradients.aLog.pointer, gradients.d.pointer, kernel.rates.pointer, rateGradients.pointer)
        for channel in 0..<channels {
            for n in 0..<states {
                dALog[channel * states + n] += da[n * kernel.rateStride + channel] * a[n * kernel.rateStride + channel]
            }
            dD[channel] += skipGradients.pointer[channel]
        }
    }
}

/// 16 channels of one sequence: rows `firstRow ..< firstRow + length`, channels `first ..< first + count`.
private struct Tile {
    let firstRow: Int
    let first: Int
    let count: Int
}

/// The scan's passes over one tile, on pointers hoisted out of the loops. Each pass is its own small function
/// (`@inline(never)`): in one large kernel the optimiser stopped inlining `FastMath.exp` and the vector helpers,
/// whose calls pass 64-byte vectors through memory (measured ~20% slower).
/// Per-step vectors of a tile live in [length, 16] scratch rows (`delta`, `deltaX`, ...).
private struct ScanKernel {
    typealias Vector = FastMath.Vector
    let lanes = SelectiveScan.lanes
    let (channels, states, length, batch): (Int, Int, Int, Int)
    let (x, timeStep, b, c, gate): (Rows, Rows, Rows, Rows, Rows)
    let skip: UnsafeMutablePointer<Float>
    /// A = −exp(A_log) transposed to [states, rateStride] (channels rounded up to 16, padding lanes 0), so a
    /// tile's rates of state n are one vector load.
    let rates: Tensor
    let rateStride: Int

    init(_ inputs: SelectiveScan.Inputs) {
        (channels, states, length, batch) = (inputs.channels, inputs.states, inputs.length, inputs.batch)
        (x, timeStep, b, c, gate) = (Rows(inputs.x), Rows(inputs.timeStep), Rows(inputs.b), Rows(inputs.c), Rows(inputs.gate))
        skip = inputs.d.pointer
        rateStride = (channels + SelectiveScan.lanes - 1) / SelectiveScan.lanes * SelectiveScan.lanes
        rates = Tensor(zeros: [states, rateStride])
        for channel in 0..<channels {
            for n in 0..<states { rates.pointer[n * rateStride + channel] = -Foundation.exp(inputs.aLog.pointer[channel * states + n]) }
        }
    }

    /// Sequence-major, then channel tiles.
    var tiles: [Tile] {
        (0..<batch).flatMap { sequence in
            Swift.stride(from: 0, to: channels, by: lanes).map { Tile(firstRow: sequence * length, first: $0, count: Swift.min(lanes, channels - $0)) }
        }
    }

    @inline(__always) func load(_ rows: Rows, _ tile: Tile, _ step: Int) -> Vector {
        FastMath.load(rows[tile.firstRow + step] + tile.first, count: tile.count)
    }

    @inline(__always) func store(_ value: Vector, _ rows: Rows, _ tile: Tile, _ step: Int) {
        FastMath.store(value, rows[tile.firstRow + step] + tile.first, count: tile.count)
    }

    /// δ_t = softplus(timeStep_t) and δ_t ⊙ x_t.
    @inline(never) func discretise(_ tile: Tile, delta: UnsafeMutablePointer<Float>, deltaX: UnsafeMutablePointer<Float>) {
        for step in 0..<length {
            let value = softplus(load(timeStep, tile, step))
            FastMath.store(value, delta + step * lanes)
            FastMath.store(value * load(x, tile, step), deltaX + step * lanes)
        }
    }

    /// h_t = exp(δ_t A) ⊙ h_{t−1} + (δ_t x_t) B_t and y_t = h_t C_t + D ⊙ x_t. h_{t−1} is read at
    /// `states + step · stateStride` and h_t written at `states + (step + 1) · stateStride`, exp(δ_t A) at
    /// `decays + step · decayStride` (each [states, 16]); stride 0 keeps one state in place.
    @inline(never) func recur(_ tile: Tile, delta: UnsafePointer<Float>, deltaX: UnsafePointer<Float>,
                              states h: UnsafeMutablePointer<Float>, stateStride: Int,
                              decays: UnsafeMutablePointer<Float>, decayStride: Int, y: UnsafeMutablePointer<Float>) {
        let dSkip = FastMath.load(skip + tile.first, count: tile.count)
        let a = rates.pointer + tile.first
        for step in 0..<length {
            let (stepDelta, stepDeltaX) = (FastMath.load(delta + step * lanes), FastMath.load(deltaX + step * lanes))
            let (bt, ct) = (b[tile.firstRow + step], c[tile.firstRow + step])
            let (previous, current, decay) = (h + step * stateStride, h + (step + 1) * stateStride, decays + step * decayStride)
            var output = dSkip * load(x, tile, step)
            for n in 0..<states {
                let an = FastMath.exp(stepDelta * FastMath.load(a + n * rateStride))
                let hn = an * FastMath.load(previous + n * lanes) + stepDeltaX * bt[n]
                FastMath.store(an, decay + n * lanes)
                FastMath.store(hn, current + n * lanes)
                output += hn * ct[n]
            }
            FastMath.store(output, y + step * lanes)
        }
    }

    /// out_t = y_t ⊙ silu(z_t).
    @inline(never) func gate(_ tile: Tile, y: UnsafePointer<Float>, into output: Rows) {
        for step in 0..<length {
            let z = load(gate, tile, step)
            store(FastMath.load(y + step * lanes) * z * sigmoid(z), output, tile, step)
        }
    }

    /// dz_t = d out_t ⊙ y_t ⊙ silu'(z_t) into `gateGradient`; dy_t = d out_t ⊙ silu(z_t) over y.
    @inline(never) func gateBackward(_ tile: Tile, y: UnsafeMutablePointer<Float>, outputGradient: Rows, gateGradient: Rows) {
        for step in 0..<length {
            let (z, gradient) = (load(gate, tile, step), load(outputGradient, tile, step))
            let sigma = sigmoid(z)
            store(gradient * FastMath.load(y + step * lanes) * sigma * (1 + z * (1 - sigma)), gateGradient, tile, step)
            FastMath.store(gradient * z * sigma, y + step * lanes)
        }
    }

    /// The reverse sweep from the recorded states and decays: dh_t = C_t dy_t + carry, carry = exp(δ_t A) ⊙ dh_t;
    /// writes dx_t, leaves dδ_t (before softplus' derivative) in `dDelta`, adds the tile's dB, dC lanes into
    /// `channelSums` [length, states, 2, 16] and its dA (transposed) and dD into `rateGradients`, `skipGradients`.
    @inline(never) func reverse(_ tile: Tile, delta: UnsafePointer<Float>, deltaX: UnsafePointer<Float>, dy: UnsafePointer<Float>,
                                states h: UnsafePointer<Float>, decays: UnsafePointer<Float>, carry: UnsafeMutablePointer<Float>,
                                channelSums: UnsafeMutablePointer<Float>, rateGradients: UnsafeMutablePointer<Float>,
                                skipGradients: UnsafeMutablePointer<Float>, dDelta: UnsafeMutablePointer<Float>, xGradient: Rows) {
        let stateBlock = states * lanes
        let dSkip = FastMath.load(skip + tile.first, count: tile.count)
        let (a, da) = (rates.pointer + tile.first, rateGradients + tile.first)
        var skipSum = Vector(repeating: 0)
        for step in (0..<length).reversed() {
            let (stepDelta, stepDeltaX, stepDy) = (FastMath.load(delta + step * lanes), FastMath.load(deltaX + step * lanes),
                                                   FastMath.load(dy + step * lanes))
            let (bt, ct) = (b[tile.firstRow + step], c[tile.firstRow + step])
            let (previous, current, decay) = (h + step * stateBlock, h + (step + 1) * stateBlock, decays + step * stateBlock)
            let sums = channelSums + step * states * 2 * lanes
            var (deltaGradient, dhB) = (Vector(repeating: 0), Vector(repeating: 0))
            for n in 0..<states {
                let dh = stepDy * ct[n] + FastMath.load(carry + n * lanes)
                let an = FastMath.load(decay + n * lanes)
                let q = dh * FastMath.load(previous + n * lanes) * an
                deltaGradient += q * FastMath.load(a + n * rateStride)
                FastMath.store(FastMath.load(da + n * rateStride) + q * stepDelta, da + n * rateStride)
                dhB += dh * bt[n]
                let sum = sums + n * 2 * lanes
                FastMath.store(FastMath.load(sum) + dh * stepDeltaX, sum)
                FastMath.store(FastMath.load(sum + lanes) + stepDy * FastMath.load(current + n * lanes), sum + lanes)
                FastMath.store(an * dh, carry + n * lanes)
            }
            let xt = load(x, tile, step)
            store(dhB * stepDelta + stepDy * dSkip, xGradient, tile, step)
            FastMath.store(deltaGradient + dhB * xt, dDelta + step * lanes)
            skipSum += stepDy * xt
        }
        FastMath.store(FastMath.load(skipGradients + tile.first) + skipSum, skipGradients + tile.first)
    }

    /// d timeStep_t = dδ_t ⊙ σ(timeStep_t).
    @inline(never) func softplusBackward(_ tile: Tile, dDelta: UnsafePointer<Float>, into timeStepGradient: Rows) {
        for step in 0..<length {
            store(FastMath.load(dDelta + step * lanes) * sigmoid(load(timeStep, tile, step)), timeStepGradient, tile, step)
        }
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
