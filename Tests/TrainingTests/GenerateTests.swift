import Foundation
import Models
import Tensor
@testable import Training
import XCTest
@testable import Checkpoints
@testable import Data

final class GenerateTests: XCTestCase {
    // MARK: Loading

    func testLoadsAHuggingFaceStyleFolderWithTheSavedWeights() throws {
        let folder = try temporaryFolder(self).appendingPathComponent("hf")
        let original = try LlamaModel(config: inferenceTestConfig(), seed: 7)
        try writeInferenceFolder(original, to: folder)

        let loaded = try ModelLoading.load(from: folder)
        XCTAssertEqual(loaded.folder.standardizedFileURL, folder.standardizedFileURL)
        XCTAssertEqual(loaded.config as? LlamaConfig, original.config)
        let model = try XCTUnwrap(loaded.model as? LlamaChunk)
        XCTAssertEqual(loaded.model.parameters.map(\.name), original.parameters.map(\.name))
        for (a, b) in zip(loaded.model.parameters, original.parameters) {
            XCTAssertEqual(a.value.toArray(), b.value.toArray(), a.name)
        }
        let tokens = ByteTokenizer.encode("To be, or not")
        XCTAssertEqual(try model.logits(tokens: tokens, batchSize: 1, sequenceLength: tokens.count).toArray(),
                       try original.logits(tokens: tokens, batchSize: 1, sequenceLength: tokens.count).toArray())
    }

    func testLoadsShardedWeights() throws {
        let folder = try temporaryFolder(self).appendingPathComponent("sharded")
        let original = try LlamaModel(config: inferenceTestConfig(), seed: 8)
        let named = original.parameters.map { (name: $0.name, tensor: $0.value) }
        let shards = SafeTensors.partition(named.map(StoredTensor.init), maxShardBytes: 8_000)
        XCTAssertGreaterThan(shards.count, 2)
        try SafeTensors.writeSharded(shards, to: folder)
        try original.config.jsonData().write(to: folder.appendingPathComponent("config.json"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("model.safetensors").path))

        let loaded = try ModelLoading.load(from: folder)
        for (a, b) in zip(loaded.model.parameters, original.parameters) {
            XCTAssertEqual(a.value.toArray(), b.value.toArray(), a.name)
        }
    }

    func testLoadsTheLatestStepOfATrainingCheckpointAndAStepFolder() throws {
        let directory = try temporaryFolder(self).appendingPathComponent("run")
        let config = inferenceTestConfig()
        var models: [Int: LlamaModel] = [:]
        for step in [2, 10, 9] {
            let model = try LlamaModel(config: config, seed: UInt64(step))
            models[step] = model
            let state = try TrainerState(step: step, seed: 1, batchSize: 1, sampleLength: 8, dataFingerprint: "0-0",
                                         tokensSeen: 0, schedule: LearningRateSchedule(maxLearningRate: 1e-3, warmupSteps: 0, totalSteps: 10))
            try Checkpoint.save(in: directory, model: [model.parameters.map { (name: $0.name, tensor: $0.value) }],
                                optimizer: [[]], optimizerMetadata: [:], config: config.jsonData(), state: state)
        }
        // An interrupted save of a later step is not a candidate.
        try FileManager.default.createDirectory(at: directory.appendingPathComponent(".step-11.partial"),
                                                withIntermediateDirectories: true)

        let latest = try ModelLoading.load(from: directory)
        XCTAssertEqual(latest.folder.lastPathComponent, "step-10")
        XCTAssertEqual(latest.model.parameters[0].value.toArray(), models[10]!.parameters[0].value.toArray())
        XCTAssertNotEqual(latest.model.parameters[0].value.toArray(), models[9]!.parameters[0].value.toArray())

        let step2 = try ModelLoading.load(from: directory.appendingPathComponent("step-2"))
        XCTAssertEqual(step2.model.parameters.last!.value.toArray(), models[2]!.parameters.last!.value.toArray())
    }

