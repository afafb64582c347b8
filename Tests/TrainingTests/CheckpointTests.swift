import Foundation
import Layers
import Tensor
@testable import Training
import XCTest
@testable import Checkpoints

final class CheckpointTests: XCTestCase {
    let config = Data(#"{"hidden_size":8,"num_hidden_layers":2}"#.utf8)

    /// Two pipeline stages, each with its own optimizer, after `steps` updates.
    func makeStages(steps: Int) throws -> [AdamW] {
        let stage0 = [Parameter(name: "model.embed_tokens.weight", shape: [4, 2]), Parameter(name: "model.layers.0.input_layernorm.weight", shape: [2])]
        let stage1 = [Parameter(name: "model.norm.weight", shape: [2]), Parameter(name: "lm_head.weight", shape: [4, 2])]
        for (k, p) in (stage0 + stage1).enumerated() {
            for i in 0..<p.value.count { p.value[i] = Float(k) + Float(i) / 8 }
        }
        let optimizers = try [stage0, stage1].map { try AdamW(parameters: $0) }
        for t in 0..<steps {
            for optimizer in optimizers {
                for p in optimizer.parameters {
                    for i in 0..<p.gradient.count { p.gradient[i] = Float((i + t) % 3) - 1 }
                }
                try optimizer.update(learningRate: 0.01)
            }
        }
        return optimizers
    }

    func state(step: Int) throws -> TrainerState {
        try TrainerState(step: step, seed: 1234, batchSize: 4, sampleLength: 16, dataFingerprint: "2000-00ff",
                         tokensSeen: step * 64,
                         schedule: LearningRateSchedule(maxLearningRate: 3e-4, warmupSteps: 2, totalSteps: 100),
                         lossHistory: (0..<step).map { 5.5 - Double($0) * 0.1 } + (step > 2 ? [.nan] : []),
                         validationHistory: [.init(step: step, loss: 4.25)], elapsedSeconds: 12.5)
    }

    func testSaveAndRestoreRoundTrip() throws {
        let dir = try temporaryFolder(self).appendingPathComponent("checkpoints")
        let stages = try makeStages(steps: 3)
        let saved = try Checkpoint.save(in: dir, optimizers: stages, config: config, state: state(step: 3))
        XCTAssertEqual(saved.lastPathComponent, "step-3")
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: saved.path)),
                       ["model.safetensors", "optimizer.safetensors", "config.json", "trainer_state.json"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["step-3"], "no temporary folder left")

        let loaded = try Checkpoint.load(from: dir)
        XCTAssertEqual(loaded.folder.lastPathComponent, "step-3")
        XCTAssertEqual(loaded.config, config)
        let expected = try state(step: 3)
        XCTAssertEqual(try loaded.trainerState.lossHistory.count, expected.lossHistory.count)
        XCTAssertTrue(try loaded.trainerState.lossHistory.last!.isNaN, "NaN losses survive the JSON")
        var comparable = try loaded.trainerState
        comparable.lossHistory = expected.lossHistory
        XCTAssertEqual(comparable.lossHistory.dropLast(), expected.lossHistory.dropLast())
        XCTAssertEqual(comparable.seed, 1234)
        XCTAssertEqual(comparable.schedule, expected.schedule)
        XCTAssertEqual(comparable.validationHistory, expected.validationHistory)
        XCTAssertEqual(loaded.optimizer.metadata["step"], "3")

