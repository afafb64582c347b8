import Layers
import Tensor
import XCTest

/// Each layer on a few random shapes (drawn from `testSeed`): forward against an independent Double
/// reference, p1 and p2 against its central differences, and the split-backward contract.
final class LayersTests: XCTestCase {
    private let shapeDraws = 3

    // MARK: Linear

    func testLinearGradientsAndSchedules() throws {
        var generator = makeGenerator(1)
        for draw in 0..<shapeDraws {
            let (inputSize, outputSize, rows) = (generator.int(1...7), generator.int(1...7), generator.int(1...5))
            let make = { (seed: UInt64) -> Linear in
                let layer = Linear(inputSize: inputSize, outputSize: outputSize, bias: true)
                var generator = makeGenerator(seed)
                randomize(layer.parameters, std: 0.5, &generator)
                return layer
            }
            let context = "Linear \(inputSize)→\(outputSize), \(rows) rows"
            try checkLayerGradients(context, make(UInt64(100 + draw)), input: randomTensor([rows, inputSize], &generator),
                                    reference: { x, w in
                let y = Reference.linear(x, w["weight"], inputSize: inputSize, outputSize: outputSize)
                return y.indices.map { y[$0] + w["bias"][$0 % outputSize] }
            }, &generator)
            let inputs = (0..<3).map { _ in randomTensor([rows, inputSize], &generator) }
            let gradients = (0..<3).map { _ in randomTensor([rows, outputSize], &generator) }
            try checkSplitBackward(context, microBatches: 3) {
                SplitBackwardSubject(layer: make(UInt64(200 + draw)), inputs: inputs, outputGradients: gradients)
            }
        }
    }

    // MARK: RMSNorm

    func testRMSNormGradientsAndSchedules() throws {
        var generator = makeGenerator(2)
        for draw in 0..<shapeDraws {
            // size ≥ 2: at size 1 the norm is sign(x) up to eps, its true gradient is O(eps) and what Float
            // computes is the cancellation of two O(1) terms, so no relative tolerance is meaningful there.
            let (batch, length, size) = (generator.int(1...3), generator.int(1...4), generator.int(2...12))
            let eps: Float = [1e-5, 1e-6, 0.05][draw % 3]
            let make = { (seed: UInt64) -> RMSNorm in
                let layer = RMSNorm(size: size, eps: eps)
                var generator = makeGenerator(seed)
                randomize(layer.parameters, std: 0.5, &generator)
                return layer
            }
            let layer = make(UInt64(100 + draw))
            let context = "RMSNorm [\(batch), \(length), \(size)] eps \(eps)"
            try checkLayerGradients(context, layer, input: randomTensor([batch, length, size], &generator), apply: layer.apply,
                                    reference: { x, w in Reference.rmsNorm(x, w["weight"], eps: Double(eps)) }, &generator)
            let inputs = (0..<3).map { _ in randomTensor([batch, length, size], &generator) }
            let gradients = (0..<3).map { _ in randomTensor([batch, length, size], &generator) }
            try checkSplitBackward(context, microBatches: 3) {
                SplitBackwardSubject(layer: make(UInt64(200 + draw)), inputs: inputs, outputGradients: gradients)
            }
        }
    }

    func testRMSNormStartsAsUnitGainAndRejectsWrongWidth() throws {
        let norm = RMSNorm(size: 4)
        XCTAssertEqual(norm.weight.value.toArray(), [1, 1, 1, 1])
        XCTAssertEqual(norm.eps, 1e-5)
        let y = try norm.apply(Tensor(shape: [1, 4], values: [2, -2, 2, -2]))
        for value in y.toArray() { XCTAssertEqual(abs(value), 1, accuracy: 1e-5) }
        assertThrowsTwoBPError(try norm.forward(Tensor(zeros: [2, 3]), microBatch: 0), "RMSNorm of rows of 3 into size 4")
    }

    // MARK: Embedding