    func testCheckpointErrorsAreClear() throws {
        let root = try temporaryFolder(self)
        assertTwoBPError("no checkpoint at", "nowhere") { try ModelLoading.load(from: root.appendingPathComponent("nowhere")) }

        let empty = root.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        assertTwoBPError("holds no model", "config.json", "model.safetensors") { try ModelLoading.load(from: empty) }

        let file = root.appendingPathComponent("file.txt")
        try Data("x".utf8).write(to: file)
        assertTwoBPError("is a file") { try ModelLoading.load(from: file) }

        // Corrupt weights: a truncated file.
        let model = try LlamaModel(config: inferenceTestConfig(), seed: 1)
        let corrupt = root.appendingPathComponent("corrupt")
        try writeInferenceFolder(model, to: corrupt)
        let weights = corrupt.appendingPathComponent("model.safetensors")
        let bytes = try Data(contentsOf: weights)
        try bytes.prefix(bytes.count - 10).write(to: weights)
        assertTwoBPError("model.safetensors") { try ModelLoading.load(from: corrupt) }
        try Data("garbage".utf8).write(to: weights)
        assertTwoBPError("model.safetensors", "too short") { try ModelLoading.load(from: corrupt) }

        // Weights of another shape than config.json describes.
        let mismatched = root.appendingPathComponent("mismatched")
        try writeInferenceFolder(model, to: mismatched)
        var wider = inferenceTestConfig()
        wider.hiddenSize = 32
        try wider.jsonData().write(to: mismatched.appendingPathComponent("config.json"))
        assertTwoBPError("model.embed_tokens.weight", "shape", "do not match config.json") { try ModelLoading.load(from: mismatched) }

        // A missing tensor.
        let missing = root.appendingPathComponent("missing")
        try writeInferenceFolder(model, to: missing)
        try SafeTensors.write(model.parameters.dropLast().map { (name: $0.name, tensor: $0.value) },
                              to: missing.appendingPathComponent("model.safetensors"))
        assertTwoBPError("missing tensor 'lm_head.weight'") { try ModelLoading.load(from: missing) }

        // An invalid config.json.
        try Data("{\"hidden_size\": 16}".utf8).write(to: missing.appendingPathComponent("config.json"))
        assertTwoBPError("config.json", "missing field") { try ModelLoading.load(from: missing) }
    }

    // MARK: Greedy

    func testGreedyGenerationIsTheArgmaxOfTheLogitsStepByStepWithTheContextCropped() throws {
        let model = try LlamaModel(config: inferenceTestConfig(maxPositions: 12), seed: 3)
        let prompt = ByteTokenizer.encode("Once upon")  // 9 bytes: the context fills up after 3 tokens
        let generator = try TextGenerator(model: model, options: SamplingOptions(temperature: 0, seed: 99))
        var streamed: [Int32] = []
        let generated = try generator.generate(prompt: prompt, count: 20) { streamed.append($0) }
        XCTAssertEqual(generated.count, 20)
        XCTAssertEqual(streamed, generated)

        var tokens = prompt
        for step in 0..<20 {
            let context = Array(tokens.suffix(12))
            let expected = Int32(firstArgmax(try logitsRow(model, tokens: context, position: context.count - 1)))
            XCTAssertEqual(generated[step], expected, "step \(step)")
            tokens.append(expected)
        }
        // Greedy ignores the seed and is the same every time.
        let again = try TextGenerator(model: model, options: SamplingOptions(temperature: 0, seed: 1))
            .generate(prompt: prompt, count: 20)
        XCTAssertEqual(again, generated)
        // A random model's greedy text is not one repeated byte (else this test would prove little).
        XCTAssertGreaterThan(Set(generated).count, 1)
    }

    func testAPromptLongerThanTheContextIsCropped() throws {
        let model = try LlamaModel(config: inferenceTestConfig(maxPositions: 8), seed: 4)
        let prompt = ByteTokenizer.encode("a prompt of thirty-one bytes ..")
        let generated = try TextGenerator(model: model, options: SamplingOptions(temperature: 0))
            .generate(prompt: prompt, count: 1)
        let context = Array(prompt.suffix(8))
        XCTAssertEqual(generated, [Int32(firstArgmax(try logitsRow(model, tokens: context, position: 7)))])
    }

    // MARK: Sampling

    func testSamplingWithTheSameSeedIsReproducibleAndOtherSeedsDiffer() throws {
        let model = try LlamaModel(config: inferenceTestConfig(), seed: 5)
        let prompt = ByteTokenizer.encode("The ")
        func sample(seed: UInt64, topK: Int? = nil) throws -> [Int32] {
            try TextGenerator(model: model, options: SamplingOptions(temperature: 1, topK: topK, seed: seed))
                .generate(prompt: prompt, count: 40)
        }
        let first = try sample(seed: 42)
        XCTAssertEqual(try sample(seed: 42), first)
        XCTAssertNotEqual(try sample(seed: 43), first)
        XCTAssertEqual(try sample(seed: 42, topK: 5), try sample(seed: 42, topK: 5))
        // Sampled text is not the greedy text.
        let greedy = try TextGenerator(model: model, options: SamplingOptions(temperature: 0)).generate(prompt: prompt, count: 40)
        XCTAssertNotEqual(first, greedy)
        // Top-k 1 is greedy at any temperature.
        XCTAssertEqual(try sample(seed: 42, topK: 1), greedy)
    }

