import Checkpoints
import Data
import Foundation
import Models
import Pipeline
import Schedules
import Training
import XCTest

/// The image data sources (digits, synthetic) and resnet-tiny trained through the pipeline on them.
final class ImageDataTests: XCTestCase {
    /// `count` digit records: image i has label i % 10 and pixel p = (i + p) % 17.
    func digitsBytes(_ count: Int) -> [UInt8] {
        var bytes: [UInt8] = []
        for i in 0..<count {
            bytes.append(UInt8(i % 10))
            for p in 0..<64 { bytes.append(UInt8((i + p) % 17)) }
        }
        return bytes
    }

    func testDigitsSplitScaleEnlargeAndDrawDeterministically() throws {
        let digits = try DigitsImages(bytes: digitsBytes(50), side: 16, channels: 3)
        XCTAssertEqual(digits.heldOutIndices, [4, 9, 14, 19, 24, 29, 34, 39, 44, 49])
        XCTAssertEqual(digits.trainingIndices.count, 40)
        let batch = digits.batch([7], lossWeight: 1)
        XCTAssertEqual(batch.labels, [7])
        // Pixel (h, w) of the 16 × 16 image is pixel (h / 2, w / 2) of the 8 × 8 one, v / 8 − 1, on all 3 channels.
        let (h, w) = (5, 12)
        let expected = Float((7 + (h / 2) * 8 + w / 2) % 17) / 8 - 1
        XCTAssertEqual(Array(batch.images[((h * 16) + w) * 3..<((h * 16) + w) * 3 + 3]), [expected, expected, expected])

        let a = try digits.trainingBatch(step: 3, batchSize: 8, seed: 1).expecting(ImageBatch.self, by: "test")
        let b = try digits.trainingBatch(step: 3, batchSize: 8, seed: 1).expecting(ImageBatch.self, by: "test")
        let c = try digits.trainingBatch(step: 4, batchSize: 8, seed: 1).expecting(ImageBatch.self, by: "test")
        XCTAssertEqual(a.images, b.images)
        XCTAssertNotEqual(a.images, c.images)
        XCTAssertEqual(a.lossWeight, 1 / 8)
        let heldOut = try digits.validationBatches(batchSize: 4, limit: nil).map { try $0.expecting(ImageBatch.self, by: "test") }
        XCTAssertEqual(heldOut.map(\.labels), [[4, 9, 4, 9], [4, 9, 4, 9]], "full batches of the held-out images in order")
        XCTAssertEqual(try digits.validationBatches(batchSize: 4, limit: 1).count, 1)
        XCTAssertNotEqual(digits.fingerprint, try DigitsImages(bytes: digitsBytes(55), side: 16, channels: 3).fingerprint)

        assertTwoBPError("fewer than one batch of 11") { try digits.validationBatches(batchSize: 11, limit: nil) }
        assertTwoBPError("not a whole number of 65-byte records") { try DigitsImages(bytes: [1, 2, 3], side: 8, channels: 1) }
        var badLabel = digitsBytes(10)
        badLabel[65] = 12
        assertTwoBPError("image 1 has label 12") { try DigitsImages(bytes: badLabel, side: 8, channels: 1) }
        assertTwoBPError("not found", "scripts/setup-data.sh", "--data synthetic") {
            try DigitsImages(contentsOf: URL(fileURLWithPath: "/nonexistent/digits.bin"), side: 8, channels: 1)
        }
    }