        let fresh = try makeStages(steps: 0)
        try loaded.restore(into: fresh)
        for (a, b) in zip(stages, fresh) {
            XCTAssertEqual(b.step, 3)
            XCTAssertEqual(b.parameters.map { $0.value.toArray() }, a.parameters.map { $0.value.toArray() })
            XCTAssertEqual(b.firstMoments.toArray(), a.firstMoments.toArray())
            XCTAssertEqual(b.secondMoments.toArray(), a.secondMoments.toArray())
        }
        // trainer_state.json is readable JSON with the documented keys.
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: saved.appendingPathComponent("trainer_state.json"))) as? [String: Any])
        XCTAssertEqual(json["step"] as? Int, 3)
        XCTAssertEqual(json["data_fingerprint"] as? String, "2000-00ff")
        XCTAssertEqual((json["schedule"] as? [String: Any])?["warmup_steps"] as? Int, 2)
    }

    func testShardPerStageWritesHuggingFaceShards() throws {
        let dir = try temporaryFolder(self)
        let stages = try makeStages(steps: 1)
        let saved = try Checkpoint.save(in: dir, optimizers: stages, config: config, state: state(step: 1), shardPerStage: true)
        let files = Set(try FileManager.default.contentsOfDirectory(atPath: saved.path))
        XCTAssertTrue(files.isSuperset(of: ["model-00001-of-00002.safetensors", "model.safetensors.index.json",
                                            "optimizer-00002-of-00002.safetensors", "optimizer.safetensors.index.json"]))
        let loaded = try Checkpoint.load(from: saved)
        XCTAssertEqual(loaded.model.files.count, 2)
        let fresh = try makeStages(steps: 0)
        try loaded.restore(into: fresh)
        XCTAssertEqual(fresh[1].parameters[1].value.toArray(), stages[1].parameters[1].value.toArray())
        XCTAssertEqual(fresh[0].step, 1)
    }

    func testInterruptedSaveLeavesThePreviousCheckpointLoadable() throws {
        let dir = try temporaryFolder(self)
        try Checkpoint.save(in: dir, optimizers: makeStages(steps: 1), config: config, state: state(step: 1))
        // A run killed while writing step 2: a temporary folder with a torn model file.
        let partial = dir.appendingPathComponent(".step-2.partial")
        try FileManager.default.createDirectory(at: partial, withIntermediateDirectories: true)
        try Data([1, 2, 3]).write(to: partial.appendingPathComponent("model.safetensors"))
        XCTAssertEqual(try Checkpoint.latest(in: dir)?.lastPathComponent, "step-1")
        XCTAssertEqual(try Checkpoint.load(from: dir).step, 1)

        // The next save cleans the leftover up.
        try Checkpoint.save(in: dir, optimizers: makeStages(steps: 3), config: config, state: state(step: 3))
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: dir.path)), ["step-1", "step-3"])
    }

    func testFailedSaveLeavesNoStepFolder() throws {
        let dir = try temporaryFolder(self)
        try Checkpoint.save(in: dir, optimizers: makeStages(steps: 1), config: config, state: state(step: 1))
        let duplicate = [(name: "x", tensor: ramp([2])), (name: "x", tensor: ramp([2]))]
        assertTwoBPError("appears twice") {
            try Checkpoint.save(in: dir, model: [duplicate], optimizer: [[]], optimizerMetadata: [:], config: config, state: state(step: 2))
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["step-1"])
        assertTwoBPError("not a JSON object") {
            try Checkpoint.save(in: dir, optimizers: makeStages(steps: 1), config: Data("[1]".utf8), state: state(step: 2))
        }
    }

    func testSavingTheSameStepAgainReplacesIt() throws {
        let dir = try temporaryFolder(self)
        try Checkpoint.save(in: dir, optimizers: makeStages(steps: 1), config: config, state: state(step: 5))
        let later = try makeStages(steps: 4)
        try Checkpoint.save(in: dir, optimizers: later, config: config, state: state(step: 5))
        let loaded = try Checkpoint.load(from: dir)
        XCTAssertEqual(loaded.optimizer.metadata["step"], "4")
        XCTAssertEqual(try loaded.model.tensor("lm_head.weight").toArray(), later[1].parameters[1].value.toArray())
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["step-5"])
    }

    func testLatestFindsTheHighestCompleteStep() throws {
        let dir = try temporaryFolder(self)
        XCTAssertNil(try Checkpoint.latest(in: dir.appendingPathComponent("nothing-yet")))
        XCTAssertNil(try Checkpoint.latest(in: dir))
        for step in [2, 10, 9] {
            try Checkpoint.save(in: dir, optimizers: makeStages(steps: 1), config: config, state: state(step: step))
        }
        XCTAssertEqual(try Checkpoint.latest(in: dir)?.lastPathComponent, "step-10", "numeric, not lexical, order")
        // Distractors: an incomplete higher step, oddly named folders, a file.
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("step-11"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("step-12x"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("step-"), withIntermediateDirectories: true)
        try Data().write(to: dir.appendingPathComponent("step-13"))
        XCTAssertEqual(try Checkpoint.latest(in: dir)?.lastPathComponent, "step-10")
        XCTAssertEqual(try Checkpoint.resolve(dir).lastPathComponent, "step-10")
        XCTAssertEqual(try Checkpoint.resolve(dir.appendingPathComponent("step-2")).lastPathComponent, "step-2")
        assertTwoBPError("step-11 is incomplete: missing model.safetensors, optimizer.safetensors, config.json, trainer_state.json") {
            try Checkpoint.resolve(dir.appendingPathComponent("step-11"))
        }
    }

    func testResolveAndLoadErrors() throws {
        let dir = try temporaryFolder(self)
        assertTwoBPError("no checkpoint at") { try Checkpoint.resolve(dir.appendingPathComponent("absent")) }
        assertTwoBPError("holds no complete checkpoint") { try Checkpoint.resolve(dir) }
        try Data().write(to: dir.appendingPathComponent("file"))
        assertTwoBPError("is a file") { try Checkpoint.resolve(dir.appendingPathComponent("file")) }

        let saved = try Checkpoint.save(in: dir, optimizers: makeStages(steps: 1), config: config, state: state(step: 1))
        let stateFile = saved.appendingPathComponent("trainer_state.json")
        let goodState = try Data(contentsOf: stateFile)

        try Data("{\"step\": ".utf8).write(to: stateFile)
        assertTwoBPError("checkpoint", "trainer_state.json is corrupt") { try Checkpoint.load(from: saved) }

        var wrongStep = try state(step: 7)
        wrongStep.formatVersion = TrainerState.currentFormatVersion
        try wrongStep.encoded().write(to: stateFile)
        assertTwoBPError("trainer_state.json says step 7, the folder name says 1") { try Checkpoint.load(from: saved) }

        try goodState.write(to: stateFile)
        try Data("not json".utf8).write(to: saved.appendingPathComponent("config.json"))
        assertTwoBPError("config.json is corrupt") { try Checkpoint.load(from: saved) }

        try config.write(to: saved.appendingPathComponent("config.json"))
        try Data([0, 0, 0]).write(to: saved.appendingPathComponent("optimizer.safetensors"))
        assertTwoBPError("optimizer.safetensors: only 3 bytes") { try Checkpoint.load(from: saved) }

        try FileManager.default.removeItem(at: saved.appendingPathComponent("optimizer.safetensors"))
        assertTwoBPError("missing optimizer.safetensors") { try Checkpoint.load(from: saved) }
        XCTAssertNil(try Checkpoint.latest(in: dir), "an incomplete folder is not a checkpoint")
    }

    func testRestoreRefusesAModelWithOtherShapes() throws {
        let dir = try temporaryFolder(self)
        try Checkpoint.save(in: dir, optimizers: makeStages(steps: 1), config: config, state: state(step: 1))
        let other = try AdamW(parameters: [Parameter(name: "lm_head.weight", shape: [2, 4])])
        assertTwoBPError("tensor 'lm_head.weight' has shape [4, 2], expected [2, 4]") { try Checkpoint.load(from: dir).restore(into: [other]) }
    }

    func testTrainerStateResumeCheck() throws {
        let saved = try state(step: 4)
        XCTAssertNoThrow(try saved.checkResumable(seed: 1234, batchSize: 4, sampleLength: 16, dataFingerprint: "2000-00ff"))
        assertTwoBPError("seed 1 vs 1234", "batch size 8 vs 4") {
            try saved.checkResumable(seed: 1, batchSize: 8, sampleLength: 16, dataFingerprint: "2000-00ff")
        }
        var future = saved
        future.formatVersion = 99
        assertTwoBPError("format version 99") { try TrainerState.decode(future.encoded()) }
    }
}
