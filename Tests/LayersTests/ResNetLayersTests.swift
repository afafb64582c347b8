import Foundation
import Layers
import Tensor
import XCTest

/// The ResNet layers on random channels-last shapes (drawn from `testSeed`): forward against the
/// independent Double references of ResNetReference.swift, p1 and p2 against their central
/// differences, and the split-backward contract; plus torchvision's names, initialisation and
/// PyTorch's batch-norm bookkeeping.
final class ResNetLayersTests: XCTestCase {
    private let shapeDraws = 3

    // MARK: Conv2d

    func testConv2dGradientsAndSchedules() throws {
        var generator = makeGenerator(21)
        // (kernel, stride, padding, bias): pointwise; strided 1×1 (a downsample); 3×3 same-size and strided;
        // unpadded; the 7×7 stem; an even kernel whose stride skips pixels.
        let configurations = [(1, 1, 0, false), (1, 2, 0, true), (3, 1, 1, false), (3, 2, 1, true), (3, 1, 0, true),
                              (3, 2, 0, false), (7, 2, 3, false), (2, 3, 1, true)]
        for (draw, (kernel, stride, padding, bias)) in configurations.enumerated() {
            let (inputChannels, outputChannels) = (generator.int(1...5), generator.int(1...5))
            // At least half the kernel, so that the sampled weight coordinates are not all padding taps.
            let smallest = max(kernel - 2 * padding, (kernel + 1) / 2)
            let (height, width) = (generator.int(smallest...smallest + 5), generator.int(smallest...smallest + 5))
            let shape = ImageShape(batch: generator.int(1...2), height: height, width: width, channels: inputChannels)
            // Blocks of 1 to 7 output pixels, so that im2col, col2im and p2 run over many blocks and p2's
            // blocks straddle micro-batches; the last configuration keeps the default (one block).
            let blockPixels = draw == configurations.count - 1 ? nil : generator.int(1...7)
            let blockFloats = blockPixels.map { $0 * kernel * kernel * inputChannels } ?? Conv2d.defaultBlockFloats
            let make = { (seed: UInt64) -> Conv2d in
                let layer = Conv2d(inputChannels: inputChannels, outputChannels: outputChannels, kernelSize: kernel,
                                   stride: stride, padding: padding, bias: bias, blockFloats: blockFloats)
                var generator = makeGenerator(seed)
                randomize(layer.parameters, std: 0.5, &generator)
                return layer
            }
            let layer = make(UInt64(100 + draw))
            let context = "Conv2d \(inputChannels)→\(outputChannels) \(kernel)x\(kernel) stride \(stride) padding \(padding)"
                + "\(bias ? " bias" : "") on \(shape), blocks of \(blockPixels.map(String.init) ?? "all") pixels"
            let reference = { (x: [Double], w: Weights) -> Image in
                ResNetReference.conv2d(Image(values: x, shape: shape), weight: w["weight"], bias: bias ? w["bias"] : nil,
                                       outputChannels: outputChannels, kernel: kernel, stride: stride, padding: padding)
            }
            let input = randomTensor(shape.dimensions, &generator)
            let expectedShape = reference(doubles(input), Weights(values: doubleValues(layer.parameters))).shape
            XCTAssertEqual(try layer.apply(input).shape, expectedShape.dimensions, "\(context): output shape")
            let (outputHeight, outputWidth) = try layer.outputSize(height: height, width: width)
            XCTAssertEqual([outputHeight, outputWidth], [expectedShape.height, expectedShape.width], "\(context): outputSize")
            try checkLayerGradients(context, layer, input: input, apply: layer.apply, reference: { reference($0, $1).values }, &generator)

            // Micro-batches of different sizes, so that p2's stacked im2col spans unequal blocks.
            let inputs = (0..<3).map { m in randomTensor([m + 1, height, width, inputChannels], &generator) }
            let gradients = (0..<3).map { m in randomTensor([m + 1, outputHeight, outputWidth, outputChannels], &generator) }
            try checkSplitBackward(context, microBatches: 3) {
                SplitBackwardSubject(layer: make(UInt64(200 + draw)), inputs: inputs, outputGradients: gradients)
            }
        }
    }

