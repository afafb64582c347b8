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
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks: a training step against the sgemm rate, 2BP against plain schedules, transports.",
        discussion: """
            Numbers depend on the machine and on the OpenBLAS kernel (OPENBLAS_CORETYPE); every report \
            names the kernel it ran. Compare ratios measured in one run, not numbers across runs.
            """,
        subcommands: [StepBenchCommand.self, PipelineBenchCommand.self, TransportBenchCommand.self, PaperBenchCommand.self])
}

/// Writes `value` as indented JSON to `path`, when given.
func writeJSON<T: Encodable>(_ value: T, to path: String?, what: String = "--json") throws {
    guard let path else { return }
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    encoder.keyEncodingStrategy = .convertToSnakeCase
    try FileIO.writeOutput(URL(fileURLWithPath: path), what: what, data: encoder.encode(value))
}

struct StepBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "step",
        abstract: "Single-device training step: achieved GFLOP/s as a fraction of sgemm, and time by phase.")

    @OptionGroup var modelOptions: ModelOptions

    @Option(name: .customLong("batch-size"), parsing: .unconditional, help: "Sequences per step.")
    var batchSize = 16

    @Option(parsing: .unconditional, help: "Measured steps (after one warm-up step).")
    var steps = 3

    @Option(name: .customLong("blas-threads"), parsing: .unconditional, help: "Threads of TwoBP's kernels (large GEMMs split into blocks, one OpenBLAS thread each; default: all cores).")
    var blasThreads: Int?

    @Option(help: "Write the result as JSON to this file.")
    var json: String?

    func validate() throws {
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1, got \(batchSize)") }
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1, got \(steps)") }
        if let blasThreads, blasThreads < 1 { throw ValidationError("--blas-threads must be at least 1, got \(blasThreads)") }
    }

    func run() throws {
        let (config, sampleLength) = try modelOptions.resolve()
        try MemoryEstimate.training(model: config, request: ScheduleRequest(kind: .naive, ranks: 1), batchSize: batchSize,
                                    sampleLength: sampleLength, allRanksInProcess: true, keepsWholeModel: false)
            .check(limit: nil, command: "bench step")
        let threads = blasThreads ?? ProcessInfo.processInfo.activeProcessorCount
        Parallel.setThreads(threads)
        let result = try StepBenchmark.run(model: config, name: modelOptions.model, batchSize: batchSize,
                                           sampleLength: sampleLength, steps: steps, blasThreads: threads, seed: modelOptions.seed)
        print("\(result.model), batch \(result.batchSize) × \(result.sampleLength), OpenBLAS \(result.blasCore) kernel, \(threads) thread(s)")
        print(String(format: "sgemm %d³: %.1f GFLOP/s", result.referenceGEMMSize, result.sgemmGFLOPS))
        print(String(format: "step: %.3f s, %.1f GFLOP, %.1f GFLOP/s = %.2f of sgemm (goal 0.75)",
                     result.stepSeconds, result.stepGFLOPs, result.achievedGFLOPS, result.fractionOfSGEMM))
        for (phase, seconds) in result.phaseSeconds.sorted(by: { $0.value > $1.value }) {
            print("  " + phase.padded(16) + String(format: " %.3f s (%.0f%%)", seconds, 100 * seconds / result.stepSeconds))
        }
        print(String(format: "  inside GEMMs     %.3f s (%.0f%%) at %.1f GFLOP/s; outside %.3f s",
                     result.gemmSeconds, 100 * result.gemmSeconds / result.stepSeconds, result.gemmGFLOPS, result.nonGEMMSeconds))
        print(result.bitIdenticalToOneThread
            ? "loss and gradients bit-identical to one thread"
            : String(format: "loss and gradients differ from one thread by at most %.2e (relative to each tensor's largest)",
                     result.largestRelativeDifferenceToOneThread))
        try writeJSON(result, to: json)
    }
}

