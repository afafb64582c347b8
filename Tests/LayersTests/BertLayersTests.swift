import Foundation
import Layers
import Tensor
import XCTest

/// A layer whose forward also takes an attention mask and a dropout context, bound to fixed ones
/// so that the harness drives it as a plain `Layer` (backward needs neither).
private final class BoundLayer: Layer {
    private let layer: Layer
    private let boundForward: (Tensor, Int) throws -> Tensor

    init(_ layer: Layer, forward: @escaping (Tensor, Int) throws -> Tensor) {
        self.layer = layer
        boundForward = forward
    }

    var parameters: [Parameter] { layer.parameters }
    func forward(_ input: Tensor, microBatch: Int) throws -> Tensor { try boundForward(input, microBatch) }
    func backwardInput(_ outputGradient: Tensor, microBatch: Int) throws -> Tensor {
        try layer.backwardInput(outputGradient, microBatch: microBatch)
    }
    func backwardWeight(_ work: WeightGradientWork) throws { try layer.backwardWeight(work) }
}

/// The multipliers (0 or 1 / (1 − p)) `dropout` applies to a [shape] activation in `context`,
/// read off by dropping a tensor of ones.
private func dropoutMultipliers(_ dropout: Dropout, shape: [Int], context: DropoutContext) -> [Double] {
    let ones = Tensor(shape: shape, values: [Float](repeating: 1, count: shape.reduce(1, *)))
    dropout.apply(ones, context: context)
    return doubles(ones)
}

/// A [batch, length] 1/0 mask (length ≥ 3): sample 0 fully valid, every other sample with at least
/// two padded positions anywhere in the sequence and at least one valid one.
private func randomPaddingMask(batch: Int, length: Int, _ generator: inout SeededGenerator) -> [Int32] {
    precondition(length >= 3)
    var mask = [Int32](repeating: 1, count: batch * length)
    for b in 1..<max(batch, 1) {
        var positions = Array(0..<length)
        positions.shuffle(using: &generator)
        for t in positions.prefix(generator.int(2...(length - 1))) { mask[b * length + t] = 0 }
    }
    return mask
}

/// Each BERT piece on a few random shapes (drawn from `testSeed`): forward against the independent
/// Double reference (`BertReference`), p1 and every p2 against its central differences (dropout
/// masks fixed by reusing one context on both sides), and the split-backward contract.
final class BertLayersTests: XCTestCase {
    private let shapeDraws = 3

    // MARK: LayerNorm

    func testLayerNormGradientsAndSchedules() throws {
        var generator = makeGenerator(21)
        for draw in 0..<shapeDraws {
            // size ≥ 3: at size 1 the output is the bias, at size 2 it is ±weight + bias, so the true dx is
            // zero (up to eps) and what Float computes is rounding, nothing to compare relatively.
            let (batch, length, size) = (generator.int(1...3), generator.int(1...4), generator.int(3...12))
            let eps: Float = [1e-12, 1e-5, 0.1][draw % 3]
            let make = { (seed: UInt64) -> LayerNorm in
                let layer = LayerNorm(size: size, eps: eps)
                var generator = makeGenerator(seed)
                randomize(layer.parameters, std: 0.5, &generator)
                return layer
            }
            let layer = make(UInt64(100 + draw))
            let context = "LayerNorm [\(batch), \(length), \(size)] eps \(eps)"
            try checkLayerGradients(context, layer, input: randomTensor([batch, length, size], std: 2, &generator), apply: layer.apply,
                                    reference: { x, w in BertReference.layerNorm(x, w, eps: Double(eps)) }, &generator)
            let inputs = (0..<3).map { _ in randomTensor([batch, length, size], &generator) }
            let gradients = (0..<3).map { _ in randomTensor([batch, length, size], &generator) }
            try checkSplitBackward(context, microBatches: 3) {
                SplitBackwardSubject(layer: make(UInt64(200 + draw)), inputs: inputs, outputGradients: gradients)
            }
        }
    }

    func testLayerNormStartsAsStandardisationAndRejectsWrongWidth() throws {
        let norm = LayerNorm(size: 4)
        XCTAssertEqual(norm.parameters.map(\.name), ["weight", "bias"])
        XCTAssertEqual(norm.weight.value.toArray(), [1, 1, 1, 1])
        XCTAssertEqual(norm.bias.value.toArray(), [0, 0, 0, 0])
        XCTAssertEqual(norm.eps, 1e-12, "BERT's layer_norm_eps")
        XCTAssertFalse(norm.weight.decays || norm.bias.decays, "norm gains and biases take no weight decay")
        // mean 5, biased variance 5: (x − 5) / √5.
        let y = try norm.apply(Tensor(shape: [1, 4], values: [2, 4, 6, 8]))
        for (got, want) in zip(y.toArray(), [-3, -1, 1, 3].map { Float($0 / 5.0.squareRoot()) }) {
            XCTAssertEqual(got, want, accuracy: 1e-6)
        }
        assertThrowsTwoBPError(try norm.forward(Tensor(zeros: [2, 3]), microBatch: 0), "LayerNorm of rows of 3 into size 4")
    }

    // MARK: GELU

