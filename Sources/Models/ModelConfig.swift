import Foundation
import Layers
import Tensor

/// What a pipeline stage costs per sample for each of a model's units: FLOPs of forward, p1 and
/// p2, parameters, and the float32 elements kept from forward to p1 (activations) and from p1 to
/// p2 (the 2BP stash). Partitioning balances `forward`; planning and memory estimates use all of it.
public struct UnitCost: Sendable, Equatable {
    public var forward: Double
    public var backwardInput: Double
    public var backwardWeight: Double
    public var parameters: Int
    public var activationElements: Double
    public var stashElements: Double

    public init(forward: Double, backwardInput: Double, backwardWeight: Double, parameters: Int,
                activationElements: Double, stashElements: Double) {
        self.forward = forward
        self.backwardInput = backwardInput
        self.backwardWeight = backwardWeight
        self.parameters = parameters
        self.activationElements = activationElements
        self.stashElements = stashElements
    }

    /// Forward + p1 + p2 FLOPs.
    public var training: Double { forward + backwardInput + backwardWeight }
}

/// A parameter that several units hold (tied weights: an embedding and the output projection
/// reading it), under one checkpoint name. On one rank the units share one `Parameter`
/// (`SharedParameters`); across ranks each holder keeps a copy, their gradients are summed after
/// p2, the norm counts the copy of the lowest rank once, every copy takes the same optimizer step,
/// and a checkpoint stores it once.
public struct TiedParameter: Sendable, Equatable {
    public var name: String
    /// The units (in `0..<unitCount`) that use it.
    public var units: [Int]

    public init(name: String, units: [Int]) {
        self.name = name
        self.units = units
    }
}

/// The kind of data a family trains on; the data layer maps each to its source.
public enum DataKind: String, Sendable {
    /// Bytes of a text file as tokens, next-byte targets (`TokenBatch`).
    case causalText
    /// Sentence pairs of a text file for BERT pre-training: masked bytes and next-sentence labels (`PreTrainingBatch`).
    case sentencePairs
    /// Square images with class labels (`ImageBatch`).
    case images
}

/// A model family's configuration, decoded from a Hugging Face / torchvision style `config.json`
/// and dispatched on its `model_type` by `ModelRegistry`.
///
/// The model is a sequence of units: unit 0 reads the inputs (an embedding, a convolutional stem),
/// units 1 ..< unitCount − 1 are the repeated blocks, the last unit ends in the loss. A pipeline
/// stage is a contiguous range of units; everything above `Models` (pipeline, trainer,
/// checkpoints, planner, benchmarks) speaks only this protocol.
public protocol ModelConfig: Sendable {
    /// The `model_type` of its `config.json` (`llama`, `bert`, `mamba`, `resnet`).
    static var modelType: String { get }
    /// Configurations known by name (`llama-tiny`, …), in the order help texts list them.
    static var named: [(name: String, config: Self)] { get }
    /// Decodes and validates a `config.json`; errors are `TwoBPError`s naming the field.
    static func decode(_ data: Data) throws -> Self

    /// The `config.json` bytes that the library the family follows loads.
    func jsonData() throws -> Data
    /// Throws a `TwoBPError` naming the first field TwoBP cannot build a model from.
    func validate() throws
    /// Whether `other` is the same configuration (for resuming).
    func isSame(as other: any ModelConfig) -> Bool

    var unitCount: Int { get }
    /// The sample length a run uses unless told otherwise: tokens per sequence, or an image's side.
    var defaultSampleLength: Int { get }
    /// Throws unless samples of `length` fit the model.
    func checkSampleLength(_ length: Int) throws
    /// Per-sample cost of each unit (`unitCount` entries) for samples of `sampleLength`.
    func unitCosts(sampleLength: Int) -> [UnitCost]
    /// The shape of the activation entering unit `unit` (≥ 1) for `samples` samples of `sampleLength`.
    func activationShape(enteringUnit unit: Int, samples: Int, sampleLength: Int) -> [Int]
    /// Parameters held by several units.
    var tiedParameters: [TiedParameter] { get }
    /// Names of the loss terms the last unit reports; the first is the loss that is optimised.
    var lossTerms: [String] { get }
    /// What the model trains on.
    var dataKind: DataKind { get }

    /// Builds units `units`, initialised from run seed `seed` (each parameter from (seed, name),
    /// so every partition starts from the same weights); tied parameters come from `shared`.
    func makeChunk(units: Range<Int>, seed: UInt64, shared: SharedParameters) throws -> ModelChunk
    /// A batch of random inputs and labels weighted as one step of `samples` samples: for
    /// verification, profiling and benchmarks that need no data file.
    func randomBatch(samples: Int, sampleLength: Int, seed: UInt64) -> any MicroBatch
}

extension ModelConfig where Self: Equatable {
    public func isSame(as other: any ModelConfig) -> Bool { (other as? Self) == self }
}

extension ModelConfig {
    /// The whole model as one chunk (one device, the reference a pipeline must match, evaluation).
    public func makeModel(seed: UInt64) throws -> ModelChunk {
        try makeChunk(units: 0..<unitCount, seed: seed, shared: SharedParameters())
    }

    /// Training FLOPs (forward + p1 + p2) per sample of the whole model.
    public func trainingFLOPsPerSample(sampleLength: Int) -> Double {
        unitCosts(sampleLength: sampleLength).reduce(0) { $0 + $1.training }
    }
}
