import Layers
import Models
import Tensor
import XCTest

final class LlamaChunkTests: XCTestCase {
    private let tiny = LlamaConfig.named.first { $0.name == "llama-tiny" }!.config
    // Short sequences keep the Double finite differences of the whole model fast.
    private let (batchSize, length) = (2, 8)

    private func randomBatch(_ generator: inout SeededGenerator, lossWeight: Float? = nil) -> TokenBatch {
        let count = batchSize * length
        return TokenBatch(tokens: randomTokens(count, vocabulary: tiny.vocabSize, &generator),
                          targets: randomTokens(count, vocabulary: tiny.vocabSize, &generator),
                          batchSize: batchSize, sequenceLength: length, lossWeight: lossWeight ?? 1 / Float(count))
    }

    /// Forward of one micro-batch through `chunks` in order; the last returns the loss.
    private func forward(_ chunks: [LlamaChunk], _ batch: TokenBatch, microBatch: Int) throws -> Double {
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

    /// p1 of one micro-batch through `chunks` in reverse; the first returns no gradient.
    private func backwardInput(_ chunks: [LlamaChunk], microBatch: Int) throws {
        var gradient: Tensor?
        for chunk in chunks.reversed() { gradient = try chunk.backwardInput(gradient, microBatch: microBatch) }
        XCTAssertNil(gradient)
    }

    private func backwardWeight(_ chunks: [LlamaChunk], _ work: WeightGradientWork) throws {
        for chunk in chunks { try chunk.backwardWeight(work) }
    }

    // MARK: Names and initialisation

    func testParameterNamesFollowHuggingFace() throws {
        let model = try LlamaModel(config: tiny, seed: 1)
        let names = model.parameters.map(\.name)
        XCTAssertEqual(names.count, 1 + 9 * 4 + 2)
        XCTAssertEqual(Array(names.prefix(11)), [
            "model.embed_tokens.weight",
            "model.layers.0.input_layernorm.weight",
            "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
            "model.layers.0.self_attn.v_proj.weight", "model.layers.0.self_attn.o_proj.weight",
            "model.layers.0.post_attention_layernorm.weight",
            "model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight",
            "model.layers.1.input_layernorm.weight",
        ])
        XCTAssertEqual(Array(names.suffix(3)), ["model.layers.3.mlp.down_proj.weight", "model.norm.weight", "lm_head.weight"])
        XCTAssertEqual(Set(names).count, names.count)
        XCTAssertEqual(model.parameters.reduce(0) { $0 + $1.value.count }, tiny.parameterCount)
        let shapes = Dictionary(uniqueKeysWithValues: model.parameters.map { ($0.name, $0.value.shape) })
        XCTAssertEqual(shapes["model.embed_tokens.weight"], [256, 64])
        XCTAssertEqual(shapes["model.layers.2.mlp.up_proj.weight"], [172, 64])
        XCTAssertEqual(shapes["model.layers.2.mlp.down_proj.weight"], [64, 172])
        XCTAssertEqual(shapes["lm_head.weight"], [256, 64])
    }

    func testInitialisationDependsOnlyOnSeedAndName() throws {
        XCTAssertEqual(ParameterInitialization.fnv1a64([UInt8]()), 0xCBF2_9CE4_8422_2325, "FNV-1a offset basis")
        XCTAssertEqual(ParameterInitialization.fnv1a64(Array("a".utf8)), 0xAF63_DC4C_8601_EC8C, "FNV-1a test vector")

        let whole = try LlamaModel(config: tiny, seed: 42)
        let values = Dictionary(uniqueKeysWithValues: whole.parameters.map { ($0.name, $0.value.toArray()) })
        let middle = try LlamaChunk(config: tiny, units: 2..<4, seed: 42)
        XCTAssertEqual(middle.parameters.map(\.name).first, "model.layers.1.input_layernorm.weight")
        XCTAssertEqual(middle.parameters.map(\.name).last, "model.layers.2.mlp.down_proj.weight")
        for parameter in middle.parameters {
            XCTAssertEqual(parameter.value.toArray(), values[parameter.name], "\(parameter.name) depends on the partition")
        }
        let reseeded = try LlamaChunk(config: tiny, units: 0..<1, seed: 43)
        XCTAssertNotEqual(reseeded.parameters[0].value.toArray(), values["model.embed_tokens.weight"])

        for parameter in whole.parameters {
            XCTAssertTrue(parameter.gradient.toArray().allSatisfy { $0 == 0 })
            if parameter.name.hasSuffix("norm.weight") {
                XCTAssertTrue(parameter.value.toArray().allSatisfy { $0 == 1 }, "\(parameter.name) starts at ones")
            }
        }
        let embedding = values["model.embed_tokens.weight"]!.map(Double.init)
        let mean = embedding.reduce(0, +) / Double(embedding.count)
        let std = (embedding.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(embedding.count)).squareRoot()
        XCTAssertEqual(mean, 0, accuracy: 0.001)
        XCTAssertEqual(std, 0.02, accuracy: 0.001, "initializer_range")
        XCTAssertNotEqual(values["model.layers.0.self_attn.q_proj.weight"], values["model.layers.0.self_attn.k_proj.weight"])
    }

    // MARK: Gradients

    /// Analytic gradients of llama-tiny (seq 8, batch 2) against central differences of a Double
    /// reference of the whole model composed from the layer references, on a random subset of the
    /// coordinates of every parameter. Weights are drawn wider than the 0.02 initialisation (and
    /// gains away from 1) so attention and SwiGLU work away from their near-linear regime.
    func testWholeModelGradientMatchesFiniteDifferences() throws {
        var generator = makeGenerator(11)
        let model = try LlamaModel(config: tiny, seed: 7)
        randomize(model.parameters, std: 0.08, &generator)
        let batch = randomBatch(&generator)

        let loss = try forward([model.chunk], batch, microBatch: 0)
        try backwardInput([model.chunk], microBatch: 0)
        try model.chunk.backwardWeight(.microBatch(0))

        let shape = ReferenceShape(batch: batchSize, length: length, hidden: tiny.hiddenSize, heads: tiny.numAttentionHeads,
                                   keyValueHeads: tiny.numKeyValueHeads, intermediate: tiny.intermediateSize,
                                   vocabulary: tiny.vocabSize, theta: tiny.ropeTheta, eps: tiny.rmsNormEps)
        let layerCount = tiny.numHiddenLayers
        /// The reference model's loss from decoder layer `start` on (the head when start = L), given its input.
        func referenceLoss(from start: Int, _ input: [Double], _ variables: [String: [Double]]) -> Double {
            var x = input
            for layer in start..<layerCount { x = Reference.block(x, shape, Weights(values: variables, prefix: "model.layers.\(layer).")) }
            let head = Weights(values: ["norm.weight": variables["model.norm.weight"]!, "lm_head.weight": variables["lm_head.weight"]!])
            return Reference.headLoss(x, targets: batch.targets, lossWeight: Double(batch.lossWeight), shape, head)
        }
        func embed(_ variables: [String: [Double]]) -> [Double] {
            Reference.embedding(batch.tokens, variables["model.embed_tokens.weight"]!, size: tiny.hiddenSize)
        }
        let variables = doubleValues(model.parameters)
        // Inputs of each decoder layer (and of the head) at the unperturbed point: differencing a
        // parameter of layer l only reruns layers l... and the head.
        var layerInputs = [embed(variables)]
        for layer in 0..<layerCount {
            layerInputs.append(Reference.block(layerInputs[layer], shape, Weights(values: variables, prefix: "model.layers.\(layer).")))
        }
        let expectedLoss = referenceLoss(from: layerCount, layerInputs[layerCount], variables)
        XCTAssertEqual(loss, expectedLoss, accuracy: 1e-5 * expectedLoss, "Float model loss vs Double reference")
        XCTAssertEqual(referenceLoss(from: 0, embed(variables), variables), expectedLoss, "cached layer inputs")

        // Embedding rows of tokens not in the batch have no gradient: sample rows the batch uses.
        let embeddingCoordinates = (0..<4).map { _ in
            Int(batch.tokens[generator.int(0...(batch.tokens.count - 1))]) * tiny.hiddenSize + generator.int(0...(tiny.hiddenSize - 1))
        }
        for parameter in model.parameters {
            let name = parameter.name
            let start = name.hasPrefix("model.layers.") ? Int(name.split(separator: ".")[2])! : name.hasPrefix("model.embed_tokens") ? -1 : layerCount
            checkGradients(analytic: [name: parameter.gradient.toArray()], loss: { variables in
                start < 0 ? referenceLoss(from: 0, embed(variables), variables) : referenceLoss(from: start, layerInputs[start], variables)
            }, at: variables, coordinatesPerTensor: 3, chosenCoordinates: ["model.embed_tokens.weight": embeddingCoordinates],
            &generator, "llama-tiny")
        }
    }

    /// Any partition, run in the same order, performs the same float operations as one chunk:
    /// the same loss and gradients bit for bit, and every stash freed at the end.
    func testPartitionsMatchTheWholeModelBitForBit() throws {
        var generator = makeGenerator(12)
        let batches = [randomBatch(&generator, lossWeight: 1 / 32), randomBatch(&generator, lossWeight: 1 / 32)]
        let partitions: [[Range<Int>]] = [[0..<6], [0..<3, 3..<6], [0..<2, 2..<4, 4..<6], [0..<1, 1..<5, 5..<6]]
        var results: [(losses: [Double], gradients: [String: [Float]])] = []
        for ranges in partitions {
            let chunks = try ranges.map { try LlamaChunk(config: tiny, units: $0, seed: 99) }
            XCTAssertTrue(chunks.first!.isFirst && chunks.last!.isLast)
            XCTAssertEqual(chunks.filter(\.isFirst).count + chunks.filter(\.isLast).count, 2)
            let meter = MemoryMeter(name: "\(ranges)")
            let losses = try MemoryMeter.withCurrent(meter) { () -> [Double] in
                // F0 F1 I1 W1 I0 W(all pending): a 2BP cool-down then the concatenated rest.
                let losses = try [forward(chunks, batches[0], microBatch: 0), forward(chunks, batches[1], microBatch: 1)]
                try backwardInput(chunks, microBatch: 1)
                try backwardWeight(chunks, .microBatch(1))
                try backwardInput(chunks, microBatch: 0)
                try backwardWeight(chunks, .allPending)
                return losses
            }
            XCTAssertEqual(meter.liveBytes, 0, "\(ranges): state left after the step")
            let parameters = chunks.flatMap(\.parameters)
            XCTAssertEqual(parameters.map(\.name), try LlamaModel(config: tiny, seed: 99).parameters.map(\.name))
            results.append((losses, Dictionary(uniqueKeysWithValues: parameters.map { ($0.name, $0.gradient.toArray()) })))
        }
        for (ranges, result) in zip(partitions, results).dropFirst() {
            XCTAssertEqual(result.losses, results[0].losses, "\(ranges): loss")
            for (name, gradient) in result.gradients {
                XCTAssertEqual(gradient, results[0].gradients[name], "\(ranges): gradient of \(name)")
            }
        }
        XCTAssertTrue(results[0].gradients.values.allSatisfy { $0.contains { $0 != 0 } }, "every parameter gets a gradient")

        // The same step with a fused backward per micro-batch: the loss is identical and the
        // gradients equal to rounding (the schedule above concatenated micro-batch 0's p2).
        let fused = try LlamaModel(config: tiny, seed: 99)
        var fusedLosses: [Double] = []
        for (microBatch, batch) in batches.enumerated() {
            fusedLosses.append(try forward([fused.chunk], batch, microBatch: microBatch))
            try backwardInput([fused.chunk], microBatch: microBatch)
            try fused.chunk.backwardWeight(.microBatch(microBatch))
        }
        XCTAssertEqual(fusedLosses, results[0].losses)
        for parameter in fused.parameters {
            let error = relativeError(parameter.gradient.toArray().map(Double.init), results[0].gradients[parameter.name]!.map(Double.init))
            XCTAssertLessThan(error, 1e-5, "fused vs 2BP schedule: \(parameter.name)")
        }
    }

    // MARK: Inference

    func testInferencePathsAgreeWithTraining() throws {
        var generator = makeGenerator(13)
        let model = try LlamaModel(config: tiny, seed: 5)
        let batch = randomBatch(&generator)
        let trainingLoss = try forward([model.chunk], batch, microBatch: 0)
        XCTAssertEqual(try model.loss(batch), trainingLoss, "evaluation loss = training forward loss")

        let logits = try model.logits(tokens: batch.tokens, batchSize: batchSize, sequenceLength: length)
        XCTAssertEqual(logits.shape, [batchSize, length, tiny.vocabSize])
        var crossEntropy = 0.0
        for (row, target) in batch.targets.enumerated() {
            let values = (0..<tiny.vocabSize).map { Double(logits[row * tiny.vocabSize + $0]) }
            let maximum = values.max()!
            crossEntropy += maximum + log(values.reduce(0) { $0 + exp($1 - maximum) }) - values[Int(target)]
        }
        XCTAssertEqual(crossEntropy * Double(batch.lossWeight), trainingLoss, accuracy: 1e-6 * trainingLoss)

        // Causal: changing the last token of each sequence leaves earlier positions' logits alone.
        var tokens = batch.tokens
        for b in 0..<batchSize { tokens[b * length + length - 1] = (tokens[b * length + length - 1] + 1) % Int32(tiny.vocabSize) }
        let changed = try model.logits(tokens: tokens, batchSize: batchSize, sequenceLength: length)
        for b in 0..<batchSize {
            for t in 0..<length {
                let row = (b * length + t) * tiny.vocabSize
                let difference = (0..<tiny.vocabSize).map { abs(changed[row + $0] - logits[row + $0]) }.max()!
                if t < length - 1 {
                    XCTAssertLessThan(difference, 1e-6, "position \(t) sees a later token")
                } else {
                    XCTAssertGreaterThan(difference, 0, "the changed position's logits must change")
                }
            }
        }

        // Inference saved nothing: micro-batch 0 from the training forward is the only pending one.
        assertThrowsTwoBPError(try model.chunk.backwardInput(nil, microBatch: 1), "p1 of a micro-batch only inference saw")
        try backwardInput([model.chunk], microBatch: 0)
    }

    func testSequencesLongerThanMaxPositionsAndBadTokensAreRefused() throws {
        let model = try LlamaModel(config: tiny, seed: 5)
        let long = tiny.maxPositionEmbeddings + 1
        assertThrowsTwoBPError(try model.logits(tokens: Array(repeating: 0, count: long), batchSize: 1, sequenceLength: long),
                               "logits beyond max_position_embeddings")
        let batch = TokenBatch(tokens: Array(repeating: 0, count: long), targets: Array(repeating: 0, count: long),
                               batchSize: 1, sequenceLength: long, lossWeight: 1)
        assertThrowsTwoBPError(try model.chunk.forward(nil, batch: batch, microBatch: 0), "training beyond max_position_embeddings")
        assertThrowsTwoBPError(try model.loss(batch), "evaluation beyond max_position_embeddings")
        assertThrowsTwoBPError(try model.logits(tokens: [0, 256], batchSize: 1, sequenceLength: 2), "token id = vocab_size")

        // Bad targets are refused before any layer keeps state, so the micro-batch stays free.
        let bad = TokenBatch(tokens: [1, 2], targets: [3, 300], batchSize: 1, sequenceLength: 2, lossWeight: 1)
        assertThrowsTwoBPError(try model.chunk.forward(nil, batch: bad, microBatch: 0), "target id = vocab_size")
        let good = TokenBatch(tokens: [1, 2], targets: [3, 4], batchSize: 1, sequenceLength: 2, lossWeight: 1)
        XCTAssertNoThrow(try model.chunk.forward(nil, batch: good, microBatch: 0))
    }

    // MARK: Misuse

    func testChunkRangesAndInputsAreChecked() throws {
        for units in [0..<0, 5..<7, -1..<2] {
            assertThrowsTwoBPError(try LlamaChunk(config: tiny, units: units, seed: 0), "units \(units)")
        }

        var generator = makeGenerator(14)
        let batch = randomBatch(&generator)
        let first = try LlamaChunk(config: tiny, units: 0..<2, seed: 0)
        let middle = try LlamaChunk(config: tiny, units: 2..<4, seed: 0)
        let last = try LlamaChunk(config: tiny, units: 4..<6, seed: 0)
        XCTAssertEqual([first.isFirst, first.isLast, middle.isFirst, middle.isLast, last.isFirst, last.isLast],
                       [true, false, false, false, false, true])
        let activation = Tensor(zeros: [batchSize, length, tiny.hiddenSize])
        assertThrowsTwoBPError(try first.forward(activation, batch: batch, microBatch: 0), "activation into the first chunk")
        assertThrowsTwoBPError(try middle.forward(nil, batch: batch, microBatch: 0), "no activation into a middle chunk")
        assertThrowsTwoBPError(try middle.forward(Tensor(zeros: [batchSize, length + 1, tiny.hiddenSize]), batch: batch, microBatch: 0),
                               "activation of the wrong shape")
        guard case .activation = try middle.forward(activation, batch: batch, microBatch: 0) else { return XCTFail("middle chunk output") }
        assertThrowsTwoBPError(try middle.backwardInput(nil, microBatch: 0), "p1 of a middle chunk without a gradient")
        guard case .loss = try last.forward(activation, batch: batch, microBatch: 0) else { return XCTFail("last chunk output") }
        assertThrowsTwoBPError(try last.backwardInput(activation, microBatch: 0), "a gradient into the last chunk's p1")
        assertThrowsTwoBPError(try last.backwardWeight(.microBatch(0)), "p2 before p1")
        XCTAssertNotNil(try last.backwardInput(nil, microBatch: 0))
    }
}