    func testGELUGradientsAndSchedules() throws {
        var generator = makeGenerator(22)
        for draw in 0..<shapeDraws {
            let shape = [generator.int(1...3), generator.int(1...4), generator.int(1...9)]
            let layer = GELU()
            XCTAssertTrue(layer.parameters.isEmpty)
            let context = "GELU \(shape)"
            // std 3 reaches the tails, where erf saturates and the exact and tanh forms differ most.
            try checkLayerGradients(context, layer, input: randomTensor(shape, std: 3, &generator), apply: layer.apply,
                                    reference: { x, _ in BertReference.gelu(x) }, &generator)
            let inputs = (0..<3).map { _ in randomTensor(shape, std: 2, &generator) }
            let gradients = (0..<3).map { _ in randomTensor(shape, &generator) }
            try checkSplitBackward("\(context), draw \(draw)", microBatches: 3) {
                SplitBackwardSubject(layer: GELU(), inputs: inputs, outputGradients: gradients)
            }
        }
    }

    /// The exact form, not the tanh approximation `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`: at
    /// x = −3 they differ by ~2.3e-4 (−0.0040497 vs −0.0036374), far beyond Float rounding.
    func testGELUIsTheErfForm() {
        let y = GELU().apply(Tensor(shape: [3], values: [-3, 0, 1]))
        XCTAssertEqual(y[0], Float(-1.5 * (1 + erf(-3 / 2.0.squareRoot()))), accuracy: 1e-7)
        XCTAssertEqual(y[1], 0)
        XCTAssertEqual(y[2], Float(0.5 * (1 + erf(1 / 2.0.squareRoot()))), accuracy: 1e-7)
    }

    // MARK: Attention

    func testBidirectionalAttentionWithPaddingGradientsAndSchedules() throws {
        var generator = makeGenerator(23)
        for draw in 0..<shapeDraws {
            let (heads, headSize) = (generator.int(1...3), generator.int(1...3))
            let (batch, length) = (generator.int(2...3), generator.int(3...6))
            let hidden = heads * headSize
            let probability: Float = [0, 0.3, 0.5][draw % 3]
            let dropout = try Dropout(probability: probability, site: 7)
            let make = { (seed: UInt64) throws -> BidirectionalSelfAttention in
                let layer = try BidirectionalSelfAttention(hiddenSize: hidden, headCount: heads, dropout: dropout)
                var generator = makeGenerator(seed)
                randomize(layer.parameters, std: 0.6, &generator)
                return layer
            }
            let layer = try make(UInt64(100 + draw))
            let mask = randomPaddingMask(batch: batch, length: length, &generator)
            let attentionMask = try AttentionMask(mask, batchSize: batch, sequenceLength: length)
            let dropoutContext = DropoutContext(seed: 11, step: 3, firstSample: 5)
            let probabilityDropout = probability == 0 ? nil
                : dropoutMultipliers(dropout, shape: [batch, heads, length, length], context: dropoutContext)
            if let probabilityDropout { XCTAssertTrue(probabilityDropout.contains(0), "the mask drops something") }
            let shape = BertShape(batch: batch, length: length, hidden: hidden, heads: heads)
            let context = "Attention [\(batch), \(length), \(hidden)] \(heads) heads, mask \(mask), dropout \(probability)"
            try checkLayerGradients(
                context,
                BoundLayer(layer) { try layer.forward($0, attentionMask: attentionMask, dropout: dropoutContext, microBatch: $1) },
                input: randomTensor([batch, length, hidden], &generator),
                apply: probability == 0 ? { try layer.apply($0, attentionMask: attentionMask) } : nil,
                vanishingGradients: ["self.key.bias"],
                reference: { x, w in BertReference.attention(x, shape, w, mask: mask, probabilityDropout: probabilityDropout) },
                &generator)

            let inputs = (0..<3).map { _ in randomTensor([batch, length, hidden], &generator) }
            let gradients = (0..<3).map { _ in randomTensor([batch, length, hidden], &generator) }
            let masks = try (0..<3).map { _ in
                try AttentionMask(randomPaddingMask(batch: batch, length: length, &generator), batchSize: batch, sequenceLength: length)
            }
            try checkSplitBackward(context, microBatches: 3) {
                let layer = try! make(UInt64(200 + draw))
                return SplitBackwardSubject(layer: BoundLayer(layer) { x, m in
                    try layer.forward(x, attentionMask: masks[m], dropout: DropoutContext(seed: 11, step: 3, firstSample: m * batch),
                                      microBatch: m)
                }, inputs: inputs, outputGradients: gradients)
            }
        }
    }

    /// A sample with no valid key at all: every score gets finfo.min, so (as in HF) the softmax is
    /// uniform over the sequence and the output finite; the valid sample next to it is unaffected.
    func testBidirectionalAttentionOfAFullyPaddedSampleStaysFinite() throws {
        var generator = makeGenerator(24)
        let (batch, length, heads, hidden) = (2, 4, 2, 4)
        let layer = try BidirectionalSelfAttention(hiddenSize: hidden, headCount: heads)
        randomize(layer.parameters, std: 0.6, &generator)
        let mask: [Int32] = [1, 1, 1, 1, 0, 0, 0, 0]
        let attentionMask = try AttentionMask(mask, batchSize: batch, sequenceLength: length)
        let input = randomTensor([batch, length, hidden], &generator)
        let output = try layer.forward(input, attentionMask: attentionMask, dropout: nil, microBatch: 0)
        XCTAssertTrue(output.toArray().allSatisfy(\.isFinite))
        var weights = doubleValues(layer.parameters)
        weights["input"] = doubles(input)
        let expected = BertReference.attention(doubles(input), BertShape(batch: batch, length: length, hidden: hidden, heads: heads),
                                               Weights(values: weights), mask: mask, probabilityDropout: nil)
        XCTAssertLessThan(relativeError(doubles(output), expected), forwardTolerance)
        XCTAssertEqual(try layer.apply(input, attentionMask: attentionMask).toArray(), output.toArray())
        let inputGradient = try layer.backwardInput(randomTensor(output.shape, &generator), microBatch: 0)
        try layer.backwardWeight(.microBatch(0))
        XCTAssertTrue(inputGradient.toArray().allSatisfy(\.isFinite))
        XCTAssertTrue(layer.parameters.allSatisfy { $0.gradient.toArray().allSatisfy(\.isFinite) })
    }

