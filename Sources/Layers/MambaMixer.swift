import Foundation
import Tensor

/// The sizes and options of one Mamba mixer, named after Hugging Face `MambaConfig`'s fields.
public struct MambaMixerConfiguration: Equatable, Sendable {
    /// How `dt_proj.weight` starts (`time_step_init_scheme`).
    public enum TimeStepInitScheme: String, Sendable {
        /// Uniform in ±time_step_rank^−½ · time_step_scale.
        case random
        /// Every element time_step_rank^−½ · time_step_scale.
        case constant
    }

    /// `hidden_size`.
    public var hiddenSize: Int
    /// `intermediate_size` (expand · hidden_size).
    public var intermediateSize: Int
    /// `state_size`.
    public var stateSize: Int
    /// `conv_kernel`.
    public var convKernel: Int
    /// `time_step_rank` (⌈hidden_size / 16⌉ for "auto").
    public var timeStepRank: Int
    /// `use_bias`: biases on `in_proj` and `out_proj`.
    public var useBias: Bool
    /// `use_conv_bias`.
    public var useConvBias: Bool
    /// `time_step_scale`, `time_step_min`, `time_step_max`, `time_step_floor`, `time_step_init_scheme`: how
    /// `dt_proj` starts.
    public var timeStepScale: Double
    public var timeStepMin: Double
    public var timeStepMax: Double
    public var timeStepFloor: Double
    public var timeStepInitScheme: TimeStepInitScheme
    /// `num_hidden_layers` when `rescale_prenorm_residual` is set (out_proj.weight starts divided by its square
    /// root), nil otherwise.
    public var rescaledResidualLayers: Int?

    /// Hugging Face's defaults for everything but the sizes given.
    public init(hiddenSize: Int, intermediateSize: Int? = nil, stateSize: Int = 16, convKernel: Int = 4, timeStepRank: Int? = nil,
                useBias: Bool = false, useConvBias: Bool = true, timeStepScale: Double = 1, timeStepMin: Double = 0.001,
                timeStepMax: Double = 0.1, timeStepFloor: Double = 1e-4, timeStepInitScheme: TimeStepInitScheme = .random,
                rescaledResidualLayers: Int? = nil) {
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize ?? 2 * hiddenSize
        self.stateSize = stateSize
        self.convKernel = convKernel
        self.timeStepRank = timeStepRank ?? (hiddenSize + 15) / 16
        self.useBias = useBias
        self.useConvBias = useConvBias
        self.timeStepScale = timeStepScale
        self.timeStepMin = timeStepMin
        self.timeStepMax = timeStepMax
        self.timeStepFloor = timeStepFloor
        self.timeStepInitScheme = timeStepInitScheme
        self.rescaledResidualLayers = rescaledResidualLayers
    }

    /// A `TwoBPError` naming the first value no mixer can be built from (config values come from users).
    public func validate() throws {
        let sizes = [("hidden_size", hiddenSize), ("intermediate_size", intermediateSize), ("state_size", stateSize),
                     ("conv_kernel", convKernel), ("time_step_rank", timeStepRank), ("num_hidden_layers", rescaledResidualLayers ?? 1)]
        for (name, value) in sizes where value < 1 {
            throw TwoBPError("Mamba: \(name) must be at least 1, got \(value)")
        }
        guard timeStepMin > 0, timeStepMin <= timeStepMax, timeStepScale > 0, timeStepFloor >= 0 else {
            throw TwoBPError("Mamba: need 0 < time_step_min ≤ time_step_max, time_step_scale > 0 and time_step_floor ≥ 0, got "
                             + "min \(timeStepMin), max \(timeStepMax), scale \(timeStepScale), floor \(timeStepFloor)")
        }
    }
}

