import Foundation
import Models
import Tensor

/// Where a run's batches come from. Batches are a pure function of (seed, step), so a resumed
/// run draws the same ones without saving any position or RNG state, and every pipeline stage
/// can build the micro-batches it needs.
public protocol DataSource: Sendable {
    /// Where the data came from, for messages.
    var source: String { get }
    /// Identifies the data exactly (size and hash); a checkpoint records it so a resume can
    /// refuse other data.
    var fingerprint: String { get }
    /// What throughput is counted in, and how many per sample.
    var throughputUnit: ThroughputUnit { get }
    /// The batch of optimizer step `step` (0-based): `batchSize` samples, weighted as one step.
    func trainingBatch(step: Int, batchSize: Int, seed: UInt64) -> any MicroBatch
    /// Held-out batches of `batchSize` samples, the same on every call, at most `limit` of them.
    /// Throws when not even one full batch fits.
    func validationBatches(batchSize: Int, limit: Int?) throws -> [any MicroBatch]
}

/// The unit a data source's throughput is counted in: tokens (per sequence of a length) or samples.
public struct ThroughputUnit: Sendable, Equatable, Codable {
    /// Plural name, as in "tokens/s".
    public let name: String
    /// Short form for progress lines, as in "tok/s".
    public let abbreviation: String
    /// How many units one sample holds.
    public let perSample: Int

    public static func tokens(perSequence length: Int) -> ThroughputUnit {
        ThroughputUnit(name: "tokens", abbreviation: "tok", perSample: length)
    }
    public static let samples = ThroughputUnit(name: "samples", abbreviation: "samples", perSample: 1)
}

/// The data source a model trains on by default, from its config's `DataKind`.
public enum DataSources {
    /// Where a model of `kind` finds its data when none is given: what scripts/setup-data.sh
    /// builds, else the shared copy beside the checkout (relative to the working directory).
    public static func defaultFile(for kind: DataKind) -> URL {
        let candidates: [String]
        switch kind {
        case .causalText, .sentencePairs:
            candidates = ["data/shakespeare.txt", "../shared/data/shakespeare.txt"]
        case .images:
            candidates = ["data/digits.bin", "../shared/data/digits.bin"]
        }
        return URL(fileURLWithPath: candidates.first { FileManager.default.fileExists(atPath: $0) } ?? candidates[0])
    }

    /// Opens `url` as the data of `model`, with samples of `sampleLength`.
    public static func open(_ url: URL, for model: any ModelConfig, sampleLength: Int) throws -> any DataSource {
        switch model.dataKind {
        case .causalText:
            return try TextCorpus(contentsOf: url, sequenceLength: sampleLength)
        case .sentencePairs:
            return try SentencePairCorpus(contentsOf: url, sequenceLength: sampleLength)
        case .images:
            return try ImageDataSources.open(url, for: model, side: sampleLength)
        }
    }
}