    /// Padded keys get exactly zero probability, as in HF (where exp(finfo.min − max) underflows to 0),
    /// not merely ~1e-38: with x nonzero only at padded positions, no gradient at all reaches the key
    /// and value projections, while the padded queries still train the query projection. (Near-zero
    /// probabilities would also be subnormal, and subnormals slowed every later GEMM sixfold.)
    func testBidirectionalAttentionGivesPaddedKeysExactlyZeroWeight() throws {
        var generator = makeGenerator(32)
        let (length, heads, hidden) = (6, 2, 4)
        let mask: [Int32] = [1, 1, 0, 0, 1, 0]
        let layer = try BidirectionalSelfAttention(hiddenSize: hidden, headCount: heads)
        randomize(layer.parameters, std: 0.6, &generator)
        let input = randomTensor([1, length, hidden], &generator)
        for t in 0..<length where mask[t] == 1 {
            for c in 0..<hidden { input[t * hidden + c] = 0 }
        }
        _ = try layer.forward(input, attentionMask: AttentionMask(mask, batchSize: 1, sequenceLength: length), dropout: nil, microBatch: 0)
        _ = try layer.backwardInput(randomTensor([1, length, hidden], &generator), microBatch: 0)
        try layer.backwardWeight(.microBatch(0))
        XCTAssertEqual(layer.key.weight.gradient.toArray(), [Float](repeating: 0, count: hidden * hidden))
        XCTAssertEqual(layer.value.weight.gradient.toArray(), [Float](repeating: 0, count: hidden * hidden))
        XCTAssertTrue(layer.query.weight.gradient.toArray().contains { $0 != 0 }, "padded queries still attend")
    }

    func testAttentionParameterNamesAndLimits() throws {
        let attention = try BidirectionalSelfAttention(hiddenSize: 6, headCount: 2)
        XCTAssertEqual(attention.parameters.map(\.name), [
            "self.query.weight", "self.query.bias", "self.key.weight", "self.key.bias", "self.value.weight", "self.value.bias",
            "output.dense.weight", "output.dense.bias",
        ])
        assertThrowsTwoBPError(try BidirectionalSelfAttention(hiddenSize: 6, headCount: 4), "4 heads do not divide 6")
        assertThrowsTwoBPError(try attention.forward(Tensor(zeros: [3, 6]), microBatch: 0), "not [batch, length, hidden]")
        assertThrowsTwoBPError(try attention.apply(Tensor(zeros: [1, 2, 4])), "wrong hidden size")
        let mask = try AttentionMask([1, 1, 0, 1, 1, 1], batchSize: 2, sequenceLength: 3)
        assertThrowsTwoBPError(try attention.forward(Tensor(zeros: [3, 2, 6]), attentionMask: mask, dropout: nil, microBatch: 0),
                               "mask of [2, 3] for input [3, 2, 6]")
        XCTAssertNoThrow(try attention.forward(Tensor(zeros: [2, 3, 6]), attentionMask: mask, dropout: nil, microBatch: 0),
                         "a refused forward must not occupy the micro-batch")
        assertThrowsTwoBPError(try AttentionMask([1, 2], batchSize: 1, sequenceLength: 2), "mask entry 2")
        assertThrowsTwoBPError(try AttentionMask([1, 0, 1], batchSize: 1, sequenceLength: 2), "3 entries for 1 x 2")
    }

    // MARK: Embeddings

