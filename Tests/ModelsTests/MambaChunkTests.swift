import Foundation
import Layers
import Models
import Tensor
import XCTest

/// mamba-tiny as a whole and in pieces: Hugging Face names, initialisation, p1 and p2 of the whole model against
/// central differences of the Double reference (`MambaReference.swift`), partitions against the whole model, and
/// the split backward against the fused one. The embedding is tied to lm_head, as `tie_word_embeddings` defaults.
final class MambaChunkTests: XCTestCase {
    private let tiny = MambaConfig.named.first { $0.name == "mamba-tiny" }!.config
    private let (batchSize, length) = (2, 7)

    private func randomBatch(_ generator: inout SeededGenerator, lossWeight: Float? = nil) -> TokenBatch {
        let count = batchSize * length
        return TokenBatch(tokens: randomTokens(count, vocabulary: tiny.vocabSize, &generator),
                          targets: randomTokens(count, vocabulary: tiny.vocabSize, &generator),
                          batchSize: batchSize, sequenceLength: length, lossWeight: lossWeight ?? 1 / Float(count))
    }

    private func whole(seed: UInt64, config: MambaConfig? = nil) throws -> MambaChunk {
        let config = config ?? tiny
        return try MambaChunk(config: config, units: 0..<config.unitCount, seed: seed)
    }

    private func forward(_ chunks: [MambaChunk], _ batch: TokenBatch, microBatch: Int) throws -> Double {
        var activation: Tensor?
        for chunk in chunks {
            switch try chunk.forward(activation, batch: batch, microBatch: microBatch) {
            case .activation(let output): activation = output
            case .loss(let terms): return terms[0]
            }
        }
        XCTFail("no chunk ended in the loss")
        return .nan
    }

    private func backwardInput(_ chunks: [MambaChunk], microBatch: Int) throws {
        var gradient: Tensor?
        for chunk in chunks.reversed() { gradient = try chunk.backwardInput(gradient, microBatch: microBatch) }
        XCTAssertNil(gradient)
    }

    // MARK: Names and initialisation

    func testParameterNamesFollowMambaForCausalLM() throws {
        let tied = try whole(seed: 1)
        let names = tied.parameters.map(\.name)
        XCTAssertEqual(Array(names.prefix(11)), [
            "backbone.embeddings.weight", "backbone.layers.0.norm.weight",
            "backbone.layers.0.mixer.in_proj.weight", "backbone.layers.0.mixer.conv1d.weight", "backbone.layers.0.mixer.conv1d.bias",
            "backbone.layers.0.mixer.x_proj.weight", "backbone.layers.0.mixer.dt_proj.weight", "backbone.layers.0.mixer.dt_proj.bias",
            "backbone.layers.0.mixer.A_log", "backbone.layers.0.mixer.D", "backbone.layers.0.mixer.out_proj.weight",
        ])
        XCTAssertEqual(names.last, "backbone.norm_f.weight", "the tied lm_head is the embedding's matrix, listed once")
        XCTAssertEqual(Set(names).count, names.count)
        XCTAssertEqual(tied.parameters.reduce(0) { $0 + $1.value.count }, tiny.parameterCount)
        XCTAssertTrue(tied.head!.lmHead.weight.value === tied.embedding!.weight.value)
        let shapes = Dictionary(uniqueKeysWithValues: tied.parameters.map { ($0.name, $0.value.shape) })
        XCTAssertEqual(shapes["backbone.layers.3.mixer.conv1d.weight"], [64, 1, 4])
        XCTAssertEqual(shapes["backbone.layers.3.mixer.x_proj.weight"], [18, 64])
        XCTAssertEqual(shapes["backbone.layers.3.mixer.A_log"], [64, 8])

        var untiedConfig = tiny
        untiedConfig.tieWordEmbeddings = false
        let untied = try whole(seed: 1, config: untiedConfig)
        XCTAssertEqual(untied.parameters.map(\.name).suffix(2), ["backbone.norm_f.weight", "lm_head.weight"])
        XCTAssertEqual(untiedConfig.tiedParameters, [])
        // The last stage alone holds a copy of the tied matrix, under the embedding's name.
        let last = try MambaChunk(config: tiny, units: 3..<6, seed: 1)
        XCTAssertEqual(last.parameters.last?.name, "backbone.embeddings.weight")
    }

