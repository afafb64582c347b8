import Tensor

/// torchvision's ResNet V1.5 `Bottleneck` on channels-last images x [batch, height, width, inputChannels]:
///
///     out = relu(bn1(conv1(x)))       conv1 1×1, inputChannels → planes
///     out = relu(bn2(conv2(out)))     conv2 3×3, stride s, padding 1 (V1.5: the stride sits here, not in conv1)
///     out = bn3(conv3(out))           conv3 1×1, planes → planes · 4
///     y   = relu(out + identity)      identity = x, or downsample(x) = BN(1×1 conv with stride s)(x)
///
/// y is [batch, ⌈height / s⌉, ⌈width / s⌉, planes · 4]. As torchvision's `_make_layer` builds it, the
/// block has a downsample when the stride is not 1 or the channel count changes. Names follow
/// torchvision: `conv1.weight`, `bn1.weight`, `bn1.bias`, `bn1.running_mean`, …, `downsample.0.weight`,
/// `downsample.1.*`.
///
/// The ReLUs run in place on the batch norms' fresh outputs and the residual add on bn3's, so the block
/// allocates no extra activation. p1 goes back through the main branch and, from the same gradient of
/// the sum, through the downsample (accumulating into conv1's dx) or straight to dx; p2 is every
/// sublayer's p2.
public final class Bottleneck: Layer {
    /// Output channels per `planes`.
    public static let expansion = 4

    public let inputChannels: Int
    public let planes: Int
    public let stride: Int
    public let conv1: Conv2d
    public let bn1: BatchNorm2d
    public let conv2: Conv2d
    public let bn2: BatchNorm2d
    public let conv3: Conv2d
    public let bn3: BatchNorm2d
    /// torchvision's `downsample` Sequential: 1×1 convolution with the block's stride (`.0`), batch norm (`.1`).
    public let downsample: (conv: Conv2d, norm: BatchNorm2d)?
    public let parameters: [Parameter]
    public let buffers: [Buffer]
    private let relu1 = ReLU(inPlace: true)
    private let relu2 = ReLU(inPlace: true)
    private let relu3 = ReLU(inPlace: true)

    public init(inputChannels: Int, planes: Int, stride: Int = 1) {
        self.inputChannels = inputChannels
        self.planes = planes
        self.stride = stride
        let outputChannels = planes * Bottleneck.expansion
        conv1 = Conv2d(inputChannels: inputChannels, outputChannels: planes, kernelSize: 1)
        bn1 = BatchNorm2d(channels: planes)
        conv2 = Conv2d(inputChannels: planes, outputChannels: planes, kernelSize: 3, stride: stride, padding: 1)
        bn2 = BatchNorm2d(channels: planes)
        conv3 = Conv2d(inputChannels: planes, outputChannels: outputChannels, kernelSize: 1)
        bn3 = BatchNorm2d(channels: outputChannels)
        downsample = stride != 1 || inputChannels != outputChannels
            ? (Conv2d(inputChannels: inputChannels, outputChannels: outputChannels, kernelSize: 1, stride: stride),
               BatchNorm2d(channels: outputChannels))
            : nil
        var parts: [(name: String, layer: Layer)] = [("conv1", conv1), ("bn1", bn1), ("conv2", conv2), ("bn2", bn2),
                                                     ("conv3", conv3), ("bn3", bn3)]
        if let downsample { parts += [("downsample.0", downsample.conv), ("downsample.1", downsample.norm)] }
        parameters = prefixedParameters(parts)
        buffers = prefixedBuffers(parts)
    }

    public var outputChannels: Int { planes * Bottleneck.expansion }

    public func forward(_ input: Tensor, microBatch: Int) throws -> Tensor {
        _ = try checkedImageShape(of: input, channels: inputChannels, layer: "Bottleneck")
        var out = try relu1.forward(bn1.forward(conv1.forward(input, microBatch: microBatch), microBatch: microBatch), microBatch: microBatch)
        out = try relu2.forward(bn2.forward(conv2.forward(out, microBatch: microBatch), microBatch: microBatch), microBatch: microBatch)
        out = try bn3.forward(conv3.forward(out, microBatch: microBatch), microBatch: microBatch)
        let identity = try downsample.map { try $0.norm.forward($0.conv.forward(input, microBatch: microBatch), microBatch: microBatch) }
        out.add(identity ?? input)
        return try relu3.forward(out, microBatch: microBatch)
    }