    func testSyntheticImagesArePureFunctionsOfTheirIndex() throws {
        let model = ResNetConfig.named.first { $0.name == "resnet-tiny" }!.config
        let source = try DataSources.open(URL(fileURLWithPath: "synthetic-40"), for: model, sampleLength: 12)
        XCTAssertEqual(source.fingerprint, "synthetic-40-12x12x1-10")
        let batch = try source.trainingBatch(step: 0, batchSize: 6, seed: 5).expecting(ImageBatch.self, by: "test")
        XCTAssertEqual(batch.images.count, 6 * 12 * 12)
        let first = ImageBatch.synthetic(indices: [3, 1], side: 12, channels: 1, classes: 10, seed: 7, lossWeight: 1)
        let again = ImageBatch.synthetic(indices: [1], side: 12, channels: 1, classes: 10, seed: 7, lossWeight: 1)
        XCTAssertEqual(Array(first.images[144...]), again.images, "an image does not depend on the others drawn with it")
        XCTAssertEqual(try source.validationBatches(batchSize: 5, limit: nil).count, 2, "10 held-out images")
        assertTwoBPError("synthetic-N with N ≥ 1") { try DataSources.open(URL(fileURLWithPath: "synthetic-x"), for: model, sampleLength: 12) }
    }

    /// resnet-tiny with SGD through 1F1B + 2BP on 2 stages: the loss falls on the synthetic images, a run
    /// stopped at a checkpoint resumes bit for bit (batch-norm statistics included), and eval reports both terms.
    func testResNetTrainsResumesAndEvaluates() throws {
        let folder = try temporaryFolder(self)
        func settings(steps: Int) throws -> TrainingSettings {
            var settings = TrainingSettings(
                model: try ModelRegistry.resolve("resnet-tiny"), data: folder.appendingPathComponent("synthetic-64"), steps: steps,
                batchSize: 8, sampleLength: 16, learningRate: 0.05, warmupSteps: 1, seed: 3, evaluateEvery: 4, validationBatches: 2,
                pipeline: ScheduleRequest(kind: .oneFOneB1, ranks: 2, twoBP: true), optimizer: .sgd(.init()), showProgress: false)
            settings.checkpointDirectory = folder.appendingPathComponent("checkpoints")
            settings.saveEvery = 4
            return settings
        }
        func train(_ settings: TrainingSettings) throws -> TrainingOutcome {
            try XCTUnwrap(try RankLauncher.run(.threads, ranks: 2, receiveTimeout: 60) { try Trainer(settings: settings, transport: $0).run() })
        }
        let uninterrupted = try train(try settings(steps: 8))
        XCTAssertLessThan(uninterrupted.losses.last!, uninterrupted.losses.first!, "\(uninterrupted.losses)")
        XCTAssertEqual(uninterrupted.lastLossTerms.count, 2)
        XCTAssertTrue((0...1).contains(uninterrupted.lastLossTerms[1]), "accuracy")
        XCTAssertEqual(uninterrupted.unit, .samples)

        var resumed = try settings(steps: 8)
        resumed.checkpointDirectory = folder.appendingPathComponent("resumed")
        try FileManager.default.copyItem(at: folder.appendingPathComponent("checkpoints/step-4"),
                                         to: folder.appendingPathComponent("resumed-from"))
        resumed.resume = folder.appendingPathComponent("resumed-from")
        let second = try train(resumed)
        XCTAssertEqual(second.losses, uninterrupted.losses)
        XCTAssertEqual(second.validationTerms, uninterrupted.validationTerms)

        let loaded = try ModelLoading.load(from: folder.appendingPathComponent("checkpoints"))
        let source = try DataSources.open(folder.appendingPathComponent("synthetic-64"), for: loaded.config, sampleLength: 16)
        let evaluation = try Evaluation.evaluateHeldOut(model: loaded.model, terms: loaded.config.lossTerms, source: source, batchSize: 8, maxBatches: 2)
        XCTAssertEqual(evaluation.terms.map(\.name), ["loss", "accuracy"])
        XCTAssertEqual(evaluation.terms[0].value, uninterrupted.validationTerms![0], accuracy: 1e-9, "eval = the run's last validation")
        let training = try Evaluation.evaluateHeldOut(model: loaded.model, terms: loaded.config.lossTerms, source: source, batchSize: 8,
                                                      maxBatches: 2, trainingMode: true)
        XCTAssertNotEqual(training.terms[0].value, evaluation.terms[0].value, "batch statistics, not running ones")
    }
}
