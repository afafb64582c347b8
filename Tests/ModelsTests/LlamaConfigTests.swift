import Foundation
import Models
import Tensor
import XCTest

final class LlamaConfigTests: XCTestCase {
    private var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("twobp-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    private func write(_ json: String, name: String = "config.json") throws -> String {
        let url = directory.appendingPathComponent(name)
        try Data(json.utf8).write(to: url)
        return url.path
    }

    func testNamedConfigurations() throws {
        let tiny = try LlamaConfig.resolve("llama-tiny")
        XCTAssertEqual([tiny.numHiddenLayers, tiny.hiddenSize, tiny.numAttentionHeads, tiny.numKeyValueHeads, tiny.intermediateSize,
                        tiny.maxPositionEmbeddings, tiny.vocabSize], [4, 64, 4, 4, 172, 64, 256])
        let small = try LlamaConfig.resolve("llama-small")
        XCTAssertEqual([small.numHiddenLayers, small.hiddenSize, small.numAttentionHeads, small.intermediateSize,
                        small.maxPositionEmbeddings, small.vocabSize], [8, 256, 8, 688, 256, 256])
        let big = try LlamaConfig.resolve("llama-7b")
        XCTAssertEqual([big.numHiddenLayers, big.hiddenSize, big.numAttentionHeads, big.intermediateSize,
                        big.maxPositionEmbeddings, big.vocabSize], [32, 4096, 32, 11008, 4096, 32000])
        for (name, config) in LlamaConfig.named {
            XCTAssertNoThrow(try config.validate(), name)
            XCTAssertEqual(config.rmsNormEps, 1e-5, name)
            XCTAssertEqual(config.ropeTheta, 10000, name)
            XCTAssertFalse(config.tieWordEmbeddings, name)
            XCTAssertEqual(config.unitCount, config.numHiddenLayers + 2, name)
        }
        // LLaMa-7B's published size: 6.74 B = 2 · 32000 · 4096 + 32 · (4 · 4096² + 3 · 4096 · 11008 + 2 · 4096) + 4096.
        XCTAssertEqual(big.parameterCount, 6_738_415_616)
    }

    func testFLOPsEstimates() throws {
        let config = try LlamaConfig.resolve("llama-7b")
        let length = 2048
        // Per token: the costs are per sample (a sequence of `length` tokens).
        let split = config.unitCosts(sampleLength: length).map { unit in
            (forward: unit.forward / Double(length), input: unit.backwardInput / Double(length), weight: unit.backwardWeight / Double(length))
        }
        let costs = split.map(\.forward)
        XCTAssertEqual(costs.count, 34)
        XCTAssertEqual(costs[0], 4096, "the embedding gather is priced at hidden_size")
        XCTAssertEqual(costs[33], 2 * 4096 * 32000, "lm_head: 2 · d · V")
        XCTAssertTrue(costs[1..<33].allSatisfy { $0 == costs[1] })
        // Per layer: 2 FLOPs per weight (norms aside) + the two attention products over the full square.
        let weights = Double(config.parameterCount - 2 * 32000 * 4096 - 4096) / 32 - 2 * 4096
        XCTAssertEqual(costs[1], 2 * weights + 4 * Double(length) * 4096)
        XCTAssertEqual(split[1].weight, 2 * weights, "p2: one product per weight, no attention")
        XCTAssertEqual(split[1].input, 2 * weights + 8 * Double(length) * 4096, "p1: one product per weight, four attention products")
        XCTAssertEqual(split[0].input, 0, "the embedding's p1 computes nothing")
        XCTAssertEqual(split[0].weight, 4096)
        XCTAssertEqual(config.trainingFLOPsPerSample(sampleLength: length) / Double(length), 3 * costs.reduce(0, +) - 4096,
                       "3x forward, but for the embedding's empty p1")
        XCTAssertGreaterThan(config.unitCosts(sampleLength: 4096)[1].forward / 4096, costs[1], "attention grows with the length")
        XCTAssertEqual(config.unitCosts(sampleLength: 1).map(\.parameters).reduce(0, +), config.parameterCount)
    }

    /// A Hugging Face config.json as found on the Hub (TinyLlama-1.1B's, with grouped-query attention),
    /// read by path and by directory.
    func testParsesHuggingFaceConfigJSON() throws {
        let path = try write("""
        {
          "architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 1, "eos_token_id": 2,
          "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 5632,
          "max_position_embeddings": 2048, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 22,
          "num_key_value_heads": 4, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 10000.0,
          "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.35.0", "use_cache": true,
          "vocab_size": 32000
        }
        """)
        for source in [path, directory.path] {
            let config = try LlamaConfig.resolve(source)
            XCTAssertEqual(config, LlamaConfig(hiddenSize: 2048, intermediateSize: 5632, numHiddenLayers: 22, numAttentionHeads: 32,
                                               numKeyValueHeads: 4, vocabSize: 32000, maxPositionEmbeddings: 2048), source)
            XCTAssertEqual(config.headDim, 64)
        }
    }

