import Layers
import Tensor

/// A contiguous range of a ResNet's pipeline units: unit 0 is the stem, units 1...B the bottleneck
/// blocks, unit B + 1 the head (average pool, `fc`, cross-entropy and the correct count).
///
/// Activations between chunks are channels-last images whose shape changes with the blocks
/// (`ResNetConfig.activationShape`). Parameters and buffers carry torchvision's names (`conv1.weight`,
/// `bn1.running_mean`, `layer1.0.conv1.weight`, `layer2.0.downsample.0.weight`, `fc.weight`, …) and
/// start as torchvision's ResNet does (the layers' own initialisation: Kaiming normal with fan_out for
/// the convolutions, batch-norm gain 1 and bias 0, `nn.Linear`'s default for fc), each from (seed,
/// name), so any partition starts from the same weights as the whole model. Batch norms train on the
/// statistics of each micro-batch and update their running statistics once per forward.
public final class ResNetChunk: ModelChunk {
    public let config: ResNetConfig
    public let units: Range<Int>
    /// Present when the chunk holds unit 0.
    public let stem: ResNetStem?
    /// The bottlenecks of units `units ∩ 1...B`, in order.
    public let blocks: [Bottleneck]
    /// Present when the chunk holds unit B + 1.
    public let head: ClassifierHead?
    public let parameters: [Parameter]
    public let buffers: [Buffer]

    /// Builds and initialises units `units` of `config` (validated) from run seed `seed`.
    public init(config: ResNetConfig, units: Range<Int>, seed: UInt64) throws {
        try config.validate()
        guard !units.isEmpty, units.lowerBound >= 0, units.upperBound <= config.unitCount else {
            throw TwoBPError("units \(units.lowerBound)..<\(units.upperBound) are not a non-empty range of the \(config.unitCount) units 0..<\(config.unitCount) of a \(config.blockCount)-block ResNet")
        }
        self.config = config
        self.units = units
        var parameters: [Parameter] = []
        var buffers: [Buffer] = []
        if units.contains(0) {
            let stem = ResNetStem(inputChannels: config.numChannels, outputChannels: config.stemWidth)
            parameters += stem.parameters
            buffers += stem.buffers
            self.stem = stem
        } else {
            stem = nil
        }
        let shapes = config.blocks(sampleLength: config.imageSize)
        blocks = units.clamped(to: 1..<(config.blockCount + 1)).map { unit in
            let shape = shapes[unit - 1]
            let block = Bottleneck(inputChannels: shape.input.channels, planes: shape.planes, stride: shape.stride)
            parameters += block.parameters.map { $0.prefixed(shape.name) }
            buffers += block.buffers.map { $0.prefixed(shape.name) }
            return block
        }
        if units.contains(config.blockCount + 1) {
            let head = ClassifierHead(features: config.features, classes: config.numClasses)
            parameters += head.parameters
            self.head = head
        } else {
            head = nil
        }
        self.parameters = parameters
        self.buffers = buffers
        // Every parameter asks for its own initialisation; the model-wide scale is unused.
        ParameterInitialization.initialize(parameters, runSeed: seed, std: 0)
    }

    public var isFirst: Bool { stem != nil }
    public var isLast: Bool { head != nil }

    public func inputShape(for batch: any MicroBatch) throws -> [Int]? {
        let batch = try images(batch)
        return isFirst ? nil : config.activationShape(enteringUnit: units.lowerBound, samples: batch.batchSize, sampleLength: batch.side)
    }

    public func outputShape(for batch: any MicroBatch) throws -> [Int]? {
        let batch = try images(batch)
        return isLast ? nil : config.activationShape(enteringUnit: units.upperBound, samples: batch.batchSize, sampleLength: batch.side)
    }

