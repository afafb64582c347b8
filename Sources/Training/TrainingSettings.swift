import Foundation
import Models
import Schedules

/// Everything a training run needs, as the `train` command resolved it.
public struct TrainingSettings {
    public var model: LlamaConfig
    /// How the user named the model (`llama-small`, a config path), for reports.
    public var modelName = "llama"
    public var data: URL
    /// Total optimizer steps of the run; a resumed run continues up to it.
    public var steps: Int
    public var batchSize: Int
    public var sequenceLength: Int
    public var learningRate: Double
    public var warmupSteps: Int
    public var seed: UInt64
    /// Validation loss every this many steps (and at the end).
    public var evaluateEvery: Int
    /// Validation batches (of `batchSize` windows) per evaluation.
    public var validationBatches: Int
    public var metrics: URL?
    public var summary: URL?
    public var checkpointDirectory: URL?
    /// Checkpoint every this many steps (and at the end) when `checkpointDirectory` is set.
    public var saveEvery: Int?
    public var resume: URL?
    /// Chrome trace of the last step's measured timeline.
    public var timeline: URL?
    public var pipeline: ScheduleRequest
    public var optimizer: AdamW.Configuration
    /// Print progress (rank 0 only).
    public var showProgress: Bool

    public init(model: LlamaConfig, data: URL, steps: Int, batchSize: Int, sequenceLength: Int,
                learningRate: Double, warmupSteps: Int, seed: UInt64, evaluateEvery: Int, validationBatches: Int,
                pipeline: ScheduleRequest, optimizer: AdamW.Configuration = .init(), showProgress: Bool = true) {
        self.model = model
        self.data = data
        self.steps = steps
        self.batchSize = batchSize
        self.sequenceLength = sequenceLength
        self.learningRate = learningRate
        self.warmupSteps = warmupSteps
        self.seed = seed
        self.evaluateEvery = evaluateEvery
        self.validationBatches = validationBatches
        self.pipeline = pipeline
        self.optimizer = optimizer
        self.showProgress = showProgress
    }
}
