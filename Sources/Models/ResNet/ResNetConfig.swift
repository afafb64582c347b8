import Foundation
import Layers
import Tensor

/// The shape of a torchvision ResNet with bottleneck blocks (V1.5, `torchvision.models.resnet`),
/// read from and written as a `config.json` whose keys name torchvision's `ResNet` arguments
/// (`layers`, `num_classes`) plus what torchvision fixes and TwoBP lets vary: the planes of each
/// stage (`widths`, torchvision's 64, 128, 256, 512; the stem has `widths[0]` channels, as
/// torchvision's `inplanes` = 64), the input's channels and its side.
///
/// The model is a sequence of pipeline units: unit 0 is the stem (`conv1`, `bn1`, ReLU, `maxpool`),
/// units 1...B the bottleneck blocks in order (`layer1.0`, `layer1.1`, …, the first block of every
/// stage after the first with stride 2), unit B + 1 the head (global average pool, `fc`, softmax
/// cross-entropy). The activation entering a unit is [samples, side, side, channels] with the side
/// halved (rounded up) by the stem's convolution and pool and by each stride-2 block. Samples are
/// square images; their length is the side in pixels.
public struct ResNetConfig: ModelConfig, Codable, Equatable, Sendable {
    /// Bottleneck blocks per stage (torchvision's `layers`; ResNet-50 is [3, 4, 6, 3]). torchvision
    /// names at most four stages, `layer1` … `layer4`.
    public var layers: [Int]
    /// Planes (the 1×1 and 3×3 convolutions' width) of each stage; a stage outputs 4× as many channels.
    public var widths: [Int]
    public var numClasses: Int
    /// Channels of the input images (3 for RGB, 1 for grey).
    public var numChannels: Int
    /// The images' height and width that runs use unless told otherwise.
    public var imageSize: Int

    public static let modelType = "resnet"
    /// BatchNorm2d's defaults, as torchvision's ResNet leaves them.
    public static let batchNormEps: Float = 1e-5
    public static let batchNormMomentum: Float = 0.1
    /// The sides TwoBP accepts: enough for ImageNet's 224 and well beyond, small enough that no index overflows.
    public static let largestImageSize = 4096

    public init(layers: [Int], widths: [Int]? = nil, numClasses: Int = 1000, numChannels: Int = 3, imageSize: Int = 224) {
        self.layers = layers
        self.widths = widths ?? layers.indices.map { 64 << $0 }
        self.numClasses = numClasses
        self.numChannels = numChannels
        self.imageSize = imageSize
    }

    /// Bottleneck blocks in all.
    public var blockCount: Int { layers.reduce(0, +) }
    /// Stem, one unit per bottleneck, head.
    public var unitCount: Int { blockCount + 2 }
    /// Channels leaving the stem.
    public var stemWidth: Int { widths[0] }
    /// Channels entering the head.
    public var features: Int { widths[widths.count - 1] * Bottleneck.expansion }

    // MARK: Named configurations

    public static let named: [(name: String, config: ResNetConfig)] = [
        // Tests and the digits: 8 blocks in two stages (so every schedule fits 4 ranks), 16 × 16 grey images
        // (the digits doubled), whose last stage still has 2 × 2 pixels, so a batch norm of one image is defined.
        ("resnet-tiny", ResNetConfig(layers: [4, 4], widths: [8, 16], numClasses: 10, numChannels: 1, imageSize: 16)),
        // The 2-stage benchmark: ResNet-18's block count in bottlenecks at three quarters of torchvision's width, on 224 × 224 RGB
        // images, so that a step of 16 images costs about what a step of llama-small's 16 sequences does. The digits
        // train it at a smaller side (--seq-len 64).
        ("resnet-small", ResNetConfig(layers: [2, 2, 2, 2], widths: [48, 96, 192, 384], numClasses: 10, numChannels: 3, imageSize: 224)),
        // The paper's ResNet-152, for planning.
        ("resnet-152", ResNetConfig(layers: [3, 8, 36, 3])),
    ]