    func testBertEmbeddingsGradientsAndSchedules() throws {
        var generator = makeGenerator(25)
        for draw in 0..<shapeDraws {
            // hidden ≥ 3 for the LayerNorm, as in its own test; length ≥ 2 so a token other than the pad trains a word row.
            let (vocabulary, hidden, batch, length) = (generator.int(3...9), generator.int(3...5), generator.int(1...3), generator.int(2...4))
            let maxPositions = length + generator.int(0...2)
            let probability: Float = [0, 0.4, 0.2][draw % 3]
            let dropout = try Dropout(probability: probability, site: 0)
            let make = { (seed: UInt64) -> BertEmbeddings in
                let layer = BertEmbeddings(vocabularySize: vocabulary, hiddenSize: hidden, maxPositions: maxPositions, dropout: dropout)
                var generator = makeGenerator(seed)
                randomize(layer.parameters, std: 1, &generator)
                return layer
            }
            let embeddings = make(UInt64(100 + draw))
            XCTAssertEqual(embeddings.parameters.map(\.name), [
                "word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias",
            ])
            var tokens = randomTokens(batch * length, vocabulary: vocabulary, &generator)
            tokens[0] = 0  // the padding id (pad_token_id 0) occurs, and so does another
            tokens[1] = Int32(generator.int(1...(vocabulary - 1)))
            let tokenTypes = randomTokens(batch * length, vocabulary: 2, &generator)
            let dropoutContext = DropoutContext(seed: 3, step: 9, firstSample: 2)
            let multipliers = probability == 0 ? nil : dropoutMultipliers(dropout, shape: [batch, length, hidden], context: dropoutContext)
            let shape = BertShape(batch: batch, length: length, hidden: hidden)
            let context = "BertEmbeddings \(vocabulary) x \(hidden), \(maxPositions) positions, [\(batch), \(length)], dropout \(probability)"

            let output = try embeddings.forward(tokens: tokens, tokenTypes: tokenTypes, batchSize: batch, sequenceLength: length,
                                                dropout: dropoutContext, microBatch: 0)
            XCTAssertEqual(output.shape, [batch, length, hidden])
            let variables = doubleValues(embeddings.parameters)
            let reference = { (variables: [String: [Double]]) in
                BertReference.embeddings(tokens: tokens, tokenTypes: tokenTypes, shape, Weights(values: variables), dropout: multipliers)
            }
            XCTAssertLessThan(relativeError(doubles(output), reference(variables)), forwardTolerance, "\(context): forward")
            if probability == 0 {
                XCTAssertEqual(try embeddings.apply(tokens: tokens, tokenTypes: tokenTypes, batchSize: batch, sequenceLength: length).toArray(),
                               output.toArray(), "\(context): inference path")
            }
            let projection = randomTensor(output.shape, &generator)
            try embeddings.backwardInput(projection, microBatch: 0)
            try embeddings.backwardWeight(.microBatch(0))
            var analytic: [String: [Float]] = [:]
            for parameter in embeddings.parameters { analytic[parameter.name] = parameter.gradient.toArray() }
            // PyTorch's padding_idx: the pad row is looked up (central differences see it) but never trained.
            XCTAssertEqual(Array(analytic["word_embeddings.weight"]![0..<hidden]), [Float](repeating: 0, count: hidden),
                           "\(context): the padding row gets no gradient")
            let r = doubles(projection)
            checkGradients(analytic: analytic, loss: { variables in zip(reference(variables), r).reduce(0) { $0 + $1.0 * $1.1 } },
                           at: variables, coordinatesPerTensor: .max,
                           chosenCoordinates: ["word_embeddings.weight": Array(hidden..<(vocabulary * hidden))], &generator, context)

            let tokenSets = (0..<3).map { _ in randomTokens(batch * length, vocabulary: vocabulary, &generator) }
            let typeSets = (0..<3).map { _ in randomTokens(batch * length, vocabulary: 2, &generator) }
            let gradients = (0..<3).map { _ in randomTensor([batch, length, hidden], &generator) }
            try checkSplitBackward(context, microBatches: 3) {
                let layer = make(UInt64(200 + draw))
                return SplitBackwardSubject(
                    parameters: layer.parameters,
                    forward: {
                        _ = try layer.forward(tokens: tokenSets[$0], tokenTypes: typeSets[$0], batchSize: batch, sequenceLength: length,
                                              dropout: DropoutContext(seed: 3, step: 9, firstSample: $0 * batch), microBatch: $0)
                    },
                    backwardInput: { try layer.backwardInput(gradients[$0], microBatch: $0); return [] },
                    backwardWeight: { try layer.backwardWeight($0) })
            }
        }
    }

    func testBertEmbeddingsRejectBadIdsBeforeSavingAnything() throws {
        let embeddings = BertEmbeddings(vocabularySize: 5, hiddenSize: 2, maxPositions: 3)
        func forward(_ tokens: [Int32], _ types: [Int32]?, length: Int) throws {
            _ = try embeddings.forward(tokens: tokens, tokenTypes: types, batchSize: 1, sequenceLength: length, dropout: nil, microBatch: 0)
        }
        assertThrowsTwoBPError(try forward([0, 5], nil, length: 2), "token id = vocabulary")
        assertThrowsTwoBPError(try forward([0, -1], nil, length: 2), "negative token id")
        assertThrowsTwoBPError(try forward([0, 1], [0, 2], length: 2), "token type 2 with type_vocab_size 2")
        assertThrowsTwoBPError(try forward([0, 1], [0], length: 2), "one type for two tokens")
        assertThrowsTwoBPError(try forward([0, 1, 2, 3], nil, length: 4), "length 4 beyond 3 positions")
        assertThrowsTwoBPError(try embeddings.apply(tokens: [0], tokenTypes: nil, batchSize: -1, sequenceLength: -1), "negative sizes")
        XCTAssertNoThrow(try forward([0, 4, 1], [1, 1, 0], length: 3), "a refused forward must not occupy the micro-batch")
        // nil token types are HF's default of all zeros.
        XCTAssertEqual(try embeddings.apply(tokens: [1, 2], tokenTypes: nil, batchSize: 1, sequenceLength: 2).toArray(),
                       try embeddings.apply(tokens: [1, 2], tokenTypes: [0, 0], batchSize: 1, sequenceLength: 2).toArray())
    }

    // MARK: BertLayer

