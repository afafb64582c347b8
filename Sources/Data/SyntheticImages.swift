import Foundation
import Models
import Tensor

/// A seeded synthetic image set that a classifier can learn (`ImageBatch.synthetic`), of any size
/// and side: for benchmarks at ImageNet's 224 × 224 and for tests, with no file.
///
/// The set is fixed by its size, side, channels and classes (it is drawn from `dataSeed`, not the
/// run's seed): images 0 ..< trainingCount train, the next `heldOutCount` are held out. The batch of
/// step s draws training images with replacement from a generator seeded by (run seed, s).
public struct SyntheticImages: DataSource {
    /// The seed of the images themselves.
    public static let dataSeed: UInt64 = 0x1A6E_5EED
    /// Training images of `--data synthetic`.
    public static let defaultTrainingCount = 4096

    public let trainingCount: Int
    public let heldOutCount: Int
    public let side: Int
    public let channels: Int
    public let classes: Int

    public init(trainingCount: Int, side: Int, channels: Int, classes: Int) throws {
        guard trainingCount >= 1 else { throw TwoBPError("a synthetic image set needs at least 1 training image, got \(trainingCount)") }
        guard side >= 1, channels >= 1, classes >= 1 else {
            throw TwoBPError("synthetic images: side \(side), \(channels) channels and \(classes) classes must be positive")
        }
        self.trainingCount = trainingCount
        heldOutCount = Swift.max(1, trainingCount / 4)
        self.side = side
        self.channels = channels
        self.classes = classes
    }

    public var source: String { "synthetic images (\(trainingCount) + \(heldOutCount) held out, \(side)×\(side)×\(channels), \(classes) classes)" }
    public var fingerprint: String { "synthetic-\(trainingCount)-\(side)x\(side)x\(channels)-\(classes)" }
    public var throughputUnit: ThroughputUnit { .samples }

    public func trainingBatch(step: Int, batchSize: Int, seed: UInt64) -> any MicroBatch {
        var generator = SeededGenerator(seed: ImageBatch.mixedSeed(seed, UInt64(bitPattern: Int64(step))))
        let chosen = (0..<batchSize).map { _ in Int(generator.next().multipliedFullWidth(by: UInt64(trainingCount)).high) }
        return images(chosen, lossWeight: 1 / Float(batchSize))
    }

    public func validationBatches(batchSize: Int, limit: Int?) throws -> [any MicroBatch] {
        guard batchSize >= 1 else { throw TwoBPError("batch size must be >= 1, not \(batchSize)") }
        var count = heldOutCount / batchSize
        guard count >= 1 else {
            throw TwoBPError("the held-out part of \(source) holds \(heldOutCount) images, fewer than one batch of \(batchSize); use --data synthetic-N with a larger N")
        }
        if let limit { count = Swift.min(count, Swift.max(limit, 0)) }
        return (0..<count).map { b in
            images(Array((trainingCount + b * batchSize)..<(trainingCount + (b + 1) * batchSize)), lossWeight: 1 / Float(batchSize))
        }
    }

    private func images(_ indices: [Int], lossWeight: Float) -> ImageBatch {
        ImageBatch.synthetic(indices: indices, side: side, channels: channels, classes: classes, seed: SyntheticImages.dataSeed,
                             lossWeight: lossWeight)
    }
}

/// The data sources of image classifiers: the digits file, or `synthetic` / `synthetic-N` (N training images).
public enum ImageDataSources {
    /// `url` as the data of `model` with images of `side`: `synthetic[-N]` names the synthetic set
    /// (unless a file of that name exists), anything else is a digits file.
    public static func open(_ url: URL, for model: any ModelConfig, side: Int) throws -> any DataSource {
        guard let classifier = model as? any ImageClassifierConfig else {
            throw TwoBPError("\(type(of: model).modelType) models do not take images")
        }
        let name = url.lastPathComponent
        if name == "synthetic" || name.hasPrefix("synthetic-"), !FileManager.default.fileExists(atPath: url.path) {
            let count = name == "synthetic" ? SyntheticImages.defaultTrainingCount : Int(name.dropFirst("synthetic-".count))
            guard let count, count >= 1 else { throw TwoBPError("'\(name)': expected synthetic or synthetic-N with N ≥ 1 training images") }
            return try SyntheticImages(trainingCount: count, side: side, channels: classifier.imageChannels, classes: classifier.classCount)
        }
        guard classifier.classCount >= DigitsImages.classCount else {
            throw TwoBPError("the digits have \(DigitsImages.classCount) classes, the model only \(classifier.classCount)")
        }
        return try DigitsImages(contentsOf: url, side: side, channels: classifier.imageChannels)
    }
}
