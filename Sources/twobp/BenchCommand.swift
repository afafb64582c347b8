import ArgumentParser
import Foundation
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
        subcommands: [StepBenchCommand.self])
}

/// Writes `value` as indented JSON to `path`, when given.
func writeJSON<T: Encodable>(_ value: T, to path: String?) throws {
    guard let path else { return }
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    encoder.keyEncodingStrategy = .convertToSnakeCase
    try encoder.encode(value).write(to: URL(fileURLWithPath: path))
}

struct StepBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "step",
        abstract: "Single-device training step: achieved GFLOP/s as a fraction of sgemm, and time by phase.")

    @OptionGroup var modelOptions: ModelOptions

    @Option(name: .customLong("batch-size"), help: "Sequences per step.")
    var batchSize = 16

    @Option(help: "Measured steps (after one warm-up step).")
    var steps = 3

    @Option(name: .customLong("blas-threads"), help: "OpenBLAS threads (default: all cores).")
    var blasThreads: Int?

    @Option(help: "Write the result as JSON to this file.")
    var json: String?

    func validate() throws {
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1, got \(batchSize)") }
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1, got \(steps)") }
        if let blasThreads, blasThreads < 1 { throw ValidationError("--blas-threads must be at least 1, got \(blasThreads)") }
    }

    func run() throws {
        let (config, sequenceLength) = try modelOptions.resolve()
        let threads = blasThreads ?? ProcessInfo.processInfo.activeProcessorCount
        BLAS.setThreads(threads)
        let result = try StepBenchmark.run(model: config, name: modelOptions.model, batchSize: batchSize,
                                           sequenceLength: sequenceLength, steps: steps, blasThreads: threads, seed: modelOptions.seed)
        print("\(result.model), batch \(result.batchSize) × \(result.sequenceLength), OpenBLAS \(result.blasCore) kernel, \(threads) thread(s)")
        print(String(format: "sgemm %d³: %.1f GFLOP/s", result.referenceGEMMSize, result.sgemmGFLOPS))
        print(String(format: "step: %.3f s, %.1f GFLOP, %.1f GFLOP/s = %.2f of sgemm (goal 0.6)",
                     result.stepSeconds, result.stepGFLOPs, result.achievedGFLOPS, result.fractionOfSGEMM))
        for (phase, seconds) in result.phaseSeconds.sorted(by: { $0.value > $1.value }) {
            print(String(format: "  %-16@ %.3f s (%.0f%%)", phase as NSString, seconds, 100 * seconds / result.stepSeconds))
        }
        print(String(format: "  inside GEMMs     %.3f s (%.0f%%) at %.1f GFLOP/s; outside %.3f s",
                     result.gemmSeconds, 100 * result.gemmSeconds / result.stepSeconds, result.gemmGFLOPS, result.nonGEMMSeconds))
        try writeJSON(result, to: json)
    }
}