    func testSampledFrequenciesFollowTheTemperedSoftmax() {
        let logits: [Float] = [0, Float(log(2.0)), Float(log(4.0)), -1, Float(log(4.0))]
        for temperature in [1.0, 0.5, 2.0] {
            let weights = logits.map { exp(Double($0) / temperature) }
            let probabilities = weights.map { $0 / weights.reduce(0, +) }
            var generator = SeededGenerator(seed: 2024)
            var counts = [Int](repeating: 0, count: logits.count)
            let draws = 40_000
            for _ in 0..<draws {
                counts[TextGenerator.sample(logits, options: SamplingOptions(temperature: temperature), using: &generator)] += 1
            }
            for i in logits.indices {
                XCTAssertEqual(Double(counts[i]) / Double(draws), probabilities[i], accuracy: 0.01, "T \(temperature), id \(i)")
            }
        }
    }

    func testTopKDrawsOnlyTheKLargestAndGreedyTakesTheFirstMaximum() {
        let logits: [Float] = [0.5, 3, -2, 3, 2.9, 1]
        var generator = SeededGenerator(seed: 7)
        XCTAssertEqual(TextGenerator.sample(logits, options: SamplingOptions(temperature: 0), using: &generator), 1)
        XCTAssertEqual(TextGenerator.sample(logits, options: SamplingOptions(temperature: 5, topK: 1), using: &generator), 1)
        var seen = Set<Int>()
        for _ in 0..<2_000 {
            seen.insert(TextGenerator.sample(logits, options: SamplingOptions(temperature: 10, topK: 3), using: &generator))
        }
        XCTAssertEqual(seen, [1, 3, 4])
        // Ties at the k-th place go to the lower index: [1, 3] of the two 3s.
        seen = []
        for _ in 0..<500 {
            seen.insert(TextGenerator.sample(logits, options: SamplingOptions(temperature: 10, topK: 2), using: &generator))
        }
        XCTAssertEqual(seen, [1, 3])
        // A top-k above the vocabulary means all of it; NaN and infinite logits are never drawn.
        seen = []
        let odd: [Float] = [.nan, 0, .infinity, 0]
        for _ in 0..<200 {
            seen.insert(TextGenerator.sample(odd, options: SamplingOptions(temperature: 1, topK: 100), using: &generator))
        }
        XCTAssertEqual(seen, [1, 3])
    }

    // MARK: Errors

    func testGenerationErrorsAreClear() throws {
        let model = try LlamaModel(config: inferenceTestConfig(), seed: 1)
        assertTwoBPError("temperature", ">= 0", "-0.5") { try TextGenerator(model: model, options: SamplingOptions(temperature: -0.5)) }
        assertTwoBPError("temperature") { try TextGenerator(model: model, options: SamplingOptions(temperature: .nan)) }
        assertTwoBPError("top-k", "at least 1") { try TextGenerator(model: model, options: SamplingOptions(topK: 0)) }
        let generator = try TextGenerator(model: model, options: SamplingOptions())
        assertTwoBPError("prompt is empty") { try generator.generate(prompt: [], count: 5) }
        assertTwoBPError("at least 1", "got 0") { try generator.generate(prompt: [65], count: 0) }
        assertTwoBPError("outside the vocabulary") { try generator.generate(prompt: [65, 300], count: 1) }
    }

    // MARK: Streaming text

    func testTheUTF8StreamEqualsDecodingEverythingAtOnce() {
        let cases: [[UInt8]] = [
            Array("héllo, wörld — ✓ 🎉 done".utf8),
            [0xE2, 0x9C],  // incomplete at the end
            [0x41, 0xF0, 0x9F, 0x41, 0xC3, 0xA9, 0xFF, 0x80, 0xE0, 0x80, 0x80, 0xED, 0xA0, 0x80, 0xF4, 0x90, 0x80, 0x80],
            [0xC0, 0xAF, 0xC2, 0xC2, 0xA9, 0xE2, 0x82, 0xE2, 0x82, 0xAC],
        ]
        var generator = SeededGenerator(seed: 11)
        let random = (0..<2_000).map { _ in UInt8(truncatingIfNeeded: generator.next()) | (generator.next() % 3 == 0 ? 0x80 : 0) }
        for bytes in cases + [random] {
            var stream = UTF8Stream()
            var pieces: [String] = []
            for byte in bytes { pieces.append(stream.append(byte)) }
            pieces.append(stream.flush())
            XCTAssertEqual(pieces.joined(), ByteTokenizer.decode(bytes.map { Int32($0) }), "\(bytes.prefix(20))")
        }
        // A multi-byte character appears exactly when its last byte arrives.
        var stream = UTF8Stream()
        XCTAssertEqual([0xF0, 0x9F, 0x8E].map { stream.append($0) }, ["", "", ""])
        XCTAssertEqual(stream.append(0x89), "🎉")
        XCTAssertEqual(stream.append(0x21), "!")
    }
}
