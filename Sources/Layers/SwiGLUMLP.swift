import Foundation
import Tensor

/// The gated feed-forward of LLaMa (Shazeer 2020), Hugging Face `LlamaMLP`:
/// `y = down_proj(silu(gate_proj(x)) ⊙ up_proj(x))`, silu(a) = a · σ(a); x, y [.., hiddenSize],
/// the gate and up activations [.., intermediateSize].
///
/// p1: dh = down_proj p1; d gate = dh ⊙ up ⊙ silu'(gate), d up = dh ⊙ silu(gate), written over
/// the saved gate and up buffers (forward's gate/up are dead after this); dx = gate_proj p1 + up_proj p1.
/// p2 is the three projections' p2.
public final class SwiGLUMLP: Layer {
    public let hiddenSize: Int
    public let intermediateSize: Int
    public let gateProj: Linear
    public let upProj: Linear
    public let downProj: Linear
    public let parameters: [Parameter]
    /// gate and up pre-activations [rows, intermediateSize], kept from forward for p1.
    private var saved = MicroBatchStore<(gate: Tensor, up: Tensor)>("SwiGLUMLP forward state")

    public init(hiddenSize: Int, intermediateSize: Int) {
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        gateProj = Linear(inputSize: hiddenSize, outputSize: intermediateSize)
        upProj = Linear(inputSize: hiddenSize, outputSize: intermediateSize)
        downProj = Linear(inputSize: intermediateSize, outputSize: hiddenSize)
        parameters = prefixedParameters([("gate_proj", gateProj), ("up_proj", upProj), ("down_proj", downProj)])
    }

    public func forward(_ input: Tensor, microBatch: Int) throws -> Tensor {
        _ = try checkedRowCount(of: input, size: hiddenSize, layer: "SwiGLUMLP")
        let gate = try gateProj.forward(input, microBatch: microBatch)
        let up = try upProj.forward(input, microBatch: microBatch)
        let hidden = Tensor(uninitialized: gate.shape)
        swigluForward(hidden.pointer, gate.pointer, up.pointer, count: gate.count)
        let output = try downProj.forward(hidden, microBatch: microBatch)
        try saved.put((gate, up), for: microBatch)
        return output
    }

    /// The forward computation alone, saving nothing (for inference).
    public func apply(_ input: Tensor) throws -> Tensor {
        _ = try checkedRowCount(of: input, size: hiddenSize, layer: "SwiGLUMLP")
        let gate = gateProj.apply(input)
        let up = upProj.apply(input)
        swigluForward(gate.pointer, gate.pointer, up.pointer, count: gate.count)
        return downProj.apply(gate)
    }

    public func backwardInput(_ outputGradient: Tensor, microBatch: Int) throws -> Tensor {
        let hiddenGradient = try downProj.backwardInput(outputGradient, microBatch: microBatch)
        let (gate, up) = try saved.take(microBatch)
        swigluBackward(dGate: gate.pointer, dUp: up.pointer, hiddenGradient.pointer, gate.pointer, up.pointer, count: gate.count)
        let inputGradient = try gateProj.backwardInput(gate, microBatch: microBatch)
        try upProj.backwardInput(up, microBatch: microBatch, accumulatingInto: inputGradient)
        return inputGradient
    }

    public func backwardWeight(_ work: WeightGradientWork) throws {
        for projection in [gateProj, upProj, downProj] { try projection.backwardWeight(work) }
    }
}

/// Elements in one part of an element-parallel loop, at least.
let minimumElementsPerPart = 1 << 15

/// h = silu(gate) ⊙ up (h may alias gate), 16 lanes at a time with `FastMath.exp`, in parallel.
func swigluForward(_ hidden: UnsafeMutablePointer<Float>, _ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
    Parallel.forEachPart(of: count, minimumPerPart: minimumElementsPerPart) { part in
        var i = part.lowerBound
        while i < part.upperBound {
            let lanes = Swift.min(16, part.upperBound - i)
            let a = FastMath.load(gate + i, count: lanes)
            let u = FastMath.load(up + i, count: lanes)
            let h = a / (1 + FastMath.exp(-a)) * u
            FastMath.store(h, hidden + i, count: lanes)
            i += 16
        }
    }
}

/// d gate = dh ⊙ up ⊙ σ(a)(1 + a(1 − σ(a))), d up = dh ⊙ a σ(a); the outputs may alias gate and up.
/// In parallel.
func swigluBackward(
    dGate: UnsafeMutablePointer<Float>, dUp: UnsafeMutablePointer<Float>,
    _ dHidden: UnsafePointer<Float>, _ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, count: Int
) {
    Parallel.forEachPart(of: count, minimumPerPart: minimumElementsPerPart) { part in
        var i = part.lowerBound
        while i < part.upperBound {
            let lanes = Swift.min(16, part.upperBound - i)
            let a = FastMath.load(gate + i, count: lanes)
            let u = FastMath.load(up + i, count: lanes)
            let dh = FastMath.load(dHidden + i, count: lanes)
            let sigmoid = 1 / (1 + FastMath.exp(-a))
            let dg = dh * u * sigmoid * (1 + a * (1 - sigmoid))
            let du = dh * a * sigmoid
            FastMath.store(dg, dGate + i, count: lanes)
            FastMath.store(du, dUp + i, count: lanes)
            i += 16
        }
    }
}