/// The Mamba mixer, Hugging Face `MambaMixer` on its sequential (non-CUDA) path `slow_forward`, on
/// [batch, length, hidden] (E = intermediate, N = state, r = time_step_rank):
///
///     x, z    = split(in_proj(u))                   [rows, 2E] → x, z [rows, E] (column halves, never copied)
///     x       = silu(conv1d(x))                     depthwise causal, see `CausalDepthwiseConv1d`
///     Δ, B, C = split(x_proj(x))                    [rows, r + 2N]
///     δ       = softplus(dt_proj(Δ))                [rows, E] (dt_proj has a bias)
///     y       = scan(x, δ, A = −exp(A_log), B, C) + D ⊙ x, gated by silu(z)    see `SelectiveScan`
///     out     = out_proj(y)                         [rows, hidden]
///
/// The forward keeps, per micro-batch, in_proj's output (x for the convolution's weight gradient, z for the
/// gate), the convolution's output before SiLU, x_proj's and dt_proj's outputs (B, C and δ): 4E + r + 2N
/// floats a token besides what the projections keep (their inputs). The scan's states are not kept; p1
/// recomputes them (see `SelectiveScan`).
///
/// p1 runs out_proj's p1, the scan's backward (writing dz into the z half of in_proj's output gradient and dB, dC
/// into x_proj's), dt_proj's p1 (dΔ into x_proj's gradient), x_proj's p1 (added to the scan's dx), SiLU's and the
/// convolution's backward (dx into the x half) and in_proj's p1.
///
/// p2 accumulates every parameter's gradient. The four projections' weights and biases (dt_proj's bias, the Δ bias,
/// included) come from their stashed inputs and output gradients, so under `.allPending` each is one GEMM over the
/// concatenated micro-batches. A_log's gradient needs every step's dh_t and h_{t−1}, which exist only inside the
/// scan's reverse sweep, and D's is a by-product of that sweep; the convolution's weight and bias gradients are a
/// by-product of its p1 pass. p1 reduces those three into per-micro-batch partials ([E, N], [E], [K + 1, E]) and p2
/// adds them. Deferring their reductions instead would mean rerunning the whole backward scan in p2 for A_log, and
/// keeping dy, the convolution's input and its output gradient (3E floats a token, +50% on the 2H + 5E + 2r + 2N
/// the projections stash) alive from p1 to p2 for D and the convolution.
///
/// Measured at hidden 384 (E 768, N 16, r 24, 4 × 256 tokens; one core, release): forward 99 ms, p1 120 ms, p2 66 ms
/// with the Prescott GEMM kernel OpenBLAS picks on this machine, 41 / 60 / 15 ms with its SkylakeX kernel. p1 is its
/// four input-gradient GEMMs (62 | 14 ms), the scan's backward (42 ms) and the convolution's (1.4 ms); p2 is four
/// weight GEMMs and nothing else of note. The partials cost p1 ~2.3 ms (dA_log 1.5, the convolution's weight 0.7,
/// biases and D ~0.1), 2–4% of it.
public final class MambaMixer: Layer {
    public let configuration: MambaMixerConfiguration
    /// hidden → 2 · intermediate (x, then the gate z).
    public let inProj: Linear
    public let conv1d: CausalDepthwiseConv1d
    /// intermediate → time_step_rank + 2 · state (Δ, B, C), no bias.
    public let xProj: Linear
    /// time_step_rank → intermediate, with the Δ bias.
    public let dtProj: Linear
    /// A_log [intermediate, state], A = −exp(A_log): log(1 … state) in every channel at the start (S4D-real), no
    /// weight decay.
    public let aLog: Parameter
    /// D [intermediate], the skip connection's weight: 1 at the start, no weight decay.
    public let d: Parameter
    /// intermediate → hidden.
    public let outProj: Linear
    public let parameters: [Parameter]

    private struct Saved {
        /// in_proj's output [rows, 2E]: x, then z.
        let projected: Tensor
        /// conv1d's output before SiLU [rows, E].
        let convolved: Tensor
        /// silu(convolved) [rows, E]: the scan's x (the same tensor x_proj keeps).
        let activated: Tensor
        /// x_proj's output [rows, r + 2N]: Δ, B, C.
        let selection: Tensor
        /// dt_proj's output, δ before softplus [rows, E].
        let timeStep: Tensor
        let batch: Int
        let length: Int
    }

    private var saved = MicroBatchStore<Saved>("MambaMixer forward state")
    /// p1's partials of dA_log [E, N] and dD [E].
    private var pending = MicroBatchStore<(aLog: Tensor, d: Tensor)>("MambaMixer p2 stash")