    public static func decode(_ data: Data) throws -> ResNetConfig {
        try JSONDecoder().decode(ResNetConfig.self, from: data)
    }

    /// Throws a `TwoBPError` naming the first field that TwoBP cannot build a model from.
    public func validate() throws {
        guard (1...4).contains(layers.count) else {
            throw TwoBPError("layers must list 1 to 4 stages (torchvision's layer1 … layer4), got \(layers.count)")
        }
        if let bad = layers.first(where: { $0 < 1 }) { throw TwoBPError("layers must be positive block counts, got \(bad) in \(layers)") }
        guard widths.count == layers.count else {
            throw TwoBPError("widths lists \(widths.count) stages but layers \(layers.count)")
        }
        if let bad = widths.first(where: { $0 < 1 }) { throw TwoBPError("widths must be positive, got \(bad) in \(widths)") }
        for (key, value) in [("num_classes", numClasses), ("num_channels", numChannels)] where value < 1 {
            throw TwoBPError("\(key) must be positive, got \(value)")
        }
        guard numClasses <= Int(Int32.max) else { throw TwoBPError("num_classes \(numClasses) does not fit 32-bit labels") }
        try checkSampleLength(imageSize)
    }

    // MARK: ModelConfig

    public var defaultSampleLength: Int { imageSize }

    public func checkSampleLength(_ length: Int) throws {
        guard (1...ResNetConfig.largestImageSize).contains(length) else {
            throw TwoBPError("image size must be 1 to \(ResNetConfig.largestImageSize) pixels, got \(length)")
        }
    }

    public var tiedParameters: [TiedParameter] { [] }

    /// The mean cross-entropy, and the fraction of images whose logits' arg-max is their label.
    public var lossTerms: [String] { ["loss", "accuracy"] }

    public var dataKind: DataKind { .images }

    public func makeChunk(units: Range<Int>, seed: UInt64, shared: SharedParameters) throws -> ModelChunk {
        try ResNetChunk(config: self, units: units, seed: seed)
    }

    public func randomBatch(samples: Int, sampleLength: Int, seed: UInt64) -> any MicroBatch {
        ImageBatch.synthetic(indices: Array(0..<samples), side: sampleLength, channels: numChannels, classes: numClasses, seed: seed,
                             lossWeight: 1 / Float(samples))
    }

    public func activationShape(enteringUnit unit: Int, samples: Int, sampleLength: Int) -> [Int] {
        let shape = unit <= 1 ? stem(sampleLength: sampleLength).output : blocks(sampleLength: sampleLength)[unit - 2].output
        return [samples, shape.side, shape.side, shape.channels]
    }

    // MARK: Blocks and costs

    /// A square activation of one sample.
    public struct ImageShape: Equatable, Sendable {
        public var side: Int
        public var channels: Int
        var elements: Double { Double(side * side * channels) }
    }

    /// One bottleneck block as `_make_layer` builds it: its stage, index in the stage, stride and shapes.
    public struct Block: Equatable, Sendable {
        public var stage: Int
        public var index: Int
        public var planes: Int
        public var stride: Int
        public var input: ImageShape
        public var output: ImageShape
        /// torchvision's name: `layer<stage + 1>.<index>`.
        public var name: String { "layer\(stage + 1).\(index)" }
        public var hasDownsample: Bool { stride != 1 || input.channels != output.channels }
    }

    /// Side after a k×k window with `stride` and `padding`: ⌊(side + 2p − k) / s⌋ + 1.
    static func side(_ side: Int, kernel: Int, stride: Int, padding: Int) -> Int { (side + 2 * padding - kernel) / stride + 1 }