struct PipelineBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pipeline",
        abstract: "Each schedule plain and with 2BP, alternately, several times: tokens/s, 2BP/plain ratio, bubbles, peak memory.")

    @OptionGroup var modelOptions: ModelOptions

    @Option(parsing: .unconditional, help: "Pipeline stages (ranks).")
    var stages = 2

    @Option(help: "Comma-separated schedules to compare.")
    var schedules = "gpipe,1f1b-1,1f1b-2"

    @Option(name: .customLong("micro-batches"), parsing: .unconditional, help: "Micro-batches per step (default: each schedule's own).")
    var microBatches: Int?

    @Option(name: .customLong("batch-size"), parsing: .unconditional, help: "Sequences per step.")
    var batchSize = 16

    @Option(parsing: .unconditional, help: "Steps per run; the first is warm-up and not timed.")
    var steps = 3

    @Option(parsing: .unconditional, help: "Runs of every variant, interleaved plain / 2BP.")
    var repeats = 3

    @Option(help: "How stages talk: threads or mpi (under mpirun, one rank per stage).")
    var transport: TransportKind = .threads

    @Option(help: "Data the batches come from (default: the model family's, e.g. the Shakespeare corpus for text models).")
    var data: String?

    @Option(help: "Write the result as JSON to this file.")
    var json: String?

    func validate() throws {
        guard stages >= 1 else { throw ValidationError("--stages must be at least 1, got \(stages)") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1, got \(batchSize)") }
        guard steps >= 2 else { throw ValidationError("--steps must be at least 2 (the first is not timed), got \(steps)") }
        guard repeats >= 1 else { throw ValidationError("--repeats must be at least 1, got \(repeats)") }
    }

    func run() throws {
        let (config, sampleLength) = try modelOptions.resolve()
        let kinds = try Self.scheduleList(schedules)
        for kind in kinds {
            let request = ScheduleRequest(kind: kind, ranks: stages, microBatches: microBatches)
            try MemoryEstimate.training(model: config, request: request, batchSize: batchSize, sampleLength: sampleLength,
                                        allRanksInProcess: transport == .threads, keepsWholeModel: false)
                .check(limit: nil, command: "bench pipeline")
        }
        var settings = TrainingSettings(
            model: config, data: data.map { URL(fileURLWithPath: $0) } ?? DataSources.defaultFile(for: config.dataKind), steps: steps,
            batchSize: batchSize, sampleLength: sampleLength, learningRate: 1e-3, warmupSteps: 0,
            seed: modelOptions.seed, evaluateEvery: nil, validationBatches: 1,
            pipeline: ScheduleRequest(kind: kinds[0], ranks: stages, microBatches: microBatches), showProgress: false)
        settings.modelName = modelOptions.model
        let threads = transport == .threads ? max(1, ProcessInfo.processInfo.activeProcessorCount / stages) : 1
        Parallel.setThreads(threads)
        let result = try PipelineBenchmark.run(base: settings, schedules: kinds, repeats: repeats, transport: transport) {
            print($0)
        }
        guard let result else { return }
        print("\(result.model), \(stages) stages over \(transport.rawValue), batch \(batchSize) × \(sampleLength), "
            + "OpenBLAS \(result.blasCore) kernel, \(threads) BLAS thread(s) per stage, median of \(repeats)")
        let rateHeaders: String = "plain \(result.unit)/s".padded(19) + "2BP \(result.unit)/s".padded(19)
        print("schedule".padded(12) + " M  " + rateHeaders + "2BP/plain  bubble plain  bubble 2BP  peak MiB plain  peak MiB 2BP")
        for c in result.comparisons { print(row(c)) }
        print("(throughput: median and half the range of the repeats as ±%; bubble and peak memory per rank)")
        let limit = result.limit
        print(String(format: "limit: %d stages × one-thread sgemm %.1f GFLOP/s ÷ %.1f GFLOP per step = %.0f %@/s; "
                     + "fastest, %@%@, %.0f = %.2f of it",
                     result.stages, limit.sgemmOneThreadGFLOPS, limit.stepGFLOPs, limit.limitThroughput, result.unit,
                     limit.bestSchedule, limit.bestTwoBP ? " + 2BP" : "", limit.bestThroughput, limit.fractionOfLimit))
        if let single = result.singleDevice {
            print(String(format: "one device, %d threads (no pipeline): %.0f %@/s %@", single.threads, single.medianThroughput,
                         result.unit, spread(single.throughput, single.medianThroughput)))
        }
        if !limit.breakdown.isEmpty {
            print("per rank, ms per step of the fastest: GEMM, other compute, communication wait, idle (incl. reduction and AdamW)")
            for time in limit.breakdown {
                print(String(format: "  rank %d: %.0f, %.0f, %.0f, %.0f of %.0f", time.rank, time.gemmSeconds * 1e3,
                             time.otherComputeSeconds * 1e3, time.communicationSeconds * 1e3, time.idleSeconds * 1e3,
                             time.stepSeconds * 1e3))
            }
        }
        try writeJSON(result, to: json)
    }
}

