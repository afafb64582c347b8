import ArgumentParser
import Benchmarks
import Checkpoints
import Data
import Foundation
import Models
import Pipeline
import Schedules
import Tensor
import Training
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a model on its data, on one device or as a pipeline.",
        discussion: """
            With --stages S the model is split into S stages that run concurrently (threads of this \
            process, or MPI ranks with --transport mpi under mpirun) following --schedule; --2bp splits \
            each backward into p1 (sent upstream at once) and p2 (deferred). The loss curve is the same \
            as on one device, to rounding.
            """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var pipeline: PipelineOptions

    @Option(help: "Training data. Default: the model family's, built by scripts/setup-data.sh (text models: data/shakespeare.txt, else ../shared/data/shakespeare.txt; bytes are tokens).")
    var data: String?

    @Option(parsing: .unconditional, help: "Total optimizer steps of the run (a resumed run continues up to this).")
    var steps = 100

    @Option(name: .customLong("batch-size"), parsing: .unconditional, help: "Sequences per optimizer step (split into micro-batches).")
    var batchSize = 16

    @Option(help: "Optimizer: adamw (β 0.9, 0.95, weight decay 0.1, gradient norm clipped to 1) or sgd (PyTorch's, momentum and weight decay as below, no clipping).")
    var optimizer = OptimizerName.adamw

    @Option(help: "Peak learning rate, linear warm-up then cosine decay to a tenth (default: 2e-3 for adamw, 0.1 for sgd).")
    var lr: Double?

    @Option(help: "SGD's momentum (default 0.9).")
    var momentum: Float?

    @Option(name: .customLong("weight-decay"), help: "Weight decay of the weights that decay (not norms' gains or biases; default: 0.1 for adamw, decoupled; 1e-4 for sgd, L2).")
    var weightDecay: Float?

    @Option(parsing: .unconditional, help: "Warm-up steps (default: a tenth of --steps, at most 100).")
    var warmup: Int?

    @Option(name: .customLong("eval-every"), parsing: .unconditional, help: "Validation loss on the held-out last 5% every K steps (and at the end).")
    var evalEvery = 100

    @Option(name: .customLong("eval-batches"), parsing: .unconditional, help: "Validation batches per evaluation.")
    var evalBatches = 8

    @Option(help: "Write one JSON object per optimizer step to this file (JSON lines).")
    var metrics: String?

    @Option(help: "Write a JSON summary of the run to this file.")
    var summary: String?

    @Option(help: "Checkpoint folder: writes DIR/step-N (Hugging Face safetensors layout).")
    var checkpoint: String?

    @Flag(help: "Start a new run in a --checkpoint folder that holds another run's checkpoints, removing them.")
    var overwrite = false

    @Option(name: .customLong("save-every"), parsing: .unconditional, help: "Checkpoint every K steps (and at the end).")
    var saveEvery: Int?

    @Option(name: .customLong("checkpoint-layout"), help: "single: rank 0 writes one model.safetensors; per-stage: each rank writes its stage's shard (needs a folder all ranks share). Default: single with threads, per-stage with MPI.")
    var checkpointLayout: CheckpointLayout?

    @Option(help: "Resume from a checkpoint folder DIR/step-N, or DIR for its latest step.")
    var resume: String?

    @Option(help: "Write the last step's measured timeline as Chrome trace JSON (chrome://tracing, Perfetto).")
    var timeline: String?

    @Option(name: .customLong("memory-limit"), help: "Refuse to start when the estimated memory exceeds this, e.g. 8GiB (default: the memory available).")
    var memoryLimit: String?

    @Option(name: .customLong("blas-threads"), parsing: .unconditional, help: "Threads of TwoBP's kernels per process, shared by its stages (default: cores / stages with threads, 1 per MPI rank).")
    var blasThreads: Int?

    func validate() throws {
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1, got \(steps)") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1, got \(batchSize)") }
        if let lr, !(lr > 0 && lr.isFinite) { throw ValidationError("--lr must be a positive number, got \(lr)") }
        if let momentum {
            guard optimizer == .sgd else { throw ValidationError("--momentum is SGD's; add --optimizer sgd") }
            guard momentum >= 0, momentum < 1 else { throw ValidationError("--momentum must be in [0, 1), got \(momentum)") }
        }
        if let weightDecay, !(weightDecay >= 0 && weightDecay.isFinite) {
            throw ValidationError("--weight-decay must be a non-negative number, got \(weightDecay)")
        }
        if let warmup, warmup < 0 { throw ValidationError("--warmup must not be negative, got \(warmup)") }
        guard evalEvery >= 1 else { throw ValidationError("--eval-every must be at least 1, got \(evalEvery)") }
        guard evalBatches >= 1 else { throw ValidationError("--eval-batches must be at least 1, got \(evalBatches)") }
        if let saveEvery, saveEvery < 1 { throw ValidationError("--save-every must be at least 1, got \(saveEvery)") }
        if saveEvery != nil && checkpoint == nil { throw ValidationError("--save-every needs --checkpoint DIR") }
        if overwrite && checkpoint == nil { throw ValidationError("--overwrite needs --checkpoint DIR") }
        if let blasThreads, blasThreads < 1 { throw ValidationError("--blas-threads must be at least 1, got \(blasThreads)") }
    }

    func run() throws {
        let (config, sampleLength) = try modelOptions.resolve()
        var settings = TrainingSettings(
            model: config, data: data.map { URL(fileURLWithPath: $0) } ?? DataSources.defaultFile(for: config.dataKind), steps: steps,
            batchSize: batchSize, sampleLength: sampleLength, learningRate: lr ?? optimizer.defaultLearningRate,
            warmupSteps: warmup ?? min(100, steps / 10), seed: modelOptions.seed, evaluateEvery: evalEvery,
            validationBatches: evalBatches, pipeline: try pipeline.request(), optimizer: optimizer.configuration(
                momentum: momentum, weightDecay: weightDecay))
        settings.modelName = modelOptions.model
        settings.metrics = metrics.map { URL(fileURLWithPath: $0) }
        settings.summary = summary.map { URL(fileURLWithPath: $0) }
        settings.checkpointDirectory = checkpoint.map { URL(fileURLWithPath: $0) }
        settings.saveEvery = saveEvery
        settings.checkpointLayout = checkpointLayout ?? (pipeline.transport == .mpi ? .perStage : .single)
        settings.resume = resume.map { URL(fileURLWithPath: $0) }
        settings.timeline = timeline.map { URL(fileURLWithPath: $0) }

        try MemoryEstimate.training(model: config, request: settings.pipeline, batchSize: batchSize, sampleLength: sampleLength,
                                    allRanksInProcess: pipeline.transport == .threads,
                                    keepsWholeModel: (MPIEnvironment.launchedRank ?? 0) == 0)
            .check(limit: try memoryLimit.map(PlanInputs.bytes), command: "train")
        try settings.check()
        // Rank 0's process claims the checkpoint folder for the whole job, until it exits.
        let claim = try settings.checkpointDirectory.flatMap { directory in
            (MPIEnvironment.launchedRank ?? 0) == 0
                ? try CheckpointClaim(directory, resuming: settings.resume, overwrite: overwrite) : nil
        }
        defer { withExtendedLifetime(claim) {} }
        Parallel.setThreads(pipeline.blasThreads(blasThreads))
        StopSignal.install()
        let outcome = try RankLauncher.run(pipeline.transport, ranks: pipeline.stages, peerTimeout: pipeline.peerWatchdogTimeout) { transport in
            try Trainer(settings: settings, transport: transport).run()
        }
        guard let outcome else { return }
        try TrainingReport(settings: settings, outcome: outcome).write()
        if outcome.stoppedEarly {
            let saved = settings.checkpointDirectory.map { "; checkpoint \($0.appendingPathComponent(Checkpoint.folderName(step: outcome.losses.count)).path), continue with --resume \($0.path)" }
            FileHandle.standardError.write(Data("stopped by a signal after step \(outcome.losses.count) of \(settings.steps)\(saved ?? " (no --checkpoint: nothing saved)")\n".utf8))
            throw ExitCode(128 + (StopSignal.pending ?? SIGINT))
        }
    }
}

extension CheckpointLayout: ExpressibleByArgument {}

/// `--optimizer`'s values.
enum OptimizerName: String, ExpressibleByArgument, CaseIterable {
    case adamw, sgd

    var defaultLearningRate: Double { self == .adamw ? 2e-3 : 0.1 }

    /// The configuration with the defaults of the optimizer and the options given.
    func configuration(momentum: Float?, weightDecay: Float?) -> OptimizerConfiguration {
        switch self {
        case .adamw:
            var configuration = AdamW.Configuration()
            if let weightDecay { configuration.weightDecay = weightDecay }
            return .adamw(configuration)
        case .sgd:
            var configuration = SGD.Configuration()
            if let momentum { configuration.momentum = momentum }
            if let weightDecay { configuration.weightDecay = weightDecay }
            return .sgd(configuration)
        }
    }
}