    public func forward(_ input: Tensor?, batch: any MicroBatch, microBatch: Int) throws -> ChunkOutput {
        let batch = try images(batch)
        // Refuse bad labels before any layer saves state for this micro-batch.
        try checkLabels(batch)
        var x = try stem.map { try $0.forward(firstInput(input, batch), microBatch: microBatch) } ?? checkedInput(input, batch)
        for block in blocks { x = try block.forward(x, microBatch: microBatch) }
        if let head {
            let (loss, correct) = try head.forward(x, labels: batch.labels, lossWeight: batch.lossWeight, microBatch: microBatch)
            return .loss([loss, Double(batch.lossWeight) * Double(correct)])
        }
        return .activation(x)
    }

    public func backwardInput(_ outputGradient: Tensor?, microBatch: Int) throws -> Tensor? {
        var gradient: Tensor
        if let head {
            guard outputGradient == nil else { throw TwoBPError("the last chunk's p1 starts from the loss; it takes no gradient") }
            gradient = try head.backwardInput(microBatch: microBatch)
        } else {
            guard let outputGradient else { throw TwoBPError("chunk of units \(units): p1 needs the gradient of its output") }
            gradient = outputGradient
        }
        for block in blocks.reversed() { gradient = try block.backwardInput(gradient, microBatch: microBatch) }
        if let stem {
            // The images need no gradient; the stem's p1 runs for the stash its p2 reads.
            _ = try stem.backwardInput(gradient, microBatch: microBatch)
            return nil
        }
        return gradient
    }

    public func backwardWeight(_ work: WeightGradientWork) throws {
        try head?.backwardWeight(work)
        for block in blocks.reversed() { try block.backwardWeight(work) }
        try stem?.backwardWeight(work)
    }

    public func evaluate(_ input: Tensor?, batch: any MicroBatch) throws -> ChunkOutput {
        let batch = try images(batch)
        try checkLabels(batch)
        var x = try stem.map { try $0.apply(firstInput(input, batch)) } ?? checkedInput(input, batch)
        for block in blocks { x = try block.apply(x) }
        if let head {
            let (loss, correct) = try head.evaluate(x, labels: batch.labels, lossWeight: batch.lossWeight)
            return .loss([loss, Double(batch.lossWeight) * Double(correct)])
        }
        return .activation(x)
    }

    /// Logits [batch, classes] of a whole model's chunk, saving nothing (eval mode: running statistics).
    public func logits(_ batch: ImageBatch) throws -> Tensor {
        guard let stem, let head else { throw TwoBPError("logits need a chunk that holds the whole model") }
        var x = try stem.apply(firstInput(nil, batch))
        for block in blocks { x = try block.apply(x) }
        return try head.logits(x)
    }

    // MARK: Helpers

    private func images(_ batch: any MicroBatch) throws -> ImageBatch {
        try batch.expecting(ImageBatch.self, by: "a resnet model")
    }

    private func checkLabels(_ batch: ImageBatch) throws {
        guard isLast else { return }
        if let bad = batch.labels.first(where: { $0 < 0 || Int($0) >= config.numClasses }) {
            throw TwoBPError("label \(bad) is outside the \(config.numClasses) classes of the model")
        }
    }

    /// The batch's images for the stem, which takes no activation.
    private func firstInput(_ input: Tensor?, _ batch: ImageBatch) throws -> Tensor {
        guard input == nil else { throw TwoBPError("the first chunk reads the images; it takes no input activation") }
        try config.checkSampleLength(batch.side)
        guard batch.channels == config.numChannels else {
            throw TwoBPError("the model takes images of \(config.numChannels) channels, the batch has \(batch.channels)")
        }
        return batch.tensor()
    }

    private func checkedInput(_ input: Tensor?, _ batch: ImageBatch) throws -> Tensor {
        let expected = config.activationShape(enteringUnit: units.lowerBound, samples: batch.batchSize, sampleLength: batch.side)
        guard let input, input.shape == expected else {
            throw TwoBPError("chunk of units \(units): expected an input activation of shape \(expected), got \(input.map { "\($0.shape)" } ?? "none")")
        }
        return input
    }
}