    func testConv2dParametersInitialisationAndErrors() throws {
        let stem = Conv2d(inputChannels: 3, outputChannels: 8, kernelSize: 7, stride: 2, padding: 3)
        XCTAssertEqual(stem.parameters.map(\.name), ["weight"])
        XCTAssertEqual(stem.weight.value.shape, [8, 3, 7, 7], "torchvision's [out, in, kh, kw]")
        XCTAssertTrue(stem.weight.decays)
        // kaiming_normal_(mode="fan_out", nonlinearity="relu"): std = gain / √fan_out, gain √2, fan_out = out · kh · kw.
        guard case .normal(let std) = stem.weight.initialization, let std else { return XCTFail("conv weight is not a fixed normal") }
        XCTAssertEqual(Double(std), (2.0 / (8 * 7 * 7)).squareRoot(), accuracy: 1e-7)
        XCTAssertEqual(try stem.outputSize(height: 224, width: 224).height, 112)
        XCTAssertEqual(try stem.outputSize(height: 224, width: 199).width, 100)

        // nn.Conv2d's default bias: U(−1/√fan_in, 1/√fan_in), fan_in = in · kh · kw = 27.
        let biased = Conv2d(inputChannels: 3, outputChannels: 4, kernelSize: 3, padding: 1, bias: true)
        XCTAssertEqual(biased.parameters.map(\.name), ["weight", "bias"])
        XCTAssertFalse(biased.bias!.decays)
        assertUniform(biased.bias!, bound: 1 / 27.0.squareRoot(), "conv bias")

        let conv = Conv2d(inputChannels: 2, outputChannels: 3, kernelSize: 3)
        assertThrowsTwoBPError(try conv.forward(Tensor(zeros: [1, 4, 4, 3]), microBatch: 0), "3 channels into 2")
        assertThrowsTwoBPError(try conv.forward(Tensor(zeros: [4, 4, 2]), microBatch: 0), "not [batch, height, width, channels]")
        assertThrowsTwoBPError(try conv.forward(Tensor(zeros: [1, 2, 5, 2]), microBatch: 0), "2 rows under a 3x3 kernel without padding")
        assertThrowsTwoBPError(try conv.outputSize(height: 5, width: 2), "outputSize of an image smaller than the kernel")
        XCTAssertNoThrow(try conv.forward(Tensor(zeros: [1, 3, 3, 2]), microBatch: 0), "a refused forward must not occupy the micro-batch")
    }

    // MARK: BatchNorm2d

    func testBatchNorm2dGradientsAndSchedules() throws {
        var generator = makeGenerator(23)
        for draw in 0..<shapeDraws {
            let channels = generator.int(1...5)
            // At least 4 values per channel: with 2 the normalised output is ±1 whatever x, its true gradient is
            // O(eps) and what Float computes is the cancellation of O(1) terms.
            let shape = ImageShape(batch: generator.int(1...3), height: generator.int(2...4), width: generator.int(2...4), channels: channels)
            let eps: Float = [1e-5, 1e-3, 0.1][draw % 3]
            let make = { (seed: UInt64) -> BatchNorm2d in
                let layer = BatchNorm2d(channels: channels, eps: eps)
                var generator = makeGenerator(seed)
                randomize(layer.parameters, std: 0.5, &generator)
                return layer
            }
            let context = "BatchNorm2d \(shape) eps \(eps)"
            try checkLayerGradients(context, make(UInt64(100 + draw)), input: offsetImage(shape, &generator), reference: { x, w in
                ResNetReference.batchNorm(Image(values: x, shape: shape), weight: w["weight"], bias: w["bias"], eps: Double(eps)).values
            }, &generator)
            // Each micro-batch is normalised with its own statistics; p2 sums the micro-batches' gain and bias gradients.
            let inputs = (0..<3).map { m in offsetImage(ImageShape(batch: m + 1, height: shape.height, width: shape.width, channels: channels), &generator) }
            let gradients = inputs.map { randomTensor($0.shape, &generator) }
            try checkSplitBackward(context, microBatches: 3) {
                SplitBackwardSubject(layer: make(UInt64(200 + draw)), inputs: inputs, outputGradients: gradients)
            }
        }
    }

