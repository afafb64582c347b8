import Checkpoints
import Data
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
    /// Every loss term (`ModelConfig.lossTerms`) of the last step.
    public var lastLossTerms: [Double]
    public var validationLoss: Double?
    /// Every loss term of the last validation.
    public var validationTerms: [Double]?
    /// Every validation of the run so far, resumed ones included.
    public var validationHistory: [TrainerState.ValidationPoint]
    /// Throughput units (tokens or samples, `unit`) trained per second of step time (validation
    /// and checkpoints excluded).
    public var throughput: Double
    public var unit: ThroughputUnit
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
    /// Whether the run stopped before `steps` because a rank was sent SIGINT or SIGTERM (`StopSignal`).
    public var stoppedEarly: Bool
}

/// The training loop of one rank. Every rank runs the same loop (SPMD): on
/// threads of one process with `ThreadTransport`, or as MPI processes; rank 0
/// prints progress, validates, and writes metrics, checkpoints and the summary.
///
/// A step: forward and backward of all micro-batches as the schedule orders
/// them, the tied parameters' gradients summed between their ranks, one
/// all-reduce of the loss terms and the squared gradient norm (plus each rank's
/// timing), then the optimizer (AdamW or SGD) on each rank's own parameters.
public final class Trainer {
    public let settings: TrainingSettings
    public let worker: StageWorker
    private let data: any DataSource
    private let learningRates: LearningRateSchedule
    private var state: TrainerState
    private var transport: Transport { worker.transport }
    private var isRoot: Bool { transport.rank == 0 }

    public init(settings: TrainingSettings, transport: Transport) throws {
        self.settings = settings
        data = try DataSources.open(settings.data, for: settings.model, sampleLength: settings.sampleLength)
        learningRates = try LearningRateSchedule(
            maxLearningRate: settings.learningRate, warmupSteps: settings.warmupSteps, totalSteps: settings.steps)
        let plan = try PipelinePlan(request: settings.pipeline, model: settings.model, sampleLength: settings.sampleLength)
        worker = try StageWorker(plan: plan, model: settings.model, seed: settings.seed, transport: transport,
                                 optimizer: settings.optimizer)
        state = TrainerState(step: 0, seed: settings.seed, batchSize: settings.batchSize,
                             sampleLength: settings.sampleLength, dataFingerprint: data.fingerprint,
                             tokensSeen: 0, schedule: learningRates)
        if let resume = settings.resume { try restore(from: resume) }
    }

    private func restore(from url: URL) throws {
        let checkpoint = try Checkpoint.load(from: Checkpoint.resolve(url))
        let savedModel = try ModelRegistry.decode(checkpoint.config, source: checkpoint.folder.appendingPathComponent(Checkpoint.configFileName).path)
        guard savedModel.isSame(as: settings.model) else {
            throw TwoBPError("\(checkpoint.folder.path) holds a different model configuration than --model")
        }
        let saved: TrainerState
        do {
            saved = try TrainerState.decode(checkpoint.state)
        } catch let error as TwoBPError {
            throw TwoBPError("checkpoint \(checkpoint.folder.path): \(error.message)")
        } catch {
            throw TwoBPError("checkpoint \(checkpoint.folder.path): \(Checkpoint.stateFileName) is corrupt (\(error))")
        }
        try saved.checkResumable(seed: settings.seed, batchSize: settings.batchSize,
                                 sampleLength: settings.sampleLength, dataFingerprint: data.fingerprint)
        guard saved.step <= settings.steps else {
            throw TwoBPError("\(checkpoint.folder.path) is at step \(saved.step), past --steps \(settings.steps)")
        }
        try checkpoint.model.load(into: worker.parameters, buffers: worker.buffers)
        try ModelLoading.checkFinite(worker.parameters, buffers: worker.buffers, source: checkpoint.folder.path)
        try worker.optimizer.loadState(from: checkpoint.optimizer)
        state = saved
        state.schedule = learningRates
    }

