import Checkpoints
import Data
import Files
import Foundation
import Models
import Pipeline
import Schedules
import Tensor

/// Everything a training run needs, as the `train` command resolved it.
public struct TrainingSettings {
    public var model: any ModelConfig
    /// How the user named the model (`llama-small`, a config path), for reports.
    public var modelName = "llama"
    public var data: URL
    /// Total optimizer steps of the run; a resumed run continues up to it.
    public var steps: Int
    /// Samples (sequences, images) per optimizer step.
    public var batchSize: Int
    /// Tokens per sequence, or an image's side: what the model's units are sized for.
    public var sampleLength: Int
    public var learningRate: Double
    public var warmupSteps: Int
    public var seed: UInt64
    /// Validation loss every this many steps and at the end; nil: never (benchmarks).
    public var evaluateEvery: Int?
    /// Validation batches (of `batchSize` samples) per evaluation.
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
    public var optimizer: OptimizerConfiguration
    /// Print progress (rank 0 only).
    public var showProgress: Bool

    public init(model: any ModelConfig, data: URL, steps: Int, batchSize: Int, sampleLength: Int,
                learningRate: Double, warmupSteps: Int, seed: UInt64, evaluateEvery: Int?, validationBatches: Int,
                pipeline: ScheduleRequest, optimizer: OptimizerConfiguration = .adamw(.init()), showProgress: Bool = true) {
        self.model = model
        self.data = data
        self.steps = steps
        self.batchSize = batchSize
        self.sampleLength = sampleLength
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
        try model.checkSampleLength(sampleLength)
        let plan = try PipelinePlan(request: pipeline, model: model, sampleLength: sampleLength)
        guard batchSize >= plan.schedule.microBatches else {
            throw TwoBPError("a batch of \(batchSize) samples cannot be split into \(plan.schedule.microBatches) micro-batches; raise --batch-size or lower --micro-batches")
        }
        let source = try DataSources.open(data, for: model, sampleLength: sampleLength)
        if evaluateEvery != nil { _ = try source.validationBatches(batchSize: batchSize, limit: 1) }
        if let resume { _ = try Checkpoint.load(from: Checkpoint.resolve(resume)) }
        // An output that cannot be written is found now, not after the last step.
        for (url, what) in [(metrics, "--metrics"), (summary, "--summary"), (timeline, "--timeline")] {
            guard let url else { continue }
            try FileIO.createDirectory(url.deletingLastPathComponent())
            try FileIO.outputKind(url, what: what)
        }
    }
}