    func testBatchNorm2dRunningStatisticsAndEvalMode() throws {
        var generator = makeGenerator(24)
        let channels = 3
        let norm = BatchNorm2d(channels: channels)
        XCTAssertEqual(norm.parameters.map(\.name), ["weight", "bias"])
        XCTAssertEqual(norm.weight.value.toArray(), [1, 1, 1])
        XCTAssertEqual(norm.bias.value.toArray(), [0, 0, 0])
        XCTAssertFalse(norm.weight.decays || norm.bias.decays, "BatchNorm's gain and bias do not decay")
        XCTAssertEqual([norm.eps, norm.momentum], [1e-5, 0.1])
        XCTAssertEqual(norm.buffers.map(\.name), ["running_mean", "running_var", "num_batches_tracked"])
        XCTAssertEqual(norm.buffers.map(\.dtype), [.float32, .float32, .int64])
        XCTAssertEqual(norm.buffers.map(\.shape), [[3], [3], []])
        XCTAssertEqual(Array(norm.runningMean.floats), [0, 0, 0])
        XCTAssertEqual(Array(norm.runningVar.floats), [1, 1, 1])
        XCTAssertEqual(norm.numBatchesTracked.integers[0], 0)

        let shapes = [ImageShape(batch: 2, height: 3, width: 4, channels: 3), ImageShape(batch: 1, height: 5, width: 2, channels: 3),
                      ImageShape(batch: 3, height: 2, width: 1, channels: 3), ImageShape(batch: 1, height: 1, width: 2, channels: 3)]
        let inputs = shapes.map { offsetImage($0, &generator) }
        for (m, input) in inputs.enumerated() { _ = try norm.forward(input, microBatch: m) }
        let expected = ResNetReference.runningStatistics(after: zip(inputs, shapes).map { Image(values: doubles($0), shape: $1) },
                                                         channels: channels, momentum: 0.1)
        XCTAssertLessThan(relativeError(norm.runningMean.floats.map(Double.init), expected.mean), 1e-6, "running_mean")
        XCTAssertLessThan(relativeError(norm.runningVar.floats.map(Double.init), expected.variance), 1e-6,
                          "running_var (momentum 0.1 towards the unbiased variance)")
        XCTAssertEqual(norm.numBatchesTracked.integers[0], 4)

        // Eval mode: the running estimates, whatever the batch; nothing saved or updated.
        randomize(norm.parameters, std: 0.5, &generator)
        let probe = offsetImage(ImageShape(batch: 1, height: 2, width: 2, channels: 3), &generator)
        let (meanBefore, varianceBefore) = (Array(norm.runningMean.floats), Array(norm.runningVar.floats))
        let evaluated = try norm.apply(probe)
        let reference = ResNetReference.batchNorm(Image(values: doubles(probe), shape: ImageShape(batch: 1, height: 2, width: 2, channels: 3)),
                                                  weight: doubles(norm.weight.value), bias: doubles(norm.bias.value), eps: 1e-5,
                                                  running: (meanBefore.map(Double.init), varianceBefore.map(Double.init)))
        XCTAssertLessThan(relativeError(doubles(evaluated), reference.values), forwardTolerance, "eval mode vs reference")
        XCTAssertEqual(Array(norm.runningMean.floats), meanBefore)
        XCTAssertEqual(Array(norm.runningVar.floats), varianceBefore)
        XCTAssertEqual(norm.numBatchesTracked.integers[0], 4)

        assertThrowsTwoBPError(try norm.forward(Tensor(zeros: [1, 1, 1, 3]), microBatch: 9), "training on one value per channel")
        assertThrowsTwoBPError(try norm.forward(Tensor(zeros: [2, 2, 2, 4]), microBatch: 9), "4 channels into 3")
        XCTAssertEqual(norm.numBatchesTracked.integers[0], 4, "refused forwards count nothing")
    }