    /// Every parameter says how Hugging Face's `_init_weights` starts it: in_proj and x_proj normal at the model's
    /// scale; conv1d and out_proj Kaiming-uniform (bound 1 / √fan-in, out_proj's divided by √num_hidden_layers under
    /// rescale_prenorm_residual); dt_proj's weight by `time_step_init_scheme` and its bias the inverse softplus of
    /// δ = exp(U(log time_step_min, log time_step_max)) floored at time_step_floor; other biases 0.
    public init(_ configuration: MambaMixerConfiguration) throws {
        try configuration.validate()
        self.configuration = configuration
        let (hidden, inner, states, rank) = (configuration.hiddenSize, configuration.intermediateSize,
                                             configuration.stateSize, configuration.timeStepRank)
        inProj = Linear(inputSize: hidden, outputSize: 2 * inner, bias: configuration.useBias)
        conv1d = CausalDepthwiseConv1d(channels: inner, kernelSize: configuration.convKernel, bias: configuration.useConvBias)
        xProj = Linear(inputSize: inner, outputSize: rank + 2 * states)
        let timeStepBound = Float(pow(Double(rank), -0.5) * configuration.timeStepScale)
        let timeStepWeight: Parameter.Initialization = switch configuration.timeStepInitScheme {
        case .random: .custom { tensor, generator in tensor.fillUniform(bound: timeStepBound, using: &generator) }
        case .constant: .constant(timeStepBound)
        }
        let (low, high, floor) = (log(configuration.timeStepMin), log(configuration.timeStepMax), configuration.timeStepFloor)
        dtProj = Linear(inputSize: rank, outputSize: inner, bias: true, weightInitialization: timeStepWeight,
                        biasInitialization: .custom { tensor, generator in
            for i in 0..<tensor.count {
                let delta = Swift.max(exp(generator.nextUniform() * (high - low) + low), floor)
                tensor[i] = Float(delta + log(-expm1(-delta)))  // softplus⁻¹(δ)
            }
        })
        aLog = Parameter(name: "A_log", shape: [inner, states], initialization: .custom { tensor, _ in fillLogRates(tensor) },
                         decays: false)
        d = Parameter(name: "D", shape: [inner], initialization: .constant(1), decays: false)
        fillLogRates(aLog.value)  // the deterministic starts hold before any initialiser runs, as RMSNorm's gain does
        d.value.buffer.update(repeating: 1)
        let outBound = 1 / Float(inner).squareRoot() / Float(configuration.rescaledResidualLayers ?? 1).squareRoot()
        outProj = Linear(inputSize: inner, outputSize: hidden, bias: configuration.useBias,
                         weightInitialization: .custom { tensor, generator in tensor.fillUniform(bound: outBound, using: &generator) })
        parameters = prefixedParameters([("in_proj", inProj), ("conv1d", conv1d), ("x_proj", xProj), ("dt_proj", dtProj)])
            + [aLog, d] + prefixedParameters([("out_proj", outProj)])
    }

    public var hiddenSize: Int { configuration.hiddenSize }
    public var intermediateSize: Int { configuration.intermediateSize }
    public var stateSize: Int { configuration.stateSize }
    public var timeStepRank: Int { configuration.timeStepRank }

    public func forward(_ input: Tensor, microBatch: Int) throws -> Tensor {
        let (batch, length) = try checkedSequenceShape(of: input, size: hiddenSize, layer: "MambaMixer")
        let rows = batch * length
        let projected = try inProj.forward(input, microBatch: microBatch).reshaped([rows, 2 * intermediateSize])
        let convolved = try conv1d.forward(xHalf(projected), batch: batch, length: length, microBatch: microBatch)
        let activated = Tensor(uninitialized: convolved.shape)
        siluForward(activated.pointer, convolved.pointer, count: convolved.count)
        let selection = try xProj.forward(activated, microBatch: microBatch)
        let timeStep = try dtProj.forward(ColumnBlock(selection, width: timeStepRank).contiguous(), microBatch: microBatch)
        let gated = Tensor(uninitialized: [rows, intermediateSize])
        SelectiveScan.forward(scanInputs(projected: projected, activated: activated, selection: selection, timeStep: timeStep,
                                         batch: batch, length: length), into: ColumnBlock(gated))
        let output = try outProj.forward(gated, microBatch: microBatch)
        try saved.put(Saved(projected: projected, convolved: convolved, activated: activated, selection: selection,
                            timeStep: timeStep, batch: batch, length: length), for: microBatch)
        return output.reshaped([batch, length, hiddenSize])
    }

    /// The forward computation alone, saving nothing (for inference).
    public func apply(_ input: Tensor) throws -> Tensor {
        let (batch, length) = try checkedSequenceShape(of: input, size: hiddenSize, layer: "MambaMixer")
        let rows = batch * length
        let projected = inProj.apply(input).reshaped([rows, 2 * intermediateSize])
        let activated = conv1d.convolve(xHalf(projected), batch: batch, length: length)
        siluForward(activated.pointer, activated.pointer, count: activated.count)
        let selection = xProj.apply(activated)
        let timeStep = dtProj.apply(ColumnBlock(selection, width: timeStepRank).contiguous())
        let gated = Tensor(uninitialized: [rows, intermediateSize])
        SelectiveScan.forward(scanInputs(projected: projected, activated: activated, selection: selection, timeStep: timeStep,
                                         batch: batch, length: length), into: ColumnBlock(gated))
        return outProj.apply(gated).reshaped([batch, length, hiddenSize])
    }