    /// Trains from the current step up to `settings.steps`; returns the outcome on rank 0, nil elsewhere.
    public func run() throws -> TrainingOutcome? {
        let ranks = transport.worldSize
        let unitsPerStep = settings.batchSize * data.throughputUnit.perSample
        let metrics = try isRoot ? settings.metrics.map { try MetricsLog(url: $0, resumingAfter: state.step) } : nil
        let progress = isRoot && settings.showProgress ? ProgressReporter(totalSteps: settings.steps) : nil
        let firstStep = state.step
        var validationLoss = state.validationHistory.last?.loss
        var validationTerms: [Double]?
        var lastTerms: [Double] = []
        var stepTimes: [Double] = []
        var idleRatios: [[Double]] = []
        var busyTimes: [[Double]] = []
        var lastEvents: [TimelineEvent] = []
        var stoppedEarly = false

        for step in firstStep..<settings.steps {
            let batch = data.trainingBatch(step: step, batchSize: settings.batchSize, seed: settings.seed)
            try transport.barrier()  // align the ranks' clocks at the step's start
            let origin = DispatchTime.now().uptimeNanoseconds
            let result = try worker.computeGradients(batch, clockOrigin: origin)
            let reduced = try StepReduction.reduce(loss: result.loss, termCount: settings.model.lossTerms.count,
                                                   squaredGradientNorm: worker.squaredGradientNorm(),
                                                   events: result.events, over: transport)
            let learningRate = learningRates.learningRate(at: step)
            try worker.optimizer.update(learningRate: Float(learningRate), globalGradientNorm: reduced.gradientNorm)
            let stepTime = Double(DispatchTime.now().uptimeNanoseconds - origin) / 1e9

            idleRatios.append(reduced.idleRatios)
            busyTimes.append(reduced.busy)
            stepTimes.append(stepTime)
            lastEvents = result.events
            lastTerms = reduced.lossTerms
            state.step = step + 1
            state.tokensSeen += unitsPerStep
            state.lossHistory.append(reduced.loss)
            state.elapsedSeconds += stepTime

            let throughput = Double(unitsPerStep) / stepTime
            try metrics?.log(StepRecord(step: step + 1, learningRate: learningRate, throughput: throughput, unit: data.throughputUnit,
                                        terms: zip(settings.model.lossTerms, reduced.lossTerms).map { ($0, $1) },
                                        gradientNorm: reduced.gradientNorm, stepTime: stepTime))
            progress?.update(step: step + 1, loss: reduced.loss, throughput: throughput, unit: data.throughputUnit.abbreviation,
                             learningRate: learningRate)

            stoppedEarly = reduced.stopRequested && step + 1 < settings.steps
            let isLast = step + 1 == settings.steps || stoppedEarly
            if settings.evaluateEvery.map({ isLast || (step + 1) % $0 == 0 }) ?? false {
                if let terms = try validate() {
                    validationLoss = terms[0]
                    validationTerms = terms
                    state.validationHistory.append(.init(step: step + 1, loss: terms[0]))
                    progress?.message("step \(step + 1): validation " + LossTerms.describe(settings.model.lossTerms, terms))
                }
            }
            if let directory = settings.checkpointDirectory,
               isLast || (settings.saveEvery.map { (step + 1) % $0 == 0 } ?? false) {
                try saveCheckpoint(in: directory)
            }
            if stoppedEarly { break }
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
            lastLossTerms: lastTerms,
            validationLoss: validationLoss,
            validationTerms: validationTerms,
            validationHistory: state.validationHistory,
            throughput: totalTime > 0 ? Double(unitsPerStep * stepTimes.count) / totalTime : 0,
            unit: data.throughputUnit,
            stepTimeSeconds: measured.isEmpty ? 0 : measured.reduce(0, +) / Double(measured.count),
            bubbleRatio: perRankMean(measuredIdle),
            busySeconds: perRankMean(measuredBusy),
            peakBytes: peakBytes,
            lastStepTimeline: Timeline(ranks: ranks, events: events, peakMemory: peakBytes),
            stoppedEarly: stoppedEarly)
    }

    /// The whole model on rank 0, built at the first validation, that validation loads every rank's weights into.
    private lazy var evaluationModel = Result { try settings.model.makeModel(seed: settings.seed) }

    /// The mean of every loss term over the validation batches, on rank 0, from every rank's
    /// current weights and buffers; nil elsewhere.
    private func validate() throws -> [Double]? {
        let named = worker.ownedParameters.map { (name: $0.name, tensor: $0.value) }
        guard let files = try ParameterGathering.gather(named, buffers: worker.buffers, over: transport) else { return nil }
        let model = try evaluationModel.get()
        try SafeTensorsArchive(files: files, source: "the pipeline's weights").load(into: model.parameters, buffers: model.buffers)
        let batches = try data.validationBatches(batchSize: settings.batchSize, limit: settings.validationBatches)
        var total = [Double](repeating: 0, count: settings.model.lossTerms.count)
        for batch in batches {
            total = zip(total, try model.evaluateLoss(batch)).map(+)
        }
        return total.map { $0 / Double(batches.count) }
    }

    /// Writes `DIR/step-N` atomically: gathered onto rank 0 into one file, or one shard per rank.
    private func saveCheckpoint(in directory: URL) throws {
        let model = StoredTensor.records(worker.ownedParameters.map { (name: $0.name, tensor: $0.value) }, worker.buffers)
        let moments = worker.optimizer.stateTensors(of: worker.ownedParameters)
        let config = try settings.model.jsonData()
        let trainerState = try state.encoded()
        switch settings.checkpointLayout {
        case .perStage:
            try ShardedCheckpoint.save(in: directory, model: model, optimizer: moments.map(StoredTensor.init),
                                       optimizerMetadata: worker.optimizer.stateMetadata, config: config, state: trainerState,
                                       transport: transport)
        case .single:
            let gatheredModel = try ParameterGathering.gather(worker.ownedParameters.map { (name: $0.name, tensor: $0.value) },
                                                              buffers: worker.buffers, over: transport)
            let gatheredMoments = try ParameterGathering.gather(moments, metadata: worker.optimizer.stateMetadata, over: transport)
            guard let gatheredModel, let gatheredMoments else { return }
            try Checkpoint.save(in: directory, model: [gatheredModel.flatMap { $0.storedTensors() }],
                                optimizer: [gatheredMoments.flatMap { $0.storedTensors() }],
                                optimizerMetadata: worker.optimizer.stateMetadata, config: config, state: trainerState)
        }
    }
}