    // MARK: ReLU and pooling

    func testReLUGradientsAndSchedules() throws {
        var generator = makeGenerator(25)
        let shape = [2, 3, 4, 5]
        let relu = ReLU()
        try checkLayerGradients("ReLU", relu, input: awayFromZero(randomTensor(shape, &generator)), apply: relu.apply,
                                reference: { x, _ in x.map { max($0, 0) } }, &generator)
        let inputs = (0..<3).map { _ in randomTensor(shape, &generator) }
        let gradients = (0..<3).map { _ in randomTensor(shape, &generator) }
        try checkSplitBackward("ReLU", microBatches: 3) { SplitBackwardSubject(layer: ReLU(), inputs: inputs, outputGradients: gradients) }

        let inPlace = ReLU(inPlace: true)
        let input = inputs[0].copy()
        let output = try inPlace.forward(input, microBatch: 0)
        XCTAssertTrue(output === input, "in place: the output is the input tensor")
        XCTAssertEqual(output.toArray(), inputs[0].toArray().map { max($0, 0) })
        let inputGradient = try inPlace.backwardInput(gradients[0], microBatch: 0)
        XCTAssertEqual(inputGradient.toArray(), zip(inputs[0].toArray(), gradients[0].toArray()).map { $0 > 0 ? $1 : 0 })
    }

    func testMaxPool2dGradientsAndSchedules() throws {
        var generator = makeGenerator(26)
        for (kernel, stride, padding) in [(3, 2, 1), (2, 2, 0), (3, 1, 1), (3, 3, 0)] {
            let shape = ImageShape(batch: generator.int(1...2), height: generator.int(kernel...kernel + 5),
                                   width: generator.int(kernel...kernel + 5), channels: generator.int(1...4))
            let pool = MaxPool2d(kernelSize: kernel, stride: stride, padding: padding)
            let context = "MaxPool2d \(kernel)x\(kernel) stride \(stride) padding \(padding) on \(shape)"
            try checkLayerGradients(context, pool, input: randomTensor(shape.dimensions, &generator), apply: pool.apply, reference: { x, _ in
                ResNetReference.maxPool(Image(values: x, shape: shape), kernel: kernel, stride: stride, padding: padding).values
            }, &generator)
            let (outputHeight, outputWidth) = try pool.outputSize(height: shape.height, width: shape.width)
            let inputs = (0..<3).map { m in randomTensor([m + 1, shape.height, shape.width, shape.channels], &generator) }
            let gradients = (0..<3).map { m in randomTensor([m + 1, outputHeight, outputWidth, shape.channels], &generator) }
            try checkSplitBackward(context, microBatches: 3) {
                SplitBackwardSubject(layer: MaxPool2d(kernelSize: kernel, stride: stride, padding: padding), inputs: inputs, outputGradients: gradients)
            }
        }
    }