    func testEmbeddingGradientsAndSchedules() throws {
        var generator = makeGenerator(3)
        for draw in 0..<shapeDraws {
            let (vocabulary, size, batch, length) = (generator.int(2...12), generator.int(1...6), generator.int(1...3), generator.int(1...5))
            let make = { (seed: UInt64) -> Embedding in
                let layer = Embedding(vocabularySize: vocabulary, size: size)
                var generator = makeGenerator(seed)
                randomize(layer.parameters, std: 1, &generator)
                return layer
            }
            let context = "Embedding \(vocabulary)x\(size), [\(batch), \(length)]"
            let embedding = make(UInt64(100 + draw))
            let tokens = randomTokens(batch * length, vocabulary: vocabulary, &generator)
            let output = try embedding.forward(tokens: tokens, batchSize: batch, sequenceLength: length, microBatch: 0)
            XCTAssertEqual(output.shape, [batch, length, size])
            let table = doubles(embedding.weight.value)
            XCTAssertEqual(doubles(output), Reference.embedding(tokens, table, size: size), "\(context): forward")
            XCTAssertEqual(try embedding.apply(tokens: tokens, batchSize: batch, sequenceLength: length).toArray(), output.toArray())
            let projection = randomTensor(output.shape, &generator)
            try embedding.backwardInput(projection, microBatch: 0)
            try embedding.backwardWeight(.microBatch(0))
            let r = doubles(projection)
            checkGradients(analytic: ["weight": embedding.weight.gradient.toArray()], loss: { variables in
                zip(Reference.embedding(tokens, variables["weight"]!, size: size), r).reduce(0) { $0 + $1.0 * $1.1 }
            }, at: ["weight": table], coordinatesPerTensor: .max, &generator, context)

            let batches = (0..<3).map { _ in randomTokens(batch * length, vocabulary: vocabulary, &generator) }
            let gradients = (0..<3).map { _ in randomTensor([batch, length, size], &generator) }
            try checkSplitBackward(context, microBatches: 3) {
                let layer = make(UInt64(200 + draw))
                return SplitBackwardSubject(
                    parameters: layer.parameters,
                    forward: { _ = try layer.forward(tokens: batches[$0], batchSize: batch, sequenceLength: length, microBatch: $0) },
                    backwardInput: { try layer.backwardInput(gradients[$0], microBatch: $0); return [] },
                    backwardWeight: { try layer.backwardWeight($0) })
            }
        }
    }

    func testEmbeddingRejectsTokensOutsideTheVocabulary() {
        let embedding = Embedding(vocabularySize: 5, size: 2)
        assertThrowsTwoBPError(try embedding.forward(tokens: [0, 5], batchSize: 1, sequenceLength: 2, microBatch: 0), "id = vocabulary")
        assertThrowsTwoBPError(try embedding.forward(tokens: [-1, 0], batchSize: 1, sequenceLength: 2, microBatch: 0), "negative id")
        assertThrowsTwoBPError(try embedding.apply(tokens: [0, 1, 2], batchSize: 1, sequenceLength: 2), "count != batch x length")
        XCTAssertNoThrow(try embedding.forward(tokens: [0, 4], batchSize: 1, sequenceLength: 2, microBatch: 0),
                         "a refused forward must not occupy the micro-batch")
    }

    // MARK: RoPE

    /// Hugging Face rotate-half on a head of 4 = [1, 2, 3, 4] at positions 0, 1, 2 with θ = 10000:
    /// inv_freq = [1, 0.01]; pair (x₀, x₂) turns by t rad and pair (x₁, x₃) by 0.01·t rad,
    /// e.g. out₀ = x₀ cos t − x₂ sin t. Values computed independently (Python, math.cos/sin).
    /// The GPT-J interleaved convention (pairs (x₀, x₁), (x₂, x₃)) gives different numbers.
    func testRotaryEmbeddingFollowsRotateHalf() throws {
        let rotary = RotaryEmbedding(headSize: 4, maxPositions: 3, theta: 10000)
        let x = Tensor(shape: [1, 3, 4], values: [1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4])
        rotary.rotate(x, heads: 1)
        let expected: [Float] = [
            1, 2, 3, 4,
            -1.9841106485555495, 1.959900667496664, 2.4623779024123156, 4.019799668334994,
            -3.1440391170241875, 1.9196053465598233, -0.33914308281574557, 4.039197360052977,
        ]
        for (got, want) in zip(x.toArray(), expected) { XCTAssertEqual(got, want, accuracy: 1e-6) }
        rotary.rotate(x, heads: 1, inverse: true)
        for (got, want) in zip(x.toArray(), [[Float]](repeating: [1, 2, 3, 4], count: 3).joined()) {
            XCTAssertEqual(got, want, accuracy: 1e-6, "the inverse rotation undoes the rotation")
        }
    }