    /// The stem's input and output for images of `sampleLength`.
    public func stem(sampleLength: Int) -> (input: ImageShape, convolved: ImageShape, output: ImageShape) {
        let convolved = ResNetConfig.side(sampleLength, kernel: 7, stride: 2, padding: 3)
        let pooled = ResNetConfig.side(convolved, kernel: 3, stride: 2, padding: 1)
        return (ImageShape(side: sampleLength, channels: numChannels), ImageShape(side: convolved, channels: stemWidth),
                ImageShape(side: pooled, channels: stemWidth))
    }

    /// Every bottleneck block, in unit order, for images of `sampleLength`.
    public func blocks(sampleLength: Int) -> [Block] {
        var shape = stem(sampleLength: sampleLength).output
        var result: [Block] = []
        for (stage, count) in layers.enumerated() {
            for index in 0..<count {
                let stride = stage > 0 && index == 0 ? 2 : 1
                let output = ImageShape(side: ResNetConfig.side(shape.side, kernel: 3, stride: stride, padding: 1),
                                        channels: widths[stage] * Bottleneck.expansion)
                result.append(Block(stage: stage, index: index, planes: widths[stage], stride: stride, input: shape, output: output))
                shape = output
            }
        }
        return result
    }

    /// Trainable values: every convolution's weight, every batch norm's gain and bias, fc's weight and bias.
    public var parameterCount: Int { unitCosts(sampleLength: imageSize).reduce(0) { $0 + $1.parameters } }

    /// Per-sample cost of each unit for images of side `sampleLength`.
    ///
    /// FLOPs count 2 per multiply-add of the convolutions' GEMMs: k² · in · out per output pixel, once
    /// in forward, once in p1 (the transposed convolution, which the stem runs too although the image
    /// needs no gradient) and once in p2; fc likewise. Batch norms, ReLUs and pools are left out.
    /// Activations (kept from forward to p1) count each distinct tensor once: a block keeps its input,
    /// the three convolutions' outputs (for their batch norms), the two ReLU'd batch-norm outputs (for
    /// the next convolution), the sum after the residual add (for the last ReLU) and the downsample's
    /// convolution output. The 2BP stash is every convolution's input and output gradient (batch norms
    /// stash only two vectors per channel).
    public func unitCosts(sampleLength: Int) -> [UnitCost] {
        func convolution(_ kernel: Int, _ input: Int, _ output: Int, pixels side: Int) -> Double {
            2 * Double(kernel * kernel * input * output) * Double(side * side)
        }
        let stem = self.stem(sampleLength: sampleLength)
        let stemFLOPs = convolution(7, numChannels, stemWidth, pixels: stem.convolved.side)
        let stemCost = UnitCost(
            forward: stemFLOPs, backwardInput: stemFLOPs, backwardWeight: stemFLOPs,
            parameters: 49 * numChannels * stemWidth + 2 * stemWidth,
            activationElements: stem.input.elements + 2 * stem.convolved.elements,
            stashElements: stem.input.elements + stem.convolved.elements)
        let blockCosts = blocks(sampleLength: sampleLength).map { block -> UnitCost in
            let (p, out) = (block.planes, block.output.channels)
            let inner = ImageShape(side: block.input.side, channels: p)  // conv1's output, before the stride
            let strided = ImageShape(side: block.output.side, channels: p)  // conv2's output
            var flops = convolution(1, block.input.channels, p, pixels: inner.side) + convolution(3, p, p, pixels: strided.side)
                + convolution(1, p, out, pixels: block.output.side)
            var parameters = block.input.channels * p + 9 * p * p + p * out + 2 * (2 * p + out)
            var activations = block.input.elements + 2 * inner.elements + 2 * strided.elements + 2 * block.output.elements
            var stash = block.input.elements + 2 * inner.elements + 2 * strided.elements + block.output.elements
            if block.hasDownsample {
                flops += convolution(1, block.input.channels, out, pixels: block.output.side)
                parameters += block.input.channels * out + 2 * out
                activations += block.output.elements
                stash += block.input.elements + block.output.elements
            }
            return UnitCost(forward: flops, backwardInput: flops, backwardWeight: flops, parameters: parameters,
                            activationElements: activations, stashElements: stash)
        }
        let fc = 2 * Double(features * numClasses)
        let head = UnitCost(forward: fc, backwardInput: fc, backwardWeight: fc, parameters: features * numClasses + numClasses,
                            activationElements: Double(features + numClasses), stashElements: Double(features + numClasses))
        return [stemCost] + blockCosts + [head]
    }