    /// PyTorch keeps the first maximum of a window in row-major order (a later one must be strictly greater).
    func testMaxPool2dRoutesTiesToTheFirstMaximum() throws {
        // A constant 4×4 image under 3×3 windows with stride 2 and padding 1: the windows start at rows and
        // columns −1 and 1, so their first image pixels are (0, 0), (0, 1), (1, 0) and (1, 1).
        let pool = MaxPool2d()
        let constant = Tensor(shape: [1, 4, 4, 1], values: [Float](repeating: 2, count: 16))
        XCTAssertEqual(try pool.forward(constant, microBatch: 0).toArray(), [2, 2, 2, 2])
        var expected = [Float](repeating: 0, count: 16)
        (expected[0], expected[1], expected[4], expected[5]) = (1, 2, 3, 4)
        XCTAssertEqual(try pool.backwardInput(Tensor(shape: [1, 2, 2, 1], values: [1, 2, 3, 4]), microBatch: 0).toArray(), expected)

        // One unpadded 3×3 window, two channels: channel 0 peaks at (0, 2) and (2, 0), channel 1 at (1, 1) and (2, 2).
        let single = MaxPool2d(kernelSize: 3, stride: 1, padding: 0)
        var values = [Float](repeating: 0, count: 18)
        for (pixel, channel) in [(2, 0), (6, 0), (4, 1), (8, 1)] { values[pixel * 2 + channel] = 5 }
        XCTAssertEqual(try single.forward(Tensor(shape: [1, 3, 3, 2], values: values), microBatch: 0).toArray(), [5, 5])
        var routed = [Float](repeating: 0, count: 18)
        (routed[2 * 2 + 0], routed[4 * 2 + 1]) = (7, 8)
        XCTAssertEqual(try single.backwardInput(Tensor(shape: [1, 1, 1, 2], values: [7, 8]), microBatch: 0).toArray(), routed)

        // A NaN in the window wins, as PyTorch propagates it.
        values[3 * 2] = .nan
        XCTAssertTrue(try single.apply(Tensor(shape: [1, 3, 3, 2], values: values))[0].isNaN)
        assertThrowsTwoBPError(try pool.forward(Tensor(zeros: [4, 4, 1]), microBatch: 1), "not an image batch")
    }

    func testGlobalAveragePoolGradientsAndSchedules() throws {
        var generator = makeGenerator(27)
        for _ in 0..<shapeDraws {
            let shape = ImageShape(batch: generator.int(1...3), height: generator.int(1...4), width: generator.int(1...4), channels: generator.int(1...5))
            let pool = GlobalAveragePool()
            let context = "GlobalAveragePool on \(shape)"
            try checkLayerGradients(context, pool, input: randomTensor(shape.dimensions, &generator), apply: pool.apply, reference: { x, _ in
                ResNetReference.averagePool(Image(values: x, shape: shape))
            }, &generator)
            let inputs = (0..<3).map { m in randomTensor([m + 1, shape.height, shape.width, shape.channels], &generator) }
            let gradients = (0..<3).map { m in randomTensor([m + 1, shape.channels], &generator) }
            try checkSplitBackward(context, microBatches: 3) {
                SplitBackwardSubject(layer: GlobalAveragePool(), inputs: inputs, outputGradients: gradients)
            }
        }
    }

    // MARK: Classifier head