/// "±x%": half the range of `values` relative to `median`.
private func spread(_ values: [Double], _ median: Double) -> String {
    guard let low = values.min(), let high = values.max(), median > 0 else { return "" }
    return String(format: "±%.1f%%", 50 * (high - low) / median)
}

extension PipelineBenchCommand {
    /// `--schedules`: at least one name, none empty, none twice (a repeated schedule would be
    /// pooled into one row printed twice).
    static func scheduleList(_ text: String) throws -> [ScheduleKind] {
        let names = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard names.contains(where: { !$0.isEmpty }) else {
            throw TwoBPError("--schedules names no schedule; give a comma-separated list such as gpipe,1f1b-1")
        }
        guard !names.contains(where: \.isEmpty) else { throw TwoBPError("--schedules '\(text)' has an empty entry") }
        var kinds: [ScheduleKind] = []
        for name in names {
            let kind = try ScheduleKind(name: name)
            guard !kinds.contains(kind) else { throw TwoBPError("--schedules names \(kind.rawValue) twice") }
            kinds.append(kind)
        }
        return kinds
    }
}

/// One line of the pipeline benchmark's table.
private func row(_ c: PipelineBenchmark.Comparison) -> String {
    func ratios(_ v: PipelineBenchmark.Variant) -> String { v.bubbleRatio.map { String(format: "%.2f", $0) }.joined(separator: " ") }
    func mebibytes(_ v: PipelineBenchmark.Variant) -> String { v.peakBytes.map { String($0 >> 20) }.joined(separator: " ") }
    func rate(_ v: PipelineBenchmark.Variant) -> String {
        String(format: "%.0f ", v.medianThroughput).leftPadded(6) + spread(v.throughput, v.medianThroughput).padded(7)
    }
    return c.schedule.padded(12) + String(format: "%2d  ", c.plain.microBatches) + rate(c.plain).padded(19) + rate(c.twoBP).padded(19)
        + String(format: "%.3f", c.speedup).padded(11) + ratios(c.plain).padded(14) + ratios(c.twoBP).padded(12)
        + mebibytes(c.plain).padded(16) + mebibytes(c.twoBP)
}

struct TransportBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "transport",
        abstract: "MPI transport latency and bandwidth for activation-sized messages against a raw MPI ping-pong.",
        discussion: "Run under mpirun with 2 ranks: scripts/mpi-run.sh -np 2 twobp bench transport.")

    @Option(help: "Write the result as JSON to this file.")
    var json: String?

    func run() throws {
        guard MPIEnvironment.isLaunchedByMPI else {
            throw TwoBPError("bench transport measures MPI: launch it with scripts/mpi-run.sh -np 2 twobp bench transport")
        }
        let environment = try MPIEnvironment.initialize()
        let transport = try MPITransport(environment: environment)
        let result: TransportBenchmarkResult?
        do {
            result = try MPITransportBenchmark.run(transport: transport)
        } catch {
            environment.abort("\(error)")
        }
        try transport.close()
        try environment.finalize()
        guard let result else { return }
        print(result.table)
        try writeJSON(result, to: json)
    }
}

extension String {
    /// Left-aligned in a column of `width` characters.
    func padded(_ width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }

    /// Right-aligned in a column of `width` characters.
    func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}
