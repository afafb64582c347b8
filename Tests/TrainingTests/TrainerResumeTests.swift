import Checkpoints
import Foundation
import Models
import Pipeline
import Schedules
import Training
import XCTest

/// A run stopped at a checkpoint and resumed must continue exactly as if never stopped.
final class TrainerResumeTests: XCTestCase {
    func settings(folder: URL, steps: Int, stages: Int, model: LlamaConfig? = nil) throws -> TrainingSettings {
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let corpus = folder.appendingPathComponent("corpus.txt")
        if !FileManager.default.fileExists(atPath: corpus.path) {
            try Data(String(repeating: "Shall I compare thee to a summer's day? Thou art more lovely. ", count: 120).utf8).write(to: corpus)
        }
        var settings = TrainingSettings(
            model: try model ?? LlamaConfig.resolve("llama-tiny"), data: corpus, steps: steps, batchSize: 4, sampleLength: 16,
            learningRate: 3e-3, warmupSteps: 2, seed: 9, evaluateEvery: 3, validationBatches: 1,
            pipeline: ScheduleRequest(kind: .oneFOneB1, ranks: stages, twoBP: true), showProgress: false)
        settings.checkpointDirectory = folder.appendingPathComponent("checkpoints")
        settings.saveEvery = 3
        return settings
    }

    func train(_ settings: TrainingSettings) throws -> TrainingOutcome {
        let outcome = try RankLauncher.run(.threads, ranks: settings.pipeline.ranks, receiveTimeout: 60) { transport in
            try Trainer(settings: settings, transport: transport).run()
        }
        return try XCTUnwrap(outcome)
    }

    func testResumedRunGivesTheUninterruptedLossSequenceBitForBit() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("twobp-resume-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: folder) }

        let uninterrupted = try train(try settings(folder: folder.appendingPathComponent("a"), steps: 6, stages: 2))
        let first = try train(try settings(folder: folder.appendingPathComponent("b"), steps: 3, stages: 2))
        XCTAssertEqual(first.losses, Array(uninterrupted.losses.prefix(3)))

        // Same pipeline: bit for bit. From the checkpoint folder, which names its latest step.
        var resumed = try settings(folder: folder.appendingPathComponent("b"), steps: 6, stages: 2)
        resumed.resume = folder.appendingPathComponent("b/checkpoints")
        let second = try train(resumed)
        XCTAssertEqual(uninterrupted.losses.count, 6)
        XCTAssertEqual(second.losses, uninterrupted.losses, "resumed losses must equal the uninterrupted run's")
        XCTAssertEqual(second.validationLoss, uninterrupted.validationLoss)
        XCTAssertTrue(FileManager.default.fileExists(atPath: folder.appendingPathComponent("b/checkpoints/step-6/model.safetensors").path))

        // One stage instead of two: the same run to rounding (micro-batch sums change order).
        var onOneStage = try settings(folder: folder.appendingPathComponent("b"), steps: 6, stages: 1)
        onOneStage.resume = folder.appendingPathComponent("b/checkpoints/step-3")
        onOneStage.checkpointDirectory = nil
        let third = try train(onOneStage)
        for (resumedLoss, expected) in zip(third.losses, uninterrupted.losses) {
            XCTAssertEqual(resumedLoss, expected, accuracy: 1e-6 * expected)
        }
    }

    func testResumeRefusesAChangedSetup() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("twobp-resume-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: folder) }
        _ = try train(try settings(folder: folder, steps: 3, stages: 1))
        var changed = try settings(folder: folder, steps: 6, stages: 1)
        changed.resume = folder.appendingPathComponent("checkpoints")
        changed.batchSize = 8
        XCTAssertThrowsError(try train(changed)) { error in
            XCTAssertTrue("\(error)".contains("batch"), "\(error)")
        }
    }

    /// A tied matrix is saved once, under the embedding's name, and resumes on another stage count.
    func testTiedEmbeddingsAreSavedOnceAndResume() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("twobp-resume-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: folder) }
        var tied = try LlamaConfig.resolve("llama-tiny")
        tied.tieWordEmbeddings = true
        let uninterrupted = try train(try settings(folder: folder.appendingPathComponent("a"), steps: 6, stages: 2, model: tied))
        _ = try train(try settings(folder: folder.appendingPathComponent("b"), steps: 3, stages: 2, model: tied))
        let saved = try Checkpoint.load(from: folder.appendingPathComponent("b/checkpoints"))
        XCTAssertTrue(saved.model.contains("model.embed_tokens.weight"))
        XCTAssertFalse(saved.model.contains("lm_head.weight"), "the tied matrix is stored once")
        XCTAssertEqual(saved.model.names.count, try LlamaModel(config: tied, seed: 0).parameters.count)
        for stages in [2, 1] {
            var resumed = try settings(folder: folder.appendingPathComponent("b"), steps: 6, stages: stages, model: tied)
            resumed.resume = folder.appendingPathComponent("b/checkpoints/step-3")
            resumed.checkpointDirectory = nil
            let continued = try train(resumed)
            for (loss, expected) in zip(continued.losses, uninterrupted.losses) {
                if stages == 2 { XCTAssertEqual(loss, expected, "same pipeline: bit for bit") }
                XCTAssertEqual(loss, expected, accuracy: 1e-6 * expected, "\(stages) stages")
            }
        }
    }
}
