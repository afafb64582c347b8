import Foundation
import Layers
import Models
import Pipeline
import Schedules
import Tensor

/// What a run measured, reported on rank 0.
public struct TrainingOutcome {
    /// Training loss of every step of the run so far (index = step), resumed steps included.
    public var losses: [Double]
    public var validationLoss: Double?
    /// Every validation of the run so far, resumed ones included.
    public var validationHistory: [TrainerState.ValidationPoint]
    /// Tokens trained per second of step time (validation and checkpoints excluded).
    public var tokensPerSecond: Double
    /// Mean wall time of a step, first step excluded when there are others.
    public var stepTimeSeconds: Double
    /// Per rank: mean idle time over step time, first step excluded when there are others.
    public var bubbleRatio: [Double]
    /// Per rank: mean seconds of computation per step, first step excluded when there are others.
    public var busySeconds: [Double]
    /// Per rank: the most bytes its meter saw alive (weights, gradients, moments, activations, p2 stash).
    public var peakBytes: [Int]
    /// The last step's measured timeline.
    public var lastStepTimeline: Timeline
}

/// The training loop of one rank. Every rank runs the same loop (SPMD): on
/// threads of one process with `ThreadTransport`, or as MPI processes; rank 0
/// prints progress, validates, and writes metrics, checkpoints and the summary.
///
/// A step: forward and backward of all micro-batches as the schedule orders
/// them, one all-reduce of the loss and the squared gradient norm (plus each
/// rank's timing), then AdamW on each rank's own parameters.
public final class Trainer {
    public let settings: TrainingSettings
    public let worker: StageWorker
    private let corpus: TextCorpus
    private let learningRates: LearningRateSchedule
    private var state: TrainerState
    private var transport: Transport { worker.transport }
    private var isRoot: Bool { transport.rank == 0 }

    public init(settings: TrainingSettings, transport: Transport) throws {
        self.settings = settings
        corpus = try TextCorpus(contentsOf: settings.data, sequenceLength: settings.sequenceLength)
        learningRates = try LearningRateSchedule(
            maxLearningRate: settings.learningRate, warmupSteps: settings.warmupSteps, totalSteps: settings.steps)
        let plan = try PipelinePlan(
            request: settings.pipeline, unitCosts: settings.model.unitCosts(sequenceLength: settings.sequenceLength))
        worker = try StageWorker(plan: plan, config: settings.model, seed: settings.seed, transport: transport,
                                 optimizer: settings.optimizer)
        state = TrainerState(step: 0, seed: settings.seed, batchSize: settings.batchSize,
                             sequenceLength: settings.sequenceLength, dataFingerprint: corpus.fingerprint,
                             tokensSeen: 0, schedule: learningRates)
        if let resume = settings.resume { try restore(from: resume) }
    }

    private func restore(from url: URL) throws {
        let checkpoint = try Checkpoint.load(from: Checkpoint.resolve(url))
        let savedModel = try LlamaConfig.parse(checkpoint.config, source: checkpoint.folder.appendingPathComponent(Checkpoint.configFileName).path)
        guard savedModel == settings.model else {
            throw TwoBPError("\(checkpoint.folder.path) holds a different model configuration than --model")
        }
        try checkpoint.state.checkResumable(seed: settings.seed, batchSize: settings.batchSize,
                                            sequenceLength: settings.sequenceLength, dataFingerprint: corpus.fingerprint)
        guard checkpoint.state.step <= settings.steps else {
            throw TwoBPError("\(checkpoint.folder.path) is at step \(checkpoint.state.step), past --steps \(settings.steps)")
        }
        try checkpoint.restore(into: [worker.optimizer])
        state = checkpoint.state
        state.schedule = learningRates
    }