    func testClassifierHeadGradientsAndSchedules() throws {
        var generator = makeGenerator(28)
        for draw in 0..<shapeDraws {
            let (features, classes) = (generator.int(1...6), generator.int(2...7))
            let shape = ImageShape(batch: generator.int(1...3), height: generator.int(1...3), width: generator.int(1...3), channels: features)
            let lossWeight = 1 / Float(shape.batch * 3)
            let make = { (seed: UInt64) -> ClassifierHead in
                let head = ClassifierHead(features: features, classes: classes)
                var generator = makeGenerator(seed)
                randomize(head.parameters, std: 0.8, &generator)
                return head
            }
            let head = make(UInt64(100 + draw))
            XCTAssertEqual(head.parameters.map(\.name), ["fc.weight", "fc.bias"])
            XCTAssertEqual(head.fc.weight.value.shape, [classes, features])
            let context = "ClassifierHead \(features)→\(classes) on \(shape)"
            let input = randomTensor(shape.dimensions, &generator)
            let labels = randomTokens(shape.batch, vocabulary: classes, &generator)
            var variables = doubleValues(head.parameters)
            variables["input"] = doubles(input)
            let referenceLogits = { (variables: [String: [Double]]) in
                ResNetReference.classifierLogits(Image(values: variables["input"]!, shape: shape), classes: classes, Weights(values: variables))
            }
            let referenceLoss = { (variables: [String: [Double]]) in
                ResNetReference.crossEntropy(logits: referenceLogits(variables), labels: labels, classes: classes, lossWeight: Double(lossWeight))
            }
            let (loss, trainingCorrect) = try head.forward(input, labels: labels, lossWeight: lossWeight, microBatch: 0)
            XCTAssertEqual(loss, referenceLoss(variables), accuracy: 1e-5 * abs(referenceLoss(variables)), "\(context): loss")
            let logits = try head.logits(input)
            XCTAssertEqual(logits.shape, [shape.batch, classes])
            XCTAssertLessThan(relativeError(doubles(logits), referenceLogits(variables)), forwardTolerance, "\(context): logits")
            let evaluation = try head.evaluate(input, labels: labels, lossWeight: lossWeight)
            XCTAssertEqual(evaluation.loss, loss, "\(context): evaluation loss")
            let expectedLogits = referenceLogits(variables)
            let expectedCorrect = labels.enumerated().filter { image, label in
                let row = Array(expectedLogits[image * classes..<(image + 1) * classes])
                return row.firstIndex(of: row.max()!) == Int(label)
            }.count
            XCTAssertEqual(evaluation.correct, expectedCorrect, "\(context): correct predictions")
            XCTAssertEqual(trainingCorrect, expectedCorrect, "\(context): correct predictions of the training forward")

            let inputGradient = try head.backwardInput(microBatch: 0)
            try head.backwardWeight(.microBatch(0))
            var analytic = ["input": inputGradient.toArray()]
            for parameter in head.parameters { analytic[parameter.name] = parameter.gradient.toArray() }
            checkGradients(analytic: analytic, loss: referenceLoss, at: variables, &generator, context)

            let inputs = (0..<3).map { m in randomTensor([m + 1, shape.height, shape.width, features], &generator) }
            let labelSets = (0..<3).map { m in randomTokens(m + 1, vocabulary: classes, &generator) }
            try checkSplitBackward(context, microBatches: 3) {
                let head = make(UInt64(200 + draw))
                return SplitBackwardSubject(
                    parameters: head.parameters,
                    forward: { _ = try head.forward(inputs[$0], labels: labelSets[$0], lossWeight: lossWeight, microBatch: $0) },
                    backwardInput: { try head.backwardInput(microBatch: $0).toArray() },
                    backwardWeight: { try head.backwardWeight($0) })
            }
        }
    }

    func testClassifierHeadInitialisationAndBadLabels() throws {
        let head = ClassifierHead(features: 16, classes: 5)
        // nn.Linear's default: kaiming_uniform_(a=√5) gives U(−1/√in, 1/√in) for the weight, and the bias U(−1/√in, 1/√in).
        assertUniform(head.fc.weight, bound: 0.25, "fc.weight")
        assertUniform(head.fc.bias!, bound: 0.25, "fc.bias")
        XCTAssertTrue(head.fc.weight.decays)
        XCTAssertFalse(head.fc.bias!.decays)

        let input = Tensor(zeros: [2, 3, 3, 16])
        assertThrowsTwoBPError(try head.forward(input, labels: [0, 5], lossWeight: 1, microBatch: 0), "label = classes")
        assertThrowsTwoBPError(try head.forward(input, labels: [-1, 0], lossWeight: 1, microBatch: 0), "negative label")
        assertThrowsTwoBPError(try head.forward(input, labels: [0], lossWeight: 1, microBatch: 0), "one label for two images")
        assertThrowsTwoBPError(try head.forward(Tensor(zeros: [2, 3, 3, 8]), labels: [0, 1], lossWeight: 1, microBatch: 0), "8 features into 16")
        assertThrowsTwoBPError(try head.evaluate(input, labels: [0, 7], lossWeight: 1), "evaluation checks labels too")
        // Zero weights and bias: every logit is 0, so each image's cross-entropy is log 5.
        XCTAssertEqual(try head.forward(input, labels: [0, 4], lossWeight: 0.5, microBatch: 0).loss, log(5), accuracy: 1e-6)
    }

    // MARK: Bottleneck and stem

