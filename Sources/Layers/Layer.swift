import Tensor

/// Which deferred weight-gradient work backward-p2 should do.
public enum WeightGradientWork: Equatable, Sendable {
    /// The pending p2 of one micro-batch (the one whose p1 ran earlier).
    case microBatch(Int)
    /// Every pending micro-batch at once, concatenated along the rows so that
    /// each weight's gradient is one large GEMM (the paper's end-of-step p2).
    case allPending
}

/// A layer whose backward pass is split in two (2BP, arXiv 2405.18047):
///
/// - `backwardInput` (p1) turns dL/dy into dL/dx, the gradient the previous
///   pipeline stage is waiting for, and stashes what p2 will need (x and dL/dy);
/// - `backwardWeight` (p2) turns the stash into dL/dW, accumulated into each
///   parameter's `gradient`, and frees the stash.
///
/// State is kept per micro-batch so that forwards, p1 and p2 of different
/// micro-batches may interleave in any order a valid schedule allows.
/// Running p1 and then p2 of the same micro-batch is the fused backward.
public protocol Layer: AnyObject {
    /// Parameters in a fixed order, named relative to this layer.
    var parameters: [Parameter] { get }

    /// Non-trained state a checkpoint carries (BatchNorm's running statistics), named relative
    /// to this layer; most layers have none.
    var buffers: [Buffer] { get }

    /// y = f(x); saves what backward needs under `microBatch`.
    func forward(_ input: Tensor, microBatch: Int) throws -> Tensor

    /// p1: dL/dx from dL/dy; consumes the forward's saved state and stashes p2's inputs.
    func backwardInput(_ outputGradient: Tensor, microBatch: Int) throws -> Tensor

    /// p2: accumulates dL/dW for the selected stashed micro-batches and frees their stash.
    func backwardWeight(_ work: WeightGradientWork) throws
}

extension Layer {
    public var buffers: [Buffer] { [] }

    public func zeroGradients() {
        for parameter in parameters { parameter.zeroGradient() }
    }
}

/// The rows of an activation whose last dimension must be `size`, or a `TwoBPError` naming `layer`.
/// Activations arrive from other ranks, so a wrong shape is reported, not trapped.
func checkedRowCount(of input: Tensor, size: Int, layer: String) throws -> Int {
    guard input.columnCount == size, !input.shape.isEmpty else {
        throw TwoBPError("\(layer): expected rows of \(size) values, got shape \(input.shape)")
    }
    return input.rowCount
}

/// (batch, length) of a [batch, length, size] sequence activation, or a `TwoBPError` naming `layer`.
func checkedSequenceShape(of input: Tensor, size: Int, layer: String) throws -> (batch: Int, length: Int) {
    guard input.shape.count == 3, input.shape[2] == size else {
        throw TwoBPError("\(layer): expected [batch, length, \(size)], got \(input.shape)")
    }
    return (input.shape[0], input.shape[1])
}

/// (batch, height, width) of a channels-last [batch, height, width, channels] image activation,
/// or a `TwoBPError` naming `layer`.
func checkedImageShape(of input: Tensor, channels: Int, layer: String) throws -> (batch: Int, height: Int, width: Int) {
    guard input.shape.count == 4, input.shape[3] == channels else {
        throw TwoBPError("\(layer): expected [batch, height, width, \(channels)], got \(input.shape)")
    }
    return (input.shape[0], input.shape[1], input.shape[2])
}

/// The parameters of named sublayers, each renamed `name.parameter` as in a PyTorch module tree.
func prefixedParameters(_ parts: [(name: String, layer: Layer)]) -> [Parameter] {
    parts.flatMap { part in part.layer.parameters.map { $0.prefixed(part.name) } }
}

/// The buffers of named sublayers, each renamed `name.buffer` as in a PyTorch module tree.
func prefixedBuffers(_ parts: [(name: String, layer: Layer)]) -> [Buffer] {
    parts.flatMap { part in part.layer.buffers.map { $0.prefixed(part.name) } }
}