    func testBertLayerGradientsAndSchedules() throws {
        var generator = makeGenerator(26)
        for draw in 0..<2 {
            let (heads, headSize) = (generator.int(1...2), generator.int(3...4))  // hidden ≥ 3 for the LayerNorms
            let hidden = heads * headSize
            let (intermediate, batch, length) = (generator.int(2...6), 2, generator.int(3...5))
            let eps: Float = [1e-12, 1e-3][draw]
            let (hiddenDropout, attentionDropout): (Float, Float) = [(0, 0), (0.2, 0.3)][draw]
            let firstSite: UInt64 = 4
            let make = { (seed: UInt64) throws -> BertLayer in
                let layer = try BertLayer(hiddenSize: hidden, intermediateSize: intermediate, headCount: heads, eps: eps,
                                          hiddenDropout: hiddenDropout, attentionDropout: attentionDropout, dropoutSite: firstSite)
                var generator = makeGenerator(seed)
                randomize(layer.parameters, std: 0.5, &generator)
                return layer
            }
            let layer = try make(UInt64(100 + draw))
            XCTAssertEqual(layer.parameters.map(\.name), [
                "attention.self.query.weight", "attention.self.query.bias", "attention.self.key.weight", "attention.self.key.bias",
                "attention.self.value.weight", "attention.self.value.bias", "attention.output.dense.weight", "attention.output.dense.bias",
                "attention.output.LayerNorm.weight", "attention.output.LayerNorm.bias", "intermediate.dense.weight", "intermediate.dense.bias",
                "output.dense.weight", "output.dense.bias", "output.LayerNorm.weight", "output.LayerNorm.bias",
            ])
            let mask = randomPaddingMask(batch: batch, length: length, &generator)
            let attentionMask = try AttentionMask(mask, batchSize: batch, sequenceLength: length)
            let dropoutContext = DropoutContext(seed: 5, step: 1, firstSample: 6)
            var dropouts = BertLayerDropouts()
            if attentionDropout > 0 {
                dropouts.probabilities = dropoutMultipliers(try Dropout(probability: attentionDropout, site: firstSite),
                                                            shape: [batch, heads, length, length], context: dropoutContext)
            }
            if hiddenDropout > 0 {
                dropouts.attentionOutput = dropoutMultipliers(try Dropout(probability: hiddenDropout, site: firstSite + 1),
                                                              shape: [batch, length, hidden], context: dropoutContext)
                dropouts.output = dropoutMultipliers(try Dropout(probability: hiddenDropout, site: firstSite + 2),
                                                     shape: [batch, length, hidden], context: dropoutContext)
            }
            var shape = BertShape(batch: batch, length: length, hidden: hidden, heads: heads, intermediate: intermediate)
            shape.eps = Double(eps)
            let context = "BertLayer [\(batch), \(length), \(hidden)] \(heads) heads, FFN \(intermediate), mask \(mask), dropout \(hiddenDropout)/\(attentionDropout)"
            try checkLayerGradients(
                context,
                BoundLayer(layer) { try layer.forward($0, attentionMask: attentionMask, dropout: dropoutContext, microBatch: $1) },
                input: randomTensor([batch, length, hidden], &generator),
                apply: hiddenDropout == 0 && attentionDropout == 0 ? { try layer.apply($0, attentionMask: attentionMask) } : nil,
                vanishingGradients: ["attention.self.key.bias"],
                reference: { [shape] x, w in BertReference.layer(x, shape, w, mask: mask, dropouts: dropouts) }, &generator)

            let inputs = (0..<3).map { _ in randomTensor([batch, length, hidden], &generator) }
            let gradients = (0..<3).map { _ in randomTensor([batch, length, hidden], &generator) }
            let masks = try (0..<3).map { _ in
                try AttentionMask(randomPaddingMask(batch: batch, length: length, &generator), batchSize: batch, sequenceLength: length)
            }
            try checkSplitBackward(context, microBatches: 3) {
                let layer = try! make(UInt64(200 + draw))
                return SplitBackwardSubject(layer: BoundLayer(layer) { x, m in
                    try layer.forward(x, attentionMask: masks[m], dropout: DropoutContext(seed: 5, step: 1, firstSample: m * batch),
                                      microBatch: m)
                }, inputs: inputs, outputGradients: gradients)
            }
        }
    }

    // MARK: Pre-training heads

