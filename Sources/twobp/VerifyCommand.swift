import ArgumentParser
import Benchmarks
import Checkpoints
import Data
import Files
import Foundation
import Models
import Pipeline
import Schedules
import Tensor
import Training
struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check a pipelined step against the same step on one device.",
        discussion: """
            Runs one forward and backward of a batch through the pipeline, and the same batch on one \
            device from the same weights, then prints the largest relative gradient difference over all \
            parameters and the loss difference. Exits non-zero when they disagree beyond --tolerance.
            """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var pipeline: PipelineOptions

    @Option(name: .customLong("batch-size"), parsing: .unconditional, help: "Sequences in the step (default: the schedule's micro-batches, one sequence each).")
    var batchSize: Int?

    @Option(help: "Text to take the batch from (default: random tokens).")
    var data: String?

    @Option(name: .customLong("memory-limit"), help: "Refuse to start when the estimated memory exceeds this, e.g. 8GiB (default: the memory available).")
    var memoryLimit: String?

    @Option(help: "Largest accepted relative gradient (and loss) difference.")
    var tolerance = 1e-5

    @Option(help: "Write the report as JSON to this file.")
    var json: String?

    func validate() throws {
        if let batchSize, batchSize < 1 { throw ValidationError("--batch-size must be at least 1, got \(batchSize)") }
        guard tolerance > 0 else { throw ValidationError("--tolerance must be positive, got \(tolerance)") }
    }

    func run() throws {
        var (config, sampleLength) = try modelOptions.resolve()
        if modelOptions.sequenceLength == nil { sampleLength = min(sampleLength, 32) }
        let request = try pipeline.request()
        let microBatches = try request.resolved().microBatches
        let size = batchSize ?? microBatches
        // The pipeline's step and the same step on one device, both before anything is allocated.
        var estimate = try MemoryEstimate.training(model: config, request: request, batchSize: size, sampleLength: sampleLength,
                                                   allRanksInProcess: pipeline.transport == .threads, keepsWholeModel: false)
        estimate.processBytes += try MemoryEstimate.training(
            model: config, request: ScheduleRequest(kind: .naive, ranks: 1), batchSize: size, sampleLength: sampleLength,
            allRanksInProcess: true, keepsWholeModel: false).processBytes
        try estimate.check(limit: try memoryLimit.map(PlanInputs.bytes), command: "verify")
        let batch: any MicroBatch
        if let data {
            let source = try DataSources.open(URL(fileURLWithPath: data), for: config, sampleLength: sampleLength)
            batch = source.trainingBatch(step: 0, batchSize: size, seed: modelOptions.seed)
        } else {
            batch = config.randomBatch(samples: size, sampleLength: sampleLength, seed: modelOptions.seed)
        }
        _ = try PipelinePlan(request: request, model: config, sampleLength: sampleLength)
        Parallel.setThreads(1)
        let report = try RankLauncher.run(pipeline.transport, ranks: pipeline.stages, peerTimeout: pipeline.peerWatchdogTimeout) { transport in
            try PipelineVerification.run(model: config, request: request, batch: batch, seed: modelOptions.seed, transport: transport)
        }
        guard let report else { return }
        try finish(report)
    }

    func finish(_ report: VerificationReport) throws {
        if let json {
            try FileIO.writeOutput(URL(fileURLWithPath: json), what: "--json", data: JSONEncoder().encode(report))
        }
        let verdict = report.agrees(tolerance: tolerance) ? "OK" : "MISMATCH"
        print("\(verdict): \(pipeline.schedule)\(pipeline.twoBP ? " + 2BP" : "") on \(pipeline.stages) stages: "
            + "max relative gradient difference \(String(format: "%.3e", report.maxRelativeGradientDifference)) (\(report.worstParameter)), "
            + "loss \(String(format: "%.6f", report.pipelineLoss)) vs \(String(format: "%.6f", report.referenceLoss)) "
            + "(difference \(String(format: "%.3e", report.lossDifference))) over \(report.parameterCount) parameters")
        guard report.agrees(tolerance: tolerance) else { throw ExitCode.failure }
    }
}