    // MARK: Attention

    func testCausalSelfAttentionGradientsAndSchedules() throws {
        var generator = makeGenerator(4)
        for draw in 0..<shapeDraws {
            let heads = generator.int(1...3)
            let keyValueHeads = [1, heads][draw % 2]
            let headSize = 2 * generator.int(1...3)
            let (batch, length) = (generator.int(1...2), generator.int(2...7))
            let theta = [10000.0, 500.0][draw % 2]
            let hidden = heads * headSize
            let rotary = RotaryEmbedding(headSize: headSize, maxPositions: 10, theta: theta)
            let make = { (seed: UInt64) -> CausalSelfAttention in
                let layer = CausalSelfAttention(hiddenSize: hidden, headCount: heads, keyValueHeadCount: keyValueHeads, rotary: rotary)
                var generator = makeGenerator(seed)
                randomize(layer.parameters, std: 0.6, &generator)
                return layer
            }
            let layer = make(UInt64(100 + draw))
            let shape = ReferenceShape(batch: batch, length: length, hidden: hidden, heads: heads, keyValueHeads: keyValueHeads, theta: theta)
            let context = "Attention [\(batch), \(length), \(hidden)] \(heads) heads, \(keyValueHeads) kv, θ \(theta)"
            try checkLayerGradients(context, layer, input: randomTensor([batch, length, hidden], &generator), apply: layer.apply,
                                    reference: { x, w in Reference.attention(x, shape, w) }, &generator)
            let inputs = (0..<3).map { _ in randomTensor([batch, length, hidden], &generator) }
            let gradients = (0..<3).map { _ in randomTensor([batch, length, hidden], &generator) }
            try checkSplitBackward(context, microBatches: 3) {
                SplitBackwardSubject(layer: make(UInt64(200 + draw)), inputs: inputs, outputGradients: gradients)
            }
        }
    }

    /// Sequences longer than one query block of the causal kernel (64 rows), with a partial last block.
    func testCausalSelfAttentionAcrossSeveralQueryBlocks() throws {
        var generator = makeGenerator(14)
        for (length, heads, keyValueHeads) in [(150, 2, 1), (129, 2, 2)] {
            let (batch, headSize) = (1, 2)
            let hidden = heads * headSize
            let rotary = RotaryEmbedding(headSize: headSize, maxPositions: length, theta: 10000)
            let layer = CausalSelfAttention(hiddenSize: hidden, headCount: heads, keyValueHeadCount: keyValueHeads, rotary: rotary)
            var weights = makeGenerator(UInt64(300 + length))
            randomize(layer.parameters, std: 0.6, &weights)
            let shape = ReferenceShape(batch: batch, length: length, hidden: hidden, heads: heads, keyValueHeads: keyValueHeads, theta: 10000)
            try checkLayerGradients("Attention over \(length) positions, \(heads) heads, \(keyValueHeads) kv", layer,
                                    input: randomTensor([batch, length, hidden], &generator), apply: layer.apply,
                                    reference: { x, w in Reference.attention(x, shape, w) }, &generator)
        }
    }

