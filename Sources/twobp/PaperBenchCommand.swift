import ArgumentParser
import Benchmarks
import Files
import Foundation
import Models
import Schedules
import Tensor

struct PaperBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "paper",
        abstract: "The 2BP paper's table for every model family: measured at 2 stages here, simulated beyond.",
        discussion: """
            Per family: its -small configuration on 2 thread stages, every schedule plain and with 2BP \
            alternately, --repeats times (throughput with its spread, peak memory and bubble per rank), beside \
            the simulator's prediction for the same run from costs profiled here; the same configuration \
            simulated at 4 and 8 stages at the FLOP rate the profile achieved; and the family's paper-size \
            configuration (llama-7b, ...) simulated at 4 stages with the paper's micro-batch sizes at \
            --accelerator-tflops. Prints a Markdown table; --json and --markdown write the results.
            """)

    @Option(help: "Comma-separated model types (default: every family: \(ModelRegistry.families.map { $0.modelType }.joined(separator: ","))).")
    var families: String?

    @Option(help: "Comma-separated schedules (default: all).")
    var schedules: String?

    @Option(help: "Runs of every variant, interleaved plain / 2BP.")
    var repeats = 3

    @Option(help: "Steps per run; the first is warm-up and not timed.")
    var steps = 3

    @Option(name: .customLong("batch-size"), help: "Samples per step.")
    var batchSize = 16

    @Option(help: "Which named size is measured: small (the benchmark) or tiny (a quick smoke test).")
    var size = "small"

    @Option(name: .customLong("accelerator-tflops"), help: "TFLOP/s an accelerator sustains for the paper-size simulation (default: half an A100's 312 fp16 peak).")
    var acceleratorTFLOPS = 156.0

    @Option(help: "Write the results as JSON to this file.")
    var json: String?

    @Option(help: "Write the Markdown table to this file.")
    var markdown: String?

    func validate() throws {
        guard repeats >= 1, steps >= 2, batchSize >= 1 else {
            throw ValidationError("--repeats and --batch-size must be at least 1 and --steps at least 2")
        }
        guard acceleratorTFLOPS > 0, acceleratorTFLOPS.isFinite else { throw ValidationError("--accelerator-tflops must be positive") }
    }

    func run() throws {
        let chosen = try families.map { list in
            try list.split(separator: ",").map { name -> any ModelConfig.Type in
                guard let family = ModelRegistry.families.first(where: { $0.modelType == name }) else {
                    throw TwoBPError("unknown family '\(name)': expected \(ModelRegistry.families.map { $0.modelType }.joined(separator: ", "))")
                }
                return family
            }
        } ?? ModelRegistry.families
        let kinds = try schedules.map(PipelineBenchCommand.scheduleList) ?? ScheduleKind.allCases
        guard !chosen.isEmpty, !kinds.isEmpty else { throw TwoBPError("--families and --schedules must name at least one") }
        Parallel.setThreads(1)
        let runs = chosen.count * kinds.count * 2 * repeats
        print("bench paper: \(chosen.count) families × \(kinds.count) schedules × plain and 2BP × \(repeats) repeats = \(runs) runs "
            + "of \(steps) steps at 2 stages, plus one profile per schedule; expect a few seconds per run for the -small models")
        let start = Date()
        let result = try PaperBenchmark.run(PaperBenchmark.Settings(
            families: chosen, measuredSize: size, schedules: kinds, repeats: repeats, steps: steps, batchSize: batchSize,
            acceleratorFLOPS: acceleratorTFLOPS * 1e12)) { line in
            print(String(format: "[%4.0f s] ", Date().timeIntervalSince(start)) + line)
        }
        let table = result.markdown
        print(table)
        if let markdown { try FileIO.writeOutput(URL(fileURLWithPath: markdown), what: "--markdown", text: table) }
        try writeJSON(result, to: json)
    }
}