    // MARK: config.json

    enum CodingKeys: String, CodingKey {
        case layers, widths, numClasses = "num_classes", numChannels = "num_channels", imageSize = "image_size"
        case architectures, modelType = "model_type", block, groups, widthPerGroup = "width_per_group"
        case zeroInitResidual = "zero_init_residual", replaceStrideWithDilation = "replace_stride_with_dilation"
    }

    /// `layers` is required; the rest take torchvision's defaults when absent (widths 64 · 2^stage,
    /// num_classes 1000, 3 channels, 224 pixels). What TwoBP does not implement (basic blocks, groups
    /// or a width_per_group other than torchvision's 1 and 64, zero_init_residual, dilation) is refused
    /// rather than ignored.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let modelType = try c.decodeIfPresent(String.self, forKey: .modelType), modelType != ResNetConfig.modelType {
            throw TwoBPError("model_type '\(modelType)' is not supported (only 'resnet')")
        }
        if let block = try c.decodeIfPresent(String.self, forKey: .block), block != "bottleneck" {
            throw TwoBPError("block '\(block)' is not supported (only 'bottleneck')")
        }
        for (key, expected) in [(CodingKeys.groups, 1), (.widthPerGroup, 64)] {
            if let value = try ConfigDecoding.integer(c, key), value != expected {
                throw TwoBPError("\(key.rawValue) \(value) is not supported (only \(expected))")
            }
        }
        if try c.decodeIfPresent(Bool.self, forKey: .zeroInitResidual) == true {
            throw TwoBPError("zero_init_residual = true is not supported")
        }
        if let dilation = try c.decodeIfPresent([Bool].self, forKey: .replaceStrideWithDilation), dilation.contains(true) {
            throw TwoBPError("replace_stride_with_dilation is not supported")
        }
        guard let layers = try c.decodeIfPresent([Double].self, forKey: .layers) else { throw TwoBPError("missing field 'layers'") }
        let widths = try c.decodeIfPresent([Double].self, forKey: .widths)
        func integers(_ values: [Double], _ key: CodingKeys) throws -> [Int] {
            try values.map { value in
                guard value.rounded() == value, abs(value) < 0x1p31 else { throw TwoBPError("field '\(key.rawValue)' must list integers") }
                return Int(value)
            }
        }
        self.init(layers: try integers(layers, .layers), widths: try widths.map { try integers($0, .widths) },
                  numClasses: try ConfigDecoding.integer(c, .numClasses) ?? 1000,
                  numChannels: try ConfigDecoding.integer(c, .numChannels) ?? 3,
                  imageSize: try ConfigDecoding.integer(c, .imageSize) ?? 224)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(["ResNet"], forKey: .architectures)
        try c.encode(ResNetConfig.modelType, forKey: .modelType)
        try c.encode("bottleneck", forKey: .block)
        try c.encode(layers, forKey: .layers)
        try c.encode(widths, forKey: .widths)
        try c.encode(numClasses, forKey: .numClasses)
        try c.encode(numChannels, forKey: .numChannels)
        try c.encode(imageSize, forKey: .imageSize)
        try c.encode(1, forKey: .groups)
        try c.encode(64, forKey: .widthPerGroup)
        try c.encode(false, forKey: .zeroInitResidual)
    }

    public func jsonData() throws -> Data {
        try ConfigDecoding.encode(self)
    }
}

extension ResNetConfig: ImageClassifierConfig {
    public var imageChannels: Int { numChannels }
    public var classCount: Int { numClasses }
}