    /// Hugging Face's starts (A_log = log(1 … N), D = 1, softplus(Δ bias) in [0.001, 0.1], zero conv bias, unit norms,
    /// the embedding N(0, initializer_range²)), independent of the partition; A_log and D take no weight decay.
    func testInitialisationFollowsHuggingFaceAndThePartition() throws {
        let model = try whole(seed: 42)
        let values = Dictionary(uniqueKeysWithValues: model.parameters.map { ($0.name, $0.value.toArray()) })
        let middle = try MambaChunk(config: tiny, units: 2..<4, seed: 42)
        for parameter in middle.parameters {
            XCTAssertEqual(parameter.value.toArray(), values[parameter.name], "\(parameter.name) depends on the partition")
        }
        let prefix = "backbone.layers.1.mixer."
        XCTAssertEqual(values[prefix + "A_log"], (0..<64 * 8).map { log(Float($0 % 8 + 1)) })
        XCTAssertEqual(values[prefix + "D"], Array(repeating: 1, count: 64))
        XCTAssertEqual(values[prefix + "conv1d.bias"], Array(repeating: 0, count: 64))
        XCTAssertEqual(values["backbone.norm_f.weight"], Array(repeating: 1, count: 32))
        let deltas = values[prefix + "dt_proj.bias"]!.map { log1p(exp(Double($0))) }
        XCTAssertTrue(deltas.allSatisfy { $0 >= 0.001 * 0.9999 && $0 <= 0.1 * 1.0001 }, "softplus(Δ bias) in [time_step_min, time_step_max]")
        XCTAssertNotEqual(values[prefix + "dt_proj.bias"], values["backbone.layers.2.mixer.dt_proj.bias"])
        let embedding = values["backbone.embeddings.weight"]!.map(Double.init)
        let std = (embedding.reduce(0) { $0 + $1 * $1 } / Double(embedding.count)).squareRoot()
        XCTAssertEqual(std, 0.1, accuracy: 0.005, "initializer_range")
        let decays = Dictionary(uniqueKeysWithValues: model.parameters.map { ($0.name, $0.decays) })
        XCTAssertEqual(decays[prefix + "A_log"], false)
        XCTAssertEqual(decays[prefix + "D"], false)
        XCTAssertEqual(decays[prefix + "in_proj.weight"], true)
    }

    // MARK: Gradients

