import Layers
import Tensor

/// What a chunk's forward produces: the activation for the next chunk, or, on the last chunk,
/// the loss terms the model's config names (`ModelConfig.lossTerms`), each a Σ of per-sample or
/// per-token weight × term over the micro-batch, so the terms of a step are sums over its micro-batches.
public enum ChunkOutput {
    case activation(Tensor)
    case loss([Double])
}

/// A contiguous range of a model's units: what one pipeline stage (or one interleaved chunk) runs.
///
/// The chunk is the unit the pipeline executes; its p1 and p2 are those of its layers, in reverse
/// order for p1. Parameters and buffers carry their full checkpoint names. Chunks take any
/// `MicroBatch` and refuse, with a `TwoBPError`, one of another family.
public protocol ModelChunk: AnyObject {
    var parameters: [Parameter] { get }
    /// Non-trained state (BatchNorm's running statistics), saved and restored with the weights.
    var buffers: [Buffer] { get }
    /// Whether this chunk reads the inputs (its forward takes no activation, its p1 returns none).
    var isFirst: Bool { get }
    /// Whether this chunk ends in the loss (its forward returns `.loss`, its p1 takes no gradient).
    var isLast: Bool { get }

    /// The activation this chunk takes for `batch` (nil on the first chunk): what its stage receives.
    func inputShape(for batch: any MicroBatch) throws -> [Int]?
    /// The activation this chunk gives for `batch` (nil on the last chunk): the shape of the
    /// gradient its stage receives back.
    func outputShape(for batch: any MicroBatch) throws -> [Int]?

    func forward(_ input: Tensor?, batch: any MicroBatch, microBatch: Int) throws -> ChunkOutput
    /// p1 through the whole chunk; nil on the first chunk, whose inputs have no gradient.
    func backwardInput(_ outputGradient: Tensor?, microBatch: Int) throws -> Tensor?
    /// p2 of every layer in the chunk.
    func backwardWeight(_ work: WeightGradientWork) throws
    /// The forward as evaluation runs it: nothing saved, no dropout, BatchNorm on its running statistics.
    func evaluate(_ input: Tensor?, batch: any MicroBatch) throws -> ChunkOutput
}

extension ModelChunk {
    public var buffers: [Buffer] { [] }

    public func zeroGradients() {
        for parameter in parameters { parameter.zeroGradient() }
    }

    /// The loss terms of a whole model's chunk (first and last at once) on `batch`, saving nothing.
    public func evaluateLoss(_ batch: any MicroBatch) throws -> [Double] {
        guard isFirst, isLast, case .loss(let terms) = try evaluate(nil, batch: batch) else {
            throw TwoBPError("evaluating a loss needs a chunk that holds the whole model")
        }
        return terms
    }
}

/// Parameters that several units of a model share (tied weights), built once per rank: chunks
/// of one rank that hold the same tied unit get the same `Parameter`, so its gradient
/// accumulates in one place and the optimizer sees it once. Copies on other ranks are made
/// equal after every step by summing their gradients (see `TiedParameter`).
public final class SharedParameters {
    private var byName: [String: Parameter] = [:]

    public init() {}

    /// The parameter with checkpoint name `name`, made by `make` the first time it is asked for.
    public func parameter(named name: String, _ make: () -> Parameter) -> Parameter {
        if let existing = byName[name] { return existing }
        let made = make()
        byName[name] = made
        return made
    }
}