    /// Trains from the current step up to `settings.steps`; returns the outcome on rank 0, nil elsewhere.
    public func run() throws -> TrainingOutcome? {
        let ranks = transport.worldSize
        let tokensPerStep = settings.batchSize * settings.sequenceLength
        let metrics = try isRoot ? settings.metrics.map { try MetricsLog(url: $0, resumingAfter: state.step) } : nil
        let progress = isRoot && settings.showProgress ? ProgressReporter(totalSteps: settings.steps) : nil
        let firstStep = state.step
        var validationLoss = state.validationHistory.last?.loss
        var stepTimes: [Double] = []
        var idleRatios: [[Double]] = []
        var busyTimes: [[Double]] = []
        var lastEvents: [TimelineEvent] = []

        for step in firstStep..<settings.steps {
            let batch = corpus.trainingBatch(step: step, batchSize: settings.batchSize, seed: settings.seed)
            try transport.barrier()  // align the ranks' clocks at the step's start
            let origin = DispatchTime.now().uptimeNanoseconds
            let result = try worker.computeGradients(batch, clockOrigin: origin)
            let reduced = try StepReduction.reduce(loss: result.loss, squaredGradientNorm: AdamW.squaredGradientSum(worker.parameters),
                                                   events: result.events, over: transport)
            let learningRate = learningRates.learningRate(at: step)
            try worker.optimizer.update(learningRate: Float(learningRate), globalGradientNorm: reduced.gradientNorm)
            let stepTime = Double(DispatchTime.now().uptimeNanoseconds - origin) / 1e9

            idleRatios.append(reduced.idleRatios)
            busyTimes.append(reduced.busy)
            stepTimes.append(stepTime)
            lastEvents = result.events
            state.step = step + 1
            state.tokensSeen += tokensPerStep
            state.lossHistory.append(reduced.loss)
            state.elapsedSeconds += stepTime

            let tokensPerSecond = Double(tokensPerStep) / stepTime
            try metrics?.log(step: step + 1, loss: reduced.loss, learningRate: learningRate, tokensPerSecond: tokensPerSecond,
                             extra: [(key: "grad_norm", value: .double(reduced.gradientNorm)),
                                     (key: "step_time_seconds", value: .double(stepTime))])
            progress?.update(step: step + 1, loss: reduced.loss, tokensPerSecond: tokensPerSecond, learningRate: learningRate)

            let isLast = step + 1 == settings.steps
            if settings.evaluateEvery.map({ isLast || (step + 1) % $0 == 0 }) ?? false {
                if let loss = try validate() {
                    validationLoss = loss
                    state.validationHistory.append(.init(step: step + 1, loss: loss))
                    progress?.message("step \(step + 1): validation loss \(String(format: "%.4f", loss))")
                }
            }
            if let directory = settings.checkpointDirectory,
               isLast || (settings.saveEvery.map { (step + 1) % $0 == 0 } ?? false) {
                try saveCheckpoint(in: directory)
            }
        }
        progress?.finish()
        try metrics?.close()

        let timelines = try transport.gather(Array(try JSONEncoder().encode(lastEvents)), root: 0)
        let peaks = try transport.allReduceSum((0..<ranks).map { $0 == transport.rank ? Double(worker.meter.peakBytes) : 0 })
        guard isRoot, let timelines else { return nil }
        let events = try timelines.flatMap { try JSONDecoder().decode([TimelineEvent].self, from: Data($0)) }
        let measured = stepTimes.count > 1 ? Array(stepTimes.dropFirst()) : stepTimes
        let measuredIdle = idleRatios.count > 1 ? Array(idleRatios.dropFirst()) : idleRatios
        let measuredBusy = busyTimes.count > 1 ? Array(busyTimes.dropFirst()) : busyTimes
        func perRankMean(_ rows: [[Double]]) -> [Double] {
            (0..<ranks).map { rank in rows.isEmpty ? 0 : rows.map { $0[rank] }.reduce(0, +) / Double(rows.count) }
        }
        let peakBytes = peaks.map { Int($0) }
        let totalTime = stepTimes.reduce(0, +)
        return TrainingOutcome(
            losses: state.lossHistory,
            validationLoss: validationLoss,
            validationHistory: state.validationHistory,
            tokensPerSecond: totalTime > 0 ? Double(tokensPerStep * stepTimes.count) / totalTime : 0,
            stepTimeSeconds: measured.isEmpty ? 0 : measured.reduce(0, +) / Double(measured.count),
            bubbleRatio: perRankMean(measuredIdle),
            busySeconds: perRankMean(measuredBusy),
            peakBytes: peakBytes,
            lastStepTimeline: Timeline(ranks: ranks, events: events, peakMemory: peakBytes))
    }

    /// The whole model on rank 0, built at the first validation, that validation loads every rank's weights into.
    private lazy var evaluationModel = Result { try LlamaModel(config: settings.model, seed: settings.seed) }

    /// Mean validation loss (nats per byte) on rank 0, from every rank's current weights; nil elsewhere.
    private func validate() throws -> Double? {
        let named = worker.parameters.map { (name: $0.name, tensor: $0.value) }
        guard let files = try ParameterGathering.gather(named, over: transport) else { return nil }
        let model = try evaluationModel.get()
        try SafeTensorsArchive(files: files, source: "the pipeline's weights").load(into: model.parameters)
        let batches = try corpus.validationBatches(batchSize: settings.batchSize, limit: settings.validationBatches)
        let total = try batches.reduce(0.0) { $0 + (try model.loss($1)) }
        return total / Double(batches.count)
    }

    /// Writes `DIR/step-N` atomically: gathered onto rank 0 into one file, or one shard per rank.
    private func saveCheckpoint(in directory: URL) throws {
        let model = worker.parameters.map { (name: $0.name, tensor: $0.value) }
        let moments = worker.optimizer.stateTensors()
        let config = try settings.model.jsonData()
        switch settings.checkpointLayout {
        case .perStage:
            try ShardedCheckpoint.save(in: directory, model: model, optimizer: moments,
                                       optimizerMetadata: worker.optimizer.stateMetadata, config: config, state: state,
                                       transport: transport)
        case .single:
            let gatheredModel = try ParameterGathering.gather(model, over: transport)
            let gatheredMoments = try ParameterGathering.gather(moments, metadata: worker.optimizer.stateMetadata, over: transport)
            guard let gatheredModel, let gatheredMoments else { return }
            func tensors(_ files: [SafeTensorsFile]) throws -> [NamedTensor] {
                try files.flatMap { file in try file.names.map { (name: $0, tensor: try file.tensor($0)) } }
            }
            try Checkpoint.save(in: directory, model: [try tensors(gatheredModel)], optimizer: [try tensors(gatheredMoments)],
                                optimizerMetadata: worker.optimizer.stateMetadata, config: config, state: state)
        }
    }
}