    func testAttentionParameterNamesAndLimits() throws {
        let rotary = RotaryEmbedding(headSize: 4, maxPositions: 3)
        let attention = CausalSelfAttention(hiddenSize: 8, headCount: 2, rotary: rotary)
        XCTAssertEqual(attention.parameters.map(\.name), ["q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"])
        assertThrowsTwoBPError(try attention.forward(Tensor(zeros: [1, 4, 8]), microBatch: 0), "length 4 beyond 3 positions")
        assertThrowsTwoBPError(try attention.forward(Tensor(zeros: [3, 8]), microBatch: 0), "not [batch, length, hidden]")
        assertThrowsTwoBPError(try attention.apply(Tensor(zeros: [1, 2, 6])), "wrong hidden size")
    }

    // MARK: MLP

    func testSwiGLUMLPGradientsAndSchedules() throws {
        var generator = makeGenerator(5)
        for draw in 0..<shapeDraws {
            let (hidden, intermediate, batch, length) = (generator.int(1...6), generator.int(1...9), generator.int(1...2), generator.int(1...4))
            let make = { (seed: UInt64) -> SwiGLUMLP in
                let layer = SwiGLUMLP(hiddenSize: hidden, intermediateSize: intermediate)
                var generator = makeGenerator(seed)
                randomize(layer.parameters, std: 0.7, &generator)
                return layer
            }
            let layer = make(UInt64(100 + draw))
            XCTAssertEqual(layer.parameters.map(\.name), ["gate_proj.weight", "up_proj.weight", "down_proj.weight"])
            let shape = ReferenceShape(batch: batch, length: length, hidden: hidden, heads: 1, keyValueHeads: 1, intermediate: intermediate)
            let context = "SwiGLUMLP \(hidden)→\(intermediate), [\(batch), \(length)]"
            try checkLayerGradients(context, layer, input: randomTensor([batch, length, hidden], &generator), apply: layer.apply,
                                    reference: { x, w in Reference.mlp(x, shape, w) }, &generator)
            let inputs = (0..<3).map { _ in randomTensor([batch, length, hidden], &generator) }
            let gradients = (0..<3).map { _ in randomTensor([batch, length, hidden], &generator) }
            try checkSplitBackward(context, microBatches: 3) {
                SplitBackwardSubject(layer: make(UInt64(200 + draw)), inputs: inputs, outputGradients: gradients)
            }
        }
    }

    // MARK: Transformer block

    func testTransformerBlockGradientsAndSchedules() throws {
        var generator = makeGenerator(6)
        for draw in 0..<2 {
            let heads = generator.int(1...2)
            let headSize = 2 * generator.int(1...2)
            let hidden = heads * headSize
            let (intermediate, batch, length) = (generator.int(2...7), generator.int(1...2), generator.int(2...4))
            let eps: Float = [1e-5, 1e-2][draw % 2]
            let rotary = RotaryEmbedding(headSize: headSize, maxPositions: 6)
            let make = { (seed: UInt64) -> TransformerBlock in
                let layer = TransformerBlock(hiddenSize: hidden, intermediateSize: intermediate, headCount: heads, eps: eps, rotary: rotary)
                var generator = makeGenerator(seed)
                randomize(layer.parameters, std: 0.5, &generator)
                return layer
            }
            let layer = make(UInt64(100 + draw))
            XCTAssertEqual(layer.parameters.map(\.name), [
                "input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                "self_attn.o_proj.weight", "post_attention_layernorm.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
                "mlp.down_proj.weight",
            ])
            var shape = ReferenceShape(batch: batch, length: length, hidden: hidden, heads: heads, keyValueHeads: heads, intermediate: intermediate)
            shape.eps = Double(eps)
            let context = "TransformerBlock [\(batch), \(length), \(hidden)] \(heads) heads, MLP \(intermediate)"
            try checkLayerGradients(context, layer, input: randomTensor([batch, length, hidden], &generator), apply: layer.apply,
                                    reference: { [shape] x, w in Reference.block(x, shape, w) }, &generator)
            let inputs = (0..<3).map { _ in randomTensor([batch, length, hidden], &generator) }
            let gradients = (0..<3).map { _ in randomTensor([batch, length, hidden], &generator) }
            try checkSplitBackward(context, microBatches: 3) {
                SplitBackwardSubject(layer: make(UInt64(200 + draw)), inputs: inputs, outputGradients: gradients)
            }
        }
    }