    func testMaskedLMHeadGradientsAndSchedules() throws {
        var generator = makeGenerator(27)
        for draw in 0..<shapeDraws {
            // hidden ≥ 3 for the transform's LayerNorm.
            let (hidden, vocabulary, batch, length) = (generator.int(3...5), generator.int(2...9), generator.int(1...2), generator.int(2...4))
            let make = { (seed: UInt64) -> BertMaskedLMHead in
                let head = BertMaskedLMHead(hiddenSize: hidden, vocabularySize: vocabulary)
                var generator = makeGenerator(seed)
                randomize(head.parameters, std: 0.8, &generator)
                return head
            }
            let head = make(UInt64(100 + draw))
            XCTAssertEqual(head.parameters.map(\.name), [
                "transform.dense.weight", "transform.dense.bias", "transform.LayerNorm.weight", "transform.LayerNorm.bias",
                "decoder.weight", "bias",
            ])
            let targets = maskedTargets(batch * length, vocabulary: vocabulary, &generator)
            let predicted = targets.filter { $0 != BertMaskedLMHead.ignoreIndex }.count
            let lossWeight = 1 / Float(predicted * 2)
            let shape = BertShape(batch: batch, length: length, hidden: hidden, vocabulary: vocabulary)
            let context = "BertMaskedLMHead \(hidden)→\(vocabulary), [\(batch), \(length)], targets \(targets)"
            let input = randomTensor([batch, length, hidden], &generator)
            var variables = doubleValues(head.parameters)
            variables["input"] = doubles(input)
            let referenceLoss = { (variables: [String: [Double]]) in
                BertReference.maskedLMLoss(variables["input"]!, targets: targets, lossWeight: Double(lossWeight), shape, Weights(values: variables))
            }
            let loss = try head.forward(input, targets: targets, lossWeight: lossWeight, microBatch: 0)
            XCTAssertEqual(loss, referenceLoss(variables), accuracy: 1e-5 * abs(referenceLoss(variables)), "\(context): loss")
            XCTAssertEqual(try head.loss(input, targets: targets, lossWeight: lossWeight), loss, "\(context): evaluation loss")
            let inputGradient = try head.backwardInput(microBatch: 0)
            try head.backwardWeight(.microBatch(0))
            for (row, target) in targets.enumerated() where target == BertMaskedLMHead.ignoreIndex {
                XCTAssertEqual(Array(inputGradient.toArray()[row * hidden..<(row + 1) * hidden]), [Float](repeating: 0, count: hidden),
                               "\(context): dx of unpredicted row \(row)")
            }
            var analytic = ["input": inputGradient.toArray()]
            for parameter in head.parameters { analytic[parameter.name] = parameter.gradient.toArray() }
            checkGradients(analytic: analytic, loss: referenceLoss, at: variables, coordinatesPerTensor: .max, &generator, context)

            let inputs = (0..<3).map { _ in randomTensor([batch, length, hidden], &generator) }
            // The middle micro-batch predicts nothing: its loss is 0 and its p2 adds nothing, even concatenated.
            let targetSets = [maskedTargets(batch * length, vocabulary: vocabulary, &generator),
                              [Int32](repeating: BertMaskedLMHead.ignoreIndex, count: batch * length),
                              maskedTargets(batch * length, vocabulary: vocabulary, &generator)]
            XCTAssertEqual(try make(1).forward(inputs[1], targets: targetSets[1], lossWeight: 1, microBatch: 0), 0)
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

    /// Targets with about half the positions ignored (-100), at least one predicted and one ignored.
    private func maskedTargets(_ count: Int, vocabulary: Int, _ generator: inout SeededGenerator) -> [Int32] {
        var targets = randomTokens(count, vocabulary: vocabulary, &generator).map { generator.int(0...1) == 0 ? BertMaskedLMHead.ignoreIndex : $0 }
        targets[0] = Int32(generator.int(0...(vocabulary - 1)))
        targets[count - 1] = BertMaskedLMHead.ignoreIndex
        return targets
    }

    func testNextSentenceHeadGradientsAndSchedules() throws {
        var generator = makeGenerator(28)
        for draw in 0..<shapeDraws {
            let (hidden, batch, length) = (generator.int(1...5), generator.int(1...3), generator.int(1...3))
            let make = { (seed: UInt64) -> BertNextSentenceHead in
                let head = BertNextSentenceHead(hiddenSize: hidden)
                var generator = makeGenerator(seed)
                randomize(head.parameters, std: 0.8, &generator)
                return head
            }
            let head = make(UInt64(100 + draw))
            XCTAssertEqual(head.parameters.map(\.name), ["pooler.dense.weight", "pooler.dense.bias", "seq_relationship.weight", "seq_relationship.bias"])
            let labels = randomTokens(batch, vocabulary: 2, &generator)
            let lossWeight = 1 / Float(batch)
            let shape = BertShape(batch: batch, length: length, hidden: hidden)
            let context = "BertNextSentenceHead \(hidden), [\(batch), \(length)], labels \(labels)"
            let input = randomTensor([batch, length, hidden], &generator)
            var variables = doubleValues(head.parameters)
            variables["input"] = doubles(input)
            let referenceLoss = { (variables: [String: [Double]]) in
                BertReference.nextSentenceLoss(variables["input"]!, labels: labels, lossWeight: Double(lossWeight), shape, Weights(values: variables))
            }
            let loss = try head.forward(input, labels: labels, lossWeight: lossWeight, microBatch: 0)
            XCTAssertEqual(loss, referenceLoss(variables), accuracy: 1e-5 * abs(referenceLoss(variables)), "\(context): loss")
            XCTAssertEqual(try head.loss(input, labels: labels, lossWeight: lossWeight), loss, "\(context): evaluation loss")
            let inputGradient = try head.backwardInput(microBatch: 0)
            try head.backwardWeight(.microBatch(0))
            var analytic = ["input": inputGradient.toArray()]
            for parameter in head.parameters { analytic[parameter.name] = parameter.gradient.toArray() }
            checkGradients(analytic: analytic, loss: referenceLoss, at: variables, coordinatesPerTensor: .max,
                           chosenCoordinates: ["input": (0..<batch).flatMap { b in (b * length * hidden)..<((b * length + 1) * hidden) }],
                           &generator, context)
            for b in 0..<batch {
                XCTAssertTrue(inputGradient.toArray()[((b * length + 1) * hidden)..<((b + 1) * length * hidden)].allSatisfy { $0 == 0 },
                              "\(context): dx is zero but on each first token")
            }

            let inputs = (0..<3).map { _ in randomTensor([batch, length, hidden], &generator) }
            let labelSets = (0..<3).map { _ in randomTokens(batch, vocabulary: 2, &generator) }
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

    func testPreTrainingHeadsSumBothLossesAndRefuseBadLabelsFirst() throws {
        var generator = makeGenerator(29)
        let (hidden, vocabulary, batch, length) = (4, 5, 2, 3)
        let make = { (seed: UInt64) -> BertPreTrainingHeads in
            let heads = BertPreTrainingHeads(hiddenSize: hidden, vocabularySize: vocabulary)
            var generator = makeGenerator(seed)
            randomize(heads.parameters, std: 0.8, &generator)
            return heads
        }
        let heads = make(100)
        XCTAssertEqual(heads.parameters.map(\.name), [
            "predictions.transform.dense.weight", "predictions.transform.dense.bias", "predictions.transform.LayerNorm.weight",
            "predictions.transform.LayerNorm.bias", "predictions.decoder.weight", "predictions.bias",
            "pooler.dense.weight", "pooler.dense.bias", "seq_relationship.weight", "seq_relationship.bias",
        ])
        let shape = BertShape(batch: batch, length: length, hidden: hidden, vocabulary: vocabulary)
        let targets = maskedTargets(batch * length, vocabulary: vocabulary, &generator)
        let labels: [Int32] = [1, 0]
        let (maskedLMWeight, nextSentenceWeight): (Float, Float) = (0.25, 0.5)
        let input = randomTensor([batch, length, hidden], &generator)
        var variables = doubleValues(heads.parameters)
        variables["input"] = doubles(input)
        let referenceLoss = { (variables: [String: [Double]]) -> Double in
            let w = Weights(values: variables)
            return BertReference.maskedLMLoss(variables["input"]!, targets: targets, lossWeight: Double(maskedLMWeight), shape, w.scoped("predictions"))
                + BertReference.nextSentenceLoss(variables["input"]!, labels: labels, lossWeight: Double(nextSentenceWeight), shape, w)
        }
        func forward(_ heads: BertPreTrainingHeads, _ labels: [Int32], _ targets: [Int32], microBatch: Int = 0) throws -> Double {
            try heads.forward(input, maskedLMTargets: targets, maskedLMLossWeight: maskedLMWeight,
                              nextSentenceLabels: labels, nextSentenceLossWeight: nextSentenceWeight, microBatch: microBatch)
        }
        assertThrowsTwoBPError(try forward(heads, [1, 2], targets), "next-sentence label 2")
        assertThrowsTwoBPError(try forward(heads, [1], targets), "one label for two sequences")
        assertThrowsTwoBPError(try forward(heads, labels, targets.map { $0 == -100 ? -1 : $0 }), "target -1")
        assertThrowsTwoBPError(try forward(heads, labels, [Int32](targets.dropLast())), "a target short")
        let loss = try forward(heads, labels, targets)  // the refused forwards left nothing behind
        XCTAssertEqual(loss, referenceLoss(variables), accuracy: 1e-5 * abs(referenceLoss(variables)))
        XCTAssertEqual(try heads.loss(input, maskedLMTargets: targets, maskedLMLossWeight: maskedLMWeight,
                                      nextSentenceLabels: labels, nextSentenceLossWeight: nextSentenceWeight), loss)
        let inputGradient = try heads.backwardInput(microBatch: 0)
        try heads.backwardWeight(.microBatch(0))
        var analytic = ["input": inputGradient.toArray()]
        for parameter in heads.parameters { analytic[parameter.name] = parameter.gradient.toArray() }
        checkGradients(analytic: analytic, loss: referenceLoss, at: variables, coordinatesPerTensor: .max, &generator, "BertPreTrainingHeads")

        try checkSplitBackward("BertPreTrainingHeads", microBatches: 2) {
            let heads = make(200)
            return SplitBackwardSubject(
                parameters: heads.parameters,
                forward: { _ = try forward(heads, labels, targets, microBatch: $0) },
                backwardInput: { try heads.backwardInput(microBatch: $0).toArray() },
                backwardWeight: { try heads.backwardWeight($0) })
        }
    }

    // MARK: Dropout

    func testDropoutDropsAFractionPAndScalesTheRest() throws {
        let context = DropoutContext(seed: 42, step: 7, firstSample: 0)
        for probability: Float in [0.1, 0.5, 0.9] {
            let dropout = try Dropout(probability: probability, site: 3)
            let values = dropoutMultipliers(dropout, shape: [8, 50_000], context: context)
            let dropped = Double(values.filter { $0 == 0 }.count) / Double(values.count)
            // 400 000 draws: the standard error is ≤ 8e-4, so 5e-3 is over six of them.
            XCTAssertEqual(dropped, Double(probability), accuracy: 5e-3, "dropped fraction at p = \(probability)")
            XCTAssertTrue(values.allSatisfy { $0 == 0 || $0 == Double(1 / (1 - probability)) }, "survivors scale by 1 / (1 − p)")
            for b in 0..<8 {  // every sample, not just on average
                let sample = values[b * 50_000..<(b + 1) * 50_000]
                XCTAssertEqual(Double(sample.filter { $0 == 0 }.count) / 50_000, Double(probability), accuracy: 0.015)
            }
        }
    }

    /// The mask is a function of (seed, step, global sample, site, position) alone: splitting a batch
    /// into micro-batches with the right `firstSample` reproduces it bit for bit, and changing any one
    /// coordinate gives an independent mask (two independent masks at p = 0.5 disagree on half the elements).
    func testDropoutMaskDependsOnlyOnItsCoordinates() throws {
        let dropout = try Dropout(probability: 0.5, site: 9)
        let base = DropoutContext(seed: 1, step: 2, firstSample: 10)
        let whole = dropoutMultipliers(dropout, shape: [6, 2000], context: base)
        let parts = dropoutMultipliers(dropout, shape: [2, 2000], context: base)
            + dropoutMultipliers(dropout, shape: [4, 2000], context: DropoutContext(seed: 1, step: 2, firstSample: 12))
        XCTAssertEqual(parts, whole, "micro-batches [10, 12) and [12, 16) are the batch [10, 16)")
        XCTAssertEqual(dropoutMultipliers(dropout, shape: [6, 40, 50], context: base), whole,
                       "a sample's mask depends on the element's row-major position in the sample, not on the inner shape")
        XCTAssertNotEqual(Array(dropoutMultipliers(dropout, shape: [3, 4000], context: base)[2000..<4000]), Array(whole[2000..<4000]),
                          "but elements 2000 ..< 4000 of sample 10 are not elements 0 ..< 2000 of sample 11")
        let reference = dropoutMultipliers(dropout, shape: [1, 20_000], context: base)
        let variants: [(String, [Double])] = [
            ("seed", dropoutMultipliers(dropout, shape: [1, 20_000], context: DropoutContext(seed: 2, step: 2, firstSample: 10))),
            ("step", dropoutMultipliers(dropout, shape: [1, 20_000], context: DropoutContext(seed: 1, step: 3, firstSample: 10))),
            ("sample", dropoutMultipliers(dropout, shape: [1, 20_000], context: DropoutContext(seed: 1, step: 2, firstSample: 11))),
            ("site", dropoutMultipliers(try Dropout(probability: 0.5, site: 10), shape: [1, 20_000], context: base)),
        ]
        for (coordinate, variant) in variants {
            let disagreement = Double(zip(variant, reference).filter { $0 != $1 }.count) / 20_000
            XCTAssertEqual(disagreement, 0.5, accuracy: 0.02, "another \(coordinate) draws an independent mask")
        }
        XCTAssertEqual(dropoutMultipliers(dropout, shape: [6, 2000], context: base), whole, "no hidden state: the same call twice")
    }

    /// A pipelined step splits the batch into micro-batches; with each micro-batch's `firstSample`
    /// a BertLayer drops exactly what it drops on the whole batch (equal to GEMM rounding), and a
    /// wrong `firstSample` shows.
    func testBertLayerOnMicroBatchesMatchesTheWholeBatch() throws {
        var generator = makeGenerator(30)
        let (batch, length, hidden, heads, intermediate) = (4, 5, 6, 2, 8)
        let layer = try BertLayer(hiddenSize: hidden, intermediateSize: intermediate, headCount: heads,
                                  hiddenDropout: 0.3, attentionDropout: 0.3, dropoutSite: 1)
        randomize(layer.parameters, std: 0.5, &generator)
        let input = randomTensor([batch, length, hidden], &generator)
        let mask = randomPaddingMask(batch: batch, length: length, &generator)
        let context = { (firstSample: Int) in DropoutContext(seed: 8, step: 4, firstSample: firstSample) }
        let full = try layer.forward(input, attentionMask: AttentionMask(mask, batchSize: batch, sequenceLength: length),
                                     dropout: context(0), microBatch: 0)
        /// Samples `range` as their own micro-batch `microBatch`, numbered from `firstSample`.
        func part(_ range: Range<Int>, firstSample: Int, microBatch: Int) throws -> [Double] {
            let partMask = try AttentionMask(Array(mask[(range.lowerBound * length)..<(range.upperBound * length)]),
                                             batchSize: range.count, sequenceLength: length)
            return doubles(try layer.forward(input.rows(range), attentionMask: partMask, dropout: context(firstSample), microBatch: microBatch))
        }
        let split = try part(0..<2, firstSample: 0, microBatch: 1) + part(2..<4, firstSample: 2, microBatch: 2)
        XCTAssertLessThan(relativeError(split, doubles(full)), 1e-6)
        let misnumbered = try part(2..<4, firstSample: 0, microBatch: 3)
        XCTAssertGreaterThan(relativeError(misnumbered, Array(doubles(full)[(2 * length * hidden)...])), 0.05,
                             "samples 2 and 3 numbered 0 and 1 draw other masks")
    }

    func testDropoutRefusesBadProbabilitiesAndCostsNothingWhenOff() throws {
        assertThrowsTwoBPError(try Dropout(probability: -0.1, site: 0), "negative probability")
        assertThrowsTwoBPError(try Dropout(probability: 1, site: 0), "probability 1")
        assertThrowsTwoBPError(try Dropout(probability: .nan, site: 0), "NaN probability")
        assertThrowsTwoBPError(try BertLayer(hiddenSize: 4, intermediateSize: 4, headCount: 2, hiddenDropout: 1.5), "hidden_dropout_prob 1.5")
        let tensor = Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        let context = DropoutContext(seed: 0, step: 0, firstSample: 0)
        XCTAssertTrue(Dropout.disabled.applied(to: tensor, context: context) === tensor, "p = 0: no copy")
        XCTAssertTrue(try Dropout(probability: 0.5, site: 0).applied(to: tensor, context: nil) === tensor, "no context: no copy")
        Dropout.disabled.apply(tensor, context: context)
        XCTAssertEqual(tensor.toArray(), [1, 2, 3, 4, 5, 6])
        // A BertLayer with zero probabilities and a context computes exactly what it computes without one.
        var generator = makeGenerator(31)
        let layer = try BertLayer(hiddenSize: 4, intermediateSize: 6, headCount: 2)
        randomize(layer.parameters, std: 0.5, &generator)
        let input = randomTensor([2, 3, 4], &generator)
        XCTAssertEqual(try layer.forward(input, attentionMask: nil, dropout: context, microBatch: 0).toArray(),
                       try layer.apply(input).toArray())
    }
}