    /// p1 and p2 of mamba-tiny (tied, batch 2 × 7 tokens) against central differences of a Double reference of the
    /// whole model composed from the layer references, on a sample of every parameter's coordinates. Matrices are
    /// drawn wider than their start, gains away from 1; A_log and the Δ bias keep Hugging Face's starts, jittered,
    /// so states live over many steps.
    func testWholeModelGradientMatchesFiniteDifferences() throws {
        var generator = makeGenerator(31)
        let model = try whole(seed: 7)
        for parameter in model.parameters {
            if parameter.name.hasSuffix("A_log") || parameter.name.hasSuffix("dt_proj.bias") {
                for i in 0..<parameter.value.count { parameter.value[i] += Float(0.2 * generator.nextNormal()) }
            } else {
                randomize([parameter], std: parameter.name.hasSuffix("embeddings.weight") ? 0.5 : 0.3, &generator)
            }
        }
        let batch = randomBatch(&generator)
        let loss = try forward([model], batch, microBatch: 0)
        try backwardInput([model], microBatch: 0)
        try model.backwardWeight(.microBatch(0))

        let shape = MambaReferenceShape(batch: batchSize, length: length, hidden: tiny.hiddenSize, intermediate: tiny.intermediateSize,
                                        states: tiny.stateSize, kernel: tiny.convKernel, rank: tiny.timeStepRank,
                                        useBias: tiny.useBias, useConvBias: tiny.useConvBias, eps: tiny.layerNormEpsilon)
        let headShape = ReferenceShape(batch: batchSize, length: length, hidden: tiny.hiddenSize, heads: 1, keyValueHeads: 1,
                                       vocabulary: tiny.vocabSize, eps: tiny.layerNormEpsilon)
        let layers = tiny.numHiddenLayers
        func referenceLoss(from start: Int, _ input: [Double], _ variables: [String: [Double]]) -> Double {
            var x = input
            for layer in start..<layers { x = Reference.mambaBlock(x, shape, Weights(values: variables, prefix: "backbone.layers.\(layer).")) }
            let head = Weights(values: ["norm.weight": variables["backbone.norm_f.weight"]!,
                                        "lm_head.weight": variables["backbone.embeddings.weight"]!])
            return Reference.headLoss(x, targets: batch.targets, lossWeight: Double(batch.lossWeight), headShape, head)
        }
        func embed(_ variables: [String: [Double]]) -> [Double] {
            Reference.embedding(batch.tokens, variables["backbone.embeddings.weight"]!, size: tiny.hiddenSize)
        }
        let variables = doubleValues(model.parameters)
        var layerInputs = [embed(variables)]
        for layer in 0..<layers {
            layerInputs.append(Reference.mambaBlock(layerInputs[layer], shape, Weights(values: variables, prefix: "backbone.layers.\(layer).")))
        }
        let expectedLoss = referenceLoss(from: layers, layerInputs[layers], variables)
        XCTAssertEqual(loss, expectedLoss, accuracy: 1e-5 * expectedLoss, "Float model loss vs Double reference")

        // The tied matrix: rows of tokens in the batch (embedding and lm_head paths) and of others (lm_head only).
        let embeddingCoordinates = (0..<3).map { _ in
            Int(batch.tokens[generator.int(0...(batch.tokens.count - 1))]) * tiny.hiddenSize + generator.int(0...(tiny.hiddenSize - 1))
        } + [generator.int(0...(tiny.vocabSize * tiny.hiddenSize - 1))]
        for parameter in model.parameters {
            let name = parameter.name
            let start = name.hasPrefix("backbone.layers.") ? Int(name.split(separator: ".")[2])! : name.hasPrefix("backbone.embeddings") ? -1 : layers
            checkGradients(analytic: [name: parameter.gradient.toArray()], loss: { variables in
                start < 0 ? referenceLoss(from: 0, embed(variables), variables) : referenceLoss(from: start, layerInputs[start], variables)
            }, at: variables, coordinatesPerTensor: 3, chosenCoordinates: ["backbone.embeddings.weight": embeddingCoordinates],
            &generator, "mamba-tiny")
        }
    }