    /// The forward computation in eval mode (batch norms on their running statistics), saving nothing.
    public func apply(_ input: Tensor) throws -> Tensor {
        _ = try checkedImageShape(of: input, channels: inputChannels, layer: "Bottleneck")
        var out = relu1.apply(try bn1.apply(conv1.apply(input)))
        out = relu2.apply(try bn2.apply(conv2.apply(out)))
        out = try bn3.apply(conv3.apply(out))
        let identity = try downsample.map { try $0.norm.apply($0.conv.apply(input)) }
        out.add(identity ?? input)
        return relu3.apply(out)
    }

    public func backwardInput(_ outputGradient: Tensor, microBatch: Int) throws -> Tensor {
        let sumGradient = try relu3.backwardInput(outputGradient, microBatch: microBatch)
        var branch = try conv3.backwardInput(bn3.backwardInput(sumGradient, microBatch: microBatch), microBatch: microBatch)
        branch = try conv2.backwardInput(bn2.backwardInput(relu2.backwardInput(branch, microBatch: microBatch), microBatch: microBatch),
                                         microBatch: microBatch)
        let inputGradient = try conv1.backwardInput(bn1.backwardInput(relu1.backwardInput(branch, microBatch: microBatch), microBatch: microBatch),
                                                    microBatch: microBatch)
        if let downsample {
            try downsample.conv.backwardInput(downsample.norm.backwardInput(sumGradient, microBatch: microBatch), microBatch: microBatch,
                                              accumulatingInto: inputGradient)
        } else {
            inputGradient.add(sumGradient)
        }
        return inputGradient
    }

    public func backwardWeight(_ work: WeightGradientWork) throws {
        var layers: [Layer] = [relu3, bn3, conv3, relu2, bn2, conv2, relu1, bn1, conv1]
        if let downsample { layers += [downsample.norm, downsample.conv] }
        for layer in layers { try layer.backwardWeight(work) }
    }
}

/// torchvision ResNet's stem: `conv1` 7×7 stride 2 padding 3 without bias, `bn1`, ReLU and `maxpool`
/// 3×3 stride 2 padding 1, on channels-last images x [batch, height, width, inputChannels] →
/// [batch, ⌈⌈height / 2⌉ / 2⌉, ⌈⌈width / 2⌉ / 2⌉, outputChannels]. Parameter and buffer names are
/// torchvision's top-level `conv1.weight`, `bn1.weight`, `bn1.bias`, `bn1.running_mean`, ….
public final class ResNetStem: Layer {
    public let conv1: Conv2d
    public let bn1: BatchNorm2d
    public let maxpool: MaxPool2d
    public let parameters: [Parameter]
    public let buffers: [Buffer]
    private let relu = ReLU(inPlace: true)

    public init(inputChannels: Int = 3, outputChannels: Int = 64) {
        conv1 = Conv2d(inputChannels: inputChannels, outputChannels: outputChannels, kernelSize: 7, stride: 2, padding: 3)
        bn1 = BatchNorm2d(channels: outputChannels)
        maxpool = MaxPool2d(kernelSize: 3, stride: 2, padding: 1)
        let parts: [(name: String, layer: Layer)] = [("conv1", conv1), ("bn1", bn1)]
        parameters = prefixedParameters(parts)
        buffers = prefixedBuffers(parts)
    }

    public var inputChannels: Int { conv1.inputChannels }
    public var outputChannels: Int { conv1.outputChannels }

    public func forward(_ input: Tensor, microBatch: Int) throws -> Tensor {
        let normalized = try bn1.forward(conv1.forward(input, microBatch: microBatch), microBatch: microBatch)
        return try maxpool.forward(relu.forward(normalized, microBatch: microBatch), microBatch: microBatch)
    }

    /// The forward computation in eval mode (batch norm on its running statistics), saving nothing.
    public func apply(_ input: Tensor) throws -> Tensor {
        try maxpool.apply(relu.apply(bn1.apply(conv1.apply(input))))
    }

    public func backwardInput(_ outputGradient: Tensor, microBatch: Int) throws -> Tensor {
        let activated = try relu.backwardInput(maxpool.backwardInput(outputGradient, microBatch: microBatch), microBatch: microBatch)
        return try conv1.backwardInput(bn1.backwardInput(activated, microBatch: microBatch), microBatch: microBatch)
    }

    public func backwardWeight(_ work: WeightGradientWork) throws {
        for layer in [maxpool, relu, bn1, conv1] as [Layer] { try layer.backwardWeight(work) }
    }
}