    func testBottleneckGradientsAndSchedules() throws {
        var generator = makeGenerator(29)
        // (inputChannels, planes, stride): identity shortcut; downsample for the stride; downsample for the width alone.
        // planes ≥ 2: a batch norm makes the loss blind to the scale of each output channel of the convolution
        // before it, so a convolution with one input channel (conv3 at planes 1) has a gradient that is zero up
        // to eps and Float rounding, which no relative tolerance can check.
        for (draw, (inputChannels, planes, stride)) in [(8, 2, 1), (3, 2, 2), (5, 2, 1)].enumerated() {
            let shape = ImageShape(batch: 2, height: generator.int(3...5), width: generator.int(2...5), channels: inputChannels)
            let make = { (seed: UInt64) -> Bottleneck in
                let block = Bottleneck(inputChannels: inputChannels, planes: planes, stride: stride)
                var generator = makeGenerator(seed)
                randomize(block.parameters, std: 0.5, &generator)
                return block
            }
            let block = make(UInt64(100 + draw))
            let hasDownsample = stride != 1 || inputChannels != 4 * planes
            XCTAssertEqual(block.downsample != nil, hasDownsample)
            XCTAssertEqual(block.outputChannels, 4 * planes)
            let norms = ["bn1", "bn2", "bn3"] + (hasDownsample ? ["downsample.1"] : [])
            var names = ["conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight", "bn2.weight", "bn2.bias", "conv3.weight", "bn3.weight", "bn3.bias"]
            if hasDownsample { names += ["downsample.0.weight", "downsample.1.weight", "downsample.1.bias"] }
            XCTAssertEqual(block.parameters.map(\.name), names)
            XCTAssertEqual(block.buffers.map(\.name), norms.flatMap { ["\($0).running_mean", "\($0).running_var", "\($0).num_batches_tracked"] })
            XCTAssertEqual(block.conv2.stride, stride, "V1.5: the stride is on the 3x3 convolution")
            XCTAssertEqual(block.conv1.stride, 1)

            let context = "Bottleneck \(inputChannels)→\(planes)x4 stride \(stride) on \(shape)"
            try checkLayerGradients(context, block, input: randomTensor(shape.dimensions, &generator), reference: { x, w in
                ResNetReference.bottleneck(Image(values: x, shape: shape), planes: planes, stride: stride, w).values
            }, &generator)
            try checkEvalMode(context, block, apply: block.apply, shape: shape, &generator) { x, w in
                ResNetReference.bottleneck(x, planes: planes, stride: stride, w, eval: true)
            }

            // ⌊(size + 2 − 3) / s⌋ + 1 after the 3×3 convolution with padding 1.
            let outputShape = [shape.height, shape.width].map { ($0 - 1) / stride + 1 }
            let inputs = (0..<3).map { m in randomTensor([m + 1, shape.height, shape.width, inputChannels], &generator) }
            let gradients = (0..<3).map { m in randomTensor([m + 1] + outputShape + [4 * planes], &generator) }
            try checkSplitBackward(context, microBatches: 3) {
                SplitBackwardSubject(layer: make(UInt64(200 + draw)), inputs: inputs, outputGradients: gradients)
            }
        }
    }

    func testResNetStemGradientsAndSchedules() throws {
        var generator = makeGenerator(30)
        let (inputChannels, outputChannels) = (3, 4)
        let shape = ImageShape(batch: 2, height: generator.int(9...12), width: generator.int(7...11), channels: inputChannels)
        let make = { (seed: UInt64) -> ResNetStem in
            let stem = ResNetStem(inputChannels: inputChannels, outputChannels: outputChannels)
            var generator = makeGenerator(seed)
            randomize(stem.parameters, std: 0.3, &generator)
            return stem
        }
        let stem = make(100)
        XCTAssertEqual(stem.parameters.map(\.name), ["conv1.weight", "bn1.weight", "bn1.bias"])
        XCTAssertEqual(stem.buffers.map(\.name), ["bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked"])
        let context = "ResNetStem \(inputChannels)→\(outputChannels) on \(shape)"
        try checkLayerGradients(context, stem, input: randomTensor(shape.dimensions, &generator), reference: { x, w in
            ResNetReference.stem(Image(values: x, shape: shape), outputChannels: outputChannels, w).values
        }, &generator)
        try checkEvalMode(context, stem, apply: stem.apply, shape: shape, &generator) { x, w in
            ResNetReference.stem(x, outputChannels: outputChannels, w, eval: true)
        }

        // ⌈⌈size / 2⌉ / 2⌉ after the stride-2 convolution and the stride-2 pool.
        let outputShape = [shape.height, shape.width].map { (($0 + 1) / 2 + 1) / 2 }
        let inputs = (0..<3).map { m in randomTensor([m + 1, shape.height, shape.width, inputChannels], &generator) }
        let gradients = (0..<3).map { m in randomTensor([m + 1] + outputShape + [outputChannels], &generator) }
        try checkSplitBackward(context, microBatches: 3) {
            SplitBackwardSubject(layer: make(200), inputs: inputs, outputGradients: gradients)
        }
    }

