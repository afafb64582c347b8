import Foundation
import Models
import Tensor
import XCTest

final class MambaConfigTests: XCTestCase {
    func testNamedConfigurations() throws {
        let tiny = try resolve("mamba-tiny")
        XCTAssertEqual([tiny.numHiddenLayers, tiny.hiddenSize, tiny.intermediateSize, tiny.stateSize, tiny.convKernel, tiny.timeStepRank,
                        tiny.vocabSize], [4, 32, 64, 8, 4, 2, 256])
        let big = try resolve("mamba-1.4b")
        XCTAssertEqual([big.numHiddenLayers, big.hiddenSize, big.intermediateSize, big.stateSize, big.convKernel, big.timeStepRank,
                        big.vocabSize], [48, 2048, 4096, 16, 4, 128, 50280])
        // transformers' MambaForCausalLM(MambaConfig(vocab_size=50280, hidden_size=2048, num_hidden_layers=48)) counts
        // 1,372,178,432 parameters (tied); mamba-tiny 41,888.
        XCTAssertEqual(big.parameterCount, 1_372_178_432)
        XCTAssertEqual(tiny.parameterCount, 41_888)
        for (name, config) in MambaConfig.named {
            XCTAssertNoThrow(try config.validate(), name)
            XCTAssertTrue(config.tieWordEmbeddings, name)
            XCTAssertEqual(config.unitCount, config.numHiddenLayers + 2, name)
            XCTAssertEqual(config.tiedParameters, [TiedParameter(name: "backbone.embeddings.weight", units: [0, config.unitCount - 1])])
            XCTAssertEqual(config.dataKind, .causalText)
        }
    }

    /// The file `transformers`' `MambaConfig().to_json_string()` writes (5.24.0) decodes to its defaults, and
    /// TwoBP's own file decodes back to the same configuration.
    func testHuggingFaceConfigJSON() throws {
        let huggingFace = """
        {"bos_token_id": 0, "conv_kernel": 4, "eos_token_id": 0, "expand": 2, "hidden_act": "silu", "hidden_size": 768,
         "initializer_range": 0.1, "intermediate_size": 1536, "layer_norm_epsilon": 1e-05, "model_type": "mamba",
         "num_hidden_layers": 32, "pad_token_id": 0, "rescale_prenorm_residual": false, "residual_in_fp32": true,
         "state_size": 16, "tie_word_embeddings": true, "time_step_floor": 0.0001, "time_step_init_scheme": "random",
         "time_step_max": 0.1, "time_step_min": 0.001, "time_step_rank": 48, "time_step_scale": 1.0,
         "transformers_version": "5.24.0", "use_associative_scan": true, "use_bias": false, "use_cache": true,
         "use_conv_bias": true, "use_mambapy": false, "vocab_size": 50280}
        """
        let defaults = MambaConfig(vocabSize: 50280, hiddenSize: 768, numHiddenLayers: 32)
        XCTAssertEqual(try decode(huggingFace), defaults)
        XCTAssertEqual(try decode(#"{"model_type": "mamba"}"#), defaults, "every field has transformers' default")
        XCTAssertEqual(try decode(#"{"model_type": "mamba", "hidden_size": 40, "time_step_rank": "auto"}"#).timeStepRank, 3, "⌈40 / 16⌉")
        XCTAssertEqual(try decode(#"{"model_type": "mamba", "hidden_size": 40, "time_step_rank": 5}"#).timeStepRank, 5)
        var custom = try resolve("mamba-tiny")
        custom.tieWordEmbeddings = false
        custom.useBias = true
        custom.timeStepInitScheme = .constant
        custom.rescalePrenormResidual = true
        for config in [try resolve("mamba-tiny"), custom] {
            let data = try config.jsonData()
            XCTAssertEqual(try decode(String(decoding: data, as: UTF8.self)), config)
            let json = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
            XCTAssertEqual(json["architectures"] as? [String], ["MambaForCausalLM"])
            XCTAssertEqual(json["intermediate_size"] as? Int, config.intermediateSize)
            XCTAssertEqual(try config.jsonData(), data, "the same config writes the same bytes")
            let text = String(decoding: data, as: UTF8.self)
            XCTAssertTrue(text.contains("\"time_step_scale\" : 1.0,"), "transformers refuses an int for a float field: \(text)")
            XCTAssertEqual(json["time_step_scale"] as? Double, 1)
        }
    }

    func testBadConfigsAreRefusedWithTheFieldNamed() {
        let cases = [
            (#"{"model_type": "mamba", "hidden_size": 0}"#, "hidden_size must be positive, got 0"),
            (#"{"model_type": "mamba", "state_size": 4.5}"#, "field 'state_size' must be an integer"),
            (#"{"model_type": "mamba", "hidden_act": "gelu"}"#, "hidden_act 'gelu' is not supported (only 'silu')"),
            (#"{"model_type": "mamba", "time_step_rank": "big"}"#, #"field 'time_step_rank' must be an integer or "auto""#),
            (#"{"model_type": "mamba", "time_step_init_scheme": "xavier"}"#, "time_step_init_scheme 'xavier' is not supported (only 'random' or 'constant')"),
            (#"{"model_type": "mamba", "layer_norm_epsilon": -1}"#, "layer_norm_epsilon must be a positive number, got -1.0"),
            (#"{"model_type": "mamba", "time_step_min": 0.5, "time_step_max": 0.1}"#, "Mamba: need 0 < time_step_min ≤ time_step_max, time_step_scale > 0 and time_step_floor ≥ 0, got min 0.5, max 0.1, scale 1.0, floor 0.0001"),
        ]
        for (json, message) in cases {
            XCTAssertThrowsError(try decode(json), json) { error in
                XCTAssertEqual("\(error)", "config.json: \(message)")
            }
        }
    }

    func testCostsAndShapes() throws {
        let config = try resolve("mamba-1.4b")
        let length = 2048
        let costs = config.unitCosts(sampleLength: length)
        XCTAssertEqual(costs.count, 50)
        XCTAssertTrue(costs[1..<49].allSatisfy { $0 == costs[1] })
        XCTAssertEqual(costs[1].backwardWeight / Double(length), 2 * Double(costs[1].parameters - 2048 - 4096 * 16 - 4096 * 4 - 3 * 4096),
                       "p2: one product per projection weight (not the norm, A_log, the conv's weight, D and the two biases)")
        XCTAssertGreaterThan(costs[1].backwardInput, costs[1].forward, "p1 runs the scan's reverse sweep")
        XCTAssertEqual(costs[49].forward, 2 * Double(length) * 2048 * 50280, "lm_head")
        XCTAssertEqual(config.activationShape(enteringUnit: 7, samples: 3, sampleLength: 5), [3, 5, 2048])
        XCTAssertNoThrow(try config.checkSampleLength(100_000), "no position table bounds a sequence")
        XCTAssertThrowsError(try config.checkSampleLength(0))
    }

    private func resolve(_ name: String) throws -> MambaConfig {
        try XCTUnwrap(ModelRegistry.resolve(name) as? MambaConfig)
    }

    private func decode(_ json: String) throws -> MambaConfig {
        let config = try ModelRegistry.decode(Data(json.utf8))
        guard let mamba = config as? MambaConfig else { throw TwoBPError("decoded a \(type(of: config)), not a MambaConfig") }
        return mamba
    }
}