    func testAbsentOptionalFieldsTakeHuggingFaceDefaults() throws {
        let config = try LlamaConfig.resolve(write(#"{"hidden_size": 32, "intermediate_size": 80, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100}"#))
        XCTAssertEqual(config.numKeyValueHeads, 4)
        XCTAssertEqual(config.maxPositionEmbeddings, 2048)
        XCTAssertEqual(config.rmsNormEps, 1e-6)
        XCTAssertEqual(config.ropeTheta, 10000)
        XCTAssertEqual(config.initializerRange, 0.02)
        XCTAssertFalse(config.tieWordEmbeddings)
    }

    func testWritesConfigJSONThatReadsBack() throws {
        for (name, config) in LlamaConfig.named {
            let path = directory.appendingPathComponent("\(name).json").path
            try config.jsonData().write(to: URL(fileURLWithPath: path))
            XCTAssertEqual(try LlamaConfig.resolve(path), config, name)
        }
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: LlamaConfig.named[0].config.jsonData()) as? [String: Any])
        XCTAssertEqual(object["architectures"] as? [String], ["LlamaForCausalLM"])
        XCTAssertEqual(object["model_type"] as? String, "llama")
        XCTAssertEqual(object["hidden_act"] as? String, "silu")
        XCTAssertEqual(object["torch_dtype"] as? String, "float32")
        XCTAssertEqual(object["hidden_size"] as? Int, 64)
        XCTAssertEqual(object["num_key_value_heads"] as? Int, 4)
        XCTAssertEqual(object["tie_word_embeddings"] as? Bool, false)
        XCTAssertTrue(object["rope_scaling"] is NSNull)
    }

    func testRejectsUnknownNamesUnreadableFilesAndInvalidConfigs() throws {
        let valid = #""hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 256"#
        let cases: [(source: String, expected: String)] = [
            ("llama-huge", "unknown model 'llama-huge'"),
            (directory.appendingPathComponent("absent.json").path, "absent.json not found"),
            (try write("{}", name: "empty.json"), "missing field 'hidden_size'"),
            (try write(#"{"hidden_size": 64,"#, name: "truncated.json"), "not valid JSON"),
            (try write(#"{"intermediate_size": 172, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 256}"#, name: "missing.json"),
             "missing field 'hidden_size'"),
            (try write(#"{"hidden_size": "64", "intermediate_size": 172, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 256}"#, name: "string.json"),
             "'hidden_size' must be an integer"),
            (try write(#"{"hidden_size": 64.5, "intermediate_size": 172, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 256}"#, name: "fraction.json"),
             "'hidden_size' must be an integer"),
            (try write(#"{"hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 0, "num_attention_heads": 4, "vocab_size": 256}"#, name: "zero.json"),
             "num_hidden_layers must be positive"),
            (try write(#"{"hidden_size": 64, "intermediate_size": -1, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 256}"#, name: "negative.json"),
             "intermediate_size must be positive"),
            (try write(#"{"hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 2, "num_attention_heads": 5, "vocab_size": 256}"#, name: "heads.json"),
             "not divisible by num_attention_heads"),
            (try write(#"{"hidden_size": 60, "intermediate_size": 172, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 256}"#, name: "odd.json"),
             "must be even"),
            (try write("{\(valid), \"num_key_value_heads\": 3}", name: "kv.json"), "num_key_value_heads 3 does not divide"),
            (try write("{\(valid), \"rms_norm_eps\": 0}", name: "eps.json"), "rms_norm_eps must be a positive number"),
            (try write("{\(valid), \"rope_theta\": \"big\"}", name: "theta.json"), "'rope_theta' must be a number"),
            (try write("{\(valid), \"tie_word_embeddings\": 1.5}", name: "tiebool.json"), "'tie_word_embeddings' must be true or false"),
            (try write("{\(valid), \"model_type\": \"mistral\"}", name: "mistral.json"), "model_type 'mistral'"),
            (try write("{\(valid), \"hidden_act\": \"gelu\"}", name: "gelu.json"), "hidden_act 'gelu'"),
            (try write("{\(valid), \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}}", name: "scaling.json"), "rope_scaling"),
            (try write("{\(valid), \"attention_bias\": true}", name: "bias.json"), "attention_bias"),
            (try write("{\(valid), \"head_dim\": 32}", name: "headdim.json"), "head_dim 32"),
        ]
        for (source, expected) in cases {
            XCTAssertThrowsError(try LlamaConfig.resolve(source), source) { error in
                guard let error = error as? TwoBPError else { return XCTFail("\(source): \(error) is not a TwoBPError") }
                XCTAssertTrue(error.message.contains(expected), "\(source): '\(error.message)' should mention '\(expected)'")
            }
        }
        // A directory without config.json is unreadable too.
        let empty = directory.appendingPathComponent("model-dir")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        XCTAssertThrowsError(try LlamaConfig.resolve(empty.path)) { error in
            XCTAssertTrue((error as? TwoBPError)?.message.contains("config.json not found") == true, "\(error)")
        }
    }
}
