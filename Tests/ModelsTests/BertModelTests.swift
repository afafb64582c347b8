import Foundation
import Layers
import Models
import Tensor
import XCTest

final class BertConfigTests: XCTestCase {
    func testNamedConfigurations() throws {
        let named = Dictionary(uniqueKeysWithValues: BertConfig.named.map { ($0.name, $0.config) })
        let large = try XCTUnwrap(named["bert-large"])
        XCTAssertEqual([large.numHiddenLayers, large.hiddenSize, large.numAttentionHeads, large.intermediateSize, large.vocabSize,
                        large.maxPositionEmbeddings, large.typeVocabSize], [24, 1024, 16, 4096, 30522, 512, 2])
        // BERT-Large's published size, 335 M with the pooler and the pre-training heads (decoder tied).
        XCTAssertEqual(large.parameterCount, 336_226_108)
        for name in ["bert-tiny", "bert-small"] {
            let config = try XCTUnwrap(named[name])
            XCTAssertEqual(config.vocabSize, BertVocabulary.size, name)
            XCTAssertEqual(config.padTokenId, Int(BertVocabulary.pad), name)
            XCTAssertEqual(config.hiddenDropoutProb, 0.1, name)
            XCTAssertEqual(config.layerNormEps, 1e-12, name)
        }
        for (name, config) in BertConfig.named {
            XCTAssertNoThrow(try config.validate(), name)
            XCTAssertTrue(try ModelRegistry.resolve(name) is BertConfig, name)
            XCTAssertEqual(config.tiedParameters, [TiedParameter(name: "bert.embeddings.word_embeddings.weight", units: [0, config.unitCount - 1])])
            XCTAssertEqual(config.unitCosts(sampleLength: 128).count, config.unitCount, name)
        }
        XCTAssertEqual(BertConfig.named.first!.config.lossTerms, ["loss", "mlm_loss", "nsp_loss", "nsp_accuracy"])
    }