    // MARK: Helpers

    /// Eval mode of a layer with batch norms: `apply` on a fresh batch against the reference on the
    /// layer's current parameters and running statistics, leaving every buffer as it was.
    private func checkEvalMode(_ context: String, _ layer: Layer, apply: (Tensor) throws -> Tensor, shape: ImageShape,
                               _ generator: inout SeededGenerator, reference: (Image, Weights) -> Image,
                               file: StaticString = #filePath, line: UInt = #line) throws {
        var variables = doubleValues(layer.parameters)
        for buffer in layer.buffers where buffer.dtype == .float32 { variables[buffer.name] = buffer.floats.map(Double.init) }
        let before = layer.buffers.map { Array($0.bytes) }
        let probe = randomTensor(shape.dimensions, &generator)
        let output = try apply(probe)
        XCTAssertLessThan(relativeError(doubles(output), reference(Image(values: doubles(probe), shape: shape), Weights(values: variables)).values),
                          forwardTolerance, "\(context): eval mode vs reference", file: file, line: line)
        XCTAssertEqual(layer.buffers.map { Array($0.bytes) }, before, "\(context): eval mode changed a buffer", file: file, line: line)
    }

    /// A random image whose channels have different means and scales (2c − 1 + (1 + c) · N(0, 1)),
    /// so that batch norm's centring and scaling both matter.
    private func offsetImage(_ shape: ImageShape, _ generator: inout SeededGenerator) -> Tensor {
        let image = randomTensor(shape.dimensions, &generator)
        for i in 0..<image.count {
            let c = Float(i % shape.channels)
            image[i] = (2 * c - 1) + (1 + c) * image[i]
        }
        return image
    }

    /// Moves every value at least 0.05 from 0, so that central differences never straddle ReLU's kink.
    private func awayFromZero(_ tensor: Tensor) -> Tensor {
        for i in 0..<tensor.count { tensor[i] += tensor[i] < 0 ? -0.05 : 0.05 }
        return tensor
    }

    /// The parameter's custom initialiser fills U(−bound, bound): nothing beyond the bound, the extremes
    /// near it, the mean near 0 and the variance near bound² / 3.
    private func assertUniform(_ parameter: Parameter, bound: Double, _ context: String, file: StaticString = #filePath, line: UInt = #line) {
        guard case .custom(let fill) = parameter.initialization else { return XCTFail("\(context): not a custom initialisation", file: file, line: line) }
        let sample = Tensor(zeros: [20000])
        var generator = makeGenerator(31)
        fill(sample, &generator)
        let values = doubles(sample)
        let mean = values.reduce(0, +) / Double(values.count)
        let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(values.count)
        XCTAssertLessThanOrEqual(values.map(abs).max()!, bound * (1 + 1e-6), "\(context): beyond the bound", file: file, line: line)
        XCTAssertGreaterThan(values.map(abs).max()!, 0.99 * bound, "\(context): never near the bound", file: file, line: line)
        XCTAssertEqual(mean, 0, accuracy: 0.02 * bound, "\(context): mean", file: file, line: line)
        XCTAssertEqual(variance, bound * bound / 3, accuracy: 0.03 * bound * bound / 3, "\(context): variance", file: file, line: line)
    }
}
