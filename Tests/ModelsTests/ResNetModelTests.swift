import Foundation
import Layers
import Models
import Tensor
import XCTest

/// The ResNet family: torchvision's names, sizes and config.json, the boundary shapes, and the whole
/// resnet-tiny against central differences of the independent Double reference (ResNetReference.swift).
final class ResNetModelTests: XCTestCase {
    private let tiny = ResNetConfig.named.first { $0.name == "resnet-tiny" }!.config

    private func batch(_ config: ResNetConfig, samples: Int, seed: UInt64) -> ImageBatch {
        try! config.randomBatch(samples: samples, sampleLength: config.imageSize, seed: seed).expecting(ImageBatch.self, by: "test")
    }

    // MARK: Config

    func testParameterCountsMatchTorchvision() throws {
        // sum(p.numel() for p in torchvision.models.resnet50().parameters()), likewise resnet101 and resnet152.
        XCTAssertEqual(ResNetConfig(layers: [3, 4, 6, 3]).parameterCount, 25_557_032)
        XCTAssertEqual(ResNetConfig(layers: [3, 4, 23, 3]).parameterCount, 44_549_160)
        let resnet152 = try ModelRegistry.resolve("resnet-152") as! ResNetConfig
        XCTAssertEqual(resnet152.parameterCount, 60_192_808)
        XCTAssertEqual(resnet152.unitCount, 52)
        let model = try tiny.makeModel(seed: 1)
        XCTAssertEqual(model.parameters.reduce(0) { $0 + $1.value.count }, tiny.parameterCount)
    }

    func testNamesFollowTorchvision() throws {
        let model = try XCTUnwrap(try tiny.makeModel(seed: 1) as? ResNetChunk)
        let names = model.parameters.map(\.name)
        XCTAssertEqual(Array(names.prefix(6)), ["conv1.weight", "bn1.weight", "bn1.bias", "layer1.0.conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias"])
        XCTAssertTrue(names.contains("layer1.0.downsample.0.weight"), "the first block changes the width")
        XCTAssertFalse(names.contains("layer1.1.downsample.0.weight"))
        XCTAssertTrue(names.contains("layer2.0.downsample.1.bias"))
        XCTAssertEqual(names.last, "fc.bias")
        XCTAssertEqual(Set(names).count, names.count)
        let buffers = model.buffers.map(\.name)
        XCTAssertEqual(Array(buffers.prefix(4)), ["bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked", "layer1.0.bn1.running_mean"])
        XCTAssertTrue(buffers.contains("layer2.3.bn3.num_batches_tracked"))
        XCTAssertEqual(model.buffers.first { $0.name.hasSuffix("num_batches_tracked") }?.dtype, .int64)
        let shapes = Dictionary(uniqueKeysWithValues: model.parameters.map { ($0.name, $0.value.shape) })
        XCTAssertEqual(shapes["conv1.weight"], [8, 1, 7, 7])
        XCTAssertEqual(shapes["layer2.0.conv2.weight"], [16, 16, 3, 3])
        XCTAssertEqual(shapes["layer2.0.downsample.0.weight"], [64, 32, 1, 1])
        XCTAssertEqual(shapes["fc.weight"], [10, 64])
        XCTAssertEqual(model.blocks.map(\.stride), [1, 1, 1, 1, 2, 1, 1, 1], "V1.5: the first block of every later stage strides")

        // torchvision's initialisation: Kaiming normal (fan_out) for convolutions, BN gain 1 and bias 0;
        // from (seed, name) alone, so a chunk of some units starts where the whole model does.
        let values = Dictionary(uniqueKeysWithValues: model.parameters.map { ($0.name, $0.value.toArray()) })
        XCTAssertTrue(values["layer1.2.bn2.weight"]!.allSatisfy { $0 == 1 })
        XCTAssertTrue(values["layer1.2.bn2.bias"]!.allSatisfy { $0 == 0 })
        let conv = values["layer2.0.conv2.weight"]!.map(Double.init)
        let std = (conv.reduce(0) { $0 + $1 * $1 } / Double(conv.count)).squareRoot()
        XCTAssertEqual(std, (2.0 / (16 * 9)).squareRoot(), accuracy: 0.02)
        let middle = try ResNetChunk(config: tiny, units: 3..<6, seed: 1)
        XCTAssertEqual(middle.parameters.first?.name, "layer1.2.conv1.weight")
        XCTAssertEqual(middle.buffers.last?.name, "layer2.0.downsample.1.num_batches_tracked")
        for parameter in middle.parameters { XCTAssertEqual(parameter.value.toArray(), values[parameter.name], parameter.name) }
    }

