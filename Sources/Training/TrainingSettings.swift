import Foundation
import Models
import Pipeline
import Tensor
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
    /// Validation loss every this many steps and at the end; nil: never (benchmarks).
    public var evaluateEvery: Int?
    /// Validation batches (of `batchSize` windows) per evaluation.
    public var validationBatches: Int
    public var metrics: URL?
    public var summary: URL?
    public var checkpointDirectory: URL?
    /// Checkpoint every this many steps (and at the end) when `checkpointDirectory` is set.
    public var saveEvery: Int?
    public var resume: URL?
    public var checkpointLayout = CheckpointLayout.single
    /// Chrome trace of the last step's measured timeline.
    public var timeline: URL?
    public var pipeline: ScheduleRequest
    public var optimizer: AdamW.Configuration
    /// Print progress (rank 0 only).
    public var showProgress: Bool

    public init(model: LlamaConfig, data: URL, steps: Int, batchSize: Int, sequenceLength: Int,
                learningRate: Double, warmupSteps: Int, seed: UInt64, evaluateEvery: Int?, validationBatches: Int,
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

extension TrainingSettings {
    /// Checks everything a run would trip over (data, schedule, model fit, batch split,
    /// resume folder) before any rank starts, so a bad request is one clear error.
    public func check() throws {
        try model.checkSequenceLength(sequenceLength)
        let plan = try PipelinePlan(request: pipeline, unitCosts: model.unitCosts(sequenceLength: sequenceLength))
        guard batchSize >= plan.schedule.microBatches else {
            throw TwoBPError("a batch of \(batchSize) sequences cannot be split into \(plan.schedule.microBatches) micro-batches; raise --batch-size or lower --micro-batches")
        }
        let corpus = try TextCorpus(contentsOf: data, sequenceLength: sequenceLength)
        if evaluateEvery != nil { _ = try corpus.validationBatches(batchSize: batchSize, limit: 1) }
        if let resume { _ = try Checkpoint.load(from: Checkpoint.resolve(resume)) }
    }
}