    /// An absent field takes `transformers`' BertConfig default; what TwoBP writes decodes to itself.
    func testConfigJSONDefaultsAndRoundTrip() throws {
        let minimal = try ModelRegistry.decode(Data(#"{"model_type": "bert"}"#.utf8))
        XCTAssertEqual(minimal as? BertConfig, BertConfig())
        let base = BertConfig()
        XCTAssertEqual([base.vocabSize, base.hiddenSize, base.numHiddenLayers, base.numAttentionHeads, base.intermediateSize,
                        base.maxPositionEmbeddings, base.typeVocabSize, base.padTokenId], [30522, 768, 12, 12, 3072, 512, 2, 0])
        XCTAssertEqual([base.hiddenDropoutProb, base.attentionProbsDropoutProb, base.initializerRange, base.layerNormEps], [0.1, 0.1, 0.02, 1e-12])
        for (name, config) in BertConfig.named {
            let data = try config.jsonData()
            XCTAssertEqual(try ModelRegistry.decode(data) as? BertConfig, config, name)
            let object = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
            XCTAssertEqual(object["architectures"] as? [String], ["BertForPreTraining"])
            XCTAssertEqual(object["hidden_act"] as? String, "gelu")
            XCTAssertEqual(object["tie_word_embeddings"] as? Bool, true)
            XCTAssertEqual(object["layer_norm_eps"] as? Double, 1e-12)
        }
    }

    func testUnsupportedOrInvalidConfigsAreRefusedNamingTheField() {
        let cases: [(String, String)] = [
            (#"{"model_type": "bert", "hidden_act": "gelu_new"}"#, "hidden_act 'gelu_new' is not supported"),
            (#"{"model_type": "bert", "position_embedding_type": "relative_key"}"#, "position_embedding_type 'relative_key' is not supported"),
            (#"{"model_type": "bert", "tie_word_embeddings": false}"#, "tie_word_embeddings = false is not supported"),
            (#"{"model_type": "bert", "is_decoder": true}"#, "is_decoder = true is not supported"),
            (#"{"model_type": "bert", "hidden_size": 100, "num_attention_heads": 3}"#, "hidden_size 100 is not divisible by num_attention_heads 3"),
            (#"{"model_type": "bert", "hidden_dropout_prob": 1.0}"#, "hidden_dropout_prob must be in [0, 1), got 1.0"),
            (#"{"model_type": "bert", "vocab_size": 260, "pad_token_id": 260}"#, "pad_token_id 260 is outside the vocabulary of 260"),
            (#"{"model_type": "bert", "num_hidden_layers": 2.5}"#, "field 'num_hidden_layers' must be an integer"),
            (#"{"model_type": "bert", "type_vocab_size": 0}"#, "type_vocab_size must be positive, got 0"),
        ]
        for (json, message) in cases {
            XCTAssertThrowsError(try ModelRegistry.decode(Data(json.utf8)), json) { error in
                XCTAssertTrue("\(error)".contains(message), "\(json): \(error)")
            }
        }
    }
}

final class BertChunkTests: XCTestCase {
    /// Two layers of width 16 over the byte vocabulary, dropout off: small enough for Double central differences.
    private let small = BertConfig(vocabSize: BertVocabulary.size, hiddenSize: 16, numHiddenLayers: 2, numAttentionHeads: 2,
                                   intermediateSize: 32, hiddenDropoutProb: 0, attentionProbsDropoutProb: 0,
                                   maxPositionEmbeddings: 16, padTokenId: Int(BertVocabulary.pad))
    private let tiny = BertConfig.named.first { $0.name == "bert-tiny" }!.config

    /// A random batch with padding and at least one predicted position in every sequence.
    private func batch(batchSize: Int, length: Int, salt: UInt64) -> PreTrainingBatch {
        var seed = salt
        while true {
            let batch = PreTrainingBatch.random(batchSize: batchSize, sequenceLength: length, seed: seed)
            let everySamplePredicts = (0..<batchSize).allSatisfy { b in
                batch.maskedLMLabels[(b * length)..<((b + 1) * length)].contains { $0 != PreTrainingBatch.ignoreIndex }
            }
            if everySamplePredicts && batch.attentionMask.contains(0) { return batch }
            seed += 1
        }
    }

    private func forward(_ chunks: [BertChunk], _ batch: PreTrainingBatch, microBatch: Int) throws -> [Double] {
        var activation: Tensor?
        for chunk in chunks {
            switch try chunk.forward(activation, batch: batch, microBatch: microBatch) {
            case .activation(let output): activation = output
            case .loss(let terms): return terms
            }
        }
        XCTFail("no chunk ended in the loss")
        return []
    }

    private func backwardInput(_ chunks: [BertChunk], microBatch: Int) throws {
        var gradient: Tensor?
        for chunk in chunks.reversed() { gradient = try chunk.backwardInput(gradient, microBatch: microBatch) }
        XCTAssertNil(gradient)
    }

    func testParameterNamesFollowBertForPreTraining() throws {
        let model = try BertChunk(config: tiny, units: 0..<tiny.unitCount, seed: 1)
        let names = model.parameters.map(\.name)
        XCTAssertEqual(Set(names).count, names.count)
        XCTAssertEqual(names.count, 5 + 16 * 4 + 9)
        for name in ["bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight",
                     "bert.embeddings.token_type_embeddings.weight", "bert.embeddings.LayerNorm.weight", "bert.embeddings.LayerNorm.bias",
                     "bert.encoder.layer.0.attention.self.query.weight", "bert.encoder.layer.3.attention.self.value.bias",
                     "bert.encoder.layer.1.attention.output.dense.weight", "bert.encoder.layer.1.attention.output.LayerNorm.weight",
                     "bert.encoder.layer.2.intermediate.dense.weight", "bert.encoder.layer.2.output.dense.bias",
                     "bert.encoder.layer.2.output.LayerNorm.bias", "bert.pooler.dense.weight", "bert.pooler.dense.bias",
                     "cls.predictions.transform.dense.weight", "cls.predictions.transform.LayerNorm.weight", "cls.predictions.bias",
                     "cls.seq_relationship.weight", "cls.seq_relationship.bias"] {
            XCTAssertTrue(names.contains(name), name)
        }
        XCTAssertEqual(model.parameters.reduce(0) { $0 + $1.value.count }, tiny.parameterCount)
        let shapes = Dictionary(uniqueKeysWithValues: model.parameters.map { ($0.name, $0.value.shape) })
        XCTAssertEqual(shapes["bert.encoder.layer.0.intermediate.dense.weight"], [256, 64], "[out, in]")
        XCTAssertEqual(shapes["cls.seq_relationship.weight"], [2, 64])
        XCTAssertEqual(shapes["cls.predictions.bias"], [260])

        // The decoder reads the word table: one Parameter on one rank, listed once.
        XCTAssertTrue(model.heads!.predictions.decoder.weight.value === model.embeddings!.wordEmbeddings.weight.value)
        // A chunk holding only the heads lists the tied matrix under the embeddings' name.
        let last = try BertChunk(config: tiny, units: (tiny.unitCount - 1)..<tiny.unitCount, seed: 1)
        XCTAssertTrue(last.parameters.map(\.name).contains("bert.embeddings.word_embeddings.weight"))
        XCTAssertFalse(last.parameters.map(\.name).contains { $0.contains("decoder") })
    }

    /// Every parameter starts from (seed, name) alone, as in HF: matrices N(0, 0.02²), biases 0, gains 1,
    /// the [PAD] row of the word table 0; both copies of the tied matrix start equal.
    func testInitialisationIsPartitionIndependentAndFollowsTransformers() throws {
        let whole = try BertChunk(config: tiny, units: 0..<tiny.unitCount, seed: 42)
        let values = Dictionary(uniqueKeysWithValues: whole.parameters.map { ($0.name, $0.value.toArray()) })
        let last = try BertChunk(config: tiny, units: 3..<tiny.unitCount, seed: 42)
        for parameter in last.parameters {
            XCTAssertEqual(parameter.value.toArray(), values[parameter.name], "\(parameter.name) depends on the partition")
        }
        let word = values["bert.embeddings.word_embeddings.weight"]!
        XCTAssertTrue(word[(256 * 64)..<(257 * 64)].allSatisfy { $0 == 0 }, "the [PAD] row starts at zero")
        let std = (word.reduce(0) { $0 + Double($1) * Double($1) } / Double(word.count - 64)).squareRoot()
        XCTAssertEqual(std, 0.02, accuracy: 0.001)
        XCTAssertTrue(values["cls.predictions.bias"]!.allSatisfy { $0 == 0 })
        XCTAssertTrue(values["bert.encoder.layer.1.output.LayerNorm.weight"]!.allSatisfy { $0 == 1 })
        XCTAssertTrue(values["bert.pooler.dense.bias"]!.allSatisfy { $0 == 0 })
    }

    /// Analytic gradients of a whole two-layer BERT (padding, masked positions, both heads, tied
    /// decoder) against central differences of the Double reference composed from the layer
    /// references, on a sample of every parameter's coordinates; the loss terms against the reference's.
    func testWholeModelGradientMatchesFiniteDifferences() throws {
        var generator = makeGenerator(21)
        let model = try BertChunk(config: small, units: 0..<small.unitCount, seed: 5)
        randomize(model.parameters, std: 0.2, &generator)
        let (batchSize, length) = (2, 8)
        let batch = batch(batchSize: batchSize, length: length, salt: 3)

        let terms = try forward([model], batch, microBatch: 0)
        try backwardInput([model], microBatch: 0)
        try model.backwardWeight(.microBatch(0))

        let shape = BertShape(batch: batchSize, length: length, hidden: small.hiddenSize, heads: small.numAttentionHeads,
                              intermediate: small.intermediateSize, vocabulary: small.vocabSize, eps: small.layerNormEps)
        func hidden(_ v: [String: [Double]]) -> [Double] {
            var x = BertReference.embeddings(tokens: batch.tokens, tokenTypes: batch.tokenTypes, shape,
                                             Weights(values: v, prefix: "bert.embeddings."), dropout: nil)
            for layer in 0..<small.numHiddenLayers {
                x = BertReference.layer(x, shape, Weights(values: v, prefix: "bert.encoder.layer.\(layer)."), mask: batch.attentionMask,
                                        dropouts: BertLayerDropouts())
            }
            return x
        }
        func heads(_ v: [String: [Double]]) -> Weights {
            var renamed: [String: [Double]] = ["decoder.weight": v["bert.embeddings.word_embeddings.weight"]!, "bias": v["cls.predictions.bias"]!]
            for (name, value) in v {
                if name.hasPrefix("cls.predictions.transform.") { renamed[String(name.dropFirst("cls.predictions.".count))] = value }
                if name.hasPrefix("bert.pooler.") { renamed[String(name.dropFirst("bert.".count))] = value }
                if name.hasPrefix("cls.seq_relationship.") { renamed[String(name.dropFirst("cls.".count))] = value }
            }
            return Weights(values: renamed)
        }
        func referenceTerms(_ v: [String: [Double]]) -> (maskedLM: Double, nextSentence: Double) {
            let x = hidden(v)
            return (BertReference.maskedLMLoss(x, targets: batch.maskedLMLabels, lossWeight: Double(batch.maskedLMLossWeight), shape, heads(v)),
                    BertReference.nextSentenceLoss(x, labels: batch.nextSentenceLabels, lossWeight: Double(batch.nextSentenceLossWeight),
                                                   shape, heads(v)))
        }
        let variables = doubleValues(model.parameters)
        let expected = referenceTerms(variables)
        XCTAssertEqual(terms[1], expected.maskedLM, accuracy: 1e-5 * expected.maskedLM, "masked-LM loss vs Double reference")
        XCTAssertEqual(terms[2], expected.nextSentence, accuracy: 1e-5 * expected.nextSentence, "next-sentence loss vs Double reference")
        XCTAssertEqual(terms[0], terms[1] + terms[2])
        XCTAssertTrue([0, 0.5, 1].contains(terms[3]), "accuracy over two sequences")

        // The key bias shifts every score of a query alike, which softmax ignores: its gradient is zero.
        let (keyBiases, others) = (model.parameters.filter { $0.name.hasSuffix("attention.self.key.bias") },
                                   model.parameters.filter { !$0.name.hasSuffix("attention.self.key.bias") })
        let queryBiasScale = model.parameters.first { $0.name.hasSuffix("attention.self.query.bias") }!.gradient.toArray().map(abs).max()!
        for bias in keyBiases { XCTAssertLessThan(bias.gradient.toArray().map(abs).max()!, 1e-4 * queryBiasScale, bias.name) }
        checkGradients(analytic: Dictionary(uniqueKeysWithValues: others.map { ($0.name, $0.gradient.toArray()) }),
                       loss: { let t = referenceTerms($0); return t.maskedLM + t.nextSentence }, at: variables,
                       coordinatesPerTensor: 3, &generator, "bert, 2 layers")
        let padRow = model.embeddings!.wordEmbeddings.weight.gradient.toArray()[(256 * 16)..<(257 * 16)]
        XCTAssertTrue(padRow.contains { $0 != 0 }, "the decoder still trains the [PAD] row of the tied matrix")
    }

    /// Any partition, run in the same order with dropout on, performs the same float operations as
    /// one chunk: same loss terms and gradients bit for bit (the masks follow the global layer and
    /// sample, not the chunk), every stash freed. A fused backward per micro-batch matches to rounding,
    /// and splitting a batch in two gives the whole batch's gradients (p2 concatenated = sum of singles).
    func testPartitionsMatchTheWholeModelBitForBitWithDropout() throws {
        let whole = batch(batchSize: 4, length: 12, salt: 40)
        let halves = [whole.sequences(0..<2), whole.sequences(2..<4)]
        XCTAssertEqual(halves[1].dropout.firstSample, 2)
        let partitions: [[Range<Int>]] = [[0..<6], [0..<3, 3..<6], [0..<1, 1..<5, 5..<6], [0..<2, 2..<3, 3..<4, 4..<6]]
        var results: [(terms: [[Double]], gradients: [String: [Float]])] = []
        for ranges in partitions {
            let shared = SharedParameters()
            let chunks = try ranges.map { try BertChunk(config: tiny, units: $0, seed: 9, shared: shared) }
            let meter = MemoryMeter(name: "\(ranges)")
            let terms = try MemoryMeter.withCurrent(meter) { () -> [[Double]] in
                let terms = try [forward(chunks, halves[0], microBatch: 0), forward(chunks, halves[1], microBatch: 1)]
                // p2 from the last chunk down, as one chunk orders it: the tied matrix then sums
                // the decoder's gradient before the embeddings', whatever the partition.
                try backwardInput(chunks, microBatch: 1)
                for chunk in chunks.reversed() { try chunk.backwardWeight(.microBatch(1)) }
                try backwardInput(chunks, microBatch: 0)
                for chunk in chunks.reversed() { try chunk.backwardWeight(.allPending) }
                return terms
            }
            XCTAssertEqual(meter.liveBytes, 0, "\(ranges): state left after the step")
            var gradients: [String: [Float]] = [:]
            for parameter in chunks.flatMap(\.parameters) { gradients[parameter.name] = parameter.gradient.toArray() }
            results.append((terms, gradients))
        }
        for (ranges, result) in zip(partitions, results).dropFirst() {
            XCTAssertEqual(result.terms, results[0].terms, "\(ranges): loss terms")
            for (name, gradient) in result.gradients where gradient != results[0].gradients[name] {
                XCTFail("\(ranges): gradient of \(name)")
            }
        }
        XCTAssertTrue(results[0].gradients.values.allSatisfy { $0.contains { $0 != 0 } }, "every parameter gets a gradient")

        // Fused backward per micro-batch: identical terms, gradients to rounding.
        let fused = try BertChunk(config: tiny, units: 0..<tiny.unitCount, seed: 9)
        var fusedTerms: [[Double]] = []
        for (microBatch, half) in halves.enumerated() {
            fusedTerms.append(try forward([fused], half, microBatch: microBatch))
            try backwardInput([fused], microBatch: microBatch)
            try fused.backwardWeight(.microBatch(microBatch))
        }
        XCTAssertEqual(fusedTerms, results[0].terms)
        // The whole batch as one micro-batch: terms are the halves' sums, gradients equal to rounding.
        let single = try BertChunk(config: tiny, units: 0..<tiny.unitCount, seed: 9)
        let singleTerms = try forward([single], whole, microBatch: 0)
        try backwardInput([single], microBatch: 0)
        try single.backwardWeight(.microBatch(0))
        for (index, term) in singleTerms.enumerated() {
            XCTAssertEqual(term, fusedTerms[0][index] + fusedTerms[1][index], accuracy: 1e-6 * max(1, abs(term)), "term \(index)")
        }
        // The key bias shifts every score of a query by the same amount, which softmax ignores: its
        // gradient is rounding noise around zero, so it is compared in absolute terms below.
        for parameter in fused.parameters where !parameter.name.hasSuffix("attention.self.key.bias") {
            let reference = results[0].gradients[parameter.name]!.map(Double.init)
            XCTAssertLessThan(relativeError(doubles(parameter.gradient), reference), 1e-5, "fused vs 2BP: \(parameter.name)")
            let wholeGradient = single.parameters.first { $0.name == parameter.name }!.gradient
            XCTAssertLessThan(relativeError(doubles(wholeGradient), reference), 1e-5, "one micro-batch vs two: \(parameter.name)")
        }
    }

    /// Dropout changes the training forward, never the evaluation one; the masks follow (seed, step).
    func testDropoutFollowsSeedAndStepAndEvaluationDropsNothing() throws {
        let model = try BertChunk(config: tiny, units: 0..<tiny.unitCount, seed: 2)
        let base = batch(batchSize: 2, length: 12, salt: 60)
        func with(_ dropout: DropoutContext) throws -> PreTrainingBatch {
            try PreTrainingBatch(tokens: base.tokens, tokenTypes: base.tokenTypes, attentionMask: base.attentionMask,
                                 maskedLMLabels: base.maskedLMLabels, nextSentenceLabels: base.nextSentenceLabels,
                                 batchSize: 2, sequenceLength: 12, maskedLMLossWeight: base.maskedLMLossWeight,
                                 nextSentenceLossWeight: base.nextSentenceLossWeight, dropout: dropout)
        }
        func trainingLoss(_ batch: PreTrainingBatch) throws -> Double {
            let loss = try forward([model], batch, microBatch: 0)[0]
            try backwardInput([model], microBatch: 0)
            try model.backwardWeight(.microBatch(0))
            return loss
        }
        let step0 = try trainingLoss(with(DropoutContext(seed: 1, step: 0, firstSample: 0)))
        XCTAssertEqual(try trainingLoss(with(DropoutContext(seed: 1, step: 0, firstSample: 0))), step0)
        XCTAssertNotEqual(try trainingLoss(with(DropoutContext(seed: 1, step: 1, firstSample: 0))), step0)
        XCTAssertNotEqual(try trainingLoss(with(DropoutContext(seed: 2, step: 0, firstSample: 0))), step0)
        let evaluated = try model.evaluateLoss(with(DropoutContext(seed: 1, step: 0, firstSample: 0)))
        XCTAssertEqual(try model.evaluateLoss(with(DropoutContext(seed: 3, step: 7, firstSample: 0))), evaluated)
        XCTAssertNotEqual(evaluated[0], step0)
    }

    func testBadBatchesAreRefusedBeforeAnythingIsSaved() throws {
        let model = try BertChunk(config: tiny, units: 0..<tiny.unitCount, seed: 2)
        let good = batch(batchSize: 2, length: 8, salt: 70)
        func altered(labels: [Int32]? = nil, next: [Int32]? = nil, mask: [Int32]? = nil) throws -> PreTrainingBatch {
            try PreTrainingBatch(tokens: good.tokens, tokenTypes: good.tokenTypes, attentionMask: mask ?? good.attentionMask,
                                 maskedLMLabels: labels ?? good.maskedLMLabels, nextSentenceLabels: next ?? good.nextSentenceLabels,
                                 batchSize: 2, sequenceLength: 8, maskedLMLossWeight: 1, nextSentenceLossWeight: 1, dropout: good.dropout)
        }
        let cases: [(PreTrainingBatch, String)] = [
            (try altered(labels: [Int32](repeating: 300, count: 16)), "target id 300 is neither -100 nor in the vocabulary of 260"),
            (try altered(next: [0, 2]), "next-sentence labels must be 0 or 1, got 2"),
            (try altered(mask: [Int32](repeating: 2, count: 16)), "attention mask: entries must be 1 (token) or 0 (padding), got 2"),
            (PreTrainingBatch.random(batchSize: 1, sequenceLength: 200, seed: 1), "sequence length 200 exceeds max_position_embeddings 128"),
        ]
        let meter = MemoryMeter(name: "refused")
        try MemoryMeter.withCurrent(meter) {
            for (batch, message) in cases {
                XCTAssertThrowsError(try model.forward(nil, batch: batch, microBatch: 0)) { error in
                    XCTAssertTrue("\(error)".contains(message), "\(error)")
                }
            }
        }
        XCTAssertEqual(meter.liveBytes, 0)
        XCTAssertThrowsError(try model.forward(nil, batch: TokenBatch.random(vocabularySize: 4, batchSize: 1, sequenceLength: 4, seed: 1),
                                               microBatch: 0)) { error in
            XCTAssertEqual("\(error)", "a bert model takes a PreTrainingBatch, got a TokenBatch")
        }
        XCTAssertThrowsError(try PreTrainingBatch(tokens: [1], tokenTypes: [0], attentionMask: [1], maskedLMLabels: [1], nextSentenceLabels: [],
                                                  batchSize: 1, sequenceLength: 1, maskedLMLossWeight: 1, nextSentenceLossWeight: 1,
                                                  dropout: good.dropout)) { error in
            XCTAssertEqual("\(error)", "pre-training batch: 0 next-sentence labels for 1 sequences")
        }
    }
}