    /// Any partition, run in the same order, performs the same float operations as one chunk: the same loss and
    /// gradients bit for bit (the tied matrix shared through one `SharedParameters`, as on one rank), every stash
    /// freed at the end; p1 + p2 per micro-batch (fused) agrees to rounding with concatenated p2 (`.allPending`).
    func testPartitionsAndSplitBackwardMatchTheWholeModel() throws {
        var generator = makeGenerator(32)
        let batches = [randomBatch(&generator, lossWeight: 1 / 28), randomBatch(&generator, lossWeight: 1 / 28)]
        let partitions: [[Range<Int>]] = [[0..<6], [0..<3, 3..<6], [0..<1, 1..<5, 5..<6]]
        var results: [(losses: [Double], gradients: [String: [Float]])] = []
        for ranges in partitions {
            let shared = SharedParameters()
            let chunks = try ranges.map { try MambaChunk(config: tiny, units: $0, seed: 99, shared: shared) }
            let meter = MemoryMeter(name: "\(ranges)")
            let losses = try MemoryMeter.withCurrent(meter) { () -> [Double] in
                let losses = try [forward(chunks, batches[0], microBatch: 0), forward(chunks, batches[1], microBatch: 1)]
                try backwardInput(chunks, microBatch: 1)
                // p2 from the last chunk back, as one chunk orders it, so the tied matrix sums lm_head's
                // gradient before the embedding's in every partition.
                for chunk in chunks.reversed() { try chunk.backwardWeight(.microBatch(1)) }
                try backwardInput(chunks, microBatch: 0)
                for chunk in chunks.reversed() { try chunk.backwardWeight(.allPending) }
                return losses
            }
            XCTAssertEqual(meter.liveBytes, 0, "\(ranges): state left after the step")
            let parameters = chunks.flatMap(\.parameters)
            results.append((losses, Dictionary(parameters.map { ($0.name, $0.gradient.toArray()) }, uniquingKeysWith: { first, _ in first })))
        }
        for (ranges, result) in zip(partitions, results).dropFirst() {
            XCTAssertEqual(result.losses, results[0].losses, "\(ranges): loss")
            XCTAssertEqual(Set(result.gradients.keys), Set(results[0].gradients.keys))
            for (name, gradient) in result.gradients {
                XCTAssertEqual(gradient, results[0].gradients[name], "\(ranges): gradient of \(name)")
            }
        }
        XCTAssertTrue(results[0].gradients.values.allSatisfy { $0.contains { $0 != 0 } }, "every parameter gets a gradient")

        let fused = try whole(seed: 99)
        var fusedLosses: [Double] = []
        for (microBatch, batch) in batches.enumerated() {
            fusedLosses.append(try forward([fused], batch, microBatch: microBatch))
            try backwardInput([fused], microBatch: microBatch)
            try fused.backwardWeight(.microBatch(microBatch))
        }
        XCTAssertEqual(fusedLosses, results[0].losses)
        for parameter in fused.parameters {
            let error = relativeError(parameter.gradient.toArray().map(Double.init), results[0].gradients[parameter.name]!.map(Double.init))
            XCTAssertLessThan(error, 1e-5, "fused vs 2BP schedule: \(parameter.name)")
        }
    }

    // MARK: Inference and misuse

    func testInferencePathsAgreeWithTrainingAndAreCausal() throws {
        var generator = makeGenerator(33)
        let model = try whole(seed: 5)
        let batch = randomBatch(&generator)
        let trainingLoss = try forward([model], batch, microBatch: 0)
        XCTAssertEqual(try model.loss(batch), trainingLoss, "evaluation loss = training forward loss")
        let logits = try model.logits(tokens: batch.tokens, batchSize: batchSize, sequenceLength: length)
        XCTAssertEqual(logits.shape, [batchSize, length, tiny.vocabSize])
        var tokens = batch.tokens
        tokens[length - 1] = (tokens[length - 1] + 1) % Int32(tiny.vocabSize)
        let changed = try model.logits(tokens: tokens, batchSize: batchSize, sequenceLength: length)
        let vocabulary = tiny.vocabSize
        for t in 0..<length {
            let difference = (0..<vocabulary).map { abs(changed[t * vocabulary + $0] - logits[t * vocabulary + $0]) }.max()!
            if t < length - 1 { XCTAssertEqual(difference, 0, "position \(t) sees a later token") } else { XCTAssertGreaterThan(difference, 0) }
        }
        assertThrowsTwoBPError(try model.backwardInput(nil, microBatch: 1), "p1 of a micro-batch only inference saw")
        try backwardInput([model], microBatch: 0)
        try model.backwardWeight(.microBatch(0))

        for units in [0..<0, 5..<7, -1..<2] {
            assertThrowsTwoBPError(try MambaChunk(config: tiny, units: units, seed: 0), "units \(units)")
        }
        let middle = try MambaChunk(config: tiny, units: 2..<4, seed: 0)
        assertThrowsTwoBPError(try middle.forward(nil, batch: batch, microBatch: 0), "no activation into a middle chunk")
        assertThrowsTwoBPError(try middle.forward(Tensor(zeros: [batchSize, length + 1, tiny.hiddenSize]), batch: batch, microBatch: 0),
                               "activation of the wrong shape")
        let bad = TokenBatch(tokens: [1, 2], targets: [3, 300], batchSize: 1, sequenceLength: 2, lossWeight: 1)
        assertThrowsTwoBPError(try model.forward(nil, batch: bad, microBatch: 0), "target id = vocab_size")
    }
}