    // MARK: Language-model head

    func testLanguageModelHeadGradientsAndSchedules() throws {
        var generator = makeGenerator(7)
        for draw in 0..<shapeDraws {
            // hidden ≥ 2 for the final norm, as in the RMSNorm test.
            let (hidden, vocabulary, batch, length) = (generator.int(2...6), generator.int(2...11), generator.int(1...2), generator.int(1...4))
            let lossWeight = 1 / Float(batch * length * 3)
            let make = { (seed: UInt64) -> LanguageModelHead in
                let head = LanguageModelHead(hiddenSize: hidden, vocabularySize: vocabulary)
                var generator = makeGenerator(seed)
                randomize(head.parameters, std: 0.8, &generator)
                return head
            }
            let head = make(UInt64(100 + draw))
            XCTAssertEqual(head.parameters.map(\.name), ["norm.weight", "lm_head.weight"])
            let shape = ReferenceShape(batch: batch, length: length, hidden: hidden, heads: 1, keyValueHeads: 1, vocabulary: vocabulary)
            let context = "LanguageModelHead \(hidden)→\(vocabulary), [\(batch), \(length)]"
            let input = randomTensor([batch, length, hidden], &generator)
            let targets = randomTokens(batch * length, vocabulary: vocabulary, &generator)
            var variables = doubleValues(head.parameters)
            variables["input"] = doubles(input)
            let referenceLoss = { (variables: [String: [Double]]) in
                Reference.headLoss(variables["input"]!, targets: targets, lossWeight: Double(lossWeight), shape, Weights(values: variables))
            }
            let loss = try head.forward(input, targets: targets, lossWeight: lossWeight, microBatch: 0)
            XCTAssertEqual(loss, referenceLoss(variables), accuracy: 1e-5 * abs(referenceLoss(variables)), "\(context): loss")
            XCTAssertEqual(try head.loss(input, targets: targets, lossWeight: lossWeight), loss, "\(context): evaluation loss")
            let logits = try head.logits(input)
            XCTAssertEqual(logits.shape, [batch, length, vocabulary])
            let inputGradient = try head.backwardInput(microBatch: 0)
            try head.backwardWeight(.microBatch(0))
            var analytic = ["input": inputGradient.toArray()]
            for parameter in head.parameters { analytic[parameter.name] = parameter.gradient.toArray() }
            checkGradients(analytic: analytic, loss: referenceLoss, at: variables, &generator, context)

            let inputs = (0..<3).map { _ in randomTensor([batch, length, hidden], &generator) }
            let targetSets = (0..<3).map { _ in randomTokens(batch * length, vocabulary: vocabulary, &generator) }
            try checkSplitBackward(context, microBatches: 3) {
                let head = make(UInt64(200 + draw))
                return SplitBackwardSubject(
                    parameters: head.parameters,
                    forward: { _ = try head.forward(inputs[$0], targets: targetSets[$0], lossWeight: lossWeight, microBatch: $0) },
                    backwardInput: { try head.backwardInput(microBatch: $0).toArray() },
                    backwardWeight: { try head.backwardWeight($0) })
            }
        }
    }

    func testLanguageModelHeadRejectsBadTargets() {
        let head = LanguageModelHead(hiddenSize: 2, vocabularySize: 3)
        let input = Tensor(zeros: [1, 2, 2])
        assertThrowsTwoBPError(try head.forward(input, targets: [0, 3], lossWeight: 1, microBatch: 0), "target = vocabulary")
        assertThrowsTwoBPError(try head.forward(input, targets: [0], lossWeight: 1, microBatch: 0), "one target for two positions")
        XCTAssertEqual(try head.forward(input, targets: [0, 2], lossWeight: 0.5, microBatch: 0), log(3), accuracy: 1e-6,
                       "uniform logits: 2 · 0.5 · log 3")
    }
}
