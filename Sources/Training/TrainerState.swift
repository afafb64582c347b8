import Foundation
import Tensor

/// Everything besides weights and optimizer moments that a resumed run needs to
/// continue exactly: `trainer_state.json` of a checkpoint (snake_case keys).
///
/// There is no data position or RNG state to save: the batch of step s is a pure
/// function of (seed, s) (`TextCorpus.trainingBatch`), and the learning rate a
/// pure function of s (`LearningRateSchedule`). The fields that feed those
/// functions are here so a resume can refuse a changed setup.
public struct TrainerState: Codable, Equatable, Sendable {
    public static let currentFormatVersion = 1

    public var formatVersion: Int
    /// Optimizer steps completed; the next step to run has this 0-based index.
    public var step: Int
    public var seed: UInt64
    public var batchSize: Int
    /// Tokens per sequence, or an image's side (saved as `sequence_length`).
    public var sampleLength: Int
    /// `DataSource.fingerprint` of the training data.
    public var dataFingerprint: String
    public var tokensSeen: Int
    public var schedule: LearningRateSchedule
    /// Training loss of each step so far (`lossHistory[i]` is step i's).
    public var lossHistory: [Double]
    public var validationHistory: [ValidationPoint]
    /// Training time so far, excluding time between a kill and the resume.
    public var elapsedSeconds: Double

    private enum CodingKeys: String, CodingKey {
        case formatVersion = "format_version", step, seed, batchSize = "batch_size"
        case sampleLength = "sequence_length", dataFingerprint = "data_fingerprint"
        case tokensSeen = "tokens_seen", schedule, lossHistory = "loss_history"
        case validationHistory = "validation_history", elapsedSeconds = "elapsed_seconds"
    }

    public struct ValidationPoint: Codable, Equatable, Sendable {
        /// Optimizer steps completed when the validation loss was measured.
        public var step: Int
        public var loss: Double

        public init(step: Int, loss: Double) {
            self.step = step
            self.loss = loss
        }
    }

    public init(step: Int, seed: UInt64, batchSize: Int, sampleLength: Int, dataFingerprint: String,
                tokensSeen: Int, schedule: LearningRateSchedule, lossHistory: [Double] = [],
                validationHistory: [ValidationPoint] = [], elapsedSeconds: Double = 0) {
        formatVersion = TrainerState.currentFormatVersion
        self.step = step
        self.seed = seed
        self.batchSize = batchSize
        self.sampleLength = sampleLength
        self.dataFingerprint = dataFingerprint
        self.tokensSeen = tokensSeen
        self.schedule = schedule
        self.lossHistory = lossHistory
        self.validationHistory = validationHistory
        self.elapsedSeconds = elapsedSeconds
    }

    /// Throws, naming every difference, unless a run with these settings would
    /// draw the same batches as the run that saved this state.
    public func checkResumable(seed: UInt64, batchSize: Int, sampleLength: Int, dataFingerprint: String) throws {
        var differences: [String] = []
        if seed != self.seed { differences.append("seed \(seed) vs \(self.seed)") }
        if batchSize != self.batchSize { differences.append("batch size \(batchSize) vs \(self.batchSize)") }
        if sampleLength != self.sampleLength {
            differences.append("sample length \(sampleLength) vs \(self.sampleLength)")
        }
        if dataFingerprint != self.dataFingerprint {
            differences.append("data \(dataFingerprint) vs \(self.dataFingerprint)")
        }
        guard differences.isEmpty else {
            throw TwoBPError("cannot resume exactly: the checkpoint was saved with different settings (now vs saved: \(differences.joined(separator: ", ")))")
        }
    }

    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return try encoder.encode(self)
    }

    public static func decode(_ data: Data) throws -> TrainerState {
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        let state = try decoder.decode(TrainerState.self, from: data)
        guard state.formatVersion == currentFormatVersion else {
            throw TwoBPError("trainer state format version \(state.formatVersion) is not supported (this build reads \(currentFormatVersion))")
        }
        return state
    }
}