    func testConfigJSONRoundTripDefaultsAndErrors() throws {
        for (name, config) in ResNetConfig.named {
            let decoded = try ModelRegistry.decode(config.jsonData())
            XCTAssertTrue(decoded.isSame(as: config), name)
        }
        let minimal = try ModelRegistry.decode(Data(#"{"model_type": "resnet", "layers": [3, 4, 6, 3]}"#.utf8)) as! ResNetConfig
        XCTAssertEqual(minimal, ResNetConfig(layers: [3, 4, 6, 3], widths: [64, 128, 256, 512], numClasses: 1000, numChannels: 3, imageSize: 224))
        let text = String(decoding: try minimal.jsonData(), as: UTF8.self)
        XCTAssertTrue(text.contains(#""num_classes" : 1000"#), text)
        let cases: [(String, String)] = [
            (#"{"model_type": "resnet"}"#, "missing field 'layers'"),
            (#"{"model_type": "resnet", "layers": [2, 0]}"#, "layers must be positive block counts, got 0 in [2, 0]"),
            (#"{"model_type": "resnet", "layers": [1, 1, 1, 1, 1]}"#, "layers must list 1 to 4 stages (torchvision's layer1 … layer4), got 5"),
            (#"{"model_type": "resnet", "layers": [1, 1], "widths": [8]}"#, "widths lists 1 stages but layers 2"),
            (#"{"model_type": "resnet", "layers": [1.5]}"#, "field 'layers' must list integers"),
            (#"{"model_type": "resnet", "layers": [1], "block": "basic"}"#, "block 'basic' is not supported (only 'bottleneck')"),
            (#"{"model_type": "resnet", "layers": [1], "groups": 32}"#, "groups 32 is not supported (only 1)"),
            (#"{"model_type": "resnet", "layers": [1], "num_classes": 0}"#, "num_classes must be positive, got 0"),
            (#"{"model_type": "resnet", "layers": [1], "image_size": 0}"#, "image size must be 1 to 4096 pixels, got 0"),
        ]
        for (json, message) in cases {
            XCTAssertThrowsError(try ModelRegistry.decode(Data(json.utf8)), json) { error in
                XCTAssertEqual("\(error)", "config.json: \(message)", json)
            }
        }
    }

    /// Each unit's output has the shape `activationShape` promises for the next, and the unit costs
    /// count the FLOPs of its convolutions (forward = p1 = p2).
    func testBoundaryShapesAndCosts() throws {
        let images = batch(tiny, samples: 2, seed: 3)
        var activation: Tensor?
        for unit in 0..<tiny.unitCount {
            let chunk = try ResNetChunk(config: tiny, units: unit..<(unit + 1), seed: 5)
            XCTAssertEqual(try chunk.inputShape(for: images), unit == 0 ? nil : tiny.activationShape(enteringUnit: unit, samples: 2, sampleLength: 16))
            guard case .activation(let output) = try chunk.evaluate(activation, batch: images) else {
                XCTAssertEqual(unit, tiny.unitCount - 1, "only the head ends in the loss")
                break
            }
            XCTAssertEqual(output.shape, tiny.activationShape(enteringUnit: unit + 1, samples: 2, sampleLength: 16), "unit \(unit)")
            XCTAssertEqual(try chunk.outputShape(for: images), output.shape)
            activation = output
        }
        XCTAssertEqual(tiny.activationShape(enteringUnit: 1, samples: 3, sampleLength: 16), [3, 4, 4, 8])
        XCTAssertEqual(tiny.activationShape(enteringUnit: 9, samples: 3, sampleLength: 16), [3, 2, 2, 64])
        XCTAssertEqual(ResNetConfig(layers: [3, 8, 36, 3]).activationShape(enteringUnit: 51, samples: 1, sampleLength: 224), [1, 7, 7, 2048])
        let costs = tiny.unitCosts(sampleLength: 16)
        // Stem: 2 · 49 · 1 · 8 FLOPs per pixel of its 8 × 8 output.
        XCTAssertEqual(costs[0].forward, 2 * 49 * 8 * 64)
        // layer1.1 on 4 × 4: 1×1 32→8, 3×3 8→8, 1×1 8→32.
        XCTAssertEqual(costs[2].forward, 2 * 16 * Double(32 * 8 + 9 * 8 * 8 + 8 * 32))
        XCTAssertTrue(costs.allSatisfy { $0.backwardInput == $0.forward && $0.backwardWeight == $0.forward })
    }

    // MARK: Gradients

    /// The Double reference of the whole model in training mode: stem, bottlenecks from `start`, head.
    private func referenceLoss(from start: Int, _ input: Image, _ variables: [String: [Double]], _ images: ImageBatch) -> Double {
        let weights = Weights(values: variables)
        var x = input
        for (unit, block) in tiny.blocks(sampleLength: 16).enumerated() where unit >= start {
            x = ResNetReference.bottleneck(x, planes: block.planes, stride: block.stride, weights.scoped(block.name))
        }
        let logits = ResNetReference.classifierLogits(x, classes: tiny.numClasses, weights)
        return ResNetReference.crossEntropy(logits: logits, labels: images.labels, classes: tiny.numClasses, lossWeight: Double(images.lossWeight))
    }

    /// Analytic p1 + p2 gradients of the whole resnet-tiny (batch 2, 16 × 16) against central
    /// differences of the Double reference, on a random sample of every parameter's coordinates;
    /// weights drawn away from their initialisation so no batch norm or ReLU sits in a special regime.
    /// Biases are centred on 0 (see below why they matter).
    func testWholeModelGradientMatchesFiniteDifferences() throws {
        var generator = makeGenerator(41)
        let model = try XCTUnwrap(try tiny.makeModel(seed: 7) as? ResNetChunk)
        randomize(model.parameters, std: 0.3, &generator)
        for parameter in model.parameters where parameter.name.hasSuffix(".bias") { parameter.value.fillNormal(std: 0.5, using: &generator) }
        let images = batch(tiny, samples: 2, seed: 9)
        guard case .loss(let terms) = try model.forward(nil, batch: images, microBatch: 0) else { return XCTFail("no loss") }
        XCTAssertNil(try model.backwardInput(nil, microBatch: 0))
        try model.backwardWeight(.microBatch(0))

        let variables = doubleValues(model.parameters)
        let weights = Weights(values: variables)
        let shape = ImageShape(batch: 2, height: 16, width: 16, channels: 1)
        let input = Image(values: images.images.map(Double.init), shape: shape)
        // Inputs of each block at the unperturbed point: differencing a parameter of block b reruns blocks b... and the head.
        let blocks = tiny.blocks(sampleLength: 16)
        var blockInputs = [ResNetReference.stem(input, outputChannels: tiny.stemWidth, weights)]
        for block in blocks {
            blockInputs.append(ResNetReference.bottleneck(blockInputs.last!, planes: block.planes, stride: block.stride, weights.scoped(block.name)))
        }
        let expected = referenceLoss(from: 0, blockInputs[0], variables, images)
        XCTAssertEqual(terms[0], expected, accuracy: 1e-5 * expected, "Float model loss vs Double reference")

        // Biases whose shift the next batch norm removes wherever the ReLU between passes everything (the
        // stem's, and those before a block's residual ReLU) are checked whole: such a channel's true gradient
        // is exactly 0, which only the vector's norm puts in proportion.
        let wholeVectors = Dictionary(uniqueKeysWithValues: model.parameters
            .filter { $0.name == "bn1.bias" || $0.name.hasSuffix("bn3.bias") || $0.name.hasSuffix("downsample.1.bias") }
            .map { ($0.name, Array(0..<$0.value.count)) })
        for parameter in model.parameters {
            let name = parameter.name
            let start = name.hasPrefix("layer") ? blocks.firstIndex { name.hasPrefix($0.name + ".") }! : name.hasPrefix("fc.") ? blocks.count : -1
            let loss = { (variables: [String: [Double]]) in
                start < 0
                    ? self.referenceLoss(from: 0, ResNetReference.stem(input, outputChannels: self.tiny.stemWidth, Weights(values: variables)), variables, images)
                    : self.referenceLoss(from: start, blockInputs[start], variables, images)
            }
            let gradient = parameter.gradient.toArray()
            let coordinates = wholeVectors[name] ?? sampleCoordinates(gradient.count, limit: 3, &generator)
            let expected = centralDifferences(loss, at: variables, name: name, coordinates: coordinates)
            XCTAssertLessThan(relativeError(coordinates.map { Double(gradient[$0]) }, expected), Self.wholeModelTolerance, "resnet-tiny: d loss / d \(name)")
            XCTAssertGreaterThan(expected.map(abs).max() ?? 0, 0, "resnet-tiny: d loss / d \(name) is zero on the sampled coordinates")
        }
    }

    /// Float p1 through eight blocks of batch norms, each a cancellation of O(1) terms, against Double
    /// central differences: measured up to 1.3e-4 relative on small gains' gradients (1e-6 ... 1e-5 on
    /// most), where the layers alone stay within `gradientTolerance`. A wrong connection, stride or
    /// name is off by O(1).
    static let wholeModelTolerance = 1e-3

    /// Micro-batches through the whole model: fused backward (p1 then p2 of each) against every p1
    /// first and one concatenated p2, and against single p2s in order; running statistics alike, and
    /// the stem's equal to the reference's running estimates over the micro-batches.
    func testSplitBackwardContractAndRunningStatistics() throws {
        let microBatches = (0..<3).map { batch(tiny, samples: $0 + 2, seed: UInt64(20 + $0)) }
        func run(_ order: String) throws -> (gradients: [[Float]], buffers: [[UInt8]], terms: [Double]) {
            let model = try tiny.makeModel(seed: 11)
            var terms = [0.0, 0.0]
            for (m, images) in microBatches.enumerated() {
                guard case .loss(let loss) = try model.forward(nil, batch: images, microBatch: m) else { throw TwoBPError("no loss") }
                terms = zip(terms, loss).map(+)
                if order == "fused" {
                    _ = try model.backwardInput(nil, microBatch: m)
                    try model.backwardWeight(.microBatch(m))
                }
            }
            if order != "fused" {
                for m in microBatches.indices { _ = try model.backwardInput(nil, microBatch: m) }
                if order == "concatenated" {
                    try model.backwardWeight(.allPending)
                } else {
                    for m in microBatches.indices { try model.backwardWeight(.microBatch(m)) }
                }
            }
            return (model.parameters.map { $0.gradient.toArray() }, model.buffers.map { Array($0.bytes) }, terms)
        }
        let fused = try run("fused"), single = try run("single"), concatenated = try run("concatenated")
        XCTAssertEqual(single.gradients, fused.gradients, "p1 + p2 of each micro-batch = p2s after all p1s, in the same order")
        for (index, (a, b)) in zip(concatenated.gradients, fused.gradients).enumerated() {
            XCTAssertLessThan(relativeError(a.map(Double.init), b.map(Double.init)), 1e-5, "concatenated p2 of parameter \(index)")
        }
        XCTAssertEqual(concatenated.buffers, fused.buffers, "running statistics depend on the forwards alone")
        XCTAssertEqual(concatenated.terms, fused.terms)

        let model = try XCTUnwrap(try tiny.makeModel(seed: 11) as? ResNetChunk)
        let weights = Weights(values: doubleValues(model.parameters))
        let convolved = microBatches.map { images in
            ResNetReference.conv2d(Image(values: images.images.map(Double.init), shape: ImageShape(batch: images.batchSize, height: 16, width: 16, channels: 1)),
                                   weight: weights["conv1.weight"], outputChannels: tiny.stemWidth, kernel: 7, stride: 2, padding: 3)
        }
        let expected = ResNetReference.runningStatistics(after: convolved, channels: tiny.stemWidth, momentum: 0.1)
        let names = model.buffers.map(\.name)
        for m in microBatches.indices { _ = try model.forward(nil, batch: microBatches[m], microBatch: m) }
        let stemMean = model.buffers[names.firstIndex(of: "bn1.running_mean")!].floats.map(Double.init)
        let stemVariance = model.buffers[names.firstIndex(of: "bn1.running_var")!].floats.map(Double.init)
        XCTAssertLessThan(relativeError(stemMean, expected.mean), 1e-5)
        XCTAssertLessThan(relativeError(stemVariance, expected.variance), 1e-5)
        for buffer in model.buffers where buffer.dtype == .int64 { XCTAssertEqual(buffer.integers[0], 3, buffer.name) }
    }

    func testBadBatchesAreRefused() throws {
        let model = try tiny.makeModel(seed: 1)
        let images = batch(tiny, samples: 2, seed: 1)
        let badLabel = ImageBatch(images: images.images, labels: [0, 10], batchSize: 2, side: 16, channels: 1, lossWeight: 0.5)
        assertThrowsTwoBPError(try model.forward(nil, batch: badLabel, microBatch: 0), "label 10 of 10 classes")
        let rgb = ImageBatch(images: [Float](repeating: 0, count: 2 * 16 * 16 * 3), labels: [0, 1], batchSize: 2, side: 16, channels: 3, lossWeight: 0.5)
        assertThrowsTwoBPError(try model.forward(nil, batch: rgb, microBatch: 0), "3 channels into 1")
        assertThrowsTwoBPError(try model.forward(nil, batch: TokenBatch.random(vocabularySize: 4, batchSize: 1, sequenceLength: 2, seed: 1), microBatch: 0),
                               "tokens into a resnet")
        let middle = try ResNetChunk(config: tiny, units: 2..<3, seed: 1)
        assertThrowsTwoBPError(try middle.forward(Tensor(zeros: [2, 4, 4, 8]), batch: images, microBatch: 0), "8 channels where 32 are expected")
        XCTAssertNoThrow(try model.forward(nil, batch: images, microBatch: 0), "refused batches leave no state behind")
    }
}