    public func backwardInput(_ outputGradient: Tensor, microBatch: Int) throws -> Tensor {
        let state = try saved.take(microBatch)
        let rows = state.batch * state.length
        guard try checkedRowCount(of: outputGradient, size: hiddenSize, layer: "MambaMixer p1") == rows else {
            throw TwoBPError("MambaMixer p1: dy \(outputGradient.shape) for a [\(state.batch), \(state.length), \(hiddenSize)] output")
        }
        let (inner, states, rank) = (intermediateSize, stateSize, timeStepRank)
        let gatedGradient = try outProj.backwardInput(outputGradient, microBatch: microBatch)
        // Every element of these is written: the x half by conv1d's p1, the z half and dB, dC by the scan, dΔ by
        // dt_proj's p1.
        let projectedGradient = Tensor(uninitialized: [rows, 2 * inner])
        let selectionGradient = Tensor(uninitialized: [rows, rank + 2 * states])
        let activatedGradient = Tensor(uninitialized: [rows, inner])
        let timeStepGradient = Tensor(uninitialized: [rows, inner])
        let partials = (aLog: Tensor(zeros: [inner, states]), d: Tensor(zeros: [inner]))
        let inputs = scanInputs(projected: state.projected, activated: state.activated, selection: state.selection,
                                timeStep: state.timeStep, batch: state.batch, length: state.length)
        SelectiveScan.backward(inputs, outputGradient: ColumnBlock(gatedGradient), into: SelectiveScan.Gradients(
            x: ColumnBlock(activatedGradient), timeStep: ColumnBlock(timeStepGradient),
            b: ColumnBlock(selectionGradient, offset: rank, width: states),
            c: ColumnBlock(selectionGradient, offset: rank + states, width: states),
            gate: ColumnBlock(projectedGradient, offset: inner, width: inner), aLog: partials.aLog, d: partials.d))
        ColumnBlock(selectionGradient, width: rank).assign(try dtProj.backwardInput(timeStepGradient, microBatch: microBatch))
        try xProj.backwardInput(selectionGradient, microBatch: microBatch, accumulatingInto: activatedGradient)
        siluBackward(activatedGradient.pointer, state.convolved.pointer, count: activatedGradient.count)
        try conv1d.backwardInput(activatedGradient, microBatch: microBatch, into: xHalf(projectedGradient))
        let inputGradient = try inProj.backwardInput(projectedGradient, microBatch: microBatch)
        try pending.put(partials, for: microBatch)
        return inputGradient
    }

    /// The projections' p2 (one GEMM each under `.allPending`), the convolution's and the scan's partials.
    public func backwardWeight(_ work: WeightGradientWork) throws {
        for partial in try pending.take(work) {
            aLog.gradient.add(partial.aLog)
            d.gradient.add(partial.d)
        }
        for layer in [inProj, conv1d, xProj, dtProj, outProj] as [Layer] { try layer.backwardWeight(work) }
    }

    /// The x half of in_proj's output (or of its gradient) [rows, 2E].
    private func xHalf(_ projected: Tensor) -> ColumnBlock {
        ColumnBlock(projected, width: intermediateSize)
    }

    /// The scan's operands, in place in the projections' outputs.
    private func scanInputs(projected: Tensor, activated: Tensor, selection: Tensor, timeStep: Tensor,
                            batch: Int, length: Int) -> SelectiveScan.Inputs {
        let (inner, states, rank) = (intermediateSize, stateSize, timeStepRank)
        return SelectiveScan.Inputs(
            x: ColumnBlock(activated), timeStep: ColumnBlock(timeStep),
            b: ColumnBlock(selection, offset: rank, width: states), c: ColumnBlock(selection, offset: rank + states, width: states),
            gate: ColumnBlock(projected, offset: inner, width: inner), aLog: aLog.value, d: d.value, batch: batch, length: length)
    }
}

/// A_log's start [intermediate, state]: log(1 … state) in every row (S4D-real: A = −(1 … state)).
private func fillLogRates(_ tensor: Tensor) {
    let states = tensor.columnCount
    for i in 0..<tensor.count { tensor[i] = log(Float(i % states + 1)) }
}

/// out = v ⊙ σ(v), 16 lanes at a time (out may alias v).
func siluForward(_ out: UnsafeMutablePointer<Float>, _ v: UnsafePointer<Float>, count: Int) {
    for i in stride(from: 0, to: count, by: FastMath.Vector.scalarCount) {
        let lanes = Swift.min(FastMath.Vector.scalarCount, count - i)
        let value = FastMath.load(v + i, count: lanes)
        FastMath.store(value * sigmoid(value), out + i, count: lanes)
    }
}

/// gradient ⊙= silu'(v) = σ(v) (1 + v (1 − σ(v))), in place.
func siluBackward(_ gradient: UnsafeMutablePointer<Float>, _ v: UnsafePointer<Float>, count: Int) {
    for i in stride(from: 0, to: count, by: FastMath.Vector.scalarCount) {
        let lanes = Swift.min(FastMath.Vector.scalarCount, count - i)
        let value = FastMath.load(v + i, count: lanes)
        let sigma = sigmoid(value)
        FastMath.store(FastMath.load(gradient + i, count: lanes) * sigma * (1 + value * (1 - sigma)), gradient + i, count: lanes)
    }
}
